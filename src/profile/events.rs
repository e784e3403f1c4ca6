//! A profile namespace at run time: the app's events in (each rule runs one palaver operation, in order, under
//! the socket's budgets), and palaver's messages, notices and history out as the app's events.

use std::sync::Arc;

use tracing::Instrument;

use serde_json::{Value as Json, json};
use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
    handler::{FromMessageParts, MessageHandler, Value},
    operators::BroadcastOperators,
    socket::Socket,
};

use super::{
    Ack, Args, History, MessageVars, Op, Profile, RoomName, Rule, Scope, Target, add_members,
    message_vars, render, template::HandshakePath, user_vars, uses,
};
use crate::{
    auth::{User, validate_display_name},
    chat::{
        Chat, Conn, Ordered, SharedChat, admit, event_span,
        messages::{self, Post},
        oversized,
        presence::{self, NoticeKind, in_room},
        record_outcome, record_room, room_key,
        rooms::{self, JoinRequest},
        run_in_order, user_key,
    },
    error::{ChatError, ChatResult},
    store::{HistoryQuery, Message, RoomSummary},
};

/// Serves the profile's events on a socket instead of the native contract, and remembers what the handshake
/// carries that the profile reads later (the history offset).
pub fn register<A: Adapter>(
    profile: &Arc<Profile>,
    socket: &SocketRef<A>,
    chat: &SharedChat<A>,
    conn: &Arc<Conn>,
    auth: Option<&Json>,
) {
    if let History::OnConnect {
        after: Some(path), ..
    } = &profile.history
    {
        let offset = handshake_offset(path, auth, socket.req_parts().uri.query());
        socket.extensions.insert(ReplayAfter(offset));
    }
    if let Some(path) = &profile.handshake_name {
        // A name the handshake lacks or that cannot be used leaves the socket listening until an event names it.
        let query = socket.req_parts().uri.query();
        if let Some(Json::String(name)) = handshake_value(path, auth, query)
            && let Ok(name) = validate_display_name("name", &name)
        {
            conn.app.set_name(name);
        }
    }
    for event in profile.rules.keys() {
        socket.on(
            event.clone(),
            AppEvent {
                profile: profile.clone(),
                event: event.clone(),
                chat: chat.clone(),
                conn: conn.clone(),
            },
        );
    }
    socket.on_fallback(UnknownEvent {
        profile: profile.clone(),
        chat: chat.clone(),
    });
}

/// The seq after which history is replayed on connect, read from the handshake.
#[derive(Clone, Copy)]
struct ReplayAfter(i64);

/// The value at a handshake path: a field of the `auth` object, or a query parameter (a string).
fn handshake_value(path: &HandshakePath, auth: Option<&Json>, query: Option<&str>) -> Option<Json> {
    match path {
        HandshakePath::Auth(field) => auth.and_then(|a| a.get(field)).cloned(),
        HandshakePath::Query(name) => form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| Json::String(v.into_owned())),
    }
}

/// A number, or a string holding one, at a handshake path; 0 (everything) when absent or not a number.
fn handshake_offset(path: &HandshakePath, auth: Option<&Json>, query: Option<&str>) -> i64 {
    let offset = match handshake_value(path, auth, query) {
        Some(Json::Number(n)) => n.as_i64(),
        Some(Json::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    offset.unwrap_or(0).max(0)
}

/// After the client is told it is connected: enter the default room and the user's rooms, replay history.
pub async fn connected<A: Adapter>(
    profile: &Profile,
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    rooms: &[RoomSummary],
) {
    for room in rooms {
        conn.app.remember(&RoomName {
            id: room.room.id.clone(),
            written: room.room.name.clone(),
        });
        presence::enter_room(chat, socket, conn, &room.room.id).await;
    }
    let Some(room) = &profile.default_room else {
        return;
    };
    conn.app.remember(room);
    let History::OnConnect { limit, .. } = profile.history else {
        presence::enter_room(chat, socket, conn, &room.id).await;
        return;
    };
    if !conn.ns.history {
        presence::enter_room(chat, socket, conn, &room.id).await;
        return;
    }
    // The history is replayed first, then, with the room's gate taken (no send on this node between its commit
    // and its broadcast), what was committed meanwhile is caught up and the room entered: every message comes
    // once and in order (see `ReplayGates`). The client's own events wait for all of this.
    let after = socket.extensions.get::<ReplayAfter>().map(|a| a.0);
    let last = replay(profile, chat, socket, conn, room, after, limit, false).await;
    let _gate = chat.replay_gates.enter(&conn.ns.path, &room.id).await;
    if let Some(last) = last {
        replay(profile, chat, socket, conn, room, Some(last), limit, true).await;
    }
    presence::enter_room(chat, socket, conn, &room.id).await;
}

/// Sends the room's history to this socket: every message after `after`, page by page, or without `after` the
/// latest page. Returns the last seq sent (or read, when nothing was). A `catch_up` (what was committed while the
/// history was read) goes out as message events, as if live: a second history event would replace the first.
#[allow(clippy::too_many_arguments)]
async fn replay<A: Adapter>(
    profile: &Profile,
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &RoomName,
    after: Option<i64>,
    limit: u32,
    catch_up: bool,
) -> Option<i64> {
    let ns = conn.ns.path.as_str();
    let mut cursor = after;
    loop {
        let query = match cursor {
            Some(after) => HistoryQuery {
                after: Some(after),
                before: None,
                limit,
            },
            None => HistoryQuery::latest(limit),
        };
        let page = match chat.store.history(ns, &room.id, query).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(socket = %socket.id, ns, room = %room.id, error = %e, "history replay failed");
                return cursor;
            }
        };
        let last = page.messages.last().map(|m| m.seq);
        if catch_up {
            send_each(profile, socket, room, &page.messages);
        } else {
            send_history(profile, socket, room, &page.messages);
        }
        match (cursor, last) {
            (Some(_), Some(last)) if page.has_more => cursor = Some(last),
            (_, Some(last)) => return Some(last),
            (Some(after), None) => return Some(after),
            (None, None) => return Some(0),
        }
    }
}

/// History to one socket: one history event with the list when the profile has one, else a message event each.
fn send_history<A: Adapter>(
    profile: &Profile,
    socket: &SocketRef<A>,
    room: &RoomName,
    messages: &[Message],
) {
    if let Some(emit) = &profile.history_emit {
        let mut vars = std::collections::BTreeMap::from([
            ("room", json!(room.written)),
            ("room_id", json!(room.id)),
        ]);
        vars.insert("messages", history_list(profile, room, messages));
        let args = render(
            &emit.args,
            &Scope {
                named: vars,
                args: &[],
            },
        );
        emit_to_socket(socket, &emit.event, &args);
        return;
    }
    send_each(profile, socket, room, messages);
}

/// Messages to one socket, a message event each.
fn send_each<A: Adapter>(
    profile: &Profile,
    socket: &SocketRef<A>,
    room: &RoomName,
    messages: &[Message],
) {
    if messages.is_empty() {
        return;
    }
    let Some(emit) = &profile.message else {
        return;
    };
    for message in messages {
        let vars = MessageVars {
            message,
            room: &room.written,
        };
        emit_to_socket(socket, &emit.event, &render(&emit.args, &vars));
    }
}

/// The messages as the history event's list: each through the history `item` template, else as palaver sends it.
fn history_list(profile: &Profile, room: &RoomName, messages: &[Message]) -> Json {
    let item = profile.history_emit.as_ref().and_then(|h| h.item.as_ref());
    Json::Array(
        messages
            .iter()
            .map(|m| match item {
                Some(item) => item.render(&MessageVars {
                    message: m,
                    room: &room.written,
                }),
                None => serde_json::to_value(m).unwrap_or(Json::Null),
            })
            .collect(),
    )
}

fn emit_to_socket<A: Adapter>(socket: &SocketRef<A>, event: &str, args: &Args) {
    if let Err(e) = socket.emit(event, args) {
        tracing::debug!(socket = %socket.id, event, error = %e, "could not send");
    }
}

/// A committed message, to the room as the profile's message event.
pub async fn deliver_message<A: Adapter>(
    profile: &Profile,
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    message: &Message,
) {
    let Some(emit) = &profile.message else {
        return;
    };
    let written = conn.app.written(&message.room);
    let vars = MessageVars {
        message,
        room: &written,
    };
    let args = render(&emit.args, &vars);
    deliver(
        chat,
        socket,
        conn,
        &message.room,
        emit.to,
        &emit.event,
        &args,
    )
    .await;
}

/// A message the server API posted, to the room as the profile's message event: to everyone in the room whatever
/// the emit's `to` (there is no sending socket to leave out), or to the sender's sockets for `to = "user"`.
/// `written` is the room as the app names it (its stored name).
pub async fn deliver_from_server<A: Adapter>(
    profile: &Profile,
    chat: &Chat<A>,
    ns: &crate::config::NamespaceSettings,
    message: &Message,
    written: &str,
) {
    let Some(emit) = &profile.message else {
        return;
    };
    let args = render(
        &emit.args,
        &MessageVars {
            message,
            room: written,
        },
    );
    let key = match emit.to {
        Target::Room | Target::Others => room_key(&message.room),
        Target::User => user_key(&message.from.id),
    };
    let target = || crate::chat::messages::server_target(chat, ns, &key);
    crate::cluster::deliver(chat.redis.as_ref(), target, &emit.event, &args).await;
}

/// A join or leave, to the room as the profile's notice event, if it has one for it.
pub async fn deliver_notice<A: Adapter>(
    profile: &Profile,
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &str,
    kind: NoticeKind,
    user: &User,
) {
    let emit = match kind {
        NoticeKind::Join(_) => &profile.join,
        NoticeKind::Leave(_) => &profile.leave,
    };
    let Some(emit) = emit else {
        return;
    };
    let written = RoomName {
        id: room.to_owned(),
        written: conn.app.written(room),
    };
    let mut vars = user_vars(user, Some(&written));
    if ["online", "users", "names"]
        .iter()
        .any(|v| uses(&emit.args, v))
    {
        add_members(&mut vars, &chat.presence.users(&conn.ns.path, room).await);
    }
    let args = render(
        &emit.args,
        &Scope {
            named: vars,
            args: &[],
        },
    );
    // A leave is told to whoever is still there; the leaving socket is gone or going.
    deliver(chat, socket, conn, room, emit.to, &emit.event, &args).await;
}

/// Sends to a room's audience, across the cluster.
async fn deliver<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &str,
    to: Target,
    event: &str,
    args: &Args,
) {
    let target = || -> BroadcastOperators<A> {
        match to {
            Target::Room => socket.within(room_key(room)),
            Target::Others => socket.to(room_key(room)),
            Target::User => socket.within(user_key(&conn.user.id)),
        }
    };
    crate::cluster::deliver(chat.redis.as_ref(), target, event, args).await;
}

/// One of the app's events, bound to a socket.
struct AppEvent<A: Adapter> {
    profile: Arc<Profile>,
    event: String,
    chat: SharedChat<A>,
    conn: Arc<Conn>,
}

impl<A: Adapter> MessageHandler<A, Ordered> for AppEvent<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut value: Value, ack_id: Option<i64>) {
        let span = event_span(&self.event, &socket.id, &self.conn);
        let _in_span = span.enter();
        if oversized(&self.chat, &socket, &value) {
            return;
        }
        let received = std::time::Instant::now();
        let metrics = &self.chat.metrics;
        // Both extractors are infallible.
        let Ok(ack) = AckSender::from_message_parts(&socket, &mut value, &ack_id);
        let Ok(TryData(args)) = TryData::<Args>::from_message_parts(&socket, &mut value, &ack_id);
        let socket = SocketRef::from(socket);
        let reply = Reply {
            profile: self.profile.clone(),
            event: self.event.clone(),
            ack,
            wants_ack: ack_id.is_some(),
        };
        let args = match args {
            Ok(Args(args)) => args,
            Err(e) => {
                let error = ChatError::bad_request(format!(
                    "{}: the arguments are not valid JSON: {e}",
                    self.event
                ));
                reply.send(&socket, None, Err(error), &[]);
                // No rule can be matched without the arguments: counted as the event's first rule.
                let op = self
                    .rule(0)
                    .map_or(crate::metrics::UNKNOWN_EVENT, |r| r.op.metric_event());
                let code = crate::error::ErrorCode::BadRequest;
                metrics.answered(metrics.slot(op), received, Err(code));
                return;
            }
        };
        let rules = self.profile.rules.get(&self.event);
        let Some(index) = rules.and_then(|rules| rules.iter().position(|r| r.matches(&args)))
        else {
            tracing::debug!(socket = %socket.id, event = %self.event, "no rule of the profile matches; ignored");
            return;
        };
        let Some((class, slot)) = self
            .rule(index)
            .map(|r| (r.op.class(), metrics.slot(r.op.metric_event())))
        else {
            return;
        };
        let place = match admit(&self.chat, &self.conn, class) {
            Ok(place) => place,
            Err(refused) => {
                let code = refused.code;
                reply.send(&socket, self.rule(index), Err(refused), &args);
                metrics.answered(slot, received, Err(code));
                return;
            }
        };
        let (chat, conn, profile) = (self.chat.clone(), self.conn.clone(), self.profile.clone());
        let event = self.event.clone();
        run_in_order(
            &self.chat,
            &self.conn,
            place,
            async move {
                let Some(rule) = profile.rules.get(&event).and_then(|r| r.get(index)) else {
                    return;
                };
                let started = std::time::Instant::now();
                let result = run(&profile, rule, &chat, &socket, &conn, &args).await;
                chat.metrics.handled(slot, started);
                let outcome = result.as_ref().map(|_| ()).map_err(|e| e.code);
                reply.send(&socket, Some(rule), result, &args);
                chat.metrics.answered(slot, received, outcome);
            }
            .instrument(span.clone()),
        );
    }
}

impl<A: Adapter> AppEvent<A> {
    fn rule(&self, index: usize) -> Option<&Rule> {
        self.profile.rules.get(&self.event)?.get(index)
    }
}

/// How an app event is answered.
struct Reply<A: Adapter> {
    profile: Arc<Profile>,
    event: String,
    ack: AckSender<A>,
    wants_ack: bool,
}

impl<A: Adapter> Reply<A> {
    /// Acks as the rule says (nothing, an empty ack, or its templates), for a success or a failure; a failure
    /// nobody acks is logged, and sent as `chat:error` where the profile keeps that event.
    fn send(
        self,
        socket: &SocketRef<A>,
        rule: Option<&Rule>,
        result: ChatResult<Vars>,
        args: &[Json],
    ) {
        let template = match (&result, rule) {
            (Ok(_), Some(rule)) => &rule.ack,
            (Err(_), Some(rule)) => &rule.ack_error,
            (_, None) => &Ack::None,
        };
        if let Err(error) = &result {
            tracing::debug!(socket = %socket.id, event = %self.event, code = ?error.code, message = %error.message, "event refused");
        }
        // Called inside the event's span (see `AppEvent::call`).
        record_outcome(&tracing::Span::current(), result.as_ref().err());
        match (template, self.wants_ack) {
            (Ack::Args(templates), true) => {
                let named = match &result {
                    Ok(vars) => vars.clone(),
                    Err(error) => std::collections::BTreeMap::from([
                        ("error.code", json!(error.code)),
                        ("error.message", json!(error.message)),
                    ]),
                };
                let rendered = render(templates, &Scope { named, args });
                if let Err(e) = self.ack.send(&rendered) {
                    tracing::debug!(socket = %socket.id, event = %self.event, error = %e, "could not ack");
                }
            }
            _ => {
                if let Err(error) = result
                    && self.profile.error_event
                {
                    let payload = json!({ "event": self.event, "error": error });
                    if let Err(e) = socket.emit("chat:error", &payload) {
                        tracing::debug!(socket = %socket.id, error = %e, "could not send chat:error");
                    }
                }
            }
        }
    }
}

type Vars = std::collections::BTreeMap<&'static str, Json>;

/// Runs one rule: the name it carries, then its operation. Returns the variables its ack may use.
async fn run<A: Adapter>(
    profile: &Profile,
    rule: &Rule,
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    args: &[Json],
) -> ChatResult<Vars> {
    if let Some(path) = &rule.name {
        let given = match path.get(args) {
            Some(Json::String(name)) => Some(
                validate_display_name(&path.to_string(), name).map_err(ChatError::bad_request)?,
            ),
            _ => None,
        };
        match given {
            Some(name) => {
                let first = conn.app.name().is_none();
                conn.app.set_name(name);
                if first {
                    presence::announce_arrival(chat, socket, conn).await;
                }
            }
            None if conn.app.name().is_none() => {
                return Err(ChatError::bad_request(format!(
                    "{path} must be the user's name (a string)"
                )));
            }
            None => {}
        }
    }
    let speaks = matches!(rule.op, Op::Send { .. } | Op::Relay { .. });
    if speaks && profile.client_names && conn.app.name().is_none() {
        return Err(ChatError::forbidden(
            "this connection has not given its name yet; a listener can read but not write",
        ));
    }
    let user = conn.user();
    match &rule.op {
        Op::Identify | Op::Ignore => Ok(user_vars(&user, None)),
        Op::Join { room } => {
            let room = room_arg(room.as_ref(), args, profile, conn)?;
            join(profile, chat, socket, conn, &room).await
        }
        Op::Leave { room } => {
            let room = room_arg(room.as_ref(), args, profile, conn)?;
            rooms::leave_room(chat, socket, conn, &room.id).await?;
            conn.app.forget(&room.id);
            Ok(user_vars(&user, Some(&room)))
        }
        Op::Send {
            text,
            room,
            client_id,
            scope,
        } => {
            let text = match text.get(args) {
                Some(Json::String(text)) => text.as_str(),
                _ => {
                    return Err(ChatError::bad_request(format!(
                        "{text} must be the message text (a string)"
                    )));
                }
            };
            let room = room_arg(room.as_ref(), args, profile, conn)?;
            if !in_room(socket, &room.id) {
                // Apps that name the room in each send may never have joined it.
                join(profile, chat, socket, conn, &room).await?;
            }
            let client_id = match client_id.as_ref().and_then(|p| p.get(args)) {
                Some(Json::String(id)) => Some(id.clone()),
                Some(Json::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let post = Post {
                room: &room.id,
                text,
                client_id,
                scope: *scope,
                reply_to: None,
            };
            let appended = messages::post_message(chat, socket, conn, post).await?;
            let mut vars = message_vars(&appended.message, &room.written);
            vars.insert("duplicate", json!(appended.duplicate));
            Ok(vars)
        }
        Op::Relay {
            event,
            args: templates,
            room,
            to,
        } => {
            let room = room_arg(room.as_ref(), args, profile, conn)?;
            if !in_room(socket, &room.id) {
                return Err(rooms::not_in_room(&room.written));
            }
            let vars = user_vars(&user, Some(&room));
            let rendered = render(
                templates,
                &Scope {
                    named: vars.clone(),
                    args,
                },
            );
            deliver(chat, socket, conn, &room.id, *to, event, &rendered).await;
            Ok(vars)
        }
        Op::History { room } => {
            let room = room_arg(room.as_ref(), args, profile, conn)?;
            rooms::authorize_member(chat, socket, conn, &room.id).await?;
            let limit = history_limit(profile);
            let page = chat
                .store
                .history(&conn.ns.path, &room.id, HistoryQuery::latest(limit))
                .await?;
            send_history(profile, socket, &room, &page.messages);
            let mut vars = user_vars(&user, Some(&room));
            vars.insert("messages", history_list(profile, &room, &page.messages));
            Ok(vars)
        }
        Op::Presence { room } => {
            let room = room_arg(room.as_ref(), args, profile, conn)?;
            rooms::authorize_member(chat, socket, conn, &room.id).await?;
            let mut vars = user_vars(&user, Some(&room));
            add_members(
                &mut vars,
                &chat.presence.users(&conn.ns.path, &room.id).await,
            );
            Ok(vars)
        }
    }
}

/// Joins a room named by the app, and sends its history when the profile replays history on join.
async fn join<A: Adapter>(
    profile: &Profile,
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &RoomName,
) -> ChatResult<Vars> {
    let on_join = matches!(profile.history, History::OnJoin { .. });
    let request = JoinRequest {
        id: &room.id,
        name: &room.written,
        limit: if on_join { history_limit(profile) } else { 0 },
        since: None,
    };
    conn.app.remember(room);
    let joined = match rooms::join_room(chat, socket, conn, request).await {
        Ok(joined) => joined,
        Err(e) => {
            conn.app.forget(&room.id);
            return Err(e);
        }
    };
    if on_join {
        send_history(profile, socket, room, &joined.history);
    }
    let mut vars = user_vars(&conn.user(), Some(room));
    add_members(&mut vars, &joined.members);
    vars.insert("messages", history_list(profile, room, &joined.history));
    Ok(vars)
}

fn history_limit(profile: &Profile) -> u32 {
    match profile.history {
        History::OnConnect { limit, .. } | History::OnJoin { limit } => limit,
        History::None => crate::store::DEFAULT_PAGE,
    }
}

/// The room an event is about: named in it, else the socket's current room, else the profile's default room.
fn room_arg(
    path: Option<&super::template::ArgPath>,
    args: &[Json],
    profile: &Profile,
    conn: &Conn,
) -> ChatResult<RoomName> {
    if let Some(path) = path {
        let written = match path.get(args) {
            Some(Json::String(name)) => name.clone(),
            Some(Json::Number(n)) => n.to_string(),
            _ => {
                return Err(ChatError::bad_request(format!(
                    "{path} must be the room's name (a string)"
                )));
            }
        };
        let room = RoomName::from_written(&written).map_err(ChatError::bad_request)?;
        record_room(&tracing::Span::current(), &room.id);
        return Ok(room);
    }
    let room = conn
        .app
        .current()
        .or_else(|| profile.default_room.clone())
        .ok_or_else(|| ChatError::bad_request("join a room first"))?;
    record_room(&tracing::Span::current(), &room.id);
    Ok(room)
}

/// Events the profile does not know: logged once per name, otherwise ignored, as a Node server ignores events
/// it has no handler for.
struct UnknownEvent<A: Adapter> {
    profile: Arc<Profile>,
    chat: SharedChat<A>,
}

impl<A: Adapter> MessageHandler<A, Ordered> for UnknownEvent<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut value: Value, ack_id: Option<i64>) {
        if oversized(&self.chat, &socket, &value) {
            return;
        }
        let event = socketioxide::extract::Event::from_message_parts(&socket, &mut value, &ack_id)
            .map(|e| e.0)
            .unwrap_or_default();
        if self.profile.unknown.first(&event) {
            tracing::info!(ns = %socket.ns(), profile = %self.profile.name, event = %event, "an event the profile does not map; ignored (logged once)");
        }
    }
}
