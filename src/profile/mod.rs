//! Compatibility profiles: a TOML file attached to a namespace that lets an existing Socket.IO app talk to palaver
//! with its own event names and payload shapes. Underneath, everything stays palaver's: each profile rule calls
//! the same operation as the native event (`chat::rooms::join_room`, `chat::messages::post`, …); a profile only
//! translates at the edges.
//!
//! * [`file`]: reading and checking a profile (docs/migrating.md is the reference of every key);
//! * [`template`]: argument paths (`$0.userName`) and templates (`"{user.name} left"`);
//! * [`events`]: the incoming side: a rule per app event, run in order under the socket's budgets;
//! * this file: the compiled profile, and the outgoing side: messages, join/leave notices and history rendered as
//!   the app's events.

pub mod events;
pub mod file;
pub mod template;

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    sync::Mutex,
};

use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

pub use file::{ProfileError, load};
use template::{ArgPath, HandshakePath, Template, Vars};

pub use crate::store::ClientIdScope;
use crate::{
    auth::User,
    store::{Message, Room},
};

/// A checked profile, ready to serve a namespace.
#[derive(Debug)]
pub struct Profile {
    pub name: String,
    pub file: PathBuf,
    /// Whether palaver's own `session` event is sent on connect.
    pub session_event: bool,
    /// Whether failures of events without an ack are reported as palaver's `chat:error`.
    pub error_event: bool,
    /// Some rule takes the user's name from the client: until a socket has named itself it listens silently
    /// (it is in its rooms, but not in presence, and nobody is told it arrived).
    pub client_names: bool,
    /// Where the handshake carries the user's name (`[identity] name`), when the app names users there.
    pub handshake_name: Option<HandshakePath>,
    /// The room every socket is in from the start.
    pub default_room: Option<RoomName>,
    pub history: History,
    /// The rules of each app event, in file order: the first whose `when` matches runs.
    pub rules: BTreeMap<String, Vec<Rule>>,
    pub message: Option<Emit>,
    pub join: Option<Emit>,
    pub leave: Option<Emit>,
    pub history_emit: Option<HistoryEmit>,
    /// Unknown event names already logged.
    pub unknown: UnknownEvents,
}

/// Profiles are compared by file (namespace settings compare equal when they serve the same profile).
impl PartialEq for Profile {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
    }
}
impl Eq for Profile {}

/// What happens with a room's past messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum History {
    None,
    /// On connect, the default room's messages after the seq the handshake carries (all of them without
    /// `after`), as one history event when the profile has one, else one message event each.
    OnConnect {
        after: Option<HandshakePath>,
        limit: u32,
    },
    /// On join, the room's latest `limit` messages as one history event.
    OnJoin {
        limit: u32,
    },
}

/// One `[[on]]` entry.
#[derive(Debug)]
pub struct Rule {
    /// Argument values this rule requires (`when = { "$0.type" = "notice" }`).
    pub when: Vec<(ArgPath, Json)>,
    /// Where the user's name is, when the app sends it in its events.
    pub name: Option<ArgPath>,
    pub op: Op,
    pub ack: Ack,
    pub ack_error: Ack,
}

impl Rule {
    fn matches(&self, args: &[Json]) -> bool {
        self.when
            .iter()
            .all(|(path, value)| path.get(args) == Some(value))
    }
}

/// The palaver operation an app event maps onto.
#[derive(Debug)]
pub enum Op {
    Identify,
    Join {
        room: Option<ArgPath>,
    },
    Leave {
        room: Option<ArgPath>,
    },
    Send {
        text: ArgPath,
        room: Option<ArgPath>,
        client_id: Option<ArgPath>,
        scope: ClientIdScope,
    },
    /// Passes the event on to the room without storing it (typing indicators, client-made notices).
    Relay {
        event: String,
        args: Vec<Template>,
        room: Option<ArgPath>,
        to: Target,
    },
    History {
        room: Option<ArgPath>,
    },
    Presence {
        room: Option<ArgPath>,
    },
    Ignore,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Identify => "identify",
            Op::Join { .. } => "join",
            Op::Leave { .. } => "leave",
            Op::Send { .. } => "send",
            Op::Relay { .. } => "relay",
            Op::History { .. } => "history",
            Op::Presence { .. } => "presence",
            Op::Ignore => "ignore",
        }
    }

    /// The event it counts as in `/metrics`: the contract's event that performs the same operation, so that a
    /// dashboard reads the same for every namespace (an app's own event names are the app's, unbounded), else a
    /// name of its own ([`crate::metrics::PROFILE_EVENTS`]).
    pub fn metric_event(&self) -> &'static str {
        match self {
            Op::Send { .. } => "message:send",
            Op::Join { .. } => "room:join",
            Op::Leave { .. } => "room:leave",
            Op::History { .. } => "history:fetch",
            Op::Presence { .. } => "presence:list",
            Op::Identify => "identify",
            Op::Relay { .. } => "relay",
            Op::Ignore => "ignore",
        }
    }

    fn ack_vars(&self) -> &'static [&'static str] {
        match self {
            Op::Send { .. } => vars::SENT,
            Op::Join { .. } => vars::JOINED,
            Op::History { .. } => vars::HISTORY,
            Op::Presence { .. } => vars::NOTICE,
            _ => vars::USER,
        }
    }

    pub fn class(&self) -> crate::chat::budget::EventClass {
        use crate::chat::budget::EventClass;
        match self {
            Op::Send { .. } => EventClass::Send,
            Op::Join { .. } | Op::Leave { .. } | Op::Identify => EventClass::Join,
            Op::Relay { .. } | Op::Ignore => EventClass::Typing,
            Op::History { .. } => EventClass::Read,
            Op::Presence { .. } => EventClass::Presence,
        }
    }
}

/// Who receives an outgoing event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Everyone in the room, the sender included.
    Room,
    /// Everyone in the room but the sending socket.
    Others,
    /// The sending user's own sockets.
    User,
}

/// An ack: none, or these arguments.
#[derive(Debug)]
pub enum Ack {
    None,
    Args(Vec<Template>),
}

/// An outgoing event: name, arguments, audience.
#[derive(Debug)]
pub struct Emit {
    pub event: String,
    pub args: Vec<Template>,
    pub to: Target,
}

/// The history event: name, arguments (`{messages}` is the list), and the shape of each message in it.
#[derive(Debug)]
pub struct HistoryEmit {
    pub event: String,
    pub args: Vec<Template>,
    pub item: Option<Template>,
}

/// Variables each kind of template may use.
pub mod vars {
    /// A send's ack: a message's variables, then `duplicate`.
    pub const SENT: &[&str] = &[
        "id",
        "seq",
        "text",
        "room",
        "room_id",
        "user.id",
        "user.name",
        "at",
        "at_ms",
        "client_id",
        "message",
        "duplicate",
    ];
    /// A message's variables (see [`super::MessageVars`]).
    pub const MESSAGE: &[&str] = SENT.split_at(SENT.len() - 1).0;
    pub const NOTICE: &[&str] = &[
        "room",
        "room_id",
        "user.id",
        "user.name",
        "at",
        "at_ms",
        "online",
        "users",
        "names",
    ];
    pub const JOINED: &[&str] = &[
        "room",
        "room_id",
        "user.id",
        "user.name",
        "online",
        "users",
        "names",
        "messages",
    ];
    pub const HISTORY: &[&str] = &["room", "room_id", "messages"];
    pub const RELAY: &[&str] = &["room", "room_id", "user.id", "user.name", "at", "at_ms"];
    pub const USER: &[&str] = &["user.id", "user.name"];
    pub const ERROR: &[&str] = &["error.code", "error.message"];
}

/// A room as the app names it (free text, any script) and the palaver room id it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomName {
    pub id: String,
    pub written: String,
}

impl RoomName {
    /// A name that is a valid room id is used as it is; any other (spaces, any script, too long) maps to a
    /// stable id derived from it, and the room keeps the name as written.
    pub fn from_written(written: &str) -> Result<Self, String> {
        let trimmed = written.trim();
        if trimmed.is_empty() {
            return Err("a room name is empty".to_owned());
        }
        if trimmed.chars().count() > 200 {
            return Err("a room name has more than 200 characters".to_owned());
        }
        if let Some(c) = trimmed.chars().find(|c| c.is_control()) {
            return Err(format!(
                "a room name contains the control character U+{:04X}",
                u32::from(c)
            ));
        }
        let valid = crate::chat::payload::room_id(trimmed).is_ok()
            && !trimmed.starts_with(crate::chat::payload::DM_PREFIX);
        let id = if valid {
            trimmed.to_owned()
        } else {
            let slug: String = trimmed
                .chars()
                .filter_map(|c| {
                    if c.is_ascii_alphanumeric() {
                        Some(c.to_ascii_lowercase())
                    } else if c == ' ' || c == '-' || c == '_' {
                        Some('-')
                    } else {
                        None
                    }
                })
                .take(32)
                .collect();
            let digest = Sha256::digest(trimmed.as_bytes());
            let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("n.{slug}.{hash}")
        };
        Ok(Self {
            id,
            written: trimmed.to_owned(),
        })
    }
}

/// Creates the default room of every profile namespace that lacks it, before the first client connects.
pub async fn prepare(
    store: &crate::store::SharedStore,
    namespaces: &[crate::config::NamespaceSettings],
) -> Result<(), crate::store::StoreError> {
    for ns in namespaces {
        let Some(room) = ns.profile.as_ref().and_then(|p| p.default_room.as_ref()) else {
            continue;
        };
        let new = Room {
            id: room.id.clone(),
            name: room.written.clone(),
            kind: crate::store::RoomKind::Group,
            visibility: crate::store::Visibility::Public,
            created_at: crate::store::now(),
        };
        // No creator: the room belongs to the deployment, and counts toward nobody's creation quota.
        store.ensure_room(&ns.path, &new, "").await?;
    }
    Ok(())
}

/// A profile socket's own state: its name, if it gave one, and the rooms it named.
#[derive(Default)]
pub struct SocketState {
    name: Mutex<Option<String>>,
    rooms: Mutex<BTreeMap<String, String>>,
    /// The room the socket joined last, for sends that name none.
    current: Mutex<Option<RoomName>>,
}

impl SocketState {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub fn name(&self) -> Option<String> {
        Self::lock(&self.name).clone()
    }
    /// Records the name; `true` if the socket had none before.
    pub fn set_name(&self, name: String) -> bool {
        Self::lock(&self.name).replace(name).is_none()
    }
    pub fn remember(&self, room: &RoomName) {
        Self::lock(&self.rooms).insert(room.id.clone(), room.written.clone());
        *Self::lock(&self.current) = Some(room.clone());
    }
    pub fn forget(&self, id: &str) {
        Self::lock(&self.rooms).remove(id);
        let mut current = Self::lock(&self.current);
        if current.as_ref().is_some_and(|r| r.id == id) {
            *current = None;
        }
    }
    pub fn current(&self) -> Option<RoomName> {
        Self::lock(&self.current).clone()
    }
    /// The room's name as this socket wrote it, else its id.
    pub fn written(&self, id: &str) -> String {
        Self::lock(&self.rooms)
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }
}

/// Names of unknown events already logged, per namespace: each is logged once, and only so many are kept.
#[derive(Debug, Default)]
pub struct UnknownEvents(Mutex<HashSet<String>>);

impl UnknownEvents {
    const MAX: usize = 256;
    /// Whether this name is new (and so should be logged).
    pub fn first(&self, name: &str) -> bool {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= Self::MAX || seen.contains(name) {
            return false;
        }
        seen.insert(name.to_owned());
        true
    }
}

/// Event names Socket.IO reserves for itself: no app event (a profile's) nor custom emit may use them.
pub const SOCKET_IO_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Named variables, plus the incoming event's arguments for a rule's own templates.
pub struct Scope<'a> {
    pub named: BTreeMap<&'static str, Json>,
    pub args: &'a [Json],
}

impl Vars for Scope<'_> {
    fn get(&self, name: &str) -> Option<Json> {
        self.named.get(name).cloned()
    }
    fn args(&self) -> &[Json] {
        self.args
    }
}

/// The variables of a message, each computed only when a template asks for it: a broadcast renders them once
/// per message, and most templates use few of them (`message`, the whole message, costs a serialization).
pub struct MessageVars<'a> {
    pub message: &'a Message,
    /// The room as the app writes it.
    pub room: &'a str,
}

impl Vars for MessageVars<'_> {
    fn get(&self, name: &str) -> Option<Json> {
        let message = self.message;
        Some(match name {
            "id" => json!(message.id),
            "seq" => json!(message.seq),
            "text" => json!(message.text),
            "room" => json!(self.room),
            "room_id" => json!(message.room),
            "user.id" => json!(message.from.id),
            "user.name" => json!(message.from.name),
            "at" => json!(message.at),
            "at_ms" => json!(message.at.timestamp_millis()),
            "client_id" => json!(message.client_id),
            "message" => serde_json::to_value(message).ok()?,
            _ => return None,
        })
    }
}

/// Every variable of a message, for an ack's templates (which may add their own).
pub fn message_vars(message: &Message, room: &str) -> BTreeMap<&'static str, Json> {
    let vars = MessageVars { message, room };
    vars::MESSAGE
        .iter()
        .filter_map(|&name| Some((name, vars.get(name)?)))
        .collect()
}

/// The variables about a user in a room.
pub fn user_vars(user: &User, room: Option<&RoomName>) -> BTreeMap<&'static str, Json> {
    let now = chrono::Utc::now();
    let mut vars = BTreeMap::from([
        ("user.id", json!(user.id)),
        ("user.name", json!(user.name)),
        ("at", json!(now)),
        ("at_ms", json!(now.timestamp_millis())),
    ]);
    if let Some(room) = room {
        vars.insert("room", json!(room.written));
        vars.insert("room_id", json!(room.id));
    }
    vars
}

/// Adds `online`, `users` and `names` when one of the templates uses them.
pub fn add_members(vars: &mut BTreeMap<&'static str, Json>, users: &[User]) {
    vars.insert("online", json!(users.len()));
    vars.insert(
        "users",
        json!(
            users
                .iter()
                .map(|u| json!({ "id": u.id, "name": u.name }))
                .collect::<Vec<_>>()
        ),
    );
    vars.insert(
        "names",
        json!(users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>()),
    );
}

/// Renders templates into an event's arguments.
pub fn render(templates: &[Template], vars: &dyn Vars) -> Args {
    Args(templates.iter().map(|t| t.render(vars)).collect())
}

/// Whether any of the templates uses a variable.
pub fn uses(templates: &[Template], name: &str) -> bool {
    templates.iter().any(|t| t.uses(name))
}

/// An event's arguments, however many. Serialized as a tuple, which Socket.IO sends as that many arguments
/// (zero for an empty ack); deserialized from all of an incoming event's arguments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args(pub Vec<Json>);

impl serde::Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event's arguments")
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        deserializer.deserialize_tuple(usize::MAX, Visitor)
    }
}

/// The room a message was posted in, as the sending socket named it.
pub fn written_room(state: Option<&SocketState>, room: &Room) -> String {
    state.map_or_else(|| room.name.clone(), |s| s.written(&room.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_room_names_map_to_stable_ids() {
        let plain = RoomName::from_written("general").expect("name");
        assert_eq!(plain.id, "general");
        let korean = RoomName::from_written("  자유 게시판 ").expect("name");
        assert_eq!(korean.written, "자유 게시판");
        assert!(
            crate::chat::payload::room_id(&korean.id).is_ok(),
            "{}",
            korean.id
        );
        assert_eq!(korean, RoomName::from_written("자유 게시판").expect("name"));
        assert_ne!(
            korean.id,
            RoomName::from_written("자유게시판").expect("name").id
        );
        let spaced = RoomName::from_written("Room 1").expect("name");
        assert!(spaced.id.starts_with("n.room-1."), "{}", spaced.id);
        let dm = RoomName::from_written("dm:a:b").expect("name");
        assert_ne!(dm.id, "dm:a:b");
        assert!(RoomName::from_written(" ").is_err());
        assert!(RoomName::from_written("a\u{0}b").is_err());
    }

    #[test]
    fn args_serialize_as_that_many_arguments() {
        let none = socketioxide_parser_common_probe(&Args(vec![]));
        assert_eq!(none, "[]");
        let two = socketioxide_parser_common_probe(&Args(vec![json!("hi"), json!(3)]));
        assert_eq!(two, "[\"hi\",3]");
    }

    fn socketioxide_parser_common_probe(args: &Args) -> String {
        serde_json::to_string(args).expect("json")
    }
}
