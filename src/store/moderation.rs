//! Room roles, bans and mutes, and the moderation log: the store's side of `chat::moderation` (the tables:
//! `migrations/*/0008_moderation.sql`).
//!
//! The owner of a group room is its creator (`rooms.created_by`); moderators are rows of `room_roles`; everyone
//! else is a member. A ban or mute is in force until its `until` (none: until lifted): every read compares it with
//! the current time, so nothing sweeps ended ones. The batch writer checks the sanctions of a message's sender
//! itself (`sql.rs`); [`Moderation::sanctions`] is for everything else (a join, a send that is only numbered).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::sql::{Backend, SqlStore};
use super::{Author, RoomKind, StoreResult};

/// A user's role in a group room, in rank order: each outranks the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomRole {
    Member,
    Moderator,
    /// The room's creator.
    Owner,
}

impl RoomRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomRole::Member => "member",
            RoomRole::Moderator => "moderator",
            RoomRole::Owner => "owner",
        }
    }
}

/// What a sanction takes away: the room (a ban), or speaking in it (a mute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SanctionKind {
    Ban,
    Mute,
}

impl SanctionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SanctionKind::Ban => "ban",
            SanctionKind::Mute => "mute",
        }
    }
    pub(super) fn parse(s: &str) -> Self {
        if s == "ban" {
            SanctionKind::Ban
        } else {
            SanctionKind::Mute
        }
    }
}

/// A ban or mute in force: until when (`None`: until lifted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sanction {
    pub kind: SanctionKind,
    pub until: Option<DateTime<Utc>>,
}

impl Sanction {
    /// Why a sanctioned user is refused, as the client is told: what, where, and until when.
    pub fn reason(&self, room: &str) -> String {
        let until = match self.until {
            Some(until) => format!(
                "until {}",
                until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
            None => "until a moderator lifts it".to_owned(),
        };
        match self.kind {
            SanctionKind::Ban => format!("you are banned from room {room:?} {until}"),
            SanctionKind::Mute => format!("you are muted in room {room:?} {until}"),
        }
    }
}

/// Who acts: the user as shown at the time, and whether they act as a namespace admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub user: Author,
    pub admin: bool,
}

/// One entry of a room's moderation log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModerationRecord {
    pub id: i64,
    pub room: String,
    /// `role`, `kick`, `ban`, `unban`, `mute` or `unmute`.
    pub action: String,
    /// The user acted on.
    pub user_id: String,
    pub by: Author,
    /// The actor acted as a namespace admin.
    pub by_admin: bool,
    /// For `role`: the new role.
    pub role: Option<String>,
    /// For `ban` and `mute`: until when (`None`: until lifted).
    pub until: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    id: i64,
    room: String,
    action: String,
    user_id: String,
    actor_id: String,
    actor_name: String,
    actor_admin: bool,
    role: Option<String>,
    until: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
}

impl From<RecordRow> for ModerationRecord {
    fn from(row: RecordRow) -> Self {
        ModerationRecord {
            id: row.id,
            room: row.room,
            action: row.action,
            user_id: row.user_id,
            by: Author {
                id: row.actor_id,
                name: row.actor_name,
            },
            by_admin: row.actor_admin,
            role: row.role,
            until: row.until,
            at: row.at,
        }
    }
}

/// A moderation action to record.
struct Entry<'a> {
    ns: &'a str,
    room: &'a str,
    action: &'static str,
    user_id: &'a str,
    by: &'a Actor,
    role: Option<&'static str>,
    until: Option<DateTime<Utc>>,
}

/// Moderation. Part of [`super::Store`].
#[async_trait]
pub trait Moderation {
    /// The room's kind and the user's role in it; `None` when the room does not exist. A DM has no roles: both
    /// of its users are members.
    async fn room_role(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> StoreResult<Option<(RoomKind, RoomRole)>>;

    /// Makes the user a moderator or a member (`Owner` is not given: it is the creator), and records it.
    async fn set_role(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        role: RoomRole,
        by: &Actor,
    ) -> StoreResult<()>;

    /// Bans or mutes the user until `until` (`None`: until lifted), replacing a sanction of the same kind, and
    /// records it. A ban also ends a moderator's role.
    async fn sanction(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        sanction: Sanction,
        by: &Actor,
    ) -> StoreResult<()>;

    /// Lifts the user's ban or mute; `false` when none was in force (nothing is recorded then).
    async fn lift_sanction(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        kind: SanctionKind,
        by: &Actor,
    ) -> StoreResult<bool>;

    /// The user's bans and mutes in force in the room now.
    async fn sanctions(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<Vec<Sanction>>;

    /// Records a kick (the membership itself goes with `remove_member`), and ends a moderator's role.
    async fn record_kick(&self, ns: &str, room: &str, user_id: &str, by: &Actor)
    -> StoreResult<()>;

    /// The room's moderation log, newest first, at most `limit` entries.
    async fn moderation_log(
        &self,
        ns: &str,
        room: &str,
        limit: i64,
    ) -> StoreResult<Vec<ModerationRecord>>;
}

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<DateTime<Utc>>: for<'a> Encode<'a, DB>,
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// `INSERT INTO moderation_log`.
    async fn record(tx: &mut DB::Connection, entry: &Entry<'_>) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO moderation_log \
                 (ns, room, action, user_id, actor_id, actor_name, actor_admin, role, until, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(entry.ns)
        .bind(entry.room)
        .bind(entry.action)
        .bind(entry.user_id)
        .bind(entry.by.user.id.as_str())
        .bind(entry.by.user.name.as_str())
        .bind(entry.by.admin)
        .bind(entry.role)
        .bind(entry.until)
        .bind(super::now())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    /// Ends the user's moderator role, if any.
    async fn drop_role(
        tx: &mut DB::Connection,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM room_roles WHERE ns = $1 AND room = $2 AND user_id = $3")
            .bind(ns)
            .bind(room)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl<DB> Moderation for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<DateTime<Utc>>: for<'a> Encode<'a, DB>,
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn room_role(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> StoreResult<Option<(RoomKind, RoomRole)>> {
        let row: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT r.kind, r.created_by, rr.role FROM rooms r \
             LEFT JOIN room_roles rr ON rr.ns = r.ns AND rr.room = r.id AND rr.user_id = $3 \
             WHERE r.ns = $1 AND r.id = $2",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|(kind, creator, role)| {
            let kind = RoomKind::parse(&kind);
            let role = if kind == RoomKind::Dm {
                RoomRole::Member
            } else if creator.as_deref() == Some(user_id) {
                RoomRole::Owner
            } else if role.is_some() {
                RoomRole::Moderator
            } else {
                RoomRole::Member
            };
            (kind, role)
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id, ?role))]
    async fn set_role(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        role: RoomRole,
        by: &Actor,
    ) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        match role {
            RoomRole::Moderator => {
                sqlx::query(
                    "INSERT INTO room_roles (ns, room, user_id, role, granted_by, granted_at) \
                     VALUES ($1, $2, $3, 'moderator', $4, $5) \
                     ON CONFLICT (ns, room, user_id) DO UPDATE \
                         SET granted_by = EXCLUDED.granted_by, granted_at = EXCLUDED.granted_at",
                )
                .bind(ns)
                .bind(room)
                .bind(user_id)
                .bind(by.user.id.as_str())
                .bind(super::now())
                .execute(&mut *tx)
                .await
                .map_err(super::sql::or_no_such_room(room))?;
            }
            RoomRole::Member | RoomRole::Owner => {
                Self::drop_role(&mut tx, ns, room, user_id).await?
            }
        }
        let entry = Entry {
            ns,
            room,
            action: "role",
            user_id,
            by,
            role: Some(role.as_str()),
            until: None,
        };
        Self::record(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id, kind = ?sanction.kind))]
    async fn sanction(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        sanction: Sanction,
        by: &Actor,
    ) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        sqlx::query(
            "INSERT INTO room_sanctions (ns, room, user_id, kind, until, by_id, by_name, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (ns, room, user_id, kind) DO UPDATE SET until = EXCLUDED.until, \
                 by_id = EXCLUDED.by_id, by_name = EXCLUDED.by_name, at = EXCLUDED.at",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .bind(sanction.kind.as_str())
        .bind(sanction.until)
        .bind(by.user.id.as_str())
        .bind(by.user.name.as_str())
        .bind(super::now())
        .execute(&mut *tx)
        .await
        .map_err(super::sql::or_no_such_room(room))?;
        if sanction.kind == SanctionKind::Ban {
            Self::drop_role(&mut tx, ns, room, user_id).await?;
        }
        let entry = Entry {
            ns,
            room,
            action: sanction.kind.as_str(),
            user_id,
            by,
            role: None,
            until: sanction.until,
        };
        Self::record(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id, ?kind))]
    async fn lift_sanction(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        kind: SanctionKind,
        by: &Actor,
    ) -> StoreResult<bool> {
        let mut tx = self.writer().begin().await?;
        // An ended row goes too (it no longer counts); only one in force is a lifting worth recording.
        let removed: Option<(Option<DateTime<Utc>>,)> = sqlx::query_as(
            "DELETE FROM room_sanctions WHERE ns = $1 AND room = $2 AND user_id = $3 AND kind = $4 \
             RETURNING until",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .bind(kind.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let now = super::now();
        let in_force = matches!(removed, Some((until,)) if until.is_none_or(|until| until > now));
        if in_force {
            let entry = Entry {
                ns,
                room,
                action: match kind {
                    SanctionKind::Ban => "unban",
                    SanctionKind::Mute => "unmute",
                },
                user_id,
                by,
                role: None,
                until: None,
            };
            Self::record(&mut tx, &entry).await?;
        }
        tx.commit().await?;
        Ok(in_force)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn sanctions(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<Vec<Sanction>> {
        let rows: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT kind, until FROM room_sanctions \
             WHERE ns = $1 AND room = $2 AND user_id = $3 AND (until IS NULL OR until > $4)",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .bind(super::now())
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, until)| Sanction {
                kind: SanctionKind::parse(&kind),
                until,
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn record_kick(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        by: &Actor,
    ) -> StoreResult<()> {
        let mut tx = self.writer().begin().await?;
        Self::drop_role(&mut tx, ns, room, user_id).await?;
        let entry = Entry {
            ns,
            room,
            action: "kick",
            user_id,
            by,
            role: None,
            until: None,
        };
        Self::record(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn moderation_log(
        &self,
        ns: &str,
        room: &str,
        limit: i64,
    ) -> StoreResult<Vec<ModerationRecord>> {
        let rows: Vec<RecordRow> = sqlx::query_as(
            "SELECT id, room, action, user_id, actor_id, actor_name, actor_admin, role, until, at \
             FROM moderation_log WHERE ns = $1 AND room = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(ns)
        .bind(room)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(ModerationRecord::from).collect())
    }
}
