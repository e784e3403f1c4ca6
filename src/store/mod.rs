//! Durable storage of rooms, memberships and messages behind one small trait, with a SQLite and a Postgres backend.
//!
//! Both backends run the same SQL (`sql.rs`, generic over the sqlx driver) and keep the same invariants, which
//! the rest of palaver relies on:
//! * `seq` is gap-free per room and grows in commit order: the room row's `last_seq` is bumped inside the
//!   transaction that inserts the message, so the row lock orders concurrent writers and a rollback leaves no gap;
//! * a message is returned only once committed;
//! * a `client_id` is unique per (room, sender), or per room for a room-scoped one (a compatibility profile's, see
//!   [`ClientIdScope`]): a retry returns the original message, also when the retry
//!   reaches another node, or shares a batch with its original;
//! * appends are committed in groups (`batch.rs`): one transaction per batch, in the same 4 statements however
//!   many messages and rooms it holds (lock the rooms' counters, read the originals of retried client ids, bump
//!   the counters, insert the messages; set-based, one statement each). On Postgres the batch locks its rooms in
//!   (ns, id) order, so that writers on several nodes, and the several writers of a node
//!   ([`DEFAULT_MESSAGE_WRITERS`]), cannot deadlock; a room's messages always go to the same writer of a node, so
//!   they commit in the order sent; SQLite has one writer;
//! * one message cannot spoil its batch: when a batch fails for any reason but an unreachable database, each of
//!   its messages is retried in a transaction of its own, in batch order (so seqs stay gap-free and client ids
//!   deduplicated). A message the database refuses then fails alone ([`StoreError::Rejected`]) and every other
//!   one commits. An unreachable database fails the whole batch (a retry cannot help);
//! * a membership row is a member (`joined`) or an open invitation (`invited`); only a member is in the room
//!   ([`Store::is_member`], [`Store::user_rooms`]), an invitee only sees it listed;
//! * a message is never removed: an edit changes it in place, a delete leaves a tombstone, and each such change
//!   (and each reaction change) takes the room's next revision in commit order, the cursor of a catch-up's change
//!   feed ([`Changes`], `changes.rs`);
//! * a sender banned or muted in a room gets no seq there: the batch refuses their message
//!   ([`StoreError::Sanctioned`]); roles and sanctions are in [`Moderation`], blocks in [`Blocks`], search in [`Search`];
//! * retention and erasure ([`Lifecycle`]) take text away only as a delete does: the message stays as a tombstone
//!   under the room's next revision.

mod batch;
pub mod blocks;
mod changes;
mod hooks;
pub mod lifecycle;
pub mod moderation;
mod postgres;
pub mod search;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::ChatError;

pub use blocks::Blocks;
pub use changes::{
    Changes, EXCERPT_CHARS, MAX_EMOJI_PER_MESSAGE, Reacted, ReactionCount, ReadMark, ReadPosition,
    ReplyTo, RoomState, UNREAD_COUNTED,
};
pub use hooks::{
    ClaimedCursor, ClaimedHook, CursorFailure, CursorOutcome, FailedHook, HookEvent, HookEvents,
    HookWake, NewHook,
};
pub use lifecycle::{Erasure, Expired, Lifecycle, NamespaceErasure};
pub use moderation::{Actor, Moderation, ModerationRecord, RoomRole, Sanction, SanctionKind};
pub use postgres::PostgresStore;
pub use search::{Search, SearchQuery, SearchWord};
pub use sqlite::SqliteStore;

/// Most messages one history page may hold.
pub const MAX_PAGE: u32 = 100;
/// The current time at the precision both databases store (microseconds), so that a message answered in an ack
/// is equal to the same message read back from history.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Messages in a history page when the client does not say.
pub const DEFAULT_PAGE: u32 = 50;
/// Most rooms `rooms:list` returns.
pub const MAX_LISTED_ROOMS: i64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    Group,
    Dm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl RoomKind {
    fn as_str(self) -> &'static str {
        match self {
            RoomKind::Group => "group",
            RoomKind::Dm => "dm",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "dm" {
            RoomKind::Dm
        } else {
            RoomKind::Group
        }
    }
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "public" {
            Visibility::Public
        } else {
            Visibility::Private
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub id: String,
    pub name: String,
    pub kind: RoomKind,
    pub visibility: Visibility,
    pub created_at: DateTime<Utc>,
}

/// A user as other users see them: id and display name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Author {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    #[serde(flatten)]
    pub room: Room,
    pub last_seq: i64,
    /// The user has joined the room (their own `room:join`, `room:create`, or a DM).
    pub member: bool,
    /// Someone else added the user: they see the room but enter it only by accepting (`room:join`).
    pub invited: bool,
    /// For a DM: the other user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<crate::auth::User>,
    /// The seq the user has read up to (`room:read`); 0 when not a member.
    pub last_read: i64,
    /// Messages of others after `last_read` (deleted ones left out), up to [`UNREAD_COUNTED`].
    pub unread: i64,
    /// The room's change revision (see [`Changes`]): where a catch-up of edits, deletes and reactions starts.
    pub rev: i64,
    /// For a DM: whether the user blocked the other user (`user:block`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    /// For a group room: the user's role in it (a DM has no roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RoomRole>,
}

/// A stored message. `Default` serves to build a new one (`..Default::default()`: no reply, never changed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub room: String,
    pub seq: i64,
    pub from: Author,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub at: DateTime<Utc>,
    /// The message this one answers (`message:send { replyTo }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyTo>,
    /// When the text was last edited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    /// A tombstone: the message was deleted; its text is empty, its seq stays taken.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Its reactions, as the user reading it sees them; absent where none (and in `message:updated`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionCount>,
    /// The room's revision of the message's latest edit, delete or reaction change; absent if never changed. Of
    /// two states of a message, the one with the higher `rev` is the newer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rev: Option<i64>,
}

/// An open invitation: the room, who invited the user, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    pub room: Room,
    pub by: Author,
    pub at: DateTime<Utc>,
}

/// A message on its way in.
#[derive(Clone, Debug)]
pub struct NewMessage {
    pub room: String,
    pub from: Author,
    pub text: String,
    pub client_id: Option<String>,
    /// Whose retries the client id tells apart: the sender's (palaver's contract), or anyone's in the room.
    pub client_id_scope: ClientIdScope,
    /// The message it answers, as read when it was sent (its seq is stored; history reads the rest anew).
    pub reply_to: Option<ReplyTo>,
}

/// Whose retries a client id tells apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdScope {
    /// A retry of the same user (palaver's contract).
    #[default]
    Sender,
    /// Any retry in the room: for apps that make their keys unique themselves and retry from a new connection,
    /// with a new guest identity.
    Room,
}

/// What `append_message` did.
#[derive(Clone, Debug)]
pub struct Appended {
    pub message: Message,
    /// The client id had been used before: `message` is the original and nothing new was stored.
    pub duplicate: bool,
}

/// Which slice of a room's history to read. Pages are always returned oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only messages with a lower seq (paging back).
    pub before: Option<i64>,
    /// Only messages with a higher seq (catching up); the page starts right after it.
    pub after: Option<i64>,
    pub limit: u32,
}

impl HistoryQuery {
    pub fn latest(limit: u32) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }
    /// Pages that start right after `after` read upwards; all others read down from the newest end.
    fn ascending(&self) -> bool {
        self.after.is_some()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

impl HistoryPage {
    /// Builds a page from rows read with `LIMIT limit + 1` in the query's direction.
    fn from_rows(mut rows: Vec<Message>, query: &HistoryQuery) -> Self {
        let has_more = rows.len() > query.limit as usize;
        rows.truncate(query.limit as usize);
        if !query.ascending() {
            rows.reverse();
        }
        Self {
            messages: rows,
            has_more,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or stopped answering.
    #[error("database unavailable: {0}")]
    Unavailable(sqlx::Error),
    #[error("database error: {0}")]
    Other(sqlx::Error),
    /// The message could not be written: the database was unavailable (then every message of its batch gets
    /// this error), or its own transaction failed for a reason other than the database refusing it.
    #[error("{reason}")]
    Failed { unavailable: bool, reason: String },
    /// The database refused this message, written in a transaction of its own (a constraint, a trigger, a
    /// value it cannot store such as a NUL character in Postgres text). The other messages of its batch are
    /// not affected.
    #[error("the database refused the message: {reason}")]
    Rejected { reason: String },
    #[error("room {0:?} does not exist")]
    NoSuchRoom(String),
    /// The sender is banned or muted in the room: their message was not stored.
    #[error("{}", .sanction.reason(.room))]
    Sanctioned { room: String, sanction: Sanction },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The server was told not to migrate (`--migrate false`) and the database lacks migrations.
    #[error(
        "the database lacks migrations {}: run `palaver migrate` (or start with --migrate true)",
        .0.join(", ")
    )]
    Unmigrated(Vec<String>),
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://file.db or postgres://…")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Other(e)
        }
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_)
            | StoreError::Failed {
                unavailable: true, ..
            } => ChatError::unavailable(&e),
            StoreError::NoSuchRoom(room) => ChatError::room_not_found(&room),
            StoreError::Sanctioned { room, sanction } => {
                ChatError::forbidden(sanction.reason(&room))
            }
            StoreError::Rejected { reason } => {
                tracing::warn!(error = %reason, "the database refused a message");
                ChatError::bad_request("the message store refused this message")
            }
            other => ChatError::internal(&other),
        }
    }
}

/// Errors that mean "the database is not there right now", as opposed to a bug in a query.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite reports extended result codes (SQLITE_IOERR_WRITE is 778): the primary code is the low
                // byte. BUSY (5), IOERR (10), FULL (13), CANTOPEN (14).
                let code = db.code().and_then(|code| code.parse::<i32>().ok());
                return code.is_some_and(|code| matches!(code & 0xff, 5 | 10 | 13 | 14));
            }
            // Postgres: connection exceptions (08…), shutdown / cannot connect now (57P…), too many
            // connections (53300), read-only replica during failover (25006), database not accepting
            // connections (55000).
            db.code().is_some_and(|code| {
                code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(code.as_ref(), "53300" | "25006" | "55000")
            })
        }
        _ => false,
    }
}

/// Errors caused by the row itself (a value the database cannot store, a constraint, a trigger refusing it),
/// as opposed to the database's own trouble (disk full, out of memory, deadlock, timeout), which is not the
/// message's fault and must not be answered as a bad request.
pub(crate) fn is_data_error(db: &dyn sqlx::error::DatabaseError) -> bool {
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Primary result codes: TOOBIG (18), CONSTRAINT (19, which RAISE(ABORT) in a trigger reports too),
        // MISMATCH (20).
        let code = db.code().and_then(|code| code.parse::<i32>().ok());
        return code.is_some_and(|code| matches!(code & 0xff, 18..=20));
    }
    // Postgres: data exceptions (22…), integrity constraint violations (23…), a trigger's RAISE (P0001).
    db.code()
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23") || code == "P0001")
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the chat needs from a database. `ns` is the Socket.IO namespace: each is an isolated chat space.
/// Edits, deletes, reactions and read state are in [`Changes`].
#[async_trait]
pub trait Store:
    Changes + Moderation + Blocks + Search + Lifecycle + Send + Sync + 'static
{
    /// Answers when the database is reachable.
    async fn ping(&self) -> StoreResult<()>;

    async fn room(&self, ns: &str, room: &str) -> StoreResult<Option<Room>>;

    /// Creates the room: `creator` joins it, each of `invited` gets an invitation from the creator (a DM passes
    /// both users as joined through [`Store::create_dm`] instead). `false` if a room with that id exists (nothing
    /// is changed then). The room records its creator, for creation quotas.
    async fn create_room(
        &self,
        ns: &str,
        room: &Room,
        creator: &Author,
        invited: &[Author],
    ) -> StoreResult<bool>;

    /// Creates a DM room with both users as members unless it exists; `true` if it was created. A DM records no
    /// creator: it belongs to both users and counts toward no one's creation quota.
    async fn create_dm(&self, ns: &str, room: &Room, users: [&Author; 2]) -> StoreResult<bool>;

    /// Creates the room unless it exists (auto-created on `room:join`, recording `creator`), and returns the
    /// stored one and whether this call created it.
    async fn ensure_room(&self, ns: &str, room: &Room, creator: &str) -> StoreResult<(Room, bool)>;

    /// Creates a group room (no creator: the host's backend made it) or, if a group room with that id exists,
    /// sets its name and visibility. Returns the stored room and whether this call created it; a DM's room is
    /// returned unchanged.
    async fn put_room(&self, ns: &str, room: &Room) -> StoreResult<(Room, bool)>;

    /// Marks a one-time code (its hash) as redeemed: `false` if it already was.
    async fn redeem_code(&self, hash: &str) -> StoreResult<bool>;

    /// Stores a new refresh token (its hash).
    async fn insert_refresh(&self, token: &NewRefresh) -> StoreResult<()>;

    /// Rotates the refresh token whose hash is `old` into a new one (hash `new`, same family, user and end), in
    /// one transaction. A token rotated more than `grace` ago revokes its whole family; within it, it is a race
    /// of the user's own (two tabs refreshing at once, a retry whose answer was lost) and gets a token too.
    async fn rotate_refresh(
        &self,
        old: &str,
        new: &str,
        grace: chrono::Duration,
    ) -> StoreResult<Rotation>;

    /// Revokes every session of the user: the number of refresh tokens revoked.
    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<u64>;

    /// Deletes refresh tokens that expired and codes redeemed before `before`: how many rows went.
    async fn prune_sessions(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Revokes the family of the refresh token whose hash is given: `false` if there is no such token.
    async fn revoke_refresh(&self, hash: &str) -> StoreResult<bool>;

    /// Rooms `creator` created in the namespace since `since` (creation quotas).
    async fn rooms_created_since(
        &self,
        ns: &str,
        creator: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<i64>;

    /// The user joins the room: records the membership, or turns their invitation into one.
    async fn add_member(&self, ns: &str, room: &str, user: &Author) -> StoreResult<()>;

    /// Invites users to the room on behalf of `by`. Users who are already members or invited are skipped;
    /// returns the ids of those newly invited.
    async fn invite(
        &self,
        ns: &str,
        room: &str,
        by: &Author,
        users: &[Author],
    ) -> StoreResult<Vec<String>>;

    /// Declines (removes) the user's invitation to the room; `false` if there was none.
    async fn decline(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool>;

    /// Removes a membership or an invitation; `false` if there was none.
    async fn remove_member(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool>;

    /// Whether the user has joined the room (an invitation does not count).
    async fn is_member(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool>;

    /// Whether the user holds an open invitation to the room.
    async fn is_invited(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool>;

    /// The rooms of this user: every room (DMs included) the user has joined, at most `limit`: group rooms
    /// first, then DMs (anyone can start a DM, so DMs from strangers must not push out the user's rooms), each
    /// most recently active first. The one query behind both the `session` event's `rooms` and re-entry on connect, so the
    /// two can never disagree.
    async fn user_rooms(
        &self,
        ns: &str,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<RoomSummary>>;

    /// The user's open invitations, newest first, at most [`MAX_LISTED_ROOMS`].
    async fn invitations(&self, ns: &str, user_id: &str) -> StoreResult<Vec<Invitation>>;

    /// The user's rooms and DMs (joined or invited), plus every public room when `with_public`, most recently
    /// active first.
    async fn list_rooms(
        &self,
        ns: &str,
        user_id: &str,
        with_public: bool,
    ) -> StoreResult<Vec<RoomSummary>>;

    /// The write path of every message: numbers it, stores it, commits, and returns it.
    async fn append_message(&self, ns: &str, message: NewMessage) -> StoreResult<Appended>;

    /// Numbers a message of `sender` without storing it (namespaces that keep no history); a banned or muted
    /// sender is refused ([`StoreError::Sanctioned`]).
    async fn next_seq(&self, ns: &str, room: &str, sender: &str) -> StoreResult<i64>;

    /// A room's history page as nobody in particular sees it (reactions without `me`); see
    /// [`Changes::history_for`].
    async fn history(&self, ns: &str, room: &str, query: HistoryQuery) -> StoreResult<HistoryPage>;

    /// The webhook events whose outbox rows the store writes with their cause (none until this is called):
    /// `message.created` by the batch writer, member events with the membership change.
    fn enable_hooks(&self, events: HookEvents);

    /// The events [`Store::enable_hooks`] enabled.
    fn hook_events(&self) -> HookEvents;

    /// Has the batch writer record each commit's size and duration (`/metrics`).
    fn enable_metrics(&self, commit: crate::metrics::CommitMetrics);

    /// The connection pools as they are now.
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// Webhook outbox rows waiting for delivery, and dead letters.
    async fn outbox_depth(&self) -> StoreResult<(i64, i64)>;

    /// Writes outbox rows on their own (`message.missed`, which follows its message's commit).
    async fn enqueue_hooks(&self, hooks: &[NewHook]) -> StoreResult<()>;

    /// Claims at most `limit` due outbox rows for `node` until `lease_until`: the first pending row of each room
    /// (in id order), due at `now`, and not leased by anyone else. Each row is claimed by one node.
    async fn claim_hooks(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedHook>>;

    /// The host took the row (2xx).
    async fn hook_delivered(&self, id: i64, node: &str) -> StoreResult<()>;

    /// A delivery attempt failed with `error`: the row is tried again at `next_attempt_at`, or becomes `failed`
    /// (a dead letter) once it has had `max_attempts`.
    async fn hook_failed(
        &self,
        id: i64,
        node: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        max_attempts: i64,
    ) -> StoreResult<()>;

    /// The batch writer's wake-up call to webhook delivery (rooms with new messages).
    fn hook_wake(&self) -> Arc<HookWake>;

    /// Records, once per database, when `message.created` webhooks were first turned on: rooms' messages from
    /// before it are not delivered.
    async fn start_hook_cursors(&self, now: DateTime<Utc>) -> StoreResult<()>;

    /// Claims for `node`, until `lease_until`, at most `limit` rooms with messages past their webhook cursor, whose
    /// cursor is due at `now` and not leased by anyone else: only `rooms` if given, else any room. A room without
    /// a cursor gets one first, past its messages from before [`Store::start_hook_cursors`]. Each room is claimed
    /// by one node at a time.
    async fn claim_hook_rooms(
        &self,
        node: &str,
        rooms: Option<&[(String, String)]>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedCursor>>;

    /// The room's last seq: a claimed room with no stored message past its cursor (a namespace that keeps no
    /// history) moves its cursor here.
    async fn last_seq(&self, ns: &str, room: &str) -> StoreResult<i64>;

    /// Records what `node` delivered of a claimed room and gives up its lease (a dead letter is written in the
    /// same transaction).
    async fn record_cursor(
        &self,
        node: &str,
        cursor: &ClaimedCursor,
        outcome: &CursorOutcome,
    ) -> StoreResult<()>;

    /// Gives up `node`'s leases of rows and rooms it has not finished (a clean shutdown), so that they are due at
    /// once.
    async fn release_hooks(&self, node: &str) -> StoreResult<()>;

    /// The dead letters, oldest first, at most `limit`.
    async fn failed_hooks(&self, limit: i64) -> StoreResult<Vec<FailedHook>>;

    /// Puts a dead letter back to pending, due now, with its attempts reset; `false` if there is no failed row
    /// with that id.
    async fn retry_hook(&self, webhook_id: &str, now: DateTime<Utc>) -> StoreResult<bool>;
}

pub type SharedStore = Arc<dyn Store>;

/// A connection pool at a glance.
#[derive(Clone, Copy, Debug)]
pub struct PoolStats {
    /// `writer` and `reader` (SQLite), or `shared` (Postgres, whose writes and reads share one pool).
    pub pool: &'static str,
    /// Connections open.
    pub size: u32,
    /// Connections open and not in use.
    pub idle: u32,
    /// Most connections the pool may open.
    pub max: u32,
}

/// Group-commit message writers per node on Postgres, unless configured (`--db-message-writers`). Two measured
/// 14% more durable throughput than one at saturation, three or four no more than two (BENCHMARKS.md §10): one
/// writer's transactions wait on round trips and on the commit's WAL flush, which a second writer's overlap.
/// SQLite always has one.
pub const DEFAULT_MESSAGE_WRITERS: usize = 2;

/// Opens the database named by the URL and applies pending migrations.
pub async fn open(url: &str, pool_size: u32) -> StoreResult<SharedStore> {
    Ok(
        open_with(url, pool_size, DEFAULT_MESSAGE_WRITERS, Migrations::Apply)
            .await?
            .0,
    )
}

/// What opening a store does about the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Applies the pending migrations (one node at a time: sqlx locks the database while it migrates).
    Apply,
    /// Applies nothing, and refuses a database that lacks any ([`StoreError::Unmigrated`]): the deploy pipeline
    /// ran `palaver migrate` before.
    Require,
    /// Applies nothing and refuses nothing: only says what is pending (`palaver check-config --connect`).
    Inspect,
}

/// Opens the database named by the URL, as `migrations` says: the store, and the migrations this call applied
/// (`0010 lifecycle`), or with [`Migrations::Inspect`] those pending. `message_writers` applies to Postgres only.
pub async fn open_with(
    url: &str,
    pool_size: u32,
    message_writers: usize,
    migrations: Migrations,
) -> StoreResult<(SharedStore, Vec<String>)> {
    if url.starts_with("sqlite:") {
        let (store, applied) = SqliteStore::open_with(url, pool_size, migrations).await?;
        Ok((Arc::new(store), applied))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let (store, applied) =
            PostgresStore::open_with(url, pool_size, message_writers, migrations).await?;
        Ok((Arc::new(store), applied))
    } else {
        Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)))
    }
}

/// Brings the database to the binary's schema as `policy` says: the migrations applied (or, refused, missing).
async fn migrate<DB>(
    migrator: &sqlx::migrate::Migrator,
    pool: &sqlx::Pool<DB>,
    policy: Migrations,
) -> StoreResult<Vec<String>>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::migrate::Migrate;
    let mut conn = pool.acquire().await?;
    // A database never migrated has no bookkeeping table: nothing is applied.
    let applied: Vec<i64> = match conn.list_applied_migrations(&migrator.table_name).await {
        Ok(applied) => applied.iter().map(|m| m.version).collect(),
        Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(_))) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let pending: Vec<String> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .map(|m| format!("{:04} {}", m.version, m.description))
        .collect();
    match policy {
        Migrations::Require if !pending.is_empty() => Err(StoreError::Unmigrated(pending)),
        Migrations::Require | Migrations::Inspect => Ok(pending),
        Migrations::Apply => {
            drop(conn);
            migrator.run(pool).await?;
            Ok(pending)
        }
    }
}

/// A refresh token to store: only its hash.
pub struct NewRefresh {
    pub hash: String,
    pub family: String,
    pub user: Author,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What became of a refresh.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is spent; the new one was stored for this user, and the session ends at `expires_at`.
    Rotated {
        user: Author,
        expires_at: DateTime<Utc>,
    },
    /// No such token.
    Unknown,
    Expired,
    /// Its family was revoked (a logout, or a reuse detected earlier).
    Revoked,
    /// It had been rotated already: a stolen or replayed token. Its whole family is now revoked.
    Reused,
}

/// A refresh token row.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    family: String,
    user_id: String,
    user_name: String,
    expires_at: DateTime<Utc>,
    rotated_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// A message row as both backends store it.
#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    room: String,
    seq: i64,
    sender_id: String,
    sender_name: String,
    text: String,
    client_id: Option<String>,
    created_at: DateTime<Utc>,
    edited_at: Option<DateTime<Utc>>,
    deleted: bool,
    rev: Option<i64>,
    /// The seq replied to, and (joined) that message's sender, excerpt and whether it is deleted.
    reply_to: Option<i64>,
    reply_sender_id: Option<String>,
    reply_sender_name: Option<String>,
    reply_excerpt: Option<String>,
    reply_deleted: Option<bool>,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        let reply_to = match (row.reply_to, row.reply_sender_id, row.reply_sender_name) {
            (Some(seq), Some(id), Some(name)) => Some(ReplyTo {
                seq,
                from: Author { id, name },
                excerpt: row.reply_excerpt.unwrap_or_default(),
                deleted: row.reply_deleted.unwrap_or_default(),
            }),
            _ => None,
        };
        Message {
            id: row.id.to_string(),
            room: row.room,
            seq: row.seq,
            from: Author {
                id: row.sender_id,
                name: row.sender_name,
            },
            text: row.text,
            client_id: row.client_id,
            at: row.created_at,
            reply_to,
            edited_at: row.edited_at,
            deleted: row.deleted,
            reactions: Vec::new(),
            rev: row.rev,
        }
    }
}

/// A room row as both backends store it.
#[derive(sqlx::FromRow)]
struct RoomRow {
    id: String,
    name: String,
    kind: String,
    visibility: String,
    created_at: DateTime<Utc>,
}

impl From<RoomRow> for Room {
    fn from(row: RoomRow) -> Self {
        Room {
            id: row.id,
            name: row.name,
            kind: RoomKind::parse(&row.kind),
            visibility: Visibility::parse(&row.visibility),
            created_at: row.created_at,
        }
    }
}

/// A `rooms:list` row: the room, its last seq, whether the user is a member or invited, and a DM's other member.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    room: RoomRow,
    last_seq: i64,
    member: bool,
    invited: bool,
    peer_id: Option<String>,
    peer_name: Option<String>,
    last_read: i64,
    unread: i64,
    last_rev: i64,
    /// The user blocked the DM's other member.
    blocked: bool,
    /// The user created the room.
    owner: bool,
    /// The user is one of the room's moderators.
    moderator: bool,
}

impl From<SummaryRow> for RoomSummary {
    fn from(row: SummaryRow) -> Self {
        let peer = match (row.peer_id, row.peer_name) {
            (Some(id), Some(name)) => Some(crate::auth::User {
                anonymous: crate::auth::is_guest_id(&id),
                id,
                name,
            }),
            _ => None,
        };
        let room: Room = row.room.into();
        let role = match (row.owner, row.moderator) {
            (true, _) => RoomRole::Owner,
            (false, true) => RoomRole::Moderator,
            (false, false) => RoomRole::Member,
        };
        RoomSummary {
            blocked: (room.kind == RoomKind::Dm).then_some(row.blocked),
            role: (room.kind == RoomKind::Group).then_some(role),
            room,
            last_seq: row.last_seq,
            member: row.member,
            invited: row.invited,
            peer,
            last_read: row.last_read,
            unread: row.unread,
            rev: row.last_rev,
        }
    }
}

/// An open invitation: the room, who sent it (their id and name at the time), and when.
#[derive(sqlx::FromRow)]
struct InvitationRow {
    #[sqlx(flatten)]
    room: RoomRow,
    invited_by: Option<String>,
    invited_by_name: Option<String>,
    invited_at: DateTime<Utc>,
}

impl From<InvitationRow> for Invitation {
    fn from(row: InvitationRow) -> Self {
        let id = row.invited_by.unwrap_or_default();
        Invitation {
            room: row.room.into(),
            by: Author {
                name: row.invited_by_name.unwrap_or_else(|| id.clone()),
                id,
            },
            at: row.invited_at,
        }
    }
}

/// A stored message with its namespace: the original of a retried client id, read by the batch writer.
#[derive(sqlx::FromRow)]
struct OriginalRow {
    ns: String,
    #[sqlx(flatten)]
    message: MessageRow,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: i64) -> Message {
        Message {
            id: seq.to_string(),
            room: "r".into(),
            seq,
            from: Author {
                id: "u".into(),
                name: "u".into(),
            },
            text: "t".into(),
            client_id: None,
            at: Utc::now(),
            ..Default::default()
        }
    }

    #[test]
    fn descending_pages_come_back_oldest_first() {
        let query = HistoryQuery {
            before: Some(10),
            after: None,
            limit: 2,
        };
        let page = HistoryPage::from_rows(vec![msg(9), msg(8), msg(7)], &query);
        assert!(page.has_more);
        let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![8, 9]);
    }

    #[test]
    fn ascending_pages_keep_their_order() {
        let query = HistoryQuery {
            before: None,
            after: Some(3),
            limit: 5,
        };
        let page = HistoryPage::from_rows(vec![msg(4), msg(5)], &query);
        assert!(!page.has_more);
        let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![4, 5]);
    }
}
