//! The SQL both backends run, written once as code generic over the sqlx driver: nearly every statement is valid
//! in Postgres and in SQLite (`$1`… placeholders work in both), so a backend module only opens its pools, applies
//! its migrations and names what little differs ([`Backend`]: a few clauses, and the statements each backend
//! writes its own way, the batch's insert of messages and an edit's search words).
//!
//! The sqlx bounds the generic code needs are spelled out on the two impl blocks below (the batch writer and the
//! [`Store`] methods); Rust does not let a trait carry them for its users. Each backend satisfies them, which the
//! compiler checks where `open` builds a store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Type,
};

use super::batch::{Batcher, Pending};
use super::changes::{message_columns_with_replies, select_messages_with_replies};
use super::hooks::FailedRow;
use super::moderation::{Sanction, SanctionKind};
use super::{
    Appended, Author, ClaimedCursor, ClaimedHook, CursorFailure, CursorOutcome, FailedHook,
    HistoryPage, HistoryQuery, HookEvent, HookEvents, HookWake, Invitation, InvitationRow, Message,
    MessageRow, NewHook, NewMessage, NewRefresh, OriginalRow, RefreshRow, Room, RoomRow,
    RoomSummary, Rotation, Store, StoreError, StoreResult, SummaryRow,
};

/// What differs between the backends in the SQL they run.
#[async_trait]
pub trait Backend: Database {
    /// Ends the batch's `SELECT … FROM rooms … ORDER BY ns, id`: Postgres locks the batch's room rows, in that
    /// order; SQLite has one writer, whose transaction is the lock.
    const LOCK_ROWS: &'static str;
    /// Ends the webhook claim's `SELECT`: Postgres locks the rows it claims and skips those another node is
    /// claiming; SQLite has one writer (and one node).
    const SKIP_LOCKED: &'static str;
    /// [`Backend::SKIP_LOCKED`] for the webhook cursors `c` of a join with `rooms`, whose rows (the batch
    /// writer's counters) must not be locked.
    const SKIP_LOCKED_CURSORS: &'static str;
    /// Rows an `INSERT`, `UPDATE` or `DELETE` wrote.
    fn rows_affected(done: &Self::QueryResult) -> u64;
    /// Inserts a batch's new messages, created `at`, in one statement: `(id, ns, room, seq)` of each row
    /// inserted. With `skip_stored`, a row whose client id is already stored is skipped rather than failing the
    /// statement. The one statement of the batch writer whose shape is each backend's own.
    async fn insert_messages(
        conn: &mut Self::Connection,
        rows: &[MessageInsert<'_>],
        skip_stored: bool,
        at: DateTime<Utc>,
    ) -> Result<Vec<InsertedMessage>, sqlx::Error>;
    /// After an edit of message `seq` to `text` (in the edit's transaction): indexes its new words for search,
    /// where the index is not kept by the database itself.
    async fn index_edited_text(
        conn: &mut Self::Connection,
        ns: &str,
        room: &str,
        seq: i64,
        text: &str,
    ) -> Result<(), sqlx::Error>;
}

/// One new message of a batch, as [`Backend::insert_messages`] writes it.
pub struct MessageInsert<'a> {
    ns: &'a str,
    room: &'a str,
    seq: i64,
    sender_id: &'a str,
    sender_name: &'a str,
    text: &'a str,
    client_id: Option<&'a str>,
    /// The client id again when it is room-scoped (a profile's), else `None`.
    room_client_id: Option<&'a str>,
    reply_to: Option<i64>,
}

impl<'a> MessageInsert<'a> {
    fn new(pending: &'a Pending, seq: i64) -> Self {
        let message = &pending.message;
        Self {
            ns: &pending.ns,
            room: &message.room,
            seq,
            sender_id: &message.from.id,
            sender_name: &message.from.name,
            text: &message.text,
            client_id: message.client_id.as_deref(),
            room_client_id: match message.client_id_scope {
                super::ClientIdScope::Room => message.client_id.as_deref(),
                super::ClientIdScope::Sender => None,
            },
            reply_to: message.reply_to.as_ref().map(|r| r.seq),
        }
    }
}

/// One field of every row, as an array to bind.
fn column<'a, T>(rows: &[MessageInsert<'a>], field: impl Fn(&MessageInsert<'a>) -> T) -> Vec<T> {
    rows.iter().map(field).collect()
}

/// `(id, ns, room, seq)` of an inserted message.
pub type InsertedMessage = (i64, String, String, i64);

#[async_trait]
impl Backend for sqlx::Postgres {
    const LOCK_ROWS: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const SKIP_LOCKED_CURSORS: &'static str = " FOR UPDATE OF c SKIP LOCKED";
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    /// One array per column, unnested: the statement's text is the same for every batch, so it is parsed and
    /// planned once per connection (a `VALUES` list has as many placeholders as the batch has columns × rows, so
    /// nearly every batch was a new statement, parsed and planned anew: ~7 µs of Postgres a message, BENCHMARKS.md
    /// §10). The search index's words come from palaver (`store::search::index_words`), not from a text-search
    /// parser in Postgres (`migrations/postgres/0011_search_words.sql`).
    async fn insert_messages(
        conn: &mut sqlx::PgConnection,
        rows: &[MessageInsert<'_>],
        skip_stored: bool,
        at: DateTime<Utc>,
    ) -> Result<Vec<InsertedMessage>, sqlx::Error> {
        macro_rules! insert {
            () => {
                "INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, client_id, room_client_id, \
                 created_at, reply_to, search_words) \
                 SELECT ns, room, seq, sender_id, sender_name, text, client_id, room_client_id, $1, reply_to, \
                     array_to_tsvector(string_to_array(words, ' ')) \
                 FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[], \
                     $9::text[], $10::int8[], $11::text[]) \
                     AS r (ns, room, seq, sender_id, sender_name, text, client_id, room_client_id, reply_to, words)"
            };
        }
        let sql = match skip_stored {
            // Untargeted, so that it covers both client-id indexes (sender- and room-scoped); the room locks keep
            // (ns, room, seq) from conflicting.
            true => concat!(
                insert!(),
                " ON CONFLICT DO NOTHING RETURNING id, ns, room, seq"
            ),
            false => concat!(insert!(), " RETURNING id, ns, room, seq"),
        };
        let words: Vec<String> = rows
            .iter()
            .map(|r| super::search::index_words(r.text))
            .collect();
        sqlx::query_as(sql)
            .bind(at)
            .bind(column(rows, |r| r.ns))
            .bind(column(rows, |r| r.room))
            .bind(column(rows, |r| r.seq))
            .bind(column(rows, |r| r.sender_id))
            .bind(column(rows, |r| r.sender_name))
            .bind(column(rows, |r| r.text))
            .bind(column(rows, |r| r.client_id))
            .bind(column(rows, |r| r.room_client_id))
            .bind(column(rows, |r| r.reply_to))
            .bind(words)
            .fetch_all(conn)
            .await
    }

    /// Writes the new text's words, as a send does. (The edit's `UPDATE` of the text had the database cut them,
    /// by the trigger of 0011 that keeps any change of a text from leaving its old words; palaver's own cut is the
    /// one queries use, whatever the database's locale.)
    async fn index_edited_text(
        conn: &mut sqlx::PgConnection,
        ns: &str,
        room: &str,
        seq: i64,
        text: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE messages SET search_words = array_to_tsvector(string_to_array($4, ' ')) \
             WHERE ns = $1 AND room = $2 AND seq = $3",
        )
        .bind(ns)
        .bind(room)
        .bind(seq)
        .bind(super::search::index_words(text))
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Backend for sqlx::Sqlite {
    const LOCK_ROWS: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const SKIP_LOCKED_CURSORS: &'static str = "";
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    /// A `VALUES` list; SQLite's full-text index is written by triggers (`migrations/sqlite/0008_moderation.sql`).
    async fn insert_messages(
        conn: &mut sqlx::SqliteConnection,
        rows: &[MessageInsert<'_>],
        skip_stored: bool,
        at: DateTime<Utc>,
    ) -> Result<Vec<InsertedMessage>, sqlx::Error> {
        let mut insert = QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, client_id, room_client_id, created_at, reply_to) ",
        );
        insert.push_values(rows, |mut row, r| {
            row.push_bind(r.ns)
                .push_bind(r.room)
                .push_bind(r.seq)
                .push_bind(r.sender_id)
                .push_bind(r.sender_name)
                .push_bind(r.text)
                .push_bind(r.client_id)
                .push_bind(r.room_client_id)
                .push_bind(at)
                .push_bind(r.reply_to);
        });
        if skip_stored {
            // Untargeted, so that it covers both client-id indexes (sender- and room-scoped).
            insert.push(" ON CONFLICT DO NOTHING");
        }
        insert.push(" RETURNING id, ns, room, seq");
        insert.build_query_as().fetch_all(conn).await
    }

    /// Nothing: FTS5's triggers re-index the edited row in the edit's own statement.
    async fn index_edited_text(
        _conn: &mut sqlx::SqliteConnection,
        _ns: &str,
        _room: &str,
        _seq: i64,
        _text: &str,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// A store on one database: a `writer` pool for every write, a `pool` for reads, and the group-commit writers
/// (messages; read positions) in front of the writer pool.
pub struct SqlStore<DB: Database> {
    pub(super) writer: Pool<DB>,
    pub(super) pool: Pool<DB>,
    /// The group-commit message writers; a room's messages always go to the same one ([`Self::batcher_for`]), so
    /// they commit in the order sent, while the writers' transactions, on disjoint rooms, overlap.
    batchers: Vec<Batcher<Pending>>,
    /// The group-commit writer of read positions (`room:read`), on the writer pool too.
    pub(super) reads: Batcher<super::changes::PendingRead>,
    /// The webhook events written to the outbox ([`HookEvents`] bits), shared with the batch writer.
    hooks: Arc<AtomicU8>,
    /// Tells webhook delivery which rooms the batch writer committed to (with `message.created` webhooks on).
    wake: Arc<HookWake>,
    /// The batch writer's metrics, once the server has enabled them.
    commit_metrics: Arc<std::sync::OnceLock<crate::metrics::CommitMetrics>>,
}

impl<DB: Database> SqlStore<DB> {
    /// The pool every write goes through.
    pub(super) fn writer(&self) -> &Pool<DB> {
        &self.writer
    }

    /// The pool for reads.
    pub(super) fn reader(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// Membership states (`memberships.state`).
const JOINED: &str = "joined";
const INVITED: &str = "invited";

/// The user joins: a new membership, or their invitation turned into one (a member stays one, since then). A
/// joining user has read what was said before: only later messages are unread (a room with a long history does
/// not greet its newcomers with "100+").
const ADD_MEMBER: &str = "INSERT INTO memberships (ns, room, user_id, user_name, joined_at, state, last_read) \
     VALUES ($1, $2, $3, $4, $5, 'joined', COALESCE((SELECT last_seq FROM rooms WHERE ns = $1 AND id = $2), 0)) \
     ON CONFLICT (ns, room, user_id) DO UPDATE SET user_name = EXCLUDED.user_name, state = 'joined', \
         joined_at = CASE WHEN memberships.state = 'joined' THEN memberships.joined_at \
                          ELSE EXCLUDED.joined_at END, \
         last_read = CASE WHEN memberships.state = 'joined' THEN memberships.last_read \
                          ELSE EXCLUDED.last_read END";

/// Rows per multi-row `INSERT`, well below both databases' limits on bound parameters.
const ROWS_PER_INSERT: usize = 1000;

/// The columns of a [`SummaryRow`] but `member` and `invited`, for rooms `r`, the user's membership `m`, a DM's
/// other member `p`, the user's block of them `b` and the user's moderator role `rr` (all three joined in by
/// [`peer_join!`]), as a literal for `concat!`. The read state counts for a
/// member only; `unread` stops at [`super::UNREAD_COUNTED`], so it reads at most that many index entries a room.
macro_rules! summary_columns {
    () => {
        "SELECT r.id, r.name, r.kind, r.visibility, r.created_at, r.last_seq, r.last_rev, \
                p.user_id AS peer_id, p.user_name AS peer_name, (b.blocked_id IS NOT NULL) AS blocked, \
                (r.created_by IS NOT NULL AND r.created_by = $2) AS owner, (rr.user_id IS NOT NULL) AS moderator, \
                CASE WHEN m.state = 'joined' THEN m.last_read ELSE 0 END AS last_read, \
                CASE WHEN m.state = 'joined' THEN \
                    (SELECT COUNT(*) FROM (SELECT 1 FROM messages x WHERE x.ns = r.ns AND x.room = r.id \
                     AND x.seq > m.last_read AND x.sender_id <> m.user_id AND x.deleted_at IS NULL \
                     LIMIT 100) AS u) \
                ELSE 0 END AS unread, "
    };
}

/// A DM's other member `p`, for the user `$2`, whether the user blocked them (`b`), and the user's moderator role
/// in a group room (`rr`), each by primary key.
macro_rules! peer_join {
    () => {
        " LEFT JOIN memberships p ON r.kind = 'dm' AND p.ns = r.ns AND p.room = r.id AND p.user_id <> $2 \
          LEFT JOIN user_blocks b ON b.ns = r.ns AND b.blocker_id = $2 AND b.blocked_id = p.user_id \
          LEFT JOIN room_roles rr ON r.kind = 'group' AND rr.ns = r.ns AND rr.room = r.id AND rr.user_id = $2 "
    };
}

/// A membership row to insert: an invitation when `invited_by` is set, else a member.
struct NewMembership<'a> {
    user: &'a Author,
    invited_by: Option<&'a Author>,
}

impl NewMembership<'_> {
    fn state(&self) -> &'static str {
        if self.invited_by.is_some() {
            INVITED
        } else {
            JOINED
        }
    }
}

/// A write that names a room: a foreign-key violation means that the room does not exist.
pub(super) fn or_no_such_room(room: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::NoSuchRoom(room.to_owned())
        }
        _ => e.into(),
    }
}

/// What became of one append of a batch, before the commit.
enum Outcome {
    /// To be inserted with this seq.
    Fresh(i64),
    /// Answered without inserting anything: the original of a retried client id, or an error of its own (boxed:
    /// rare, and much larger than the others).
    Done(Box<StoreResult<Appended>>),
    /// A retry queued in the same batch as its original, at this index.
    SameAs(usize),
}

/// How a batch finds the retries among its appends (see [`SqlStore::write_batch`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retries {
    /// Insert as if there were none; a stored client id makes the insert skip its row.
    Optimistic,
    /// Read the originals of the batch's client ids first.
    LookedUp,
}

/// Seqs given to the appends of a batch, from the rooms' counters and the stored originals of retried client ids.
struct Numbering<'b> {
    outcomes: Vec<Outcome>,
    /// The new counter of each room that gets messages.
    bumped: Vec<(&'b str, &'b str, i64)>,
}

/// A room of the batch: (ns, room id).
type RoomKey<'b> = (&'b str, &'b str);
/// A stored message by (ns, room, sender id, client id); the sender id is empty for a room-scoped client id.
type ClientKey = (String, String, String, String);
/// A sender in a room: (ns, room, user id).
type SenderKey = (String, String, String);

/// What statement 1 of a batch reads: the `last_seq` of every room of the batch that exists, and which of them
/// have a ban or mute in force.
struct Counters {
    last: HashMap<(String, String), i64>,
    sanctioned: Vec<(String, String)>,
}

/// Whose retries a message's client id tells apart, as the sender part of its [`ClientKey`]: the sender's id, or
/// nobody's (empty: any sender in the room), which no real sender id can be.
fn key_owner(message: &super::NewMessage) -> &str {
    match message.client_id_scope {
        super::ClientIdScope::Sender => message.from.id.as_str(),
        super::ClientIdScope::Room => "",
    }
}

impl<'b> Numbering<'b> {
    /// Numbers the appends room by room, in batch order. `counters` holds the `last_seq` of every room of the
    /// batch that exists; `originals` the stored messages under the batch's client ids; `sanctions` the bans
    /// and mutes in force of the batch's senders, whose messages are refused.
    fn new(
        batch: &'b [Pending],
        by_room: &BTreeMap<RoomKey<'b>, Vec<usize>>,
        counters: &HashMap<(String, String), i64>,
        mut originals: HashMap<ClientKey, MessageRow>,
        sanctions: &HashMap<SenderKey, Sanction>,
    ) -> Self {
        let mut outcomes: Vec<Option<Outcome>> = batch.iter().map(|_| None).collect();
        let mut bumped = Vec::with_capacity(by_room.len());
        for (&(ns, room), indexes) in by_room {
            let Some(&last) = counters.get(&(ns.to_owned(), room.to_owned())) else {
                for &i in indexes {
                    outcomes[i] = Some(Outcome::Done(Box::new(Err(StoreError::NoSuchRoom(
                        room.to_owned(),
                    )))));
                }
                continue;
            };
            let mut seq = last;
            // Client ids already used in this batch: a retry queued next to its original.
            let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
            for &i in indexes {
                let message = &batch[i].message;
                if !sanctions.is_empty() {
                    let sender = (ns.to_owned(), room.to_owned(), message.from.id.clone());
                    if let Some(&sanction) = sanctions.get(&sender) {
                        let refused = StoreError::Sanctioned {
                            room: room.to_owned(),
                            sanction,
                        };
                        outcomes[i] = Some(Outcome::Done(Box::new(Err(refused))));
                        continue;
                    }
                }
                if let Some(client_id) = message.client_id.as_deref() {
                    let key = (key_owner(message), client_id);
                    if let Some(&first) = seen.get(&key) {
                        outcomes[i] = Some(Outcome::SameAs(first));
                        continue;
                    }
                    seen.insert(key, i);
                    let original = if originals.is_empty() {
                        None
                    } else {
                        let stored = (
                            ns.to_owned(),
                            room.to_owned(),
                            key.0.to_owned(),
                            key.1.to_owned(),
                        );
                        originals.remove(&stored)
                    };
                    if let Some(original) = original {
                        outcomes[i] = Some(Outcome::Done(Box::new(Ok(Appended {
                            message: original.into(),
                            duplicate: true,
                        }))));
                        continue;
                    }
                }
                seq += 1;
                outcomes[i] = Some(Outcome::Fresh(seq));
            }
            if seq > last {
                bumped.push((ns, room, seq));
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.expect("every append of the batch is in one of its rooms"))
            .collect();
        Self { outcomes, bumped }
    }

    /// The messages to insert: (index in the batch, seq).
    fn fresh(&self) -> Vec<(usize, i64)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Fresh(seq) => Some((i, *seq)),
                _ => None,
            })
            .collect()
    }

    /// The answer of every append once the batch has committed at `at`; `ids` are the inserted messages' ids
    /// by (ns, room, seq).
    fn answers(
        self,
        batch: &[Pending],
        ids: &HashMap<(String, String, i64), i64>,
        at: DateTime<Utc>,
    ) -> Vec<StoreResult<Appended>> {
        let mut answers: Vec<StoreResult<Appended>> = Vec::with_capacity(batch.len());
        for (i, outcome) in self.outcomes.into_iter().enumerate() {
            let answer = match outcome {
                Outcome::Fresh(seq) => {
                    let pending = &batch[i];
                    let key = (pending.ns.clone(), pending.message.room.clone(), seq);
                    Ok(Appended {
                        message: Message {
                            id: ids.get(&key).copied().unwrap_or_default().to_string(),
                            room: pending.message.room.clone(),
                            seq,
                            from: pending.message.from.clone(),
                            text: pending.message.text.clone(),
                            client_id: pending.message.client_id.clone(),
                            at,
                            reply_to: pending.message.reply_to.clone(),
                            ..Default::default()
                        },
                        duplicate: false,
                    })
                }
                Outcome::Done(result) => *result,
                // The original comes first in its room, so its answer is already there.
                Outcome::SameAs(first) => match &answers[first] {
                    Ok(original) => Ok(Appended {
                        message: original.message.clone(),
                        duplicate: true,
                    }),
                    Err(_) => Err(StoreError::Failed {
                        unavailable: false,
                        reason: "the original of this retry was not written".to_owned(),
                    }),
                },
            };
            answers.push(answer);
        }
        answers
    }
}

/// The answer to an append that failed in a transaction of its own: the database refusing the row (a
/// constraint, a trigger, a value it cannot store) is this message's fault alone; any other failure is not.
fn failed_alone(error: StoreError) -> StoreError {
    match error {
        StoreError::Other(sqlx::Error::Database(db)) if super::is_data_error(db.as_ref()) => {
            StoreError::Rejected {
                reason: db.to_string(),
            }
        }
        StoreError::Unavailable(_) => StoreError::Failed {
            unavailable: true,
            reason: error.to_string(),
        },
        other => StoreError::Failed {
            unavailable: false,
            reason: other.to_string(),
        },
    }
}

impl<DB> SqlStore<DB>
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
    /// A store on these pools, with `message_writers` group-commit message writers on `writer` (at least one).
    pub(super) fn new(writer: Pool<DB>, pool: Pool<DB>, message_writers: usize) -> Self {
        let hooks = Arc::new(AtomicU8::new(0));
        let wake = Arc::new(HookWake::default());
        let commit_metrics = Arc::new(std::sync::OnceLock::new());
        let batchers = (0..message_writers.max(1))
            .map(|_| {
                let batch_pool = writer.clone();
                let batch_hooks = hooks.clone();
                let batch_wake = wake.clone();
                let batch_metrics = commit_metrics.clone();
                Batcher::spawn(move |batch| {
                    let events = HookEvents::from_bits(batch_hooks.load(Ordering::Relaxed));
                    let wake = events
                        .contains(HookEvent::MessageCreated)
                        .then(|| batch_wake.clone());
                    let metrics = batch_metrics.get().cloned();
                    Self::commit_batch(batch_pool.clone(), wake, metrics, batch)
                })
            })
            .collect();
        let read_pool = writer.clone();
        let reads = Batcher::spawn_gathering(super::changes::READS_GATHER, move |batch| {
            Self::commit_reads(read_pool.clone(), batch)
        });
        Self {
            writer,
            pool,
            batchers,
            reads,
            hooks,
            wake,
            commit_metrics,
        }
    }

    /// The message writer of a room: always the same one, so a room's messages commit in the order sent.
    fn batcher_for(&self, ns: &str, room: &str) -> &Batcher<Pending> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        (ns, room).hash(&mut hasher);
        let shard = (hasher.finish() % self.batchers.len() as u64) as usize;
        &self.batchers[shard]
    }

    fn events(&self) -> HookEvents {
        HookEvents::from_bits(self.hooks.load(Ordering::Relaxed))
    }

    /// Commits a batch of appends in one transaction and answers each of them, then wakes webhook delivery
    /// for the batch's rooms (`wake`, with `message.created` webhooks on). When the batch fails for any reason
    /// but an unreachable database, each append is retried in a transaction of its own, in batch order, so that
    /// a message the database refuses fails alone and every other one commits.
    async fn commit_batch(
        pool: Pool<DB>,
        wake: Option<Arc<HookWake>>,
        metrics: Option<crate::metrics::CommitMetrics>,
        batch: Vec<Pending>,
    ) {
        let rooms: Vec<(String, String)> = match &wake {
            Some(_) => batch
                .iter()
                .map(|p| (p.ns.clone(), p.message.room.clone()))
                .collect(),
            None => Vec::new(),
        };
        let (size, started) = (batch.len(), std::time::Instant::now());
        Self::commit_and_answer(&pool, batch).await;
        if let Some(metrics) = metrics {
            metrics.record(size, started.elapsed());
        }
        if let Some(wake) = wake {
            wake.rooms(rooms.iter().map(|(ns, room)| (ns.as_str(), room.as_str())));
        }
    }

    async fn commit_and_answer(pool: &Pool<DB>, batch: Vec<Pending>) {
        let error = match Self::write_batch(pool, &batch).await {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    pending.answer(answer);
                }
                return;
            }
            Err(error) => error,
        };
        let batch = match <[Pending; 1]>::try_from(batch) {
            Ok([pending]) => {
                // Alone in its batch: nothing to isolate it from.
                pending.answer(Err(failed_alone(error)));
                return;
            }
            Err(batch) => batch,
        };
        if matches!(error, StoreError::Unavailable(_)) {
            // A retry cannot help: everyone gets `unavailable`.
            tracing::warn!(error = %error, messages = batch.len(), "message batch failed");
            let reason = error.to_string();
            for pending in batch {
                pending.answer(Err(StoreError::Failed {
                    unavailable: true,
                    reason: reason.clone(),
                }));
            }
            return;
        }
        tracing::warn!(error = %error, messages = batch.len(), "message batch failed, retrying one by one");
        // Once the database is gone, the appends still waiting fail at once instead of each waiting for it.
        let mut gone: Option<String> = None;
        for pending in batch {
            let answer = if let Some(reason) = &gone {
                Err(StoreError::Failed {
                    unavailable: true,
                    reason: reason.clone(),
                })
            } else {
                match Self::write_batch(pool, std::slice::from_ref(&pending)).await {
                    Ok(mut answers) => answers.pop().expect("one answer per append"),
                    Err(error) => {
                        let error = failed_alone(error);
                        if let StoreError::Failed {
                            unavailable: true,
                            reason,
                        } = &error
                        {
                            gone = Some(reason.clone());
                        }
                        Err(error)
                    }
                }
            };
            pending.answer(answer);
        }
    }

    /// Writes a batch in one transaction and answers each append; `Err` when the transaction failed as a whole
    /// (nothing of it is stored).
    ///
    /// A batch whose appends carry client ids is first written optimistically, as if none were a retry: its
    /// insert skips any row whose client id is already stored. Only when a row was skipped (a retry of a
    /// committed message, which is rare) is that transaction rolled back and the batch written again reading the
    /// originals first. So the common case costs no lookup of client ids at all.
    #[tracing::instrument(level = "debug", skip_all, fields(messages = batch.len()))]
    async fn write_batch(
        pool: &Pool<DB>,
        batch: &[Pending],
    ) -> StoreResult<Vec<StoreResult<Appended>>> {
        let mut by_room: BTreeMap<RoomKey<'_>, Vec<usize>> = BTreeMap::new();
        for (i, pending) in batch.iter().enumerate() {
            by_room
                .entry((pending.ns.as_str(), pending.message.room.as_str()))
                .or_default()
                .push(i);
        }
        if batch.iter().any(|p| p.message.client_id.is_some())
            && let Some(answers) =
                Self::try_batch(pool, batch, &by_room, Retries::Optimistic).await?
        {
            return Ok(answers);
        }
        Self::try_batch(pool, batch, &by_room, Retries::LookedUp)
            .await?
            .ok_or_else(|| StoreError::Failed {
                unavailable: false,
                reason: "the batch's insert wrote fewer rows than it was given".to_owned(),
            })
    }

    /// One transaction for the whole batch, in a fixed number of statements however many rooms it touches: lock
    /// the rooms' counters, read the originals of retried client ids (with [`Retries::LookedUp`]), bump the
    /// counters, insert the messages. Rooms are locked in (ns, id) order, so writers on several nodes cannot
    /// deadlock; a room's lock is taken before its client ids are checked or inserted, so a retry racing on
    /// another node cannot slip in between.
    ///
    /// `Ok(None)` (only with [`Retries::Optimistic`]) when the insert skipped a stored client id: the transaction
    /// is rolled back, to be written again with [`Retries::LookedUp`].
    ///
    /// Webhooks add nothing here: `message.created` is delivered from the messages themselves, past a cursor per
    /// room (`migrations/*/0006_webhook_cursors.sql`). The first statement also says which rooms have a ban or mute
    /// in force; only when one of the batch's rooms has, another statement reads the sanctions of its senders,
    /// whose messages are refused.
    async fn try_batch(
        pool: &Pool<DB>,
        batch: &[Pending],
        by_room: &BTreeMap<RoomKey<'_>, Vec<usize>>,
        retries: Retries,
    ) -> StoreResult<Option<Vec<StoreResult<Appended>>>> {
        let at = super::now();
        let mut tx = pool.begin().await?;
        let counters = Self::lock_counters(&mut tx, by_room.keys(), at).await?;
        let sanctions = Self::read_sanctions(&mut tx, batch, &counters.sanctioned, at).await?;
        let originals = match retries {
            Retries::Optimistic => HashMap::new(),
            Retries::LookedUp => Self::read_originals(&mut tx, batch).await?,
        };
        let numbering = Numbering::new(batch, by_room, &counters.last, originals, &sanctions);
        Self::bump_counters(&mut tx, &numbering.bumped, at).await?;
        let fresh = numbering.fresh();
        let ids = Self::insert_messages(&mut tx, batch, &fresh, retries, at).await?;
        if ids.len() < fresh.len() {
            tx.rollback().await?;
            return Ok(None);
        }
        let answers = numbering.answers(batch, &ids, at);
        tx.commit().await?;
        Ok(Some(answers))
    }

    /// `INSERT INTO webhook_outbox`, one multi-row statement per [`ROWS_PER_INSERT`] rows, due at once.
    async fn insert_hooks(
        tx: &mut DB::Connection,
        rows: &[NewHook],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO webhook_outbox (ns, room, event, payload, created_at, next_attempt_at) ",
            );
            insert.push_values(chunk, |mut row, hook| {
                row.push_bind(hook.ns.as_str())
                    .push_bind(hook.room.as_str())
                    .push_bind(hook.event.name())
                    .push_bind(hook.data.as_str())
                    .push_bind(at)
                    .push_bind(at);
            });
            insert.build().execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The member-added rows of `users` in `room`, if webhooks want them.
    fn member_hooks<'u>(
        &self,
        event: HookEvent,
        ns: &str,
        room: &str,
        users: impl Iterator<Item = &'u Author>,
    ) -> Vec<NewHook> {
        if !self.events().contains(event) {
            return Vec::new();
        }
        users
            .map(|user| NewHook::member(event, ns, room, user))
            .collect()
    }

    /// Statement 1 of a batch: the `last_seq` of each of its rooms that exists, locked, and whether a ban or
    /// mute is in force in it at `at` (an index probe per room, in the same round trip).
    async fn lock_counters<'b>(
        tx: &mut DB::Connection,
        rooms: impl Iterator<Item = &'b RoomKey<'b>>,
        at: DateTime<Utc>,
    ) -> StoreResult<Counters> {
        let mut lock = QueryBuilder::<DB>::new(
            "SELECT ns, id, last_seq, EXISTS (SELECT 1 FROM room_sanctions s \
                 WHERE s.ns = rooms.ns AND s.room = rooms.id AND (s.until IS NULL OR s.until > ",
        );
        lock.push_bind(at)
            .push(")) FROM rooms WHERE (ns, id) IN (VALUES ");
        let mut list = lock.separated(", ");
        for &(ns, room) in rooms {
            list.push("(")
                .push_bind_unseparated(ns)
                .push_unseparated(", ");
            list.push_bind_unseparated(room).push_unseparated(")");
        }
        lock.push(") ORDER BY ns, id").push(DB::LOCK_ROWS);
        let rows: Vec<(String, String, i64, bool)> =
            lock.build_query_as().fetch_all(&mut *tx).await?;
        let mut counters = Counters {
            last: HashMap::with_capacity(rows.len()),
            sanctioned: Vec::new(),
        };
        for (ns, room, last, sanctioned) in rows {
            if sanctioned {
                counters.sanctioned.push((ns.clone(), room.clone()));
            }
            counters.last.insert((ns, room), last);
        }
        Ok(counters)
    }

    /// The bans and mutes in force at `at` of the batch's senders in `rooms` (the batch's rooms where someone is
    /// sanctioned; none: no statement at all). A ban wins over a mute.
    async fn read_sanctions(
        tx: &mut DB::Connection,
        batch: &[Pending],
        rooms: &[(String, String)],
        at: DateTime<Utc>,
    ) -> StoreResult<HashMap<SenderKey, Sanction>> {
        let mut sanctions = HashMap::new();
        if rooms.is_empty() {
            return Ok(sanctions);
        }
        let mut senders: Vec<(&str, &str, &str)> = batch
            .iter()
            .filter(|p| {
                rooms
                    .iter()
                    .any(|(ns, room)| *ns == p.ns && *room == p.message.room)
            })
            .map(|p| {
                let m = &p.message;
                (p.ns.as_str(), m.room.as_str(), m.from.id.as_str())
            })
            .collect();
        senders.sort_unstable();
        senders.dedup();
        let mut select = QueryBuilder::<DB>::new(
            "SELECT ns, room, user_id, kind, until FROM room_sanctions WHERE (until IS NULL OR until > ",
        );
        select
            .push_bind(at)
            .push(") AND (ns, room, user_id) IN (VALUES ");
        let mut list = select.separated(", ");
        for (ns, room, user) in senders {
            list.push("(")
                .push_bind_unseparated(ns)
                .push_unseparated(", ");
            list.push_bind_unseparated(room).push_unseparated(", ");
            list.push_bind_unseparated(user).push_unseparated(")");
        }
        select.push(")");
        type Row = (String, String, String, String, Option<DateTime<Utc>>);
        let rows: Vec<Row> = select.build_query_as().fetch_all(&mut *tx).await?;
        for (ns, room, user, kind, until) in rows {
            let kind = SanctionKind::parse(&kind);
            let entry = sanctions
                .entry((ns, room, user))
                .or_insert(Sanction { kind, until });
            if kind == SanctionKind::Ban {
                *entry = Sanction { kind, until };
            }
        }
        Ok(sanctions)
    }

    /// Statement 2 of a batch written with [`Retries::LookedUp`]: the messages already stored under the batch's
    /// client ids, the originals of retries, read under the room locks. One query per scope, each by its unique
    /// index: `messages_client_id` for sender-scoped keys, `messages_room_client_id` for room-scoped ones.
    async fn read_originals(
        tx: &mut DB::Connection,
        batch: &[Pending],
    ) -> StoreResult<HashMap<ClientKey, MessageRow>> {
        let mut originals = HashMap::new();
        for scope in [super::ClientIdScope::Sender, super::ClientIdScope::Room] {
            // Collected rather than iterated lazily: a closure's iterator kept in this future defeats rustc's
            // proof that the batch writer's future is `Send` (a known limitation with generic higher-ranked
            // bounds).
            let keys: Vec<(&Pending, &str)> = batch
                .iter()
                .filter(|p| p.message.client_id_scope == scope)
                .filter_map(|p| Some((p, p.message.client_id.as_deref()?)))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let room_scoped = scope == super::ClientIdScope::Room;
            let mut select = QueryBuilder::<DB>::new(if room_scoped {
                concat!(
                    "SELECT m.ns AS ns, ",
                    message_columns_with_replies!(),
                    "WHERE m.room_client_id IS NOT NULL AND (m.ns, m.room, m.room_client_id) IN (VALUES "
                )
            } else {
                concat!(
                    "SELECT m.ns AS ns, ",
                    message_columns_with_replies!(),
                    "WHERE m.client_id IS NOT NULL AND (m.ns, m.room, m.sender_id, m.client_id) IN (VALUES "
                )
            });
            let mut list = select.separated(", ");
            for (p, client_id) in keys {
                list.push("(")
                    .push_bind_unseparated(p.ns.as_str())
                    .push_unseparated(", ");
                list.push_bind_unseparated(p.message.room.as_str())
                    .push_unseparated(", ");
                if !room_scoped {
                    list.push_bind_unseparated(p.message.from.id.as_str())
                        .push_unseparated(", ");
                }
                list.push_bind_unseparated(client_id).push_unseparated(")");
            }
            select.push(")");
            let rows: Vec<OriginalRow> = select.build_query_as().fetch_all(&mut *tx).await?;
            for OriginalRow { ns, message } in rows {
                let owner = if room_scoped {
                    String::new()
                } else {
                    message.sender_id.clone()
                };
                let client_id = message.client_id.clone().unwrap_or_default();
                originals.insert((ns, message.room.clone(), owner, client_id), message);
            }
        }
        Ok(originals)
    }

    /// Statement 3 of a batch: the new counters of the rooms that get messages, and their activity time.
    async fn bump_counters(
        tx: &mut DB::Connection,
        bumped: &[(&str, &str, i64)],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        if bumped.is_empty() {
            return Ok(());
        }
        let mut update =
            QueryBuilder::<DB>::new("UPDATE rooms SET last_seq = v.column3, last_active_at = ");
        update.push_bind(at).push(" FROM (VALUES ");
        let mut list = update.separated(", ");
        for &(ns, room, seq) in bumped {
            list.push("(")
                .push_bind_unseparated(ns)
                .push_unseparated(", ");
            list.push_bind_unseparated(room).push_unseparated(", ");
            list.push_bind_unseparated(seq).push_unseparated(")");
        }
        update.push(") AS v WHERE rooms.ns = v.column1 AND rooms.id = v.column2");
        update.build().execute(&mut *tx).await?;
        Ok(())
    }

    /// Statement 4 of a batch: the new messages, `fresh` being (index in the batch, seq). Returns the ids of
    /// the rows inserted, by (ns, room, seq). With [`Retries::Optimistic`] a row whose client id is already
    /// stored is skipped (so fewer ids come back); otherwise it fails the statement.
    async fn insert_messages(
        tx: &mut DB::Connection,
        batch: &[Pending],
        fresh: &[(usize, i64)],
        retries: Retries,
        at: DateTime<Utc>,
    ) -> StoreResult<HashMap<(String, String, i64), i64>> {
        if fresh.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<MessageInsert<'_>> = fresh
            .iter()
            .map(|&(i, seq)| MessageInsert::new(&batch[i], seq))
            .collect();
        let skip_stored = retries == Retries::Optimistic;
        let inserted = DB::insert_messages(tx, &rows, skip_stored, at).await?;
        Ok(inserted
            .into_iter()
            .map(|(id, ns, room, seq)| ((ns, room, seq), id))
            .collect())
    }

    /// `INSERT INTO refresh_tokens`, in `family`, for `user`.
    async fn insert_refresh_row<'c>(
        executor: impl Executor<'c, Database = DB>,
        token: &NewRefresh,
        family: &str,
        user: &Author,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family, user_id, user_name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token.hash.as_str())
        .bind(family)
        .bind(user.id.as_str())
        .bind(user.name.as_str())
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(executor)
        .await?;
        Ok(())
    }

    /// Revokes every token of a family that is not revoked yet.
    async fn revoke_family<'c>(
        executor: impl Executor<'c, Database = DB>,
        family: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        )
        .bind(family)
        .bind(super::now())
        .execute(executor)
        .await?;
        Ok(())
    }

    /// `INSERT INTO rooms`, unless it exists: whether this created it.
    async fn insert_room<'c>(
        executor: impl Executor<'c, Database = DB>,
        ns: &str,
        room: &Room,
        created_by: Option<&str>,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO rooms (ns, id, name, kind, visibility, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(ns)
        .bind(room.id.as_str())
        .bind(room.name.as_str())
        .bind(room.kind.as_str())
        .bind(room.visibility.as_str())
        .bind(room.created_at)
        .bind(created_by)
        .execute(executor)
        .await?;
        Ok(DB::rows_affected(&inserted) == 1)
    }

    /// `INSERT INTO memberships` of the rows that do not exist yet (a member or an invitee is never demoted or
    /// re-invited): the ids of the users whose rows this wrote.
    async fn insert_memberships(
        tx: &mut DB::Connection,
        ns: &str,
        room: &str,
        rows: &[NewMembership<'_>],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let mut written = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<DB>::new(
                "INSERT INTO memberships (ns, room, user_id, user_name, joined_at, state, invited_by, invited_by_name) ",
            );
            insert.push_values(chunk, |mut row, m| {
                row.push_bind(ns)
                    .push_bind(room)
                    .push_bind(m.user.id.as_str())
                    .push_bind(m.user.name.as_str())
                    .push_bind(at)
                    .push_bind(m.state())
                    .push_bind(m.invited_by.map(|by| by.id.as_str()))
                    .push_bind(m.invited_by.map(|by| by.name.as_str()));
            });
            insert.push(" ON CONFLICT DO NOTHING RETURNING user_id");
            let ids: Vec<(String,)> = insert
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(or_no_such_room(room))?;
            written.extend(ids.into_iter().map(|(id,)| id));
        }
        Ok(written)
    }

    /// A room as stored.
    async fn read_room<'c>(
        executor: impl Executor<'c, Database = DB>,
        ns: &str,
        room: &str,
    ) -> StoreResult<Option<Room>> {
        let row: Option<RoomRow> = sqlx::query_as(
            "SELECT id, name, kind, visibility, created_at FROM rooms WHERE ns = $1 AND id = $2",
        )
        .bind(ns)
        .bind(room)
        .fetch_optional(executor)
        .await?;
        Ok(row.map(Room::from))
    }

    /// Whether the user's membership row of the room is in this state.
    async fn has_state(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        state: &str,
    ) -> StoreResult<bool> {
        let found = sqlx::query(
            "SELECT 1 FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3 AND state = $4",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .bind(state)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// A history page with each message's reactions as `viewer` sees them ([`Store::history`] and
    /// [`super::Changes::history_for`]): one statement for the messages (and, for replies, the messages they
    /// answer), and one for the reactions of those that were ever changed.
    pub(super) async fn read_history(
        &self,
        ns: &str,
        room: &str,
        query: HistoryQuery,
        viewer: Option<&str>,
    ) -> StoreResult<HistoryPage> {
        // Two static statements, one per direction, so that each keeps its prepared plan.
        let sql = if query.ascending() {
            concat!(
                select_messages_with_replies!(),
                "WHERE m.ns = $1 AND m.room = $2 AND m.seq < $3 AND m.seq > $4 ORDER BY m.seq ASC LIMIT $5"
            )
        } else {
            concat!(
                select_messages_with_replies!(),
                "WHERE m.ns = $1 AND m.room = $2 AND m.seq < $3 AND m.seq > $4 ORDER BY m.seq DESC LIMIT $5"
            )
        };
        let rows: Vec<MessageRow> = sqlx::query_as(sql)
            .bind(ns)
            .bind(room)
            .bind(query.before.unwrap_or(i64::MAX))
            .bind(query.after.unwrap_or(0))
            .bind(i64::from(query.limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let messages = rows.into_iter().map(Message::from).collect();
        let mut page = HistoryPage::from_rows(messages, &query);
        self.attach_reactions(ns, room, &mut page.messages, viewer)
            .await?;
        Ok(page)
    }

    /// [`Store::add_member`] with webhooks for `room.member_added`: the membership and, when the user was not a
    /// member before (new, or accepting an invitation), its outbox row, in one transaction.
    async fn add_member_with_hook(&self, ns: &str, room: &str, user: &Author) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let before: Option<String> = sqlx::query_scalar(
            "SELECT state FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3",
        )
        .bind(ns)
        .bind(room)
        .bind(user.id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let at = super::now();
        sqlx::query(ADD_MEMBER)
            .bind(ns)
            .bind(room)
            .bind(user.id.as_str())
            .bind(user.name.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(or_no_such_room(room))?;
        if before.as_deref() != Some(JOINED) {
            let hook = NewHook::member(HookEvent::MemberAdded, ns, room, user);
            Self::insert_hooks(&mut tx, std::slice::from_ref(&hook), at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::remove_member`] with webhooks for `room.member_removed`: the deletion and, when it was a member
    /// (not an invitation), its outbox row, in one transaction.
    async fn remove_member_with_hook(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
        let removed: Option<(String, String)> = sqlx::query_as(
            "DELETE FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3 RETURNING user_name, state",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((name, state)) = removed else {
            return Ok(false);
        };
        if state == JOINED {
            let user = Author {
                id: user_id.to_owned(),
                name,
            };
            let hook = NewHook::member(HookEvent::MemberRemoved, ns, room, &user);
            Self::insert_hooks(&mut tx, std::slice::from_ref(&hook), super::now()).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Backend + super::search::SearchSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<DateTime<Utc>>: for<'a> Encode<'a, DB>,
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn room(&self, ns: &str, room: &str) -> StoreResult<Option<Room>> {
        Self::read_room(&self.pool, ns, room).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, room = %room.id, invited = invited.len()))]
    async fn create_room(
        &self,
        ns: &str,
        room: &Room,
        creator: &Author,
        invited: &[Author],
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
        if !Self::insert_room(&mut *tx, ns, room, Some(&creator.id)).await? {
            return Ok(false);
        }
        let rows: Vec<NewMembership<'_>> = std::iter::once(NewMembership {
            user: creator,
            invited_by: None,
        })
        .chain(invited.iter().map(|user| NewMembership {
            user,
            invited_by: Some(creator),
        }))
        .collect();
        let written =
            Self::insert_memberships(&mut tx, ns, &room.id, &rows, room.created_at).await?;
        let hooks = self.member_hooks(
            HookEvent::MemberAdded,
            ns,
            &room.id,
            std::iter::once(creator).filter(|c| written.contains(&c.id)),
        );
        Self::insert_hooks(&mut tx, &hooks, super::now()).await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, room = %room.id))]
    async fn create_dm(&self, ns: &str, room: &Room, users: [&Author; 2]) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
        if !Self::insert_room(&mut *tx, ns, room, None).await? {
            return Ok(false);
        }
        let rows = users.map(|user| NewMembership {
            user,
            invited_by: None,
        });
        let written =
            Self::insert_memberships(&mut tx, ns, &room.id, &rows, room.created_at).await?;
        let hooks = self.member_hooks(
            HookEvent::MemberAdded,
            ns,
            &room.id,
            users.into_iter().filter(|u| written.contains(&u.id)),
        );
        Self::insert_hooks(&mut tx, &hooks, super::now()).await?;
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, room = %room.id))]
    async fn ensure_room(&self, ns: &str, room: &Room, creator: &str) -> StoreResult<(Room, bool)> {
        let created = Self::insert_room(&self.writer, ns, room, Some(creator)).await?;
        match Self::read_room(&self.writer, ns, &room.id).await? {
            Some(stored) => Ok((stored, created)),
            None => Err(StoreError::NoSuchRoom(room.id.clone())),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, room = %room.id))]
    async fn put_room(&self, ns: &str, room: &Room) -> StoreResult<(Room, bool)> {
        let mut tx = self.writer.begin().await?;
        let created = Self::insert_room(&mut *tx, ns, room, None).await?;
        if !created {
            sqlx::query(
                "UPDATE rooms SET name = $3, visibility = $4 WHERE ns = $1 AND id = $2 AND kind = 'group'",
            )
            .bind(ns)
            .bind(room.id.as_str())
            .bind(room.name.as_str())
            .bind(room.visibility.as_str())
            .execute(&mut *tx)
            .await?;
        }
        let stored = Self::read_room(&mut *tx, ns, &room.id).await?;
        tx.commit().await?;
        stored
            .map(|stored| (stored, created))
            .ok_or_else(|| StoreError::NoSuchRoom(room.id.clone()))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn redeem_code(&self, hash: &str) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO redeemed_codes (hash, redeemed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(hash)
        .bind(super::now())
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(&inserted) == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = %token.user.id))]
    async fn insert_refresh(&self, token: &NewRefresh) -> StoreResult<()> {
        Self::insert_refresh_row(&self.writer, token, &token.family, &token.user).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate_refresh(
        &self,
        old: &str,
        new: &str,
        grace: chrono::Duration,
    ) -> StoreResult<Rotation> {
        // An unknown token (a guess, a typo) is answered from the read pool: it must not take the writer.
        let known: Option<(String,)> =
            sqlx::query_as("SELECT family FROM refresh_tokens WHERE hash = $1")
                .bind(old)
                .fetch_optional(&self.pool)
                .await?;
        if known.is_none() {
            return Ok(Rotation::Unknown);
        }
        let now = super::now();
        let mut tx = self.writer.begin().await?;
        let mut select = QueryBuilder::<DB>::new(
            "SELECT family, user_id, user_name, expires_at, rotated_at, revoked_at FROM refresh_tokens WHERE hash = ",
        );
        select.push_bind(old).push(DB::LOCK_ROWS);
        let row: Option<RefreshRow> = select.build_query_as().fetch_optional(&mut *tx).await?;
        let Some(row) = row else {
            return Ok(Rotation::Unknown);
        };
        let reused = row.rotated_at.is_some_and(|at| at <= now - grace);
        let outcome = if row.revoked_at.is_some() {
            Rotation::Revoked
        } else if reused {
            Self::revoke_family(&mut *tx, &row.family).await?;
            Rotation::Reused
        } else if row.expires_at <= now {
            Rotation::Expired
        } else {
            // Rotated moments ago: two tabs refreshing at once, or a retry whose answer was lost. Not a theft:
            // this one gets a token of the family too.
            if row.rotated_at.is_none() {
                sqlx::query("UPDATE refresh_tokens SET rotated_at = $2 WHERE hash = $1")
                    .bind(old)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let user = Author {
                id: row.user_id,
                name: row.user_name,
            };
            // The session ends when it was due to at sign-in: refreshing does not extend it.
            let token = NewRefresh {
                hash: new.to_owned(),
                family: row.family.clone(),
                user: user.clone(),
                created_at: now,
                expires_at: row.expires_at,
            };
            Self::insert_refresh_row(&mut *tx, &token, &row.family, &user).await?;
            Rotation::Rotated {
                user,
                expires_at: row.expires_at,
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user = %user_id))]
    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let revoked = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(super::now())
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(&revoked))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn prune_sessions(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        let codes = sqlx::query("DELETE FROM redeemed_codes WHERE redeemed_at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(DB::rows_affected(&tokens) + DB::rows_affected(&codes))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_refresh(&self, hash: &str) -> StoreResult<bool> {
        let family: Option<(String,)> =
            sqlx::query_as("SELECT family FROM refresh_tokens WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.writer)
                .await?;
        let Some((family,)) = family else {
            return Ok(false);
        };
        Self::revoke_family(&self.writer, &family).await?;
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %creator))]
    async fn rooms_created_since(
        &self,
        ns: &str,
        creator: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<i64> {
        let count = sqlx::query_scalar(
            "SELECT COUNT(*) FROM rooms WHERE ns = $1 AND created_by = $2 AND created_at >= $3",
        )
        .bind(ns)
        .bind(creator)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user.id))]
    async fn add_member(&self, ns: &str, room: &str, user: &Author) -> StoreResult<()> {
        if self.events().contains(HookEvent::MemberAdded) {
            return self.add_member_with_hook(ns, room, user).await;
        }
        sqlx::query(ADD_MEMBER)
            .bind(ns)
            .bind(room)
            .bind(user.id.as_str())
            .bind(user.name.as_str())
            .bind(super::now())
            .execute(&self.writer)
            .await
            .map_err(or_no_such_room(room))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, by = %by.id, users = users.len()))]
    async fn invite(
        &self,
        ns: &str,
        room: &str,
        by: &Author,
        users: &[Author],
    ) -> StoreResult<Vec<String>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<NewMembership<'_>> = users
            .iter()
            .map(|user| NewMembership {
                user,
                invited_by: Some(by),
            })
            .collect();
        let mut tx = self.writer.begin().await?;
        let invited = Self::insert_memberships(&mut tx, ns, room, &rows, super::now()).await?;
        tx.commit().await?;
        Ok(invited)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn decline(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
        let removed = sqlx::query(
            "DELETE FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3 AND state = 'invited'",
        )
        .bind(ns)
        .bind(room)
        .bind(user_id)
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(&removed) > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn remove_member(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
        if self.events().contains(HookEvent::MemberRemoved) {
            return self.remove_member_with_hook(ns, room, user_id).await;
        }
        let removed =
            sqlx::query("DELETE FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3")
                .bind(ns)
                .bind(room)
                .bind(user_id)
                .execute(&self.writer)
                .await?;
        Ok(DB::rows_affected(&removed) > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn is_member(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
        self.has_state(ns, room, user_id, JOINED).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, user = %user_id))]
    async fn is_invited(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
        self.has_state(ns, room, user_id, INVITED).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, user = %user_id))]
    async fn user_rooms(
        &self,
        ns: &str,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<RoomSummary>> {
        // Driven by the user's memberships (memberships_by_user), joined to their rooms by primary key.
        let rows: Vec<SummaryRow> = sqlx::query_as(concat!(
            summary_columns!(),
            "TRUE AS member, FALSE AS invited \
             FROM memberships m JOIN rooms r ON r.ns = m.ns AND r.id = m.room",
            peer_join!(),
            // Group rooms, which the user joined themself, come before DMs, which anyone can start: a flood
            // of DMs from strangers can push out older DMs, never the user's rooms.
            "WHERE m.ns = $1 AND m.user_id = $2 AND m.state = 'joined' \
             ORDER BY (r.kind = 'dm'), COALESCE(r.last_active_at, r.created_at) DESC, r.id LIMIT $3"
        ))
        .bind(ns)
        .bind(user_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(RoomSummary::from).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, user = %user_id))]
    async fn invitations(&self, ns: &str, user_id: &str) -> StoreResult<Vec<Invitation>> {
        let rows: Vec<InvitationRow> = sqlx::query_as(
            "SELECT r.id, r.name, r.kind, r.visibility, r.created_at, \
                    m.invited_by, m.invited_by_name, m.joined_at AS invited_at \
             FROM memberships m JOIN rooms r ON r.ns = m.ns AND r.id = m.room \
             WHERE m.ns = $1 AND m.user_id = $2 AND m.state = 'invited' \
             ORDER BY m.joined_at DESC, r.id LIMIT $3",
        )
        .bind(ns)
        .bind(user_id)
        .bind(super::MAX_LISTED_ROOMS)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Invitation::from).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, user = %user_id, with_public))]
    async fn list_rooms(
        &self,
        ns: &str,
        user_id: &str,
        with_public: bool,
    ) -> StoreResult<Vec<RoomSummary>> {
        let rows: Vec<SummaryRow> = sqlx::query_as(concat!(
            summary_columns!(),
            "(m.state IS NOT NULL AND m.state = 'joined') AS member, \
             (m.state IS NOT NULL AND m.state = 'invited') AS invited \
             FROM rooms r \
             LEFT JOIN memberships m ON m.ns = r.ns AND m.room = r.id AND m.user_id = $2",
            peer_join!(),
            "WHERE r.ns = $1 AND (m.user_id IS NOT NULL OR ($4 AND r.visibility = 'public')) \
             ORDER BY COALESCE(r.last_active_at, r.created_at) DESC, r.id LIMIT $3"
        ))
        .bind(ns)
        .bind(user_id)
        .bind(super::MAX_LISTED_ROOMS)
        .bind(with_public)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(RoomSummary::from).collect())
    }

    // The text stays out of the span; the batch writer's own span (`write_batch`) counts the messages.
    #[tracing::instrument(level = "debug", skip_all, fields(%ns, room = %new.room, user = %new.from.id))]
    async fn append_message(&self, ns: &str, new: NewMessage) -> StoreResult<Appended> {
        self.batcher_for(ns, &new.room).append(ns, new).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, %sender))]
    async fn next_seq(&self, ns: &str, room: &str, sender: &str) -> StoreResult<i64> {
        // A banned or muted sender gets no number: the same statement checks, and only a refusal asks why.
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE rooms SET last_seq = last_seq + 1 WHERE ns = $1 AND id = $2 AND NOT EXISTS (\
                 SELECT 1 FROM room_sanctions s WHERE s.ns = $1 AND s.room = $2 AND s.user_id = $3 \
                     AND (s.until IS NULL OR s.until > $4)) \
             RETURNING last_seq",
        )
        .bind(ns)
        .bind(room)
        .bind(sender)
        .bind(super::now())
        .fetch_optional(&self.writer)
        .await?;
        if let Some(seq) = seq {
            return Ok(seq);
        }
        let sanctions = super::Moderation::sanctions(self, ns, room, sender).await?;
        let refusal = sanctions
            .iter()
            .find(|s| s.kind == SanctionKind::Ban)
            .or(sanctions.first());
        Err(match refusal {
            Some(&sanction) => StoreError::Sanctioned {
                room: room.to_owned(),
                sanction,
            },
            None => StoreError::NoSuchRoom(room.to_owned()),
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn history(&self, ns: &str, room: &str, query: HistoryQuery) -> StoreResult<HistoryPage> {
        self.read_history(ns, room, query, None).await
    }

    fn enable_hooks(&self, events: HookEvents) {
        self.hooks.store(events.bits(), Ordering::Relaxed);
    }

    fn hook_events(&self) -> HookEvents {
        self.events()
    }

    fn enable_metrics(&self, commit: crate::metrics::CommitMetrics) {
        // Set once per store; a second server on the same store keeps the first one's.
        let _ = self.commit_metrics.set(commit);
    }

    fn pool_stats(&self) -> Vec<super::PoolStats> {
        let stats = |name: &'static str, pool: &Pool<DB>| super::PoolStats {
            pool: name,
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        };
        if DB::NAME == <sqlx::Postgres as Database>::NAME {
            vec![stats("shared", &self.pool)]
        } else {
            vec![stats("writer", &self.writer), stats("reader", &self.pool)]
        }
    }

    async fn outbox_depth(&self) -> StoreResult<(i64, i64)> {
        // Each count reads its own partial index (`webhook_outbox_room`, `webhook_outbox_failed`).
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        let failed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'failed'")
                .fetch_one(&self.pool)
                .await?;
        Ok((pending, failed))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(hooks = hooks.len()))]
    async fn enqueue_hooks(&self, hooks: &[NewHook]) -> StoreResult<()> {
        if hooks.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await?;
        Self::insert_hooks(&mut tx, hooks, super::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%node, limit))]
    async fn claim_hooks(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedHook>> {
        // The head of each room's queue (its first pending row, found on the `webhook_outbox_room` index alone:
        // one entry per pending row, no table access), if it is due and not under someone else's live lease; so a
        // room's events go out one at a time, in order. Postgres locks the heads it claims and skips those another
        // node is claiming at this very moment; a head claimed and committed meanwhile is re-checked against its
        // new lease and left out. (A first version tested "no earlier pending row" for every due row instead:
        // every new row is due at once, so each claim probed the whole backlog behind a failing endpoint.)
        let sql = format!(
            "UPDATE webhook_outbox SET leased_until = $1, leased_by = $2 WHERE id IN (\
                SELECT o.id FROM webhook_outbox o \
                WHERE o.id IN (SELECT MIN(id) FROM webhook_outbox WHERE state = 'pending' GROUP BY ns, room) \
                  AND o.state = 'pending' AND o.next_attempt_at <= $3 \
                  AND (o.leased_until IS NULL OR o.leased_until < $3) \
                ORDER BY o.id LIMIT $4{}) \
             RETURNING id, event, payload, created_at, attempts, webhook_id",
            DB::SKIP_LOCKED
        );
        // Audited: the only text added is the backend's constant `SKIP_LOCKED`; every value is bound.
        let mut claimed: Vec<ClaimedHook> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(node)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.writer)
            .await?;
        claimed.sort_by_key(|h| h.id);
        Ok(claimed)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn hook_delivered(&self, id: i64, node: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL, \
                 leased_until = NULL, leased_by = NULL \
             WHERE id = $1 AND state = 'pending' AND leased_by = $2",
        )
        .bind(id)
        .bind(node)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(id))]
    async fn hook_failed(
        &self,
        id: i64,
        node: &str,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        max_attempts: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4, \
                 state = CASE WHEN attempts + 1 >= $5 THEN 'failed' ELSE 'pending' END, \
                 leased_until = NULL, leased_by = NULL \
             WHERE id = $1 AND state = 'pending' AND leased_by = $2",
        )
        .bind(id)
        .bind(node)
        .bind(error)
        .bind(next_attempt_at)
        .bind(max_attempts)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%node))]
    async fn release_hooks(&self, node: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE webhook_outbox SET leased_until = NULL, leased_by = NULL \
             WHERE state = 'pending' AND leased_by = $1",
        )
        .bind(node)
        .execute(&self.writer)
        .await?;
        sqlx::query(
            "UPDATE webhook_cursors SET leased_until = NULL, leased_by = NULL WHERE leased_by = $1",
        )
        .bind(node)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    fn hook_wake(&self) -> Arc<HookWake> {
        self.wake.clone()
    }

    async fn start_hook_cursors(&self, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("INSERT INTO webhook_epoch (id, since) VALUES (1, $1) ON CONFLICT DO NOTHING")
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%node, limit))]
    async fn claim_hook_rooms(
        &self,
        node: &str,
        rooms: Option<&[(String, String)]>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedCursor>> {
        if rooms.is_some_and(|r| r.is_empty()) {
            return Ok(Vec::new());
        }
        // `(ns, room) IN ((…), …)` of the rooms asked for, if any.
        fn only<DB: Backend>(
            query: &mut QueryBuilder<DB>,
            columns: &str,
            rooms: Option<&[(String, String)]>,
        ) where
            for<'a> &'a str: Encode<'a, DB> + Type<DB>,
        {
            let Some(rooms) = rooms else { return };
            query.push(format_args!(" AND ({columns}) IN ("));
            let mut list = query.separated(", ");
            for (ns, room) in rooms {
                list.push("(")
                    .push_bind_unseparated(ns.as_str())
                    .push_unseparated(", ")
                    .push_bind_unseparated(room.as_str())
                    .push_unseparated(")");
            }
            query.push(")");
        }
        // A room without a cursor gets one past its messages from before the epoch. A sweep of every room only
        // looks at those active since the epoch; the rest have nothing to deliver.
        let mut adopt = QueryBuilder::<DB>::new(
            "INSERT INTO webhook_cursors (ns, room, delivered_seq, next_attempt_at) \
             SELECT r.ns, r.id, COALESCE((SELECT MAX(m.seq) FROM messages m \
                 WHERE m.ns = r.ns AND m.room = r.id AND m.created_at < e.since), 0), ",
        );
        adopt.push_bind(now).push(
            " FROM rooms r JOIN webhook_epoch e ON e.id = 1 \
             WHERE r.last_seq > 0 AND r.last_active_at >= e.since \
               AND NOT EXISTS (SELECT 1 FROM webhook_cursors w WHERE w.ns = r.ns AND w.room = r.id)",
        );
        only(&mut adopt, "r.ns, r.id", rooms);
        adopt.push(" ON CONFLICT DO NOTHING");
        adopt.build().execute(&self.writer).await?;

        let mut claim = QueryBuilder::<DB>::new("UPDATE webhook_cursors SET leased_until = ");
        claim
            .push_bind(lease_until)
            .push(", leased_by = ")
            .push_bind(node)
            .push(
                " WHERE (ns, room) IN (SELECT c.ns, c.room FROM webhook_cursors c \
                 JOIN rooms r ON r.ns = c.ns AND r.id = c.room \
                 WHERE r.last_seq > c.delivered_seq AND c.next_attempt_at <= ",
            )
            .push_bind(now)
            .push(" AND (c.leased_until IS NULL OR c.leased_until < ")
            .push_bind(now)
            .push(")");
        only(&mut claim, "c.ns, c.room", rooms);
        claim
            .push(" ORDER BY c.next_attempt_at LIMIT ")
            .push_bind(limit)
            .push(DB::SKIP_LOCKED_CURSORS)
            .push(") RETURNING ns, room, delivered_seq, attempts");
        Ok(claim.build_query_as().fetch_all(&self.writer).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room))]
    async fn last_seq(&self, ns: &str, room: &str) -> StoreResult<i64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM rooms WHERE ns = $1 AND id = $2")
                .bind(ns)
                .bind(room)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.unwrap_or(0))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(ns = %cursor.ns, room = %cursor.room))]
    async fn record_cursor(
        &self,
        node: &str,
        cursor: &ClaimedCursor,
        outcome: &CursorOutcome,
    ) -> StoreResult<()> {
        let now = super::now();
        // The cursor never moves back; a node whose lease ran out (and was taken over) writes nothing.
        let (seq, attempts, error, next) = match &outcome.failure {
            None => (outcome.delivered_seq, 0, None, now),
            Some(CursorFailure::Retry {
                error,
                attempts,
                next_attempt_at,
            }) => (
                outcome.delivered_seq,
                *attempts,
                Some(error.as_str()),
                *next_attempt_at,
            ),
            Some(CursorFailure::Dead { seq, .. }) => (*seq, 0, None, now),
        };
        let mut tx = self.writer.begin().await?;
        let moved = sqlx::query(
            "UPDATE webhook_cursors SET \
                 delivered_seq = CASE WHEN delivered_seq > $3 THEN delivered_seq ELSE $3 END, \
                 attempts = $4, last_error = $5, next_attempt_at = $6, leased_until = NULL, leased_by = NULL \
             WHERE ns = $1 AND room = $2 AND leased_by = $7",
        )
        .bind(cursor.ns.as_str())
        .bind(cursor.room.as_str())
        .bind(seq)
        .bind(attempts)
        .bind(error)
        .bind(next)
        .bind(node)
        .execute(&mut *tx)
        .await?;
        if let Some(CursorFailure::Dead {
            hook,
            webhook_id,
            error,
            attempts,
            created_at,
            ..
        }) = &outcome.failure
            && DB::rows_affected(&moved) == 1
        {
            sqlx::query(
                "INSERT INTO webhook_outbox \
                     (ns, room, event, payload, created_at, next_attempt_at, state, attempts, last_error, webhook_id) \
                 VALUES ($1, $2, $3, $4, $5, $9, 'failed', $6, $7, $8)",
            )
            .bind(hook.ns.as_str())
            .bind(hook.room.as_str())
            .bind(hook.event.name())
            .bind(hook.data.as_str())
            .bind(*created_at)
            .bind(*attempts)
            .bind(error.as_str())
            .bind(webhook_id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(limit))]
    async fn failed_hooks(&self, limit: i64) -> StoreResult<Vec<FailedHook>> {
        let rows: Vec<FailedRow> = sqlx::query_as(
            "SELECT id, webhook_id, event, payload, attempts, last_error, created_at FROM webhook_outbox \
             WHERE state = 'failed' ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows.into_iter().map(FailedHook::from).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%webhook_id))]
    async fn retry_hook(&self, webhook_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        // Dead letters are few (and indexed): matching the id as text costs nothing worth an index.
        let done = sqlx::query(
            "UPDATE webhook_outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, \
                 leased_until = NULL, leased_by = NULL \
             WHERE state = 'failed' AND (webhook_id = $1 OR (webhook_id IS NULL AND CAST(id AS TEXT) = $1))",
        )
        .bind(webhook_id)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}
