//! The end of data's life: retention (old messages of a namespace become tombstones), the erasure of a user, and
//! the lease that lets a background job run on one node at a time (the tables: `migrations/*/0010_lifecycle.sql`).
//!
//! Both expire text through the delete path's rules (`changes.rs`): the room row is locked first (the lock that
//! orders its sends and changes), each message turned into a tombstone takes the room's next revision, and its
//! reactions go with its text. So clients catch up on an expiry or an erasure through the change feed, seq stays
//! gap-free, and a server running on the same database meanwhile (another process: `palaver user erase`) is never
//! raced: every statement here is a transaction of the same kind as a `message:delete`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::StoreResult;
use super::sql::{Backend, SqlStore};

/// What one call of [`Lifecycle::expire_messages`] did in a room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Messages turned into tombstones.
    pub tombstoned: u64,
    /// The room may hold more messages old enough to expire: call again.
    pub more: bool,
}

/// What an erasure removed in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceErasure {
    pub namespace: String,
    /// The user's messages turned into tombstones (text, reply and reactions gone).
    pub messages_tombstoned: u64,
    /// The user's messages that were tombstones already, whose display name and client id were still kept.
    pub tombstones_scrubbed: u64,
    /// The user's reactions to other messages.
    pub reactions_removed: u64,
    /// Rooms and DMs the user was a member of (their read state went with the membership).
    pub memberships_removed: u64,
    /// Open invitations to the user.
    pub invitations_removed: u64,
    /// Invitations the user sent that no longer name them.
    pub invitations_unnamed: u64,
    /// The user's moderator roles.
    pub roles_removed: u64,
    /// Bans and mutes of the user.
    pub sanctions_removed: u64,
    /// Moderation log entries about the user removed, and entries by the user that no longer name them.
    pub moderation_entries_removed: u64,
    pub moderation_entries_unnamed: u64,
    /// Blocks by or of the user.
    pub blocks_removed: u64,
    /// Rooms the user created, which have no owner now.
    pub rooms_disowned: u64,
    /// The rooms whose messages changed (tombstones, reactions): clients catch up on them.
    pub rooms_changed: Vec<String>,
}

/// What [`Lifecycle::erase_user`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub user: String,
    /// Every namespace looked at (all of the database's, unless one was named).
    pub namespaces: Vec<NamespaceErasure>,
    /// Refresh tokens of palaver's sessions deleted (only when erasing from every namespace: sessions are not
    /// per namespace).
    pub refresh_tokens_removed: u64,
}

impl Erasure {
    /// Everything the erasure touched, summed over namespaces.
    pub fn total(&self) -> NamespaceErasure {
        let mut sum = NamespaceErasure {
            namespace: "*".to_owned(),
            ..Default::default()
        };
        for ns in &self.namespaces {
            sum.messages_tombstoned += ns.messages_tombstoned;
            sum.tombstones_scrubbed += ns.tombstones_scrubbed;
            sum.reactions_removed += ns.reactions_removed;
            sum.memberships_removed += ns.memberships_removed;
            sum.invitations_removed += ns.invitations_removed;
            sum.invitations_unnamed += ns.invitations_unnamed;
            sum.roles_removed += ns.roles_removed;
            sum.sanctions_removed += ns.sanctions_removed;
            sum.moderation_entries_removed += ns.moderation_entries_removed;
            sum.moderation_entries_unnamed += ns.moderation_entries_unnamed;
            sum.blocks_removed += ns.blocks_removed;
            sum.rooms_disowned += ns.rooms_disowned;
            sum.rooms_changed.extend(ns.rooms_changed.iter().cloned());
        }
        sum
    }
}

/// Retention, erasure and job leases. Part of [`super::Store`].
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Claims the job `name` for `node` until `lease_until`, if it is due (never run, or last run at or before
    /// `due_before`) and no other node holds an unexpired lease on it. At most one node wins.
    async fn claim_job(
        &self,
        name: &str,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// `node` finished the job it claimed: records the run and gives up the lease.
    async fn finish_job(
        &self,
        name: &str,
        node: &str,
        now: DateTime<Utc>,
        result: &str,
    ) -> StoreResult<()>;

    /// Rooms of the namespace whose first message past the expiry watermark was sent before `cutoff`, in id
    /// order after `after`, at most `limit`.
    async fn rooms_to_expire(
        &self,
        ns: &str,
        cutoff: DateTime<Utc>,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<String>>;

    /// Turns the room's messages sent before `cutoff` into tombstones, oldest first, at most `limit` of them from
    /// its watermark on, each under the room's next revision; moves the watermark past them.
    async fn expire_messages(
        &self,
        ns: &str,
        room: &str,
        cutoff: DateTime<Utc>,
        limit: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Expired>;

    /// Deletes the namespace's webhook outbox rows (delivered, pending or dead letters) created before `cutoff`:
    /// their payloads carry message text. How many went.
    async fn expire_hooks(&self, ns: &str, cutoff: DateTime<Utc>) -> StoreResult<u64>;

    /// Erases the user from the namespace `ns`, or from every namespace: their messages become tombstones
    /// (display name and client id gone too), their reactions, memberships (and so read state), invitations,
    /// roles, sanctions, blocks and the moderation log's entries about them are deleted, and what names them
    /// elsewhere (invitations and moderation entries they made) no longer does; erasing from every namespace also
    /// deletes their refresh tokens.
    async fn erase_user(
        &self,
        user_id: &str,
        ns: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<Erasure>;
}

/// Locks the room row (the lock every send and change of the room takes first) and reads its revision and expiry
/// watermark, without changing them yet: the number of revisions to take is known only once the rows are read
/// under the lock. On SQLite this first write also takes the database's write lock, so the transaction cannot
/// fail to upgrade later.
const LOCK_ROOM: &str = "UPDATE rooms SET last_rev = last_rev WHERE ns = $1 AND id = $2 \
     RETURNING last_rev, expired_through";

#[async_trait]
impl<DB> Lifecycle for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    #[tracing::instrument(level = "debug", skip_all, fields(%name, %node))]
    async fn claim_job(
        &self,
        name: &str,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        due_before: DateTime<Utc>,
    ) -> StoreResult<bool> {
        sqlx::query("INSERT INTO jobs (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(name)
            .execute(self.writer())
            .await?;
        // One conditional update: the row lock (Postgres) or the write lock (SQLite) makes a second node's
        // update see the first one's lease and match nothing.
        let claimed = sqlx::query(
            "UPDATE jobs SET leased_by = $2, leased_until = $3 \
             WHERE name = $1 AND (leased_until IS NULL OR leased_until < $4 OR leased_by = $2) \
               AND (last_run_at IS NULL OR last_run_at <= $5)",
        )
        .bind(name)
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(due_before)
        .execute(self.writer())
        .await?;
        Ok(DB::rows_affected(&claimed) == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%name, %node))]
    async fn finish_job(
        &self,
        name: &str,
        node: &str,
        now: DateTime<Utc>,
        result: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET last_run_at = $3, last_result = $4, leased_by = NULL, leased_until = NULL \
             WHERE name = $1 AND leased_by = $2",
        )
        .bind(name)
        .bind(node)
        .bind(now)
        .bind(result)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns))]
    async fn rooms_to_expire(
        &self,
        ns: &str,
        cutoff: DateTime<Utc>,
        after: &str,
        limit: i64,
    ) -> StoreResult<Vec<String>> {
        // One lookup by key per room: the message right after the watermark. A room with nothing old to expire
        // costs that, and is never locked.
        Ok(sqlx::query_scalar(
            "SELECT r.id FROM rooms r \
             JOIN messages m ON m.ns = r.ns AND m.room = r.id AND m.seq = r.expired_through + 1 \
             WHERE r.ns = $1 AND r.id > $2 AND r.last_seq > r.expired_through AND m.created_at < $3 \
             ORDER BY r.id LIMIT $4",
        )
        .bind(ns)
        .bind(after)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(self.reader())
        .await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn expire_messages(
        &self,
        ns: &str,
        room: &str,
        cutoff: DateTime<Utc>,
        limit: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Expired> {
        let mut tx = self.writer().begin().await?;
        let locked: Option<(i64, i64)> = sqlx::query_as(LOCK_ROOM)
            .bind(ns)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((rev, through)) = locked else {
            return Ok(Expired::default());
        };
        // The next messages from the watermark on, by the (ns, room, seq) key: those sent before the cutoff are a
        // prefix (messages are numbered in commit order, and stamped when their batch commits).
        let rows: Vec<(i64, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT seq, created_at, (deleted_at IS NULL) FROM messages \
             WHERE ns = $1 AND room = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(ns)
        .bind(room)
        .bind(through)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let old: Vec<(i64, bool)> = rows
            .iter()
            .take_while(|(_, created_at, _)| *created_at < cutoff)
            .map(|(seq, _, live)| (*seq, *live))
            .collect();
        let Some(&(last, _)) = old.last() else {
            tx.rollback().await?;
            return Ok(Expired::default());
        };
        let live: Vec<i64> = old
            .iter()
            .filter(|(_, live)| *live)
            .map(|(seq, _)| *seq)
            .collect();
        let rev = super::changes::tombstone_all::<DB>(&mut tx, ns, room, rev, &live, at).await?;
        sqlx::query("DELETE FROM reactions WHERE ns = $1 AND room = $2 AND seq > $3 AND seq <= $4")
            .bind(ns)
            .bind(room)
            .bind(through)
            .bind(last)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE rooms SET last_rev = $3, expired_through = $4 WHERE ns = $1 AND id = $2",
        )
        .bind(ns)
        .bind(room)
        .bind(rev)
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Expired {
            tombstoned: live.len() as u64,
            // Stopped by the limit rather than by a young message: there may be more.
            more: old.len() == rows.len() && rows.len() as i64 == limit,
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns))]
    async fn expire_hooks(&self, ns: &str, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM webhook_outbox WHERE ns = $1 AND created_at < $2")
            .bind(ns)
            .bind(cutoff)
            .execute(self.writer())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = %user_id))]
    async fn erase_user(
        &self,
        user_id: &str,
        ns: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<Erasure> {
        let namespaces: Vec<String> = match ns {
            Some(ns) => vec![ns.to_owned()],
            None => {
                sqlx::query_scalar("SELECT DISTINCT ns FROM rooms ORDER BY ns")
                    .fetch_all(self.reader())
                    .await?
            }
        };
        let mut erasure = Erasure {
            user: user_id.to_owned(),
            ..Default::default()
        };
        for ns in namespaces {
            erasure
                .namespaces
                .push(self.erase_in_namespace(&ns, user_id, at).await?);
        }
        if ns.is_none() {
            let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
                .bind(user_id)
                .execute(self.writer())
                .await?;
            erasure.refresh_tokens_removed = DB::rows_affected(&tokens);
        }
        Ok(erasure)
    }
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
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// [`Lifecycle::erase_user`] in one namespace: the messages and reactions room by room (each room one
    /// transaction, as a delete), then everything else, one statement each.
    async fn erase_in_namespace(
        &self,
        ns: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<NamespaceErasure> {
        let mut report = NamespaceErasure {
            namespace: ns.to_owned(),
            ..Default::default()
        };
        // Messages have no index by sender: erasure is rare, and one scan of the namespace's messages is cheaper
        // than an index every send would pay for.
        let rooms: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT room FROM messages WHERE ns = $1 AND sender_id = $2 \
             UNION SELECT DISTINCT room FROM reactions WHERE ns = $1 AND user_id = $2 ORDER BY 1",
        )
        .bind(ns)
        .bind(user_id)
        .fetch_all(self.reader())
        .await?;
        for room in rooms {
            let (tombstoned, scrubbed, reactions) =
                self.erase_in_room(ns, &room, user_id, at).await?;
            report.messages_tombstoned += tombstoned;
            report.tombstones_scrubbed += scrubbed;
            report.reactions_removed += reactions;
            if tombstoned + reactions > 0 {
                report.rooms_changed.push(room);
            }
        }
        let mut tx = self.writer().begin().await?;
        let count = |done: &DB::QueryResult| DB::rows_affected(done);
        let memberships: Vec<String> = sqlx::query_scalar(
            "DELETE FROM memberships WHERE ns = $1 AND user_id = $2 RETURNING state",
        )
        .bind(ns)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        report.memberships_removed = memberships.iter().filter(|s| *s == "joined").count() as u64;
        report.invitations_removed = memberships.len() as u64 - report.memberships_removed;
        let statements: [(&str, &mut u64); 9] = [
            (
                "UPDATE memberships SET invited_by_name = NULL WHERE ns = $1 AND invited_by = $2 \
                 AND invited_by_name IS NOT NULL",
                &mut report.invitations_unnamed,
            ),
            (
                "DELETE FROM room_roles WHERE ns = $1 AND user_id = $2",
                &mut report.roles_removed,
            ),
            (
                "DELETE FROM room_sanctions WHERE ns = $1 AND user_id = $2",
                &mut report.sanctions_removed,
            ),
            (
                "DELETE FROM moderation_log WHERE ns = $1 AND user_id = $2",
                &mut report.moderation_entries_removed,
            ),
            (
                "UPDATE moderation_log SET actor_name = '' WHERE ns = $1 AND actor_id = $2 AND actor_name <> ''",
                &mut report.moderation_entries_unnamed,
            ),
            (
                "DELETE FROM user_blocks WHERE ns = $1 AND (blocker_id = $2 OR blocked_id = $2)",
                &mut report.blocks_removed,
            ),
            (
                "UPDATE rooms SET created_by = NULL WHERE ns = $1 AND created_by = $2",
                &mut report.rooms_disowned,
            ),
            // Sanctions the user placed on others stay in force, without the user's name.
            (
                "UPDATE room_sanctions SET by_name = '' WHERE ns = $1 AND by_id = $2 AND by_name <> ''",
                &mut 0,
            ),
            // Room roles the user granted stay, naming nobody.
            (
                "UPDATE room_roles SET granted_by = '' WHERE ns = $1 AND granted_by = $2",
                &mut 0,
            ),
        ];
        for (sql, counter) in statements {
            let done = sqlx::query(sql)
                .bind(ns)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            *counter = count(&done);
        }
        tx.commit().await?;
        Ok(report)
    }

    /// The user's messages and reactions in one room, in one transaction under the room's lock: (messages
    /// tombstoned, tombstones scrubbed, reactions removed).
    async fn erase_in_room(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<(u64, u64, u64)> {
        let mut tx = self.writer().begin().await?;
        let locked: Option<(i64, i64)> = sqlx::query_as(LOCK_ROOM)
            .bind(ns)
            .bind(room)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((rev, _)) = locked else {
            return Ok((0, 0, 0));
        };
        let live: Vec<i64> = sqlx::query_scalar(
            "SELECT seq FROM messages WHERE ns = $1 AND room = $2 AND sender_id = $3 AND deleted_at IS NULL \
             ORDER BY seq",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let rev = super::changes::tombstone_all::<DB>(&mut tx, ns, room, rev, &live, at).await?;
        // Reactions on the user's messages go with their text; the user's reactions elsewhere each change a
        // message, which takes a revision of its own.
        sqlx::query(
            "DELETE FROM reactions WHERE ns = $1 AND room = $2 \
             AND seq IN (SELECT seq FROM messages WHERE ns = $1 AND room = $2 AND sender_id = $3)",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let reacted: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM reactions WHERE ns = $1 AND room = $2 AND user_id = $3 RETURNING seq",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = reacted.clone();
        changed.sort_unstable();
        changed.dedup();
        let mut rev = rev;
        for seq in changed {
            rev += 1;
            sqlx::query("UPDATE messages SET rev = $4 WHERE ns = $1 AND room = $2 AND seq = $3")
                .bind(ns)
                .bind(room)
                .bind(seq)
                .bind(rev)
                .execute(&mut *tx)
                .await?;
        }
        // Who sent a tombstone is kept for the room's order (the id the host gave); the display name and the
        // retry key go, also on messages deleted before.
        let scrubbed = sqlx::query(
            "UPDATE messages SET sender_name = '', client_id = NULL, room_client_id = NULL \
             WHERE ns = $1 AND room = $2 AND sender_id = $3 \
               AND (sender_name <> '' OR client_id IS NOT NULL OR room_client_id IS NOT NULL)",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE rooms SET last_rev = $3 WHERE ns = $1 AND id = $2")
            .bind(ns)
            .bind(room)
            .bind(rev)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let tombstoned = live.len() as u64;
        Ok((
            tombstoned,
            DB::rows_affected(&scrubbed).saturating_sub(tombstoned),
            reacted.len() as u64,
        ))
    }
}
