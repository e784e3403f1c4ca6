//! Reading a profile file: the TOML shape (docs/migrating.md is its reference), then every check that needs more
//! than one key, each reported with the file and the line it is about.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value as Json;
use toml::Spanned;

use super::template::{ArgPath, HandshakePath, Template};
use super::{
    Ack, ClientIdScope, Emit, History, HistoryEmit, Op, Profile, RoomName, Rule, Target, vars,
};

/// A profile that cannot be used, with where the mistake is.
#[derive(Debug, thiserror::Error)]
#[error("profile {}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ProfileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profile: Meta,
    #[serde(default)]
    identity: Identity,
    #[serde(default)]
    rooms: Rooms,
    #[serde(default)]
    history: Option<Spanned<HistoryFile>>,
    #[serde(default)]
    on: Vec<Spanned<OnFile>>,
    #[serde(default)]
    emit: Vec<Spanned<EmitFile>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: Option<String>,
    #[allow(dead_code)] // documentation for the reader of the file
    description: Option<String>,
    #[serde(default)]
    session_event: bool,
    #[serde(default)]
    error_event: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    #[serde(default)]
    trust_client_names: Option<Spanned<bool>>,
    /// Where the handshake carries the user's name: `auth.<field>` or `query.<name>`.
    name: Option<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rooms {
    default: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    replay: Replay,
    after: Option<String>,
    limit: Option<u32>,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Replay {
    None,
    OnConnect,
    OnJoin,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpName {
    Identify,
    Join,
    Leave,
    Send,
    Relay,
    History,
    Presence,
    Ignore,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnFile {
    event: String,
    op: OpName,
    #[serde(default)]
    when: BTreeMap<String, toml::Value>,
    name: Option<String>,
    room: Option<String>,
    text: Option<String>,
    client_id: Option<String>,
    client_id_scope: Option<ClientIdScope>,
    emit: Option<String>,
    args: Option<Vec<toml::Value>>,
    to: Option<Target>,
    ack: Option<toml::Value>,
    ack_error: Option<toml::Value>,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Outgoing {
    Message,
    Join,
    Leave,
    History,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitFile {
    on: Outgoing,
    event: String,
    #[serde(default)]
    args: Vec<toml::Value>,
    to: Option<Target>,
    item: Option<toml::Value>,
}

/// Reads and checks a profile file.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
        file: path.to_owned(),
        line: None,
        message: e.to_string(),
    })?;
    parse(path, &text)
}

/// Checks a profile given as text (`path` only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
    let at = |span: Option<std::ops::Range<usize>>, message: String| ProfileError {
        file: path.to_owned(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let file: File = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_owned()))?;
    let trusted = file
        .identity
        .trust_client_names
        .as_ref()
        .is_some_and(|t| *t.get_ref());

    let default_room = match &file.rooms.default {
        None => None,
        Some(room) => Some(
            RoomName::from_written(room.get_ref())
                .map_err(|e| at(Some(room.span()), format!("rooms.default: {e}")))?,
        ),
    };

    let handshake_name = match &file.identity.name {
        None => None,
        Some(name) => Some((
            HandshakePath::parse(name.get_ref())
                .map_err(|m| at(Some(name.span()), format!("identity.name: {m}")))?,
            name.span(),
        )),
    };
    let mut rules: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    let mut client_names = handshake_name.as_ref().map(|(_, span)| span.clone());
    for entry in &file.on {
        let span = entry.span();
        let rule = rule(entry.get_ref()).map_err(|e| at(Some(span.clone()), e))?;
        if rule.name.is_some() && client_names.is_none() {
            client_names = Some(span.clone());
        }
        let needs_room = matches!(
            rule.op,
            Op::Send { room: None, .. } | Op::Relay { room: None, .. }
        );
        if needs_room && default_room.is_none() && !file.on.iter().any(is_join) {
            return Err(at(
                Some(span),
                format!(
                    "[[on]] {:?} has no room: give it room = \"$0.room\", or set rooms.default, or add a join rule",
                    entry.get_ref().event
                ),
            ));
        }
        rules
            .entry(entry.get_ref().event.clone())
            .or_default()
            .push(rule);
    }
    if let Some(span) = &client_names
        && !trusted
    {
        return Err(at(
            Some(span.clone()),
            "this rule takes the user's name from the client; a client can then call itself anything. \
             Say that this is intended with [identity] trust_client_names = true"
                .to_owned(),
        ));
    }

    let mut message = None;
    let mut join = None;
    let mut leave = None;
    let mut history_emit = None;
    for entry in &file.emit {
        let span = entry.span();
        let e = entry.get_ref();
        let slot = match e.on {
            Outgoing::Message => &mut message,
            Outgoing::Join => &mut join,
            Outgoing::Leave => &mut leave,
            Outgoing::History => {
                if history_emit.is_some() {
                    return Err(at(Some(span), "a second [[emit]] for history".to_owned()));
                }
                history_emit = Some(history(e).map_err(|m| at(Some(span), m))?);
                continue;
            }
        };
        if slot.is_some() {
            return Err(at(
                Some(span),
                format!("a second [[emit]] for {:?}", e.on).to_lowercase(),
            ));
        }
        let known = match e.on {
            Outgoing::Message => vars::MESSAGE,
            _ => vars::NOTICE,
        };
        if e.item.is_some() {
            return Err(at(
                Some(span),
                "item is only for on = \"history\"".to_owned(),
            ));
        }
        *slot = Some(Emit {
            event: event_name(&e.event).map_err(|m| at(Some(span.clone()), m))?,
            args: templates(&e.args, known, false).map_err(|m| at(Some(span.clone()), m))?,
            to: e.to.unwrap_or(Target::Room),
        });
    }

    let history = match &file.history {
        None => History::None,
        Some(h) => {
            let span = h.span();
            let h = h.get_ref();
            let limit = h.limit.unwrap_or(crate::store::MAX_PAGE);
            if limit == 0 {
                return Err(at(
                    Some(span),
                    "history.limit must be at least 1".to_owned(),
                ));
            }
            match h.replay {
                Replay::None => History::None,
                Replay::OnConnect => {
                    let after = h
                        .after
                        .as_deref()
                        .map(HandshakePath::parse)
                        .transpose()
                        .map_err(|m| at(Some(span.clone()), format!("history.after: {m}")))?;
                    if message.is_none() {
                        return Err(at(
                            Some(span),
                            "replay = \"on_connect\" sends each message as the [[emit]] on = \"message\"; add one"
                                .to_owned(),
                        ));
                    }
                    if default_room.is_none() {
                        return Err(at(
                            Some(span),
                            "replay = \"on_connect\" replays rooms.default; set it".to_owned(),
                        ));
                    }
                    History::OnConnect { after, limit }
                }
                Replay::OnJoin => {
                    if history_emit.is_none() {
                        return Err(at(
                            Some(span),
                            "replay = \"on_join\" needs an [[emit]] on = \"history\"".to_owned(),
                        ));
                    }
                    History::OnJoin { limit }
                }
            }
        }
    };
    if history_emit.is_some() && matches!(history, History::None) {
        let line = file
            .emit
            .iter()
            .find(|e| e.get_ref().on == Outgoing::History);
        return Err(at(
            line.map(Spanned::span),
            "an [[emit]] on = \"history\" needs [history] replay = \"on_join\"".to_owned(),
        ));
    }

    let name = file.profile.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(Profile {
        name,
        file: path.to_owned(),
        session_event: file.profile.session_event,
        error_event: file.profile.error_event,
        client_names: client_names.is_some(),
        handshake_name: handshake_name.map(|(path, _)| path),
        default_room,
        history,
        rules,
        message,
        join,
        leave,
        history_emit,
        unknown: Default::default(),
    })
}

fn is_join(entry: &Spanned<OnFile>) -> bool {
    matches!(entry.get_ref().op, OpName::Join)
}

fn history(e: &EmitFile) -> Result<HistoryEmit, String> {
    let item = match &e.item {
        Some(item) => Some(Template::compile(&to_json(item)?, vars::MESSAGE, false)?),
        None => None,
    };
    Ok(HistoryEmit {
        event: event_name(&e.event)?,
        args: templates(&e.args, vars::HISTORY, false)?,
        item,
    })
}

/// Checks one `[[on]]` entry and compiles it.
fn rule(e: &OnFile) -> Result<Rule, String> {
    event_name(&e.event)?;
    let path = |key: &str, value: &Option<String>| -> Result<Option<ArgPath>, String> {
        value
            .as_deref()
            .map(|v| ArgPath::parse(v).map_err(|m| format!("{key}: {m}")))
            .transpose()
    };
    let mut unused: Vec<&str> = Vec::new();
    let mut deny = |key: &'static str, present: bool| {
        if present {
            unused.push(key);
        }
    };
    let op = match e.op {
        OpName::Identify => {
            deny("room", e.room.is_some());
            if e.name.is_none() {
                return Err("op = \"identify\" needs name = \"$0\" (where the name is)".to_owned());
            }
            Op::Identify
        }
        OpName::Join => Op::Join {
            room: path("room", &e.room)?,
        },
        OpName::Leave => Op::Leave {
            room: path("room", &e.room)?,
        },
        OpName::Send => Op::Send {
            text: path("text", &e.text)?
                .ok_or("op = \"send\" needs text = \"$0\" (where the text is)")?,
            room: path("room", &e.room)?,
            client_id: path("client_id", &e.client_id)?,
            scope: e.client_id_scope.unwrap_or(ClientIdScope::Sender),
        },
        OpName::Relay => {
            let event = e
                .emit
                .as_deref()
                .ok_or("op = \"relay\" needs emit = \"<event the others receive>\"")?;
            let args = e.args.as_deref().unwrap_or_default();
            Op::Relay {
                event: event_name(event)?,
                args: templates(args, vars::RELAY, true)?,
                room: path("room", &e.room)?,
                to: e.to.unwrap_or(Target::Others),
            }
        }
        OpName::History => Op::History {
            room: path("room", &e.room)?,
        },
        OpName::Presence => Op::Presence {
            room: path("room", &e.room)?,
        },
        OpName::Ignore => Op::Ignore,
    };
    let send = matches!(op, Op::Send { .. });
    let relay = matches!(op, Op::Relay { .. });
    deny("text", e.text.is_some() && !send);
    deny("client_id", e.client_id.is_some() && !send);
    deny("client_id_scope", e.client_id_scope.is_some() && !send);
    deny("emit", e.emit.is_some() && !relay);
    deny("args", e.args.is_some() && !relay);
    deny("to", e.to.is_some() && !relay);
    if !unused.is_empty() {
        return Err(format!(
            "{} not used by op = {:?}",
            unused.join(", "),
            op.name()
        ));
    }
    let when = e
        .when
        .iter()
        .map(|(k, v)| {
            Ok((
                ArgPath::parse(k).map_err(|m| format!("when: {m}"))?,
                to_json(v)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let ack_vars = op.ack_vars();
    Ok(Rule {
        when,
        name: path("name", &e.name)?,
        ack: ack(e.ack.as_ref(), ack_vars, "ack")?,
        ack_error: ack(e.ack_error.as_ref(), vars::ERROR, "ack_error")?,
        op,
    })
}

/// `ack = "none"` (the default), `ack = []` (an empty ack), or a list of templates, one per argument.
fn ack(value: Option<&toml::Value>, known: &[&str], key: &str) -> Result<Ack, String> {
    match value {
        None => Ok(Ack::None),
        Some(toml::Value::String(s)) if s == "none" => Ok(Ack::None),
        Some(toml::Value::Array(items)) => Ok(Ack::Args(templates(items, known, true)?)),
        Some(_) => Err(format!(
            "{key} is \"none\" or a list of the ack's arguments ([] for an ack without any)"
        )),
    }
}

fn templates(
    items: &[toml::Value],
    known: &[&str],
    with_args: bool,
) -> Result<Vec<Template>, String> {
    items
        .iter()
        .map(|item| Template::compile(&to_json(item)?, known, with_args))
        .collect()
}

fn to_json(value: &toml::Value) -> Result<Json, String> {
    serde_json::to_value(value).map_err(|e| format!("cannot use this value: {e}"))
}

/// An event name an app may use: not empty, not one Socket.IO reserves.
fn event_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an event name is empty".to_owned());
    }
    if super::SOCKET_IO_EVENTS.contains(&name) {
        return Err(format!("{name:?} is reserved by Socket.IO"));
    }
    Ok(name.to_owned())
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}
