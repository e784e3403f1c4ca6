//! Full-text search of messages: the store's side of `chat::search`. Postgres matches with a GIN index over the
//! words palaver cuts from each message ([`index_words`], `migrations/postgres/0011_search_words.sql`), SQLite with
//! an FTS5 table (`migrations/sqlite/0008_moderation.sql`); both see the same words (runs of letters and digits,
//! lowercased, accents kept, no stemming), so a query finds the same messages on either.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::sql::{Backend, SqlStore};
use super::{Message, MessageRow, StoreResult};

/// One word of a search: letters and digits only (so nothing in it is query syntax), lowercased; `prefix`
/// matches every word that starts with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchWord {
    pub text: String,
    pub prefix: bool,
}

/// The longest word the search index keeps, in bytes: Postgres refuses a longer lexeme (and its text-search parser
/// left longer words out too). No query can ask for such a word: a query is at most
/// [`crate::chat::search::MAX_QUERY_CHARS`] characters.
pub const MAX_WORD_BYTES: usize = 2047;

/// The words of a text, in order, repeats included: its runs of letters and digits, lowercased. The one rule for
/// what a word is, for the index ([`index_words`]) and for queries (`chat::search::words`).
pub fn words_of(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|run| !run.is_empty())
        .map(str::to_lowercase)
}

/// The words a message is found by, as Postgres's `search_words` stores them for a send and an edit: its runs of
/// letters and digits, lowercased, each once, separated by spaces (a query's words are cut alike,
/// `chat::search::words`). Cut here rather than by Postgres because its text-search parser and regular expressions
/// cost the batch writer ~9 µs a message (BENCHMARKS.md §10).
pub fn index_words(text: &str) -> String {
    let mut words: Vec<String> = words_of(text)
        .filter(|word| word.len() <= MAX_WORD_BYTES)
        .collect();
    words.sort_unstable();
    words.dedup();
    words.join(" ")
}

/// A search: messages holding every word, in one room or in every room `user` may read, newest first.
#[derive(Clone, Copy, Debug)]
pub struct SearchQuery<'a> {
    pub words: &'a [SearchWord],
    /// One room (the caller has checked that the user may read it), or every room the user may read: the rooms
    /// they joined (DMs included) and the namespace's public rooms, as `history:fetch` allows.
    pub room: Option<&'a str>,
    pub user_id: &'a str,
    /// Only messages with a lower id (the next page).
    pub before: Option<i64>,
    pub limit: u32,
}

/// What each backend's search runs.
pub trait SearchSql: Database {
    /// The rows of `messages m` that match the query text `$3`, up to and including the `WHERE` keyword's first
    /// condition.
    const MATCHES: &'static str;
    /// `m.room` is one the user `$2` may read in namespace `$1`: a room they joined, or a public room.
    const READABLE_ROOMS: &'static str;
    /// The query text bound as `$3`.
    fn query_text(words: &[SearchWord]) -> String;
    /// Moves the index's recent entries into its main structure, off the batch writer's path; `None` where the
    /// index needs no such step.
    const MERGE_PENDING: Option<&'static str>;
}

impl SearchSql for sqlx::Postgres {
    // `search_words` holds the words of [`index_words`], and the query is written as lexemes (`query_text`), so
    // that Postgres's text-search parser is on neither side.
    const MATCHES: &'static str = "messages m WHERE m.search_words @@ $3::tsquery";
    // The readable rooms as an array, computed once, and tested on each match of the full-text index rather than
    // used as an index condition (`IS TRUE` keeps the planner from it). As `IN (SELECT …)`, the planner expected two
    // rooms and ran the full-text index scan once per readable room (120 rooms, 1M messages: 37 ms for a word in 5
    // messages, 2.4 s for a word in a third of them); as `= ANY (…)` it intersected the matches with the
    // (ns, room, seq) index over every message of the readable rooms (23 ms for the rare word, growing with the
    // rooms' size). Tested on the matches, a search costs what its word matches: 0.9 ms for the rare word, 132 ms
    // for the common one (BENCHMARKS.md §10).
    const READABLE_ROOMS: &'static str = "(m.room = ANY (ARRAY(SELECT room FROM memberships WHERE ns = $1 AND user_id = $2 AND state = 'joined' \
                                   UNION SELECT id FROM rooms WHERE ns = $1 AND visibility = 'public'))) IS TRUE";
    fn query_text(words: &[SearchWord]) -> String {
        // A tsquery literal: each word quoted (letters and digits only, so nothing in it needs escaping), all
        // required, `:*` making a prefix.
        let terms: Vec<String> = words
            .iter()
            .map(|w| format!("'{}'{}", w.text, if w.prefix { ":*" } else { "" }))
            .collect();
        terms.join(" & ")
    }
    // GIN keeps the entries of new rows in a pending list, which an INSERT only appends to, and merges the list
    // into the index in bulk: here, by a background task every second (migrations/postgres/0009 explains why).
    const MERGE_PENDING: Option<&'static str> =
        Some("SELECT gin_clean_pending_list('messages_search')");
}

impl SearchSql for sqlx::Sqlite {
    // CROSS JOIN keeps the FTS table the outer loop: joined plainly, SQLite may walk the readable rooms' messages
    // and run the full-text query once for each.
    const MATCHES: &'static str = "messages_fts CROSS JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH $3";
    const READABLE_ROOMS: &'static str = "m.room IN (SELECT room FROM memberships WHERE ns = $1 AND user_id = $2 AND state = 'joined' \
                    UNION SELECT id FROM rooms WHERE ns = $1 AND visibility = 'public')";
    fn query_text(words: &[SearchWord]) -> String {
        // Quoted strings, implicitly ANDed; `*` after the quote makes a prefix query.
        let terms: Vec<String> = words
            .iter()
            .map(|w| format!("\"{}\"{}", w.text, if w.prefix { "*" } else { "" }))
            .collect();
        terms.join(" ")
    }
    // FTS5 is written by the triggers, in the writing statement.
    const MERGE_PENDING: Option<&'static str> = None;
}

/// Search. Part of [`super::Store`].
#[async_trait]
pub trait Search {
    /// The matching messages, newest first, at most `limit`, and whether more match.
    async fn search(&self, ns: &str, query: &SearchQuery<'_>) -> StoreResult<(Vec<Message>, bool)>;

    /// Merges what the search index received since the last call into its main structure (Postgres; nothing on
    /// SQLite). Searches see every stored message either way; run every [`MERGE_EVERY`] by the server.
    async fn merge_search_index(&self) -> StoreResult<()>;
}

/// How often the server merges the search index's recent entries ([`Search::merge_search_index`]).
pub const MERGE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[async_trait]
impl<DB> Search for SqlStore<DB>
where
    DB: Backend + SearchSql,
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
    #[tracing::instrument(level = "debug", skip_all, fields(%ns, room = ?query.room, words = query.words.len()))]
    async fn search(&self, ns: &str, query: &SearchQuery<'_>) -> StoreResult<(Vec<Message>, bool)> {
        if query.words.is_empty() || query.limit == 0 {
            return Ok((Vec::new(), false));
        }
        // `$2` is the room, or the user whose readable rooms are searched.
        let rooms = match query.room {
            Some(_) => "m.room = $2",
            None => DB::READABLE_ROOMS,
        };
        // Two steps, so that a search costs in proportion to the matches in the rooms searched, not to the size of
        // the table. First the ids: through the full-text index, filtered by the rooms, the newest `limit + 1`
        // (asked for the newest matches with the rows and their replies in one step, Postgres walked the primary
        // key backwards testing every message on the way, which read the whole table for a rare word: BENCHMARKS.md,
        // issue 12). Then the page, by primary key, read like history (current text, `editedAt`, the reply each
        // answers). Tombstones hold no text and match nothing.
        let sql = format!(
            "WITH hits AS MATERIALIZED (\
                 SELECT m.id FROM {} AND m.ns = $1 AND m.id < $4 AND {rooms} AND m.deleted_at IS NULL \
                 ORDER BY m.id DESC LIMIT $5) \
             SELECT {} WHERE m.id IN (SELECT id FROM hits) ORDER BY m.id DESC",
            DB::MATCHES,
            super::changes::message_columns_with_replies!()
        );
        let text = DB::query_text(query.words);
        // Audited: the text added is the backend's constant and one of two constant room filters; every value
        // is bound.
        let rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ns)
            .bind(query.room.unwrap_or(query.user_id))
            .bind(text.as_str())
            .bind(query.before.unwrap_or(i64::MAX))
            .bind(i64::from(query.limit) + 1)
            .fetch_all(self.reader())
            .await?;
        let has_more = rows.len() > query.limit as usize;
        let messages = rows
            .into_iter()
            .take(query.limit as usize)
            .map(Message::from)
            .collect();
        Ok((messages, has_more))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn merge_search_index(&self) -> StoreResult<()> {
        if let Some(sql) = DB::MERGE_PENDING {
            sqlx::query(sql).execute(self.writer()).await?;
        }
        Ok(())
    }
}
