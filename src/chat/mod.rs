//! The chat over Socket.IO: the event table, per-socket context, ordered dispatch and the ack envelope.
//!
//! Each event lives in the file named after its area: `session` (connect, auth, disconnect), `rooms`
//! (`room:create`, `room:join`, `room:leave`, `rooms:list`), `invitations` (`room:invite`, `room:decline`,
//! `invitations:list`), `messages` (`message:send`, `history:fetch`), `dm` (`dm:send`), `presence`
//! (`presence:list`, `typing`, `room:notice`), `recovery` (`sync`), `edits` (`message:edit`, `message:delete`),
//! `reactions` (`reaction:add`, `reaction:remove`), `reads` (`room:read`, read receipts), `moderation`
//! (`room:role`, `room:kick`, `room:ban`, `room:unban`, `room:mute`, `room:unmute`), `blocks` (`user:block`,
//! `user:unblock`), `search` (`messages:search`). Payload rules are plain functions in `payload` (what one emoji
//! is, in `emoji`); what a socket and a user may spend, in `budget`.

pub mod blocks;
pub mod budget;
pub mod dm;
pub mod edits;
pub mod emoji;
pub mod expiry;
mod invitations;
pub mod messages;
pub mod moderation;
pub mod payload;
pub mod presence;
pub mod reactions;
pub mod reads;
mod recovery;
pub mod rooms;
pub mod search;
mod session;

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use serde::Serialize;
use serde_json::Value as Json;
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
    handler::{FromMessageParts, MessageHandler, Value},
    socket::Socket,
};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use budget::EventClass;

use crate::{
    auth::{JwtVerifier, User},
    config::NamespaceSettings,
    error::{ChatError, ChatResult},
    store::{HistoryPage, Message, Room, RoomSummary, SharedStore},
};

pub use presence::in_room;
pub use session::register_namespace;

/// Server-wide limits every namespace shares.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Rooms one socket may be in at once; also how many of a user's rooms `session` lists and re-enters.
    pub max_rooms_per_socket: usize,
    pub budgets: budget::BudgetConfig,
    pub auto_create_rooms: bool,
    /// Rooms one user may create per day (`room:create` and auto-creation by `room:join`).
    pub room_quota: u32,
    /// Whether guests may create rooms at all.
    pub guests_create_rooms: bool,
    /// Largest packet a client may send, in bytes.
    pub max_payload: u64,
    /// Most missed messages one room's recovery returns before it says `truncated`.
    pub recovery_limit: u32,
    /// How long before its token expires a socket is sent `session:expiring`, in seconds.
    pub session_notice_secs: i64,
    /// How long after sending its author may edit a message; `None`: no limit.
    pub edit_window: Option<chrono::Duration>,
}

impl Limits {
    pub fn from_config(config: &crate::Config) -> Self {
        use budget::Rate;
        let rate = |per_second, burst| Rate { per_second, burst };
        Self {
            max_rooms_per_socket: config.max_rooms_per_socket as usize,
            budgets: budget::BudgetConfig {
                join: rate(config.join_rate, config.join_burst),
                read: rate(config.read_rate, config.read_burst),
                presence: rate(config.presence_rate, config.presence_burst),
                typing: rate(config.typing_rate, config.typing_burst),
                send: rate(config.send_rate, config.send_burst),
                user_factor: config.user_budget_factor,
                max_queued: config.max_queued_events as usize,
            },
            auto_create_rooms: config.auto_create_rooms,
            room_quota: config.room_quota.get(),
            guests_create_rooms: config.guests_create_rooms,
            max_payload: config.max_payload,
            recovery_limit: config.recovery_limit,
            session_notice_secs: config.session_notice_secs.get().into(),
            edit_window: match config.edit_window_secs {
                0 => None,
                secs => Some(chrono::Duration::seconds(secs.into())),
            },
        }
    }
}

/// Drops the budgets of users who have been quiet long enough for them to be full again, and merges the search
/// index's pending entries ([`search::spawn_index_merge`]), until the chat's tasks close (shutdown).
pub fn spawn_housekeeping<A: Adapter>(chat: &SharedChat<A>) {
    search::spawn_index_merge(chat);
    let chat = Arc::downgrade(chat);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(budget::PRUNE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        loop {
            ticker.tick().await;
            let Some(chat) = chat.upgrade() else { return };
            if chat.tasks.is_closed() {
                return;
            }
            chat.user_budgets.prune();
            chat.guest_creations.retain_recent();
            chat.guest_creations.shrink_to_fit();
            chat.auth_attempts.retain_recent();
            chat.auth_attempts.shrink_to_fit();
            chat.receipts.prune(std::time::Instant::now());
            ticks = ticks.wrapping_add(1);
            // Ended sessions and spent codes, every 20 ticks (10 minutes); a code is kept a day after its use.
            if chat.sessions.is_some() && ticks % 20 == 1 {
                let before = crate::store::now() - chrono::Duration::days(1);
                match chat.store.prune_sessions(before).await {
                    Ok(0) => {}
                    Ok(rows) => tracing::debug!(rows, "pruned ended sessions and spent codes"),
                    Err(e) => tracing::warn!(error = %e, "could not prune ended sessions"),
                }
            }
        }
    });
}

/// Room creations by guests per source address: `--room-quota` a day, all of it usable at once.
pub fn guest_creation_quota(
    config: &crate::Config,
) -> governor::DefaultKeyedRateLimiter<std::net::IpAddr> {
    let per_day = config.room_quota;
    let period = std::time::Duration::from_secs(24 * 3600) / per_day.get();
    let quota = governor::Quota::with_period(period)
        .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN))
        .allow_burst(per_day);
    governor::RateLimiter::keyed(quota)
}

/// What every handler can reach: storage, identity, presence and the Socket.IO server.
pub struct Chat<A: Adapter> {
    pub store: SharedStore,
    pub verifier: Option<JwtVerifier>,
    /// The keys of the server API (`--api-key`).
    pub api_keys: crate::http::api::ApiKeys,
    /// Every namespace served, by path (the server API addresses one by `?ns=`).
    pub namespaces: std::collections::HashMap<String, Arc<crate::config::NamespaceSettings>>,
    /// palaver's own sessions (the code exchange, its tokens and cookies), with `--token-secret`.
    pub sessions: Option<Arc<crate::auth::sessions::Sessions>>,
    /// The host service's connect hook, which names the users of connections without a token.
    pub auth_hook: Option<Arc<crate::auth::AuthHook>>,
    pub limits: Limits,
    pub presence: crate::presence::Presence,
    /// The Redis link when running as one node of several.
    pub redis: Option<crate::cluster::RedisLink>,
    pub io: SocketIo<A>,
    /// Every event being handled, so that shutdown can let pending writes commit.
    pub tasks: TaskTracker,
    /// Each user's event budgets on this node, shared by all their sockets.
    pub user_budgets: budget::UserBudgets,
    /// Room creations by guests, per source address: a guest's id is new on every connection.
    pub guest_creations: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Calls of the session endpoints (`/api/v1/auth/*`) per source address: no password guessing, and no
    /// flood of codes that would tie up the host's sign-in endpoint for everyone.
    pub auth_attempts: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Joins that create a room take turns per room on this node (see `rooms::join_room`).
    pub creation_turns: rooms::CreationTurns,
    /// Sends and history replays on connect, per room on this node (see [`rooms::ReplayGates`]).
    pub replay_gates: rooms::ReplayGates,
    /// Read receipts held back so that a room gets at most one per user a second (see [`reads`]).
    pub receipts: reads::ReceiptThrottle,
    /// What `/metrics` shows: events, connections, messages.
    pub metrics: crate::metrics::Metrics,
}

pub type SharedChat<A> = Arc<Chat<A>>;

/// One socket's context: who it is, where it is, and its budgets.
pub struct Conn {
    /// Who the socket is, as authenticated; [`Conn::user`] adds the name a profile's client gave itself.
    pub user: User,
    pub ns: Arc<NamespaceSettings>,
    /// What a profile's client told about itself (its name, the rooms as it names them).
    pub app: crate::profile::SocketState,
    /// Where the connection comes from (guest room-creation quota); `None` when unknown.
    pub peer_ip: Option<std::net::IpAddr>,
    budget: Arc<budget::SocketBudget>,
    /// The receiver the next event waits on before it runs; see [`Conn::take_turn`].
    last_turn: Mutex<Option<oneshot::Receiver<()>>>,
    /// The first turn, reserved before the client is told it is connected and released once the socket has
    /// re-entered the user's rooms: no event of the client can run before that.
    connect_turn: Mutex<Option<oneshot::Sender<()>>>,
    /// Until when the socket's token stands (see [`expiry`]).
    pub valid_until: expiry::ValidUntil,
    /// The socket's token makes its user a namespace admin (`--admin-claim`); a refreshed token decides anew.
    admin: std::sync::atomic::AtomicBool,
}

impl Conn {
    fn new(
        user: User,
        ns: Arc<NamespaceSettings>,
        peer_ip: Option<std::net::IpAddr>,
        limits: &Limits,
        valid_until: Option<i64>,
    ) -> Self {
        Self {
            user,
            ns,
            peer_ip,
            valid_until: expiry::ValidUntil::new(valid_until),
            app: crate::profile::SocketState::default(),
            budget: Arc::new(budget::SocketBudget::new(&limits.budgets)),
            last_turn: Mutex::new(None),
            connect_turn: Mutex::new(None),
            admin: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the socket's user is a namespace admin (see [`moderation`]).
    pub fn admin(&self) -> bool {
        self.admin.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records what the socket's (new) token says about admin rights.
    pub(crate) fn set_admin(&self, admin: bool) {
        self.admin
            .store(admin, std::sync::atomic::Ordering::Relaxed);
    }

    /// The user as others see them: with the name the client gave itself, in a profile that takes names from
    /// the client.
    pub fn user(&self) -> User {
        match self.app.name() {
            Some(name) => User {
                name,
                ..self.user.clone()
            },
            None => self.user.clone(),
        }
    }

    /// Whether others are told about this socket (presence, join and leave notices): always, except in a
    /// profile that takes names from the client, until the client has given one.
    pub fn announced(&self) -> bool {
        let named_by_client = self.ns.profile.as_ref().is_some_and(|p| p.client_names);
        !named_by_client || self.app.name().is_some()
    }

    /// Reserves the first turn for the connect work (see `connect_turn`).
    pub(crate) fn reserve_connect_turn(&self) {
        let (_, done) = self.take_turn();
        *self
            .connect_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(done);
    }

    /// Ends the connect turn: queued events may run.
    pub(crate) fn release_connect_turn(&self) {
        self.connect_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Events of one socket run one after another, in the order they arrived: a client may emit `room:join`
    /// and `message:send` back to back and rely on the join being done. Socket.IO hands us events in order,
    /// synchronously; each takes the previous event's receiver here and runs once that one has finished.
    pub(crate) fn take_turn(&self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        let previous = self
            .last_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(next);
        (previous, done)
    }
}

/// What an event handler is given.
pub struct Call<A: Adapter> {
    pub chat: SharedChat<A>,
    pub conn: Arc<Conn>,
    pub socket: SocketRef<A>,
    pub payload: Json,
}

impl<A: Adapter> Call<A> {
    pub fn ns(&self) -> &str {
        &self.conn.ns.path
    }
}

/// The data of an `ok` ack, one variant per event family. Serialized next to `ok: true`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Reply {
    Room {
        room: Room,
    },
    Joined {
        room: Room,
        history: Vec<Message>,
        #[serde(rename = "hasMore")]
        has_more: bool,
        members: Vec<User>,
        /// Only with `since`: more messages were missed than one recovery returns.
        #[serde(skip_serializing_if = "Option::is_none")]
        truncated: Option<bool>,
        /// The room's revision, read before its history: the cursor of later catch-ups' changes.
        rev: i64,
        /// Only with `since` and `rev`: the messages at or below `since` changed after `rev`.
        #[serde(skip_serializing_if = "Option::is_none")]
        changes: Option<Vec<Message>>,
        /// For a group room: the user's role in it.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<crate::store::RoomRole>,
    },
    Synced {
        rooms: std::collections::BTreeMap<String, recovery::CatchUp>,
    },
    Sent {
        message: Message,
    },
    History(HistoryPage),
    Rooms {
        rooms: Vec<RoomSummary>,
    },
    Users {
        users: Vec<User>,
    },
    Invitations {
        invitations: Vec<crate::store::Invitation>,
    },
    Invited {
        /// Ids of the users newly invited (members and users already invited are skipped).
        invited: Vec<String>,
    },
    Found {
        results: Vec<search::Hit>,
        #[serde(rename = "hasMore")]
        has_more: bool,
    },
    Done {},
    Refreshed {
        #[serde(rename = "expiresAt")]
        expires_at: chrono::DateTime<chrono::Utc>,
    },
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type EventFn<A> = fn(Call<A>) -> BoxFuture<ChatResult<Reply>>;

/// Marks the [`MessageHandler`] implementation of [`Event`] apart from socketioxide's closure handlers.
pub struct Ordered;

/// A registered event: its name, its budget class, its handler, and the socket context the handler runs in.
struct Event<A: Adapter> {
    name: &'static str,
    class: EventClass,
    /// Where its metrics are.
    slot: crate::metrics::EventSlot,
    run: EventFn<A>,
    chat: SharedChat<A>,
    conn: Arc<Conn>,
}

/// Engine.IO enforces the payload limit on HTTP long-polling only; over WebSocket the packet arrives whole, so
/// the limit is applied here: the offending client is disconnected, nobody else is affected.
pub(crate) fn oversized<A: Adapter>(
    chat: &Chat<A>,
    socket: &Arc<Socket<A>>,
    value: &Value,
) -> bool {
    let size = value.len() as u64;
    if size <= chat.limits.max_payload {
        return false;
    }
    tracing::warn!(socket = %socket.id, size, max = chat.limits.max_payload, "packet too large; closing the connection");
    if let Err(e) = socket.clone().disconnect() {
        tracing::debug!(socket = %socket.id, error = %e, "could not disconnect");
    }
    true
}

/// The span of one client event, from its arrival to its answer: the event, the socket, its user and namespace,
/// the room when the event names one (recorded later), and the outcome (`ok` or the error code). Every event of
/// the contract and of a profile gets one, here.
///
/// It is a `debug` span: the hot path (sends, fan-out) pays for it only when something subscribes at that level
/// (`RUST_LOG=debug`, or `--otlp-endpoint`); otherwise it is disabled and none of its fields is computed.
pub(crate) fn event_span(
    event: &str,
    socket: &socketioxide::socket::Sid,
    conn: &Conn,
) -> tracing::Span {
    tracing::debug_span!(
        "event",
        otel.name = event,
        otel.status_code = tracing::field::Empty,
        event,
        socket = %socket,
        user = %conn.user.id,
        ns = %conn.ns.path,
        room = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// Records the room an event is about on its span, when it is a valid room id (never whatever a client sent).
pub(crate) fn record_room(span: &tracing::Span, room: &str) {
    if !span.is_disabled() && payload::room_id(room).is_ok() {
        span.record("room", room);
    }
}

/// Records how an event ended on its span, and logs a line for it (`debug`): `ok`, or the error code; server-side
/// failures also mark the span as an error for trace viewers.
pub(crate) fn record_outcome(span: &tracing::Span, error: Option<&ChatError>) {
    let outcome = match error {
        None => "ok",
        Some(error) => error.code.as_str(),
    };
    span.record("outcome", outcome);
    if error.is_some_and(|e| e.code.is_server_side()) {
        span.record("otel.status_code", "error");
    }
    tracing::debug!(outcome, "answered");
}

impl<A: Adapter> MessageHandler<A, Ordered> for Event<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut value: Value, ack_id: Option<i64>) {
        let span = event_span(self.name, &socket.id, &self.conn);
        let _in_span = span.enter();
        if oversized(&self.chat, &socket, &value) {
            return;
        }
        let received = std::time::Instant::now();
        let metrics = &self.chat.metrics;
        // Both extractors are infallible.
        let Ok(ack) = AckSender::from_message_parts(&socket, &mut value, &ack_id);
        let place = match admit(&self.chat, &self.conn, self.class) {
            Ok(place) => place,
            Err(refused) => {
                let socket = SocketRef::from(socket);
                let code = refused.code;
                respond(
                    &socket,
                    ack,
                    ack_id.is_some(),
                    self.name,
                    Err(refused),
                    &span,
                );
                metrics.answered(self.slot, received, Err(code));
                return;
            }
        };
        let Ok(TryData(payload)) =
            TryData::<Json>::from_message_parts(&socket, &mut value, &ack_id);
        let payload = match payload {
            Ok(payload) => payload,
            Err(e) => {
                let error = ChatError::bad_request(format!(
                    "{}: the payload is not valid JSON (a lone surrogate in a string?): {e}",
                    self.name
                ));
                let code = error.code;
                respond(
                    &SocketRef::from(socket),
                    ack,
                    ack_id.is_some(),
                    self.name,
                    Err(error),
                    &span,
                );
                metrics.answered(self.slot, received, Err(code));
                return;
            }
        };
        if let Some(room) = payload.get("room").and_then(Json::as_str) {
            record_room(&span, room);
        }
        let call = Call {
            chat: self.chat.clone(),
            conn: self.conn.clone(),
            socket: SocketRef::from(socket),
            payload,
        };
        let (name, run, wants_ack, slot) = (self.name, self.run, ack_id.is_some(), self.slot);
        let work_span = span.clone();
        run_in_order(
            &self.chat,
            &self.conn,
            place,
            async move {
                let socket = call.socket.clone();
                let chat = call.chat.clone();
                let started = std::time::Instant::now();
                let result = run(call).await;
                chat.metrics.handled(slot, started);
                let outcome = result.as_ref().map(|_| ()).map_err(|e| e.code);
                respond(&socket, ack, wants_ack, name, result, &work_span);
                chat.metrics.answered(slot, received, outcome);
            }
            .instrument(span.clone()),
        );
    }
}

/// Lets an event in, or refuses it at the door: the socket has too many events waiting, or its (or its user's)
/// budget for this class is spent. A refused event is answered unrun and unqueued: a flood costs one ack each
/// and holds nothing.
pub(crate) fn admit<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    class: EventClass,
) -> ChatResult<budget::QueuePlace> {
    let place = conn.budget.enqueue()?;
    budget::spend(&conn.budget, &chat.user_budgets, &conn.user.id, class)?;
    Ok(place)
}

/// Runs an admitted event once the socket's previous event has finished, holding its queue place until done.
pub(crate) fn run_in_order<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    place: budget::QueuePlace,
    work: impl Future<Output = ()> + Send + 'static,
) {
    let (previous, done) = conn.take_turn();
    chat.tasks.spawn(async move {
        if let Some(previous) = previous {
            // An error only means the previous event's task ended without signalling: its turn is over.
            let _ = previous.await;
        }
        work.await;
        drop((done, place));
    });
}

/// Answers an event: the ack when the client asked for one, else errors go to `chat:error`.
fn respond<A: Adapter>(
    socket: &SocketRef<A>,
    ack: AckSender<A>,
    wants_ack: bool,
    event: &str,
    result: ChatResult<Reply>,
    span: &tracing::Span,
) {
    #[derive(Serialize)]
    struct Ok<'a> {
        ok: bool,
        #[serde(flatten)]
        data: &'a Reply,
    }
    #[derive(Serialize)]
    struct Failed<'a> {
        ok: bool,
        error: &'a ChatError,
    }
    #[derive(Serialize)]
    struct Unacked<'a> {
        event: &'a str,
        error: &'a ChatError,
    }
    let sent = match (&result, wants_ack) {
        (Result::Ok(data), true) => ack.send(&Ok { ok: true, data }),
        (Result::Ok(_), false) => Result::Ok(()),
        (Err(error), true) => ack.send(&Failed { ok: false, error }),
        (Err(error), false) => socket.emit("chat:error", &Unacked { event, error }),
    };
    match &result {
        // A DM's room is known once it is sent.
        Result::Ok(Reply::Sent { message }) => record_room(span, &message.room),
        Result::Ok(_) => {}
        Err(error) => {
            tracing::debug!(socket = %socket.id, event, code = ?error.code, message = %error.message, "event refused");
        }
    }
    record_outcome(span, result.as_ref().err());
    if let Err(e) = sent {
        tracing::debug!(socket = %socket.id, event, error = %e, "could not answer (client gone?)");
    }
}

/// The event table: every client → server event, its budget class, and the function that handles it.
fn event_table<A: Adapter>() -> [(&'static str, EventClass, EventFn<A>); 28] {
    use EventClass::{Join, Presence, Read, Send, Typing};
    [
        ("room:create", Join, |c| Box::pin(rooms::create(c))),
        ("room:join", Join, |c| Box::pin(rooms::join(c))),
        ("room:leave", Join, |c| Box::pin(rooms::leave(c))),
        ("room:invite", Join, |c| Box::pin(invitations::invite(c))),
        ("room:decline", Join, |c| Box::pin(invitations::decline(c))),
        ("rooms:list", Read, |c| Box::pin(rooms::list(c))),
        ("invitations:list", Read, |c| Box::pin(invitations::list(c))),
        ("message:send", Send, |c| Box::pin(messages::send(c))),
        ("message:edit", Send, |c| Box::pin(edits::edit(c))),
        ("message:delete", Send, |c| Box::pin(edits::delete(c))),
        ("reaction:add", Send, |c| Box::pin(reactions::add(c))),
        ("reaction:remove", Send, |c| Box::pin(reactions::remove(c))),
        ("room:read", Read, |c| Box::pin(reads::read(c))),
        ("history:fetch", Read, |c| Box::pin(messages::history(c))),
        ("dm:send", Send, |c| Box::pin(dm::send(c))),
        ("presence:list", Presence, |c| Box::pin(presence::list(c))),
        ("typing", Typing, |c| Box::pin(presence::typing(c))),
        ("sync", Read, |c| Box::pin(recovery::sync(c))),
        ("session:refresh", Read, |c| Box::pin(expiry::refresh(c))),
        ("room:role", Join, |c| Box::pin(moderation::set_role(c))),
        ("room:kick", Join, |c| Box::pin(moderation::kick(c))),
        ("room:ban", Join, |c| Box::pin(moderation::ban(c))),
        ("room:unban", Join, |c| Box::pin(moderation::unban(c))),
        ("room:mute", Join, |c| Box::pin(moderation::mute(c))),
        ("room:unmute", Join, |c| Box::pin(moderation::unmute(c))),
        ("user:block", Join, |c| Box::pin(blocks::block(c))),
        ("user:unblock", Join, |c| Box::pin(blocks::unblock(c))),
        ("messages:search", Read, |c| Box::pin(search::search(c))),
    ]
}

/// The names of the event table, in its order: the events [`crate::metrics::Metrics`] counts.
pub fn event_names() -> impl Iterator<Item = &'static str> {
    event_table::<socketioxide::adapter::LocalAdapter>()
        .into_iter()
        .map(|(name, _, _)| name)
}

/// Answers events that are not in the table, so a typo in an event name is an error, not silence.
struct UnknownEvent<A: Adapter> {
    chat: SharedChat<A>,
}

impl<A: Adapter> MessageHandler<A, Ordered> for UnknownEvent<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut value: Value, ack_id: Option<i64>) {
        if oversized(&self.chat, &socket, &value) {
            return;
        }
        let Ok(ack) = AckSender::from_message_parts(&socket, &mut value, &ack_id);
        let event = socketioxide::extract::Event::from_message_parts(&socket, &mut value, &ack_id)
            .map(|e| e.0)
            .unwrap_or_default();
        let received = std::time::Instant::now();
        let error =
            ChatError::bad_request(format!("unknown event {event:?}; see docs/protocol.md"));
        respond(
            &SocketRef::from(socket),
            ack,
            ack_id.is_some(),
            &event,
            Err(error),
            &tracing::Span::none(),
        );
        let metrics = &self.chat.metrics;
        metrics.answered(
            metrics.slot(crate::metrics::UNKNOWN_EVENT),
            received,
            Err(crate::error::ErrorCode::BadRequest),
        );
    }
}

/// Registers every event of the table on a socket, bound to its context.
fn register_events<A: Adapter>(socket: &SocketRef<A>, chat: &SharedChat<A>, conn: &Arc<Conn>) {
    for (index, (name, class, run)) in event_table::<A>().into_iter().enumerate() {
        socket.on(
            name,
            Event {
                name,
                class,
                // The metrics were made with the table's names in its order (see `event_names`).
                slot: crate::metrics::Metrics::table_slot(index),
                run,
                chat: chat.clone(),
                conn: conn.clone(),
            },
        );
    }
    socket.on_fallback(UnknownEvent { chat: chat.clone() });
}

/// Socket.IO room holding every socket of a chat room.
pub fn room_key(room: &str) -> String {
    format!("r:{room}")
}

/// Socket.IO room holding every socket of a user, so DMs reach all their tabs and devices.
pub fn user_key(user_id: &str) -> String {
    format!("u:{user_id}")
}
