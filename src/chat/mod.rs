//! The chat over Socket.IO: the event table, per-socket context, ordered dispatch and the ack envelope.
//!
//! Each event lives in the file named after its area: `session` (connect, auth, disconnect), `rooms`
//! (`room:*`, `rooms:list`), `messages` (`message:send`, `history:fetch`), `dm` (`dm:send`), `presence`
//! (`presence:list`, `typing`, `room:notice`). Payload rules are plain functions in `payload`.

mod dm;
mod messages;
pub mod payload;
mod presence;
mod recovery;
mod rooms;
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
    pub max_rooms_per_socket: usize,
    pub send_rate: u32,
    pub send_burst: u32,
    pub auto_create_rooms: bool,
    /// Largest packet a client may send, in bytes.
    pub max_payload: u64,
    /// Most missed messages one room's recovery returns before it says `truncated`.
    pub recovery_limit: u32,
}

/// What every handler can reach: storage, identity, presence and the Socket.IO server.
pub struct Chat<A: Adapter> {
    pub store: SharedStore,
    pub verifier: Option<JwtVerifier>,
    pub limits: Limits,
    pub presence: crate::presence::Presence,
    /// The Redis link when running as one node of several.
    pub redis: Option<crate::cluster::RedisLink>,
    pub io: SocketIo<A>,
    /// Every event being handled, so that shutdown can let pending writes commit.
    pub tasks: TaskTracker,
}

pub type SharedChat<A> = Arc<Chat<A>>;

/// One socket's context: who it is, where it is, and its send budget.
pub struct Conn {
    pub user: User,
    pub ns: Arc<NamespaceSettings>,
    send_budget: governor::DefaultDirectRateLimiter,
    /// The receiver the next event waits on before it runs; see [`Conn::take_turn`].
    last_turn: Mutex<Option<oneshot::Receiver<()>>>,
    /// The first turn, reserved before the client is told it is connected and released once the socket has
    /// re-entered the user's rooms: no event of the client can run before that.
    connect_turn: Mutex<Option<oneshot::Sender<()>>>,
}

impl Conn {
    fn new(user: User, ns: Arc<NamespaceSettings>, limits: &Limits) -> Self {
        use std::num::NonZeroU32;
        let rate = NonZeroU32::new(limits.send_rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.send_burst).unwrap_or(rate);
        Self {
            user,
            ns,
            send_budget: governor::RateLimiter::direct(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            last_turn: Mutex::new(None),
            connect_turn: Mutex::new(None),
        }
    }

    /// Reserves the first turn for the connect work (see `connect_turn`).
    fn reserve_connect_turn(&self) {
        let (_, done) = self.take_turn();
        *self
            .connect_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(done);
    }

    /// Ends the connect turn: queued events may run.
    fn release_connect_turn(&self) {
        self.connect_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Spends one send from the socket's budget.
    pub fn spend_send(&self) -> ChatResult<()> {
        self.send_budget.check().map_err(|_| {
            ChatError::rate_limited("too many messages from this connection; slow down and retry")
        })
    }

    /// Events of one socket run one after another, in the order they arrived: a client may emit `room:join`
    /// and `message:send` back to back and rely on the join being done. Socket.IO hands us events in order,
    /// synchronously; each takes the previous event's receiver here and runs once that one has finished.
    fn take_turn(&self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
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
    Done {},
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type EventFn<A> = fn(Call<A>) -> BoxFuture<ChatResult<Reply>>;

/// Marks the [`MessageHandler`] implementation of [`Event`] apart from socketioxide's closure handlers.
pub struct Ordered;

/// A registered event: its name, its handler, and the socket context the handler runs in.
struct Event<A: Adapter> {
    name: &'static str,
    run: EventFn<A>,
    chat: SharedChat<A>,
    conn: Arc<Conn>,
}

/// Engine.IO enforces the payload limit on HTTP long-polling only; over WebSocket the packet arrives whole, so
/// the limit is applied here: the offending client is disconnected, nobody else is affected.
fn oversized<A: Adapter>(chat: &Chat<A>, socket: &Arc<Socket<A>>, value: &Value) -> bool {
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

impl<A: Adapter> MessageHandler<A, Ordered> for Event<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut value: Value, ack_id: Option<i64>) {
        if oversized(&self.chat, &socket, &value) {
            return;
        }
        // Both extractors are infallible.
        let Ok(ack) = AckSender::from_message_parts(&socket, &mut value, &ack_id);
        let Ok(TryData(payload)) =
            TryData::<Json>::from_message_parts(&socket, &mut value, &ack_id);
        let (previous, done) = self.conn.take_turn();
        let call = Call {
            chat: self.chat.clone(),
            conn: self.conn.clone(),
            socket: SocketRef::from(socket),
            payload: payload.unwrap_or(Json::Null),
        };
        let (name, run, wants_ack) = (self.name, self.run, ack_id.is_some());
        self.chat.tasks.spawn(async move {
            if let Some(previous) = previous {
                // An error only means the previous event's task ended without signalling: its turn is over.
                let _ = previous.await;
            }
            let socket = call.socket.clone();
            let result = run(call).await;
            respond(&socket, ack, wants_ack, name, result);
            drop(done);
        });
    }
}

/// Answers an event: the ack when the client asked for one, else errors go to `chat:error`.
fn respond<A: Adapter>(
    socket: &SocketRef<A>,
    ack: AckSender<A>,
    wants_ack: bool,
    event: &str,
    result: ChatResult<Reply>,
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
    if let Err(error) = &result {
        tracing::debug!(socket = %socket.id, event, code = ?error.code, message = %error.message, "event refused");
    }
    if let Err(e) = sent {
        tracing::debug!(socket = %socket.id, event, error = %e, "could not answer (client gone?)");
    }
}

/// The event table: every client → server event and the function that handles it.
fn event_table<A: Adapter>() -> [(&'static str, EventFn<A>); 10] {
    [
        ("room:create", |c| Box::pin(rooms::create(c))),
        ("room:join", |c| Box::pin(rooms::join(c))),
        ("room:leave", |c| Box::pin(rooms::leave(c))),
        ("rooms:list", |c| Box::pin(rooms::list(c))),
        ("message:send", |c| Box::pin(messages::send(c))),
        ("history:fetch", |c| Box::pin(messages::history(c))),
        ("dm:send", |c| Box::pin(dm::send(c))),
        ("presence:list", |c| Box::pin(presence::list(c))),
        ("typing", |c| Box::pin(presence::typing(c))),
        ("sync", |c| Box::pin(recovery::sync(c))),
    ]
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
        let error =
            ChatError::bad_request(format!("unknown event {event:?}; see docs/protocol.md"));
        respond(
            &SocketRef::from(socket),
            ack,
            ack_id.is_some(),
            &event,
            Err(error),
        );
    }
}

/// Registers every event of the table on a socket, bound to its context.
fn register_events<A: Adapter>(socket: &SocketRef<A>, chat: &SharedChat<A>, conn: &Arc<Conn>) {
    for (name, run) in event_table::<A>() {
        socket.on(
            name,
            Event {
                name,
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
