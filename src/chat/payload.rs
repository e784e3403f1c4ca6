//! Payload rules: what each event accepts, checked before anything else happens, with messages a frontend
//! developer can act on.

use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::{
    error::{ChatError, ChatResult},
    store::{DEFAULT_PAGE, HistoryQuery, MAX_PAGE, Visibility},
};

/// Longest room id.
pub const MAX_ROOM_CHARS: usize = 64;
/// Longest client id.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Longest user id accepted in `to` and `members`.
pub const MAX_USER_ID_CHARS: usize = 256;
/// Most users `room:create` or `room:invite` may invite at once.
pub const MAX_INITIAL_MEMBERS: usize = 100;
/// Prefix reserved for DM room ids.
pub const DM_PREFIX: &str = "dm:";

/// Decodes the payload of `event` into `T`, refusing anything that is not one object.
pub fn parse<T: DeserializeOwned>(event: &str, example: &str, payload: Json) -> ChatResult<T> {
    if !payload.is_object() {
        return Err(ChatError::bad_request(format!(
            "{event} takes one object as payload, e.g. {example}"
        )));
    }
    serde_json::from_value(payload)
        .map_err(|e| ChatError::bad_request(format!("{event}: {e}; expected e.g. {example}")))
}

#[derive(Debug, Deserialize)]
pub struct RoomCreate {
    pub name: String,
    #[serde(default = "public")]
    pub visibility: Visibility,
    #[serde(default)]
    pub members: Vec<String>,
}

fn public() -> Visibility {
    Visibility::Public
}

#[derive(Debug, Deserialize)]
pub struct RoomJoin {
    pub room: String,
    pub limit: Option<i64>,
    /// The last seq the client holds: the reply brings every later message instead of the latest page.
    pub since: Option<i64>,
    /// With `since`, the room revision the client holds: the reply also brings the messages changed since.
    pub rev: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Sync {
    /// Room id → where the client is in that room.
    pub rooms: std::collections::BTreeMap<String, SyncCursor>,
}

/// Where a client is in a room: the last seq it holds, and the room revision it holds (for the changes to the
/// messages it holds) once it has one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SyncCursor {
    Seq(i64),
    Cursor { seq: i64, rev: Option<i64> },
}

impl SyncCursor {
    /// (seq, rev).
    pub fn parts(&self) -> (i64, Option<i64>) {
        match *self {
            SyncCursor::Seq(seq) => (seq, None),
            SyncCursor::Cursor { seq, rev } => (seq, rev),
        }
    }
}

/// A `rev` cursor: ≥ 0.
pub fn rev(rev: i64) -> ChatResult<i64> {
    if rev < 0 {
        return Err(ChatError::bad_request("rev must be a revision ≥ 0"));
    }
    Ok(rev)
}

/// A `since` seq: ≥ 0.
pub fn since(since: i64) -> ChatResult<i64> {
    if since < 0 {
        return Err(ChatError::bad_request("since must be a seq ≥ 0"));
    }
    Ok(since)
}

#[derive(Debug, Deserialize)]
pub struct RoomOnly {
    pub room: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSend {
    pub room: String,
    pub text: String,
    pub client_id: Option<String>,
    /// The seq of the message this one answers.
    pub reply_to: Option<i64>,
}

/// `message:delete` and `room:read`: a message of a room.
#[derive(Debug, Deserialize)]
pub struct RoomSeq {
    pub room: String,
    pub seq: i64,
}

#[derive(Debug, Deserialize)]
pub struct MessageEdit {
    pub room: String,
    pub seq: i64,
    pub text: String,
}

/// `reaction:add` and `reaction:remove`.
#[derive(Debug, Deserialize)]
pub struct Reaction {
    pub room: String,
    pub seq: i64,
    pub emoji: String,
}

/// A message's seq (`field` names it in errors): ≥ 1.
pub fn seq(seq: i64, field: &str) -> ChatResult<i64> {
    if seq < 1 {
        return Err(ChatError::bad_request(format!(
            "{field} must be a message seq ≥ 1"
        )));
    }
    Ok(seq)
}

/// A reaction: exactly one emoji (see [`super::emoji`]).
pub fn emoji(emoji: &str) -> ChatResult<&str> {
    if !super::emoji::is_one_emoji(emoji) {
        return Err(ChatError::bad_request(format!(
            "emoji {:?} is not one emoji: use a single emoji such as \"👍\" (at most {} code points)",
            emoji.chars().take(20).collect::<String>(),
            super::emoji::MAX_CODE_POINTS
        )));
    }
    Ok(emoji)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DmSend {
    pub to: String,
    pub text: String,
    pub client_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryFetch {
    pub room: String,
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// A room id is 1–64 of `[A-Za-z0-9_.:-]`.
pub fn room_id(room: &str) -> ChatResult<&str> {
    let chars = room.chars().count();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if chars == 0 || chars > MAX_ROOM_CHARS || !room.chars().all(allowed) {
        return Err(ChatError::bad_request(format!(
            "room {room:?} is not a valid room id: use 1–{MAX_ROOM_CHARS} letters, digits and - _ . :"
        )));
    }
    Ok(room)
}

/// A room id a client may create: valid, and not in the DM id space.
pub fn new_room_id(room: &str) -> ChatResult<&str> {
    let room = room_id(room)?;
    if room.starts_with(DM_PREFIX) {
        return Err(ChatError::forbidden(format!(
            "room ids starting with {DM_PREFIX:?} are reserved for direct messages; use dm:send"
        )));
    }
    Ok(room)
}

/// Checks that a string can be stored by every backend and shown as it was sent: no NUL (Postgres refuses it in
/// text) and no other control characters, except tab and line breaks where `multiline` (message text).
pub fn storable(field: &str, value: &str, multiline: bool) -> ChatResult<()> {
    let allowed = |c: char| multiline && matches!(c, '\t' | '\n' | '\r');
    match value.chars().find(|c| c.is_control() && !allowed(*c)) {
        None => Ok(()),
        Some(c) => Err(ChatError::bad_request(format!(
            "{field} contains the control character U+{:04X}, which cannot be stored",
            u32::from(c)
        ))),
    }
}

/// Message text: not blank, at most `max_chars` characters, storable. Stored as sent.
pub fn text(text: &str, max_chars: usize) -> ChatResult<&str> {
    storable("text", text, true)?;
    if text.trim().is_empty() {
        return Err(ChatError::bad_request("text is empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(ChatError::too_large(format!(
            "text has {chars} characters; at most {max_chars} are allowed"
        )));
    }
    Ok(text)
}

pub fn client_id(client_id: Option<String>) -> ChatResult<Option<String>> {
    match client_id {
        Some(id) if id.is_empty() || id.chars().count() > MAX_CLIENT_ID_CHARS => {
            Err(ChatError::bad_request(format!(
                "clientId must be 1–{MAX_CLIENT_ID_CHARS} characters"
            )))
        }
        Some(id) => {
            storable("clientId", &id, false)?;
            Ok(Some(id))
        }
        None => Ok(None),
    }
}

pub fn user_id(id: &str, field: &str) -> ChatResult<()> {
    if id.trim().is_empty() || id.chars().count() > MAX_USER_ID_CHARS {
        return Err(ChatError::bad_request(format!(
            "{field} must be a user id of 1–{MAX_USER_ID_CHARS} characters"
        )));
    }
    storable(field, id, false)
}

/// Users to invite (`field` names the list in errors): at most [`MAX_INITIAL_MEMBERS`] valid user ids, the
/// inviter and repeats left out.
pub fn invitees(
    ids: &[String],
    field: &str,
    inviter: &str,
) -> ChatResult<Vec<crate::store::Author>> {
    if ids.len() > MAX_INITIAL_MEMBERS {
        return Err(ChatError::too_large(format!(
            "{field} lists {} users; at most {MAX_INITIAL_MEMBERS} can be invited at once",
            ids.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut invited = Vec::new();
    for id in ids {
        user_id(id, &format!("{field}[]"))?;
        if id != inviter && seen.insert(id.as_str()) {
            // The invitee's display name is unknown until they accept; their id stands in for it.
            invited.push(crate::store::Author {
                id: id.clone(),
                name: id.clone(),
            });
        }
    }
    Ok(invited)
}

#[derive(Debug, Deserialize)]
pub struct RoomInvite {
    pub room: String,
    pub users: Vec<String>,
}

/// A page size: 1–100, 50 when absent.
pub fn limit(limit: Option<i64>) -> ChatResult<u32> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=i64::from(MAX_PAGE)).contains(&n) => Ok(n as u32),
        Some(n) => Err(ChatError::bad_request(format!(
            "limit {n} is out of range: use 1–{MAX_PAGE}"
        ))),
    }
}

pub fn history_query(fetch: &HistoryFetch) -> ChatResult<HistoryQuery> {
    for (name, value) in [("before", fetch.before), ("after", fetch.after)] {
        if value.is_some_and(|seq| seq < 0) {
            return Err(ChatError::bad_request(format!("{name} must be a seq ≥ 0")));
        }
    }
    Ok(HistoryQuery {
        before: fetch.before,
        after: fetch.after,
        limit: limit(fetch.limit)?,
    })
}

/// The id of the DM room between two users: the same whichever side asks, within the room id rules, and
/// revealing neither user id.
pub fn dm_room_id(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = Sha256::new();
    hasher.update(first.as_bytes());
    hasher.update([0]);
    hasher.update(second.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{DM_PREFIX}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;

    #[test]
    fn room_ids() {
        assert!(room_id("general").is_ok());
        assert!(room_id("team-1_a.b:c").is_ok());
        assert!(room_id(&"x".repeat(64)).is_ok());
        for bad in ["", "has space", "a/b", "é", &"x".repeat(65)] {
            assert_eq!(
                room_id(bad).map_err(|e| e.code),
                Err(ErrorCode::BadRequest),
                "{bad}"
            );
        }
        assert_eq!(
            new_room_id("dm:abc").map_err(|e| e.code),
            Err(ErrorCode::Forbidden)
        );
    }

    #[test]
    fn text_rules() {
        assert_eq!(
            text("  ", 10).map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(text("ééé", 3), Ok("ééé"));
        assert_eq!(
            text("éééé", 3).map_err(|e| e.code),
            Err(ErrorCode::TooLarge)
        );
    }

    #[test]
    fn unstorable_characters_are_refused_naming_the_field() {
        let err = text("evil\u{0}", 100).expect_err("NUL");
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(err.message.starts_with("text "), "{}", err.message);
        assert!(err.message.contains("U+0000"), "{}", err.message);
        assert!(text("two\nlines\tand a tab\r\n", 100).is_ok());
        assert!(text("bell\u{7}", 100).is_err());
        assert!(text("c1 \u{85}", 100).is_err());
        let err = client_id(Some("id\u{0}".into())).expect_err("NUL");
        assert!(err.message.starts_with("clientId "), "{}", err.message);
        assert!(client_id(Some("a\nb".into())).is_err());
        let err = user_id("bob\u{0}", "to").expect_err("NUL");
        assert!(err.message.starts_with("to "), "{}", err.message);
        assert!(text("emoji 👋 and ümlauts", 100).is_ok());
    }

    #[test]
    fn payload_must_be_an_object() {
        for payload in [json!("x"), json!(1), json!([1]), Json::Null] {
            let err = parse::<RoomOnly>("room:leave", "{ room }", payload).expect_err("refused");
            assert_eq!(err.code, ErrorCode::BadRequest);
        }
        let err =
            parse::<RoomOnly>("room:leave", "{ room }", json!({ "room": 5 })).expect_err("type");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn limits() {
        assert_eq!(limit(None), Ok(50));
        assert_eq!(limit(Some(100)), Ok(100));
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(101)).is_err());
    }

    #[test]
    fn dm_ids_are_symmetric_and_valid() {
        let id = dm_room_id("alice", "auth0|bob");
        assert_eq!(id, dm_room_id("auth0|bob", "alice"));
        assert_ne!(id, dm_room_id("alice", "carol"));
        assert!(room_id(&id).is_ok());
    }
}
