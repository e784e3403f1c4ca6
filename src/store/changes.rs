//! Changes to stored messages and read positions: edits, deletes (tombstones), reactions, replies' quoted
//! messages, each member's read position, and the per-room change feed a catch-up reads (the tables:
//! `migrations/*/0007_message_changes.sql`).
//!
//! The change feed: every edit, delete and reaction change of a room takes the room's next revision
//! (`rooms.last_rev`) in the transaction that makes it, which first locks the room row with that very update; the
//! message keeps the revision of its latest change (`messages.rev`). So revisions grow in commit order, as seq
//! does, and "the messages of this room at or below seq S changed after revision R" is a correct query: a client
//! that holds revision R of a room and comes back gets each message changed since, once, in its current state.
//! Sends never touch either: a new message has no revision.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type};
use tokio::sync::oneshot;

use super::sql::{Backend, SqlStore};
use super::{HistoryPage, HistoryQuery, Message, MessageRow, StoreError, StoreResult};

/// Characters of the replied-to message a reply quotes (`replyTo.excerpt`); the SQL that reads it (`SUBSTR(…, 1,
/// 100)` in `sql.rs`) uses the same number.
pub const EXCERPT_CHARS: usize = 100;
/// Most different emoji one message may carry; one more is `too_large`.
pub const MAX_EMOJI_PER_MESSAGE: i64 = 20;
/// Where `unread` stops counting (the SQL in `sql.rs`'s summary columns and in [`Changes::room_state`] says the same
/// number, as `LIMIT 100`), so that counting reads at most that many index entries a room however long the backlog:
/// 100 means "100 or more".
pub const UNREAD_COUNTED: i64 = 100;

/// The message a reply answers, as the reply shows it: read from that message whenever the reply is read, so an
/// edit shows in the excerpt and a delete empties it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplyTo {
    pub seq: i64,
    pub from: super::Author,
    /// The first [`EXCERPT_CHARS`] characters of its current text; empty once it is deleted.
    pub excerpt: String,
    /// The message replied to has been deleted since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl ReplyTo {
    /// How a reply shows `message` (when sent: the ack and the broadcast; history reads it anew).
    pub fn quoting(message: &Message) -> Self {
        Self {
            seq: message.seq,
            from: message.from.clone(),
            excerpt: excerpt(&message.text),
            deleted: message.deleted,
        }
    }
}

/// The first [`EXCERPT_CHARS`] characters of a text, as the SQL `SUBSTR(text, 1, 100)` cuts them.
pub fn excerpt(text: &str) -> String {
    text.chars().take(EXCERPT_CHARS).collect()
}

/// One emoji's reactions on a message, as one user sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    /// The user reading it is one of those who reacted.
    pub me: bool,
}

/// What a reaction change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reacted {
    /// Added or removed: the room's revision of the change.
    Changed { rev: i64 },
    /// The user had already reacted so (add), or had not (remove): nothing changed.
    Unchanged,
    /// No such message, or it is deleted.
    NoMessage,
    /// The message already carries [`MAX_EMOJI_PER_MESSAGE`] other emoji.
    TooMany,
}

/// What marking a room read did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMark {
    /// The user's read position moved up to the seq.
    Moved,
    /// It already was at or past it: it never moves back.
    Unchanged,
    /// The user is not a member of the room (a guest in a public room keeps no read state).
    NotMember,
    /// The room has no message with that seq yet.
    NoSuchMessage,
}

/// A user's view of a room for a catch-up: the room's revision, and the user's read state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoomState {
    /// The room's change revision: the cursor of its change feed.
    pub rev: i64,
    /// The seq the user has read up to (0: nothing, or not a member).
    pub last_read: i64,
    /// Messages of others after `last_read`, deleted ones left out, up to [`UNREAD_COUNTED`].
    pub unread: i64,
}

/// Where another member has read up to (a read receipt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadPosition {
    pub user: crate::auth::User,
    pub seq: i64,
    pub at: Option<DateTime<Utc>>,
}

/// Changes to stored messages and read positions (implemented once in SQL for both backends, below).
#[async_trait]
pub trait Changes: Send + Sync {
    /// A room's history page as `viewer` sees it: each message in its current state, with its reactions
    /// (`me` for the viewer's own) and, for a reply, the message it answers.
    async fn history_for(
        &self,
        ns: &str,
        room: &str,
        query: HistoryQuery,
        viewer: &str,
    ) -> StoreResult<HistoryPage>;

    /// One stored message in its current state (without reactions): `None` if the room has no message with that
    /// seq (a namespace that keeps no history has none).
    async fn message(&self, ns: &str, room: &str, seq: i64) -> StoreResult<Option<Message>>;

    /// Replaces the text of the message `seq`, written by `author_id` and not deleted, and gives it the room's
    /// next revision. Returns it (without reactions), or `None` when no such message is there any more (deleted
    /// meanwhile).
    async fn edit_message(
        &self,
        ns: &str,
        room: &str,
        seq: i64,
        author_id: &str,
        text: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Message>>;

    /// Turns the message into a tombstone (its text, reply and reactions gone; its seq, sender and client id
    /// kept) under the room's next revision: that revision, or `None` if it was deleted already or is not there.
    async fn delete_message(
        &self,
        ns: &str,
        room: &str,
        seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<i64>>;

    /// Adds (`added`) or removes the user's `emoji` reaction to the message; a change takes the room's next
    /// revision.
    async fn react(
        &self,
        ns: &str,
        room: &str,
        seq: i64,
        user_id: &str,
        emoji: &str,
        added: bool,
    ) -> StoreResult<Reacted>;

    /// Moves the member's read position up to `seq` (never back).
    async fn mark_read(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<ReadMark>;

    /// The room's revision and the user's read state in it; `None` if there is no such room. The revision is
    /// read first: read before a catch-up's messages, it is a cursor that misses no change.
    async fn room_state(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> StoreResult<Option<RoomState>>;

    /// The messages at or below `up_to_seq` changed after revision `after_rev`, in their current state as
    /// `viewer` sees them, in revision order, at most `limit` (`has_more` says more were changed).
    async fn changed_messages(
        &self,
        ns: &str,
        room: &str,
        up_to_seq: i64,
        after_rev: i64,
        limit: u32,
        viewer: &str,
    ) -> StoreResult<HistoryPage>;

    /// Where the other members have read up to, most recent first, at most `limit`; members who have read
    /// nothing are left out.
    async fn read_positions(
        &self,
        ns: &str,
        room: &str,
        except_user: &str,
        limit: i64,
    ) -> StoreResult<Vec<ReadPosition>>;
}

/// Every message column, with the replied-to message `p` for a reply's excerpt, for messages `m`, from `FROM` on:
/// as a literal for `concat!` (also used by `sql.rs`).
macro_rules! message_columns_with_replies {
    () => {
        "m.id, m.room, m.seq, m.sender_id, m.sender_name, m.text, m.client_id, m.created_at, \
         m.edited_at, (m.deleted_at IS NOT NULL) AS deleted, m.rev, m.reply_to, \
         p.sender_id AS reply_sender_id, p.sender_name AS reply_sender_name, \
         SUBSTR(p.text, 1, 100) AS reply_excerpt, (p.deleted_at IS NOT NULL) AS reply_deleted \
         FROM messages m \
         LEFT JOIN messages p ON p.ns = m.ns AND p.room = m.room AND p.seq = m.reply_to "
    };
}
pub(super) use message_columns_with_replies;

/// `SELECT` [`message_columns_with_replies!`], as a literal for `concat!`.
macro_rules! select_messages_with_replies {
    () => {
        concat!("SELECT ", message_columns_with_replies!())
    };
}
pub(super) use select_messages_with_replies;

/// Bumps the room's revision, locking its row until the transaction ends: the first statement of every change,
/// so that a room's changes take their revisions, and commit, one after the other (and always lock the room
/// before any of its messages, as the batch writer does, so they cannot deadlock). `None`: no such room.
const BUMP_REV: &str =
    "UPDATE rooms SET last_rev = last_rev + 1 WHERE ns = $1 AND id = $2 RETURNING last_rev";

/// Empties the live message `$3` into a tombstone under revision `$5`, deleted at `$4`: the text goes for good, a
/// tombstone keeps only what the room's order and the sender's retries need. A delete, retention and erasure
/// all make tombstones with it.
const TOMBSTONE: &str = "UPDATE messages SET text = '', reply_to = NULL, deleted_at = $4, rev = $5 \
     WHERE ns = $1 AND room = $2 AND seq = $3 AND deleted_at IS NULL";

#[async_trait]
impl<DB> Changes for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn history_for(
        &self,
        ns: &str,
        room: &str,
        query: HistoryQuery,
        viewer: &str,
    ) -> StoreResult<HistoryPage> {
        self.read_history(ns, room, query, Some(viewer)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, seq))]
    async fn message(&self, ns: &str, room: &str, seq: i64) -> StoreResult<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            select_messages_with_replies!(),
            "WHERE m.ns = $1 AND m.room = $2 AND m.seq = $3"
        ))
        .bind(ns)
        .bind(room)
        .bind(seq)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Message::from))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, seq))]
    async fn edit_message(
        &self,
        ns: &str,
        room: &str,
        seq: i64,
        author_id: &str,
        text: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<Message>> {
        let edited = self
            .revise(ns, room, async |tx, rev| {
                let edited = sqlx::query(
                    "UPDATE messages SET text = $4, edited_at = $5, rev = $6 \
                     WHERE ns = $1 AND room = $2 AND seq = $3 AND sender_id = $7 AND deleted_at IS NULL",
                )
                .bind(ns)
                .bind(room)
                .bind(seq)
                .bind(text)
                .bind(at)
                .bind(rev)
                .bind(author_id)
                .execute(&mut *tx)
                .await?;
                if DB::rows_affected(&edited) == 0 {
                    return Ok(Revised::Undo(None));
                }
                DB::index_edited_text(&mut *tx, ns, room, seq, text).await?;
                let row: Option<MessageRow> = sqlx::query_as(concat!(
                    select_messages_with_replies!(),
                    "WHERE m.ns = $1 AND m.room = $2 AND m.seq = $3"
                ))
                .bind(ns)
                .bind(room)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
                Ok(Revised::Keep(row.map(Message::from)))
            })
            .await?;
        Ok(edited.flatten())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, seq))]
    async fn delete_message(
        &self,
        ns: &str,
        room: &str,
        seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<i64>> {
        let deleted = self
            .revise(ns, room, async |tx, rev| {
                if !tombstone::<DB>(tx, ns, room, seq, at, rev).await? {
                    return Ok(Revised::Undo(None));
                }
                sqlx::query("DELETE FROM reactions WHERE ns = $1 AND room = $2 AND seq = $3")
                    .bind(ns)
                    .bind(room)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                Ok(Revised::Keep(Some(rev)))
            })
            .await?;
        Ok(deleted.flatten())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, seq, added))]
    async fn react(
        &self,
        ns: &str,
        room: &str,
        seq: i64,
        user_id: &str,
        emoji: &str,
        added: bool,
    ) -> StoreResult<Reacted> {
        let reacted = self
            .revise(ns, room, async |tx, rev| {
                let live: Option<bool> = sqlx::query_scalar(
                    "SELECT (deleted_at IS NULL) FROM messages WHERE ns = $1 AND room = $2 AND seq = $3",
                )
                .bind(ns)
                .bind(room)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
                if live != Some(true) {
                    return Ok(Revised::Undo(Reacted::NoMessage));
                }
                let changed = if added {
                    // A new emoji only while the message carries fewer than the most allowed; one it carries
                    // already can always be added (the room lock keeps the count from racing).
                    sqlx::query(
                        "INSERT INTO reactions (ns, room, seq, emoji, user_id, created_at) \
                         SELECT $1, $2, $3, $4, $5, $6 \
                         WHERE EXISTS (SELECT 1 FROM reactions WHERE ns = $1 AND room = $2 AND seq = $3 AND emoji = $4) \
                            OR (SELECT COUNT(DISTINCT emoji) FROM reactions WHERE ns = $1 AND room = $2 AND seq = $3) < $7 \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(ns)
                    .bind(room)
                    .bind(seq)
                    .bind(emoji)
                    .bind(user_id)
                    .bind(super::now())
                    .bind(MAX_EMOJI_PER_MESSAGE)
                    .execute(&mut *tx)
                    .await?
                } else {
                    sqlx::query(
                        "DELETE FROM reactions WHERE ns = $1 AND room = $2 AND seq = $3 AND emoji = $4 AND user_id = $5",
                    )
                    .bind(ns)
                    .bind(room)
                    .bind(seq)
                    .bind(emoji)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                };
                if DB::rows_affected(&changed) == 0 {
                    let had: Option<i64> = sqlx::query_scalar(
                        "SELECT seq FROM reactions WHERE ns = $1 AND room = $2 AND seq = $3 AND emoji = $4 AND user_id = $5",
                    )
                    .bind(ns)
                    .bind(room)
                    .bind(seq)
                    .bind(emoji)
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    // Adding that was not written: either the user had reacted so already, or the emoji was one
                    // too many.
                    return Ok(Revised::Undo(if added && had.is_none() {
                        Reacted::TooMany
                    } else {
                        Reacted::Unchanged
                    }));
                }
                sqlx::query("UPDATE messages SET rev = $4 WHERE ns = $1 AND room = $2 AND seq = $3")
                    .bind(ns)
                    .bind(room)
                    .bind(seq)
                    .bind(rev)
                    .execute(&mut *tx)
                    .await?;
                Ok(Revised::Keep(Reacted::Changed { rev }))
            })
            .await?;
        Ok(reacted.unwrap_or(Reacted::NoMessage))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id, seq))]
    async fn mark_read(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        seq: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<ReadMark> {
        let moved = self
            .reads
            .submit(|reply| PendingRead {
                ns: ns.to_owned(),
                room: room.to_owned(),
                user_id: user_id.to_owned(),
                seq,
                at,
                reply,
            })
            .await?;
        if moved {
            return Ok(ReadMark::Moved);
        }
        // Nothing moved: say why (the common case, an older seq, costs this one read).
        let found: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT r.last_seq, m.state FROM rooms r \
             LEFT JOIN memberships m ON m.ns = r.ns AND m.room = r.id AND m.user_id = $3 \
             WHERE r.ns = $1 AND r.id = $2",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match found {
            None => return Err(StoreError::NoSuchRoom(room.to_owned())),
            Some((last_seq, _)) if seq > last_seq => ReadMark::NoSuchMessage,
            Some((_, state)) if state.as_deref() != Some("joined") => ReadMark::NotMember,
            Some(_) => ReadMark::Unchanged,
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn room_state(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> StoreResult<Option<RoomState>> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT r.last_rev, \
                    CASE WHEN m.state = 'joined' THEN m.last_read ELSE 0 END, \
                    CASE WHEN m.state = 'joined' THEN \
                        (SELECT COUNT(*) FROM (SELECT 1 FROM messages x WHERE x.ns = r.ns AND x.room = r.id \
                         AND x.seq > m.last_read AND x.sender_id <> m.user_id AND x.deleted_at IS NULL \
                         LIMIT 100) AS u) \
                    ELSE 0 END \
             FROM rooms r LEFT JOIN memberships m ON m.ns = r.ns AND m.room = r.id AND m.user_id = $3 \
             WHERE r.ns = $1 AND r.id = $2",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(rev, last_read, unread)| RoomState {
            rev,
            last_read,
            unread,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, after_rev))]
    async fn changed_messages(
        &self,
        ns: &str,
        room: &str,
        up_to_seq: i64,
        after_rev: i64,
        limit: u32,
        viewer: &str,
    ) -> StoreResult<HistoryPage> {
        // On the partial index messages_changed: only changed messages have an entry.
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            select_messages_with_replies!(),
            "WHERE m.ns = $1 AND m.room = $2 AND m.rev IS NOT NULL AND m.rev > $3 AND m.seq <= $4 \
             ORDER BY m.rev LIMIT $5"
        ))
        .bind(ns)
        .bind(room)
        .bind(after_rev)
        .bind(up_to_seq)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut messages: Vec<Message> = rows.into_iter().map(Message::from).collect();
        let has_more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        self.attach_reactions(ns, room, &mut messages, Some(viewer))
            .await?;
        Ok(HistoryPage { messages, has_more })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn read_positions(
        &self,
        ns: &str,
        room: &str,
        except_user: &str,
        limit: i64,
    ) -> StoreResult<Vec<ReadPosition>> {
        let rows: Vec<(String, String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT user_id, user_name, last_read, last_read_at FROM memberships \
             WHERE ns = $1 AND room = $2 AND state = 'joined' AND user_id <> $3 AND last_read > 0 \
             ORDER BY (last_read_at IS NULL), last_read_at DESC, user_id LIMIT $4",
        )
        .bind(ns)
        .bind(room)
        .bind(except_user)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, seq, at)| ReadPosition {
                user: crate::auth::User {
                    anonymous: crate::auth::is_guest_id(&id),
                    id,
                    name,
                },
                seq,
                at,
            })
            .collect())
    }
}

/// [`BUMP_REV`] in the transaction: the room's new revision, or `None` if there is no such room.
async fn bump_rev<DB>(tx: &mut DB::Connection, ns: &str, room: &str) -> StoreResult<Option<i64>>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    Ok(sqlx::query_scalar(BUMP_REV)
        .bind(ns)
        .bind(room)
        .fetch_optional(&mut *tx)
        .await?)
}

/// Turns the messages `seqs` (live, in seq order, of a room locked at revision `rev`) into tombstones, each under
/// the next revision: the room's new revision.
pub(super) async fn tombstone_all<DB>(
    tx: &mut DB::Connection,
    ns: &str,
    room: &str,
    mut rev: i64,
    seqs: &[i64],
    at: DateTime<Utc>,
) -> StoreResult<i64>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + Type<DB>,
{
    for &seq in seqs {
        rev += 1;
        tombstone::<DB>(tx, ns, room, seq, at, rev).await?;
    }
    Ok(rev)
}

/// [`TOMBSTONE`] for the message `seq` under revision `rev`: whether it was live (and is a tombstone now).
async fn tombstone<DB>(
    tx: &mut DB::Connection,
    ns: &str,
    room: &str,
    seq: i64,
    at: DateTime<Utc>,
    rev: i64,
) -> StoreResult<bool>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + Type<DB>,
{
    let done = sqlx::query(TOMBSTONE)
        .bind(ns)
        .bind(room)
        .bind(seq)
        .bind(at)
        .bind(rev)
        .execute(&mut *tx)
        .await?;
    Ok(DB::rows_affected(&done) == 1)
}

/// How long the read writer gathers `room:read`s before it commits them. Reads come one by one, each client's
/// at most about once a second: committed as they came, nearly every read took a commit of its own (BENCHMARKS.md
/// §10). A read's ack, and the `read` events that follow it, wait up to this much longer; a badge does not notice.
pub(super) const READS_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// One `room:read` waiting for the read writer ([`SqlStore::commit_reads`]): answered with whether the member's
/// read position moved to `seq`.
pub struct PendingRead {
    pub ns: String,
    pub room: String,
    pub user_id: String,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub reply: oneshot::Sender<StoreResult<bool>>,
}

impl PendingRead {
    /// Whose read position it moves, and where.
    fn key(&self) -> (&str, &str, &str) {
        (&self.ns, &self.room, &self.user_id)
    }
}

/// Moves a member's read position to `$4` at `$5`: forward only, to a message the room has, for a joined member.
const MOVE_READ: &str = "UPDATE memberships SET last_read = $4, last_read_at = $5 \
     WHERE ns = $1 AND room = $2 AND user_id = $3 AND state = 'joined' AND last_read < $4 \
       AND $4 <= (SELECT last_seq FROM rooms WHERE ns = $1 AND id = $2)";

/// What a change made under a room's revision ([`SqlStore::revise`]) does with its transaction.
enum Revised<T> {
    /// It changed something: commit, the revision with it.
    Keep(T),
    /// Nothing changed: roll back, so the revision is not spent.
    Undo(T),
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
    /// The read writer's batch: every read position of the batch moved by one statement and one commit (the
    /// conditions of [`MOVE_READ`], per row), where one commit per `room:read` cost a busy room more than its
    /// messages (BENCHMARKS.md §10). Of several reads of one member and room in a batch only the highest seq is
    /// written; the others are answered as not moved, which they are not once it commits. If the statement fails
    /// (say, a deadlock with another node's batch over a user's two devices), each read is written alone.
    pub(super) async fn commit_reads(pool: Pool<DB>, batch: Vec<PendingRead>) {
        let mut highest: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for (i, pending) in batch.iter().enumerate() {
            let slot = highest.entry(pending.key()).or_insert(i);
            if batch[*slot].seq < pending.seq {
                *slot = i;
            }
        }
        let mut rows: Vec<usize> = highest.values().copied().collect();
        // A fixed order, so two batches touching the same rows usually lock them alike.
        rows.sort_unstable_by_key(|&i| batch[i].key());
        // The reads written and moved, by their place in the batch.
        let moved = Self::move_reads(&pool, &batch, &rows).await.map(|moved| {
            moved
                .iter()
                .filter_map(|(ns, room, user)| {
                    highest.get(&(ns.as_str(), room.as_str(), user.as_str()))
                })
                .copied()
                .collect::<HashSet<usize>>()
        });
        let error = match moved {
            Ok(moved) => {
                for (i, pending) in batch.into_iter().enumerate() {
                    // The reader may have gone away; its position is stored all the same.
                    let _ = pending.reply.send(Ok(moved.contains(&i)));
                }
                return;
            }
            Err(error) => error,
        };
        if matches!(error, StoreError::Unavailable(_)) {
            let reason = error.to_string();
            for pending in batch {
                let _ = pending.reply.send(Err(StoreError::Failed {
                    unavailable: true,
                    reason: reason.clone(),
                }));
            }
            return;
        }
        tracing::debug!(%error, reads = batch.len(), "read batch failed; writing each alone");
        for pending in batch {
            let moved = sqlx::query(MOVE_READ)
                .bind(pending.ns.as_str())
                .bind(pending.room.as_str())
                .bind(pending.user_id.as_str())
                .bind(pending.seq)
                .bind(pending.at)
                .execute(&pool)
                .await
                .map(|done| DB::rows_affected(&done) == 1)
                .map_err(StoreError::from);
            let _ = pending.reply.send(moved);
        }
    }

    /// [`MOVE_READ`] for the reads `rows` of `batch` (one per member and room) in one statement: the (ns, room,
    /// user) of those that moved.
    async fn move_reads(
        pool: &Pool<DB>,
        batch: &[PendingRead],
        rows: &[usize],
    ) -> StoreResult<Vec<(String, String, String)>> {
        let mut update = QueryBuilder::<DB>::new("WITH v (ns, room, user_id, seq, at) AS (");
        update.push_values(rows, |mut row, &i| {
            let p = &batch[i];
            row.push_bind(p.ns.as_str())
                .push_bind(p.room.as_str())
                .push_bind(p.user_id.as_str())
                .push_bind(p.seq)
                .push_bind(p.at);
        });
        // Target columns by the table's name: SQLite's RETURNING takes no alias, Postgres's must tell them from v's.
        update.push(
            ") UPDATE memberships SET last_read = v.seq, last_read_at = v.at \
             FROM v JOIN rooms r ON r.ns = v.ns AND r.id = v.room \
             WHERE memberships.ns = v.ns AND memberships.room = v.room AND memberships.user_id = v.user_id \
               AND memberships.state = 'joined' AND memberships.last_read < v.seq AND v.seq <= r.last_seq \
             RETURNING memberships.ns, memberships.room, memberships.user_id",
        );
        let moved: Vec<(String, String, String)> = update.build_query_as().fetch_all(pool).await?;
        Ok(moved.into_iter().collect())
    }

    /// Runs `change` in one transaction of the writer with the room's next revision, which locks the room row first
    /// (see the module's comment): commits what it keeps, rolls back what it undoes. `None` when there is no such
    /// room (nothing ran).
    async fn revise<T>(
        &self,
        ns: &str,
        room: &str,
        change: impl AsyncFnOnce(&mut DB::Connection, i64) -> StoreResult<Revised<T>>,
    ) -> StoreResult<Option<T>> {
        let mut tx = self.writer.begin().await?;
        let Some(rev) = bump_rev(&mut tx, ns, room).await? else {
            return Ok(None);
        };
        Ok(Some(match change(&mut tx, rev).await? {
            Revised::Keep(done) => {
                tx.commit().await?;
                done
            }
            Revised::Undo(done) => {
                tx.rollback().await?;
                done
            }
        }))
    }

    /// Fills in the reactions of `messages` (of one room), as `viewer` sees them: one query for the page, and
    /// none when no message of it was ever changed (a message without a revision has no reaction). Emoji come in
    /// the order they were first used on the message.
    pub(super) async fn attach_reactions(
        &self,
        ns: &str,
        room: &str,
        messages: &mut [Message],
        viewer: Option<&str>,
    ) -> StoreResult<()> {
        let changed: Vec<i64> = messages
            .iter()
            .filter(|m| m.rev.is_some() && !m.deleted)
            .map(|m| m.seq)
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut select = QueryBuilder::<DB>::new(
            "SELECT seq, emoji, COUNT(*) AS count, COUNT(CASE WHEN user_id = ",
        );
        select
            .push_bind(viewer)
            .push(" THEN 1 END) AS mine FROM reactions WHERE ns = ")
            .push_bind(ns)
            .push(" AND room = ")
            .push_bind(room)
            .push(" AND seq IN (");
        let mut list = select.separated(", ");
        for seq in changed {
            list.push_bind(seq);
        }
        select.push(") GROUP BY seq, emoji ORDER BY seq, MIN(created_at), emoji");
        let rows: Vec<(i64, String, i64, i64)> =
            select.build_query_as().fetch_all(&self.pool).await?;
        for (seq, emoji, count, mine) in rows {
            if let Some(message) = messages.iter_mut().find(|m| m.seq == seq) {
                message.reactions.push(ReactionCount {
                    emoji,
                    count,
                    me: mine > 0,
                });
            }
        }
        Ok(())
    }
}
