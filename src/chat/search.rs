//! `messages:search { query, room?, limit?, before? }` → `{ results, hasMore }`: the messages holding every word
//! of the query, in one room or in every room the user may read, newest first, each with the spans of its text
//! that matched.
//!
//! Words are runs of letters and digits, compared without case, accents kept, never stemmed: the same on Postgres
//! (full-text search, GIN index) and SQLite (FTS5), which find the messages; the spans are computed here from the
//! message and the query's words, so both stores give the same, and they are offsets rather than markup a client
//! could mistake for HTML. A word ending in `*` matches every word it begins.

use serde::{Deserialize, Serialize};
use socketioxide::adapter::Adapter;

use super::{Call, Reply, payload, rooms};
use crate::{
    error::{ChatError, ChatResult},
    store::{Message, SearchQuery, SearchWord},
};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most words in a query.
pub const MAX_WORDS: usize = 8;
/// Most results per call.
pub const MAX_RESULTS: u32 = 50;
/// Results per call when the client does not say.
pub const DEFAULT_RESULTS: u32 = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchPayload {
    query: String,
    room: Option<String>,
    limit: Option<i64>,
    /// A message id: only older results (the next page).
    before: Option<String>,
}

/// One result: the message, and the spans of its text that matched, as `[start, end)` offsets in UTF-16 code
/// units (what JavaScript's `String.prototype.slice` takes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    pub message: Message,
    pub highlights: Vec<[usize; 2]>,
}

/// Merges the search index's recent entries every [`MERGE_EVERY`](crate::store::search::MERGE_EVERY), off the
/// batch writer's path, until the chat's tasks close (shutdown). A failure is logged and the next tick tries again;
/// searches see every stored message meanwhile.
pub fn spawn_index_merge<A: Adapter>(chat: &super::SharedChat<A>) {
    let chat = std::sync::Arc::downgrade(chat);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(crate::store::search::MERGE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticker.tick().await;
            let Some(chat) = chat.upgrade() else { return };
            if chat.tasks.is_closed() {
                return;
            }
            match chat.store.merge_search_index().await {
                Ok(()) => failing = false,
                // Once per outage, not every second.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "could not merge the search index's pending entries");
                }
                Err(_) => {}
            }
        }
    });
}

/// `messages:search` → `{ results, hasMore }`. With `room`, the room must be readable as for `history:fetch`;
/// without, the search covers the rooms the user joined (DMs included) and the namespace's public rooms.
pub async fn search<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: SearchPayload = payload::parse(
        "messages:search",
        "{ query: \"release notes\", room: \"general\", limit: 20 }",
        call.payload.take(),
    )?;
    let words = words(&p.query)?;
    let limit = limit(p.limit)?;
    let before = p.before.as_deref().map(before).transpose()?;
    let room = p.room.as_deref().map(payload::room_id).transpose()?;
    if let Some(room) = room {
        rooms::authorize_member(&call.chat, &call.socket, &call.conn, room).await?;
    }
    if !call.conn.ns.history {
        return Ok(Reply::Found {
            results: Vec::new(),
            has_more: false,
        });
    }
    let query = SearchQuery {
        words: &words,
        room,
        user_id: &call.conn.user.id,
        before,
        limit,
    };
    let (messages, has_more) = call.chat.store.search(call.ns(), &query).await?;
    let results = messages
        .into_iter()
        .map(|message| Hit {
            highlights: highlights(&message.text, &words),
            message,
        })
        .collect();
    Ok(Reply::Found { results, has_more })
}

/// The words of a query: its runs of letters and digits, lowercased, each once; a term ending in `*` makes its
/// last word a prefix. 1 to [`MAX_WORDS`] words in at most [`MAX_QUERY_CHARS`] characters.
pub fn words(query: &str) -> ChatResult<Vec<SearchWord>> {
    payload::storable("query", query, false)?;
    let chars = query.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(ChatError::bad_request(format!(
            "query has {chars} characters; at most {MAX_QUERY_CHARS} are allowed"
        )));
    }
    let mut words: Vec<SearchWord> = Vec::new();
    for term in query.split_whitespace() {
        let (term, prefix) = match term.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (term, false),
        };
        let runs: Vec<String> = crate::store::search::words_of(term).collect();
        let last = runs.len().saturating_sub(1);
        for (i, run) in runs.into_iter().enumerate() {
            let word = SearchWord {
                text: run,
                prefix: prefix && i == last,
            };
            if !words.contains(&word) {
                words.push(word);
            }
        }
    }
    if words.is_empty() {
        return Err(ChatError::bad_request(
            "query has no word to search for (words are letters and digits)",
        ));
    }
    if words.len() > MAX_WORDS {
        return Err(ChatError::bad_request(format!(
            "query has {} words; at most {MAX_WORDS} are allowed",
            words.len()
        )));
    }
    Ok(words)
}

/// Results per call: 1–50, 20 when absent.
fn limit(limit: Option<i64>) -> ChatResult<u32> {
    match limit {
        None => Ok(DEFAULT_RESULTS),
        Some(n) if (1..=i64::from(MAX_RESULTS)).contains(&n) => Ok(n as u32),
        Some(n) => Err(ChatError::bad_request(format!(
            "limit {n} is out of range: use 1–{MAX_RESULTS}"
        ))),
    }
}

/// `before`: a message id, as `Message.id` gives it.
fn before(id: &str) -> ChatResult<i64> {
    id.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ChatError::bad_request(format!("before {id:?} is not a message id")))
}

/// The spans of `text` that match one of the words, in order, as `[start, end)` in UTF-16 code units.
pub fn highlights(text: &str, words: &[SearchWord]) -> Vec<[usize; 2]> {
    let mut spans = Vec::new();
    let mut run = String::new();
    let (mut position, mut start) = (0, 0);
    let mut close = |run: &mut String, start: usize, end: usize| {
        if run.is_empty() {
            return;
        }
        let lower = run.to_lowercase();
        let hit = words.iter().any(|w| match w.prefix {
            true => lower.starts_with(&w.text),
            false => lower == w.text,
        });
        if hit {
            spans.push([start, end]);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            if run.is_empty() {
                start = position;
            }
            run.push(c);
        } else {
            close(&mut run, start, position);
        }
        position += c.len_utf16();
    }
    close(&mut run, start, position);
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn word(text: &str, prefix: bool) -> SearchWord {
        SearchWord {
            text: text.to_owned(),
            prefix,
        }
    }

    #[test]
    fn queries_are_words_of_letters_and_digits() {
        assert_eq!(
            words("  Release-Notes v2* release ").expect("valid"),
            vec![
                word("release", false),
                word("notes", false),
                word("v2", true)
            ]
        );
        assert_eq!(
            words("ann@example.com").expect("valid"),
            vec![
                word("ann", false),
                word("example", false),
                word("com", false)
            ]
        );
        assert_eq!(words("Écol*").expect("valid"), vec![word("écol", true)]);
        for bad in ["", "   ", "*", "-- !!", "a\u{0}b"] {
            assert_eq!(
                words(bad).map_err(|e| e.code),
                Err(ErrorCode::BadRequest),
                "{bad:?}"
            );
        }
        assert!(words("a b c d e f g h").is_ok());
        assert!(words("a b c d e f g h i").is_err(), "nine words");
        assert!(words(&"x".repeat(201)).is_err(), "201 characters");
    }

    #[test]
    fn highlights_are_utf16_spans_of_matching_words() {
        let ws = [word("hello", false), word("wor", true)];
        assert_eq!(
            highlights("Hello, WORLD! helloo world-wide", &ws),
            vec![[0, 5], [7, 12], [21, 26]]
        );
        // 👋 is two UTF-16 code units; é is one.
        assert_eq!(
            highlights("👋 héllo hello", &[word("hello", false)]),
            vec![[9, 14]]
        );
        assert_eq!(highlights("👋hello", &[word("hello", false)]), vec![[2, 7]]);
        assert!(highlights("nothing here", &ws).is_empty());
    }

    /// A query finds a message on Postgres only if the words stored for the message are cut and lowercased as
    /// the query's are: the index's words (`store::search::index_words`) are exactly the query's words of the
    /// same text, however the text is written.
    #[test]
    fn messages_are_indexed_by_the_words_a_query_cuts() {
        use crate::store::search::{MAX_WORD_BYTES, index_words};
        let long = "y".repeat(MAX_WORD_BYTES + 1);
        for text in [
            "Release-Notes v2.0.1 release",
            "ann@example.com wrote: «Écoles et CAFÉS»",
            "ΟΔΟΣ Σοφία straße İstanbul 日本語のテキスト",
            "tabs\tand\nnew lines, emoji 🎉 between🎉words",
            "r1ab:12:3:1764488000000000000:xxxx",
        ] {
            let mut expected: Vec<String> = text
                .split_whitespace()
                .flat_map(|term| {
                    words(term)
                        .map(|ws| ws.into_iter().map(|w| w.text))
                        .into_iter()
                        .flatten()
                })
                .collect();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(index_words(text), expected.join(" "), "{text:?}");
        }
        assert_eq!(index_words("Hello, hello HELLO"), "hello", "each word once");
        assert_eq!(index_words("-- !! 🎉"), "", "no word at all");
        assert_eq!(
            index_words(&format!("short {long} tail")),
            "short tail",
            "a word too long for Postgres's index is left out"
        );
        assert_eq!(
            index_words(&"y".repeat(MAX_WORD_BYTES)),
            "y".repeat(MAX_WORD_BYTES)
        );
    }

    #[test]
    fn limits_and_cursors() {
        assert_eq!(limit(None), Ok(20));
        assert_eq!(limit(Some(50)), Ok(50));
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(51)).is_err());
        assert_eq!(before("42"), Ok(42));
        assert!(before("0").is_err());
        assert!(before("x").is_err());
    }
}
