//! One simulated chat client: a single tokio task that owns its WebSocket, connects, joins its room, then
//! sends at its share of the rate and accounts for everything it receives.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use socketioxide_core::parser::ParseConfig;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::codec::{self, ChatAck, ChatMessage, Data, Frame};
use crate::stats::{Member, Stats, parse_stamp, stamp_text, unix_nanos};

type Ws = WebSocketStream<TcpStream>;

/// How clients identify themselves.
pub enum Auth {
    /// `auth: { name: "bench-<i>" }`.
    Anonymous,
    /// `auth: { token }`, an HS256 JWT with `sub` and `name` `bench-<i>`, signed with this key.
    Jwt(jsonwebtoken::EncodingKey),
}

/// Everything the client tasks share.
pub struct Ctx {
    /// Per server: `ws://host:port/socket.io/?EIO=4&transport=websocket` and its address. Client i uses
    /// server i mod n.
    pub endpoints: Vec<(String, SocketAddr)>,
    /// Local addresses to bind to before connecting, round-robin by client id; empty: let the kernel choose.
    pub sources: Vec<IpAddr>,
    pub namespace: String,
    pub auth: Auth,
    pub clients: u32,
    pub rooms: u32,
    pub size: usize,
    /// This run's tag, the first field of every text sent.
    pub run: String,
    pub connect_timeout: Duration,
    pub ack_timeout: Duration,
    /// --read-every: the shortest time between two `room:read` of one client; `None`: no reads.
    pub read_every: Option<Duration>,
    pub ws_config: WebSocketConfig,
    pub parse_config: ParseConfig,
    pub stats: Stats,
    /// When the connect phase started.
    pub epoch: Instant,
}

/// What the orchestrator tells all clients, through a `watch` channel.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Connect, join, and keep the connection alive.
    Hold,
    /// Send every `interval` (each client offset by its share of it) from `start`.
    Run {
        start: Instant,
        interval: Duration,
        /// Start of the measurement window (after the warm-up), on both clocks.
        measure_from: Instant,
        measure_from_ns: u64,
        /// End of the sending (and of the measurement window), unix nanoseconds.
        until_ns: u64,
    },
    /// Stop sending; keep receiving (the drain).
    Stop,
    /// Disconnect and report.
    Close,
}

#[derive(Serialize)]
struct JoinPayload<'a> {
    room: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SendPayload<'a> {
    room: &'a str,
    text: &'a str,
    client_id: &'a str,
}

#[derive(Serialize)]
struct ReadPayload<'a> {
    room: &'a str,
    seq: i64,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    name: &'a str,
    iat: u64,
    exp: u64,
}

impl Ctx {
    fn user_name(&self, id: u32) -> String {
        format!("bench-{id}")
    }

    fn auth_payload(&self, id: u32) -> Result<serde_json::Value, ConnError> {
        let name = self.user_name(id);
        match &self.auth {
            Auth::Anonymous => Ok(serde_json::json!({ "name": name })),
            Auth::Jwt(key) => {
                let now = unix_nanos() / 1_000_000_000;
                let claims = Claims {
                    sub: &name,
                    name: &name,
                    iat: now,
                    exp: now + 24 * 3600,
                };
                let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key)
                    .map_err(|e| ConnError::Local(format!("jwt: {e}")))?;
                Ok(serde_json::json!({ "token": token }))
            }
        }
    }

    fn since_epoch_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
enum ConnError {
    Tcp(std::io::Error),
    Ws(tungstenite::Error),
    Protocol(String),
    Refused(String),
    Closed,
    Local(String),
}

impl ConnError {
    /// A short, low-cardinality key for the error counts.
    fn kind(&self) -> String {
        match self {
            ConnError::Tcp(e) => format!("tcp: {}", e.kind()),
            ConnError::Ws(e) => ws_error_kind(e),
            ConnError::Protocol(m) => format!("protocol: {m}"),
            // "unauthorized: invalid_token: why…" -> "connect_error: unauthorized: invalid_token"
            ConnError::Refused(m) => {
                let short: Vec<&str> = m.splitn(3, ':').take(2).map(str::trim).collect();
                format!("connect_error: {}", short.join(": "))
            }
            ConnError::Closed => "closed by server".to_owned(),
            ConnError::Local(m) => m.clone(),
        }
    }
}

fn ws_error_kind(e: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => "websocket: closed".to_owned(),
        E::Io(io) => format!("websocket io: {}", io.kind()),
        E::Http(resp) => format!("websocket: http {}", resp.status().as_u16()),
        E::Protocol(p) => format!("websocket protocol: {p}"),
        E::Capacity(c) => format!("websocket capacity: {c}"),
        other => format!("websocket: {other}"),
    }
}

/// Reads the next text frame during the handshake (pings are answered by the caller).
async fn next_frame(ws: &mut Ws, config: &ParseConfig) -> Result<Frame, ConnError> {
    loop {
        match ws.next().await {
            None => return Err(ConnError::Closed),
            Some(Err(e)) => return Err(ConnError::Ws(e)),
            Some(Ok(Message::Text(t))) => {
                return codec::decode(t.as_str(), config)
                    .map_err(|e| ConnError::Protocol(e.to_string()));
            }
            Some(Ok(Message::Close(_))) => return Err(ConnError::Closed),
            Some(Ok(_)) => continue,
        }
    }
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), ConnError> {
    ws.send(Message::text(text)).await.map_err(ConnError::Ws)
}

/// TCP connect (from the client's source address), WebSocket upgrade, Engine.IO open, Socket.IO connect.
async fn handshake(ctx: &Ctx, id: u32) -> Result<Ws, ConnError> {
    let (request, target) = &ctx.endpoints[id as usize % ctx.endpoints.len()];
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ConnError::Tcp)?;
    if !ctx.sources.is_empty() {
        let source = ctx.sources[id as usize % ctx.sources.len()];
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(ConnError::Tcp)?;
    }
    let stream = socket.connect(*target).await.map_err(ConnError::Tcp)?;
    let _ = stream.set_nodelay(true);
    let (mut ws, _) = client_async_with_config(request.as_str(), stream, Some(ctx.ws_config))
        .await
        .map_err(ConnError::Ws)?;

    loop {
        match next_frame(&mut ws, &ctx.parse_config).await? {
            Frame::Open(_) => break,
            Frame::Ping => send_text(&mut ws, codec::pong()).await?,
            Frame::Close => return Err(ConnError::Closed),
            other => {
                return Err(ConnError::Protocol(format!(
                    "expected engine.io open, got {other:?}"
                )));
            }
        }
    }
    let auth = ctx.auth_payload(id)?;
    let connect = codec::connect(&ctx.namespace, Some(&auth))
        .map_err(|e| ConnError::Local(format!("encode: {e}")))?;
    send_text(&mut ws, connect).await?;
    loop {
        match next_frame(&mut ws, &ctx.parse_config).await? {
            Frame::Ping => send_text(&mut ws, codec::pong()).await?,
            Frame::Close => return Err(ConnError::Closed),
            Frame::ConnectError { ns, message } if ns == ctx.namespace => {
                return Err(ConnError::Refused(message));
            }
            Frame::Sio(p) if p.ns.as_str() == ctx.namespace => match p.inner {
                Data::Connect(_) => return Ok(ws),
                Data::Disconnect => return Err(ConnError::Refused("disconnected".to_owned())),
                _ => continue,
            },
            _ => continue,
        }
    }
}

/// Runs one client to the end and returns what the delivery tally needs.
pub async fn run(
    ctx: Arc<Ctx>,
    id: u32,
    permit: OwnedSemaphorePermit,
    phase: watch::Receiver<Phase>,
) -> Member {
    let room = id % ctx.rooms.max(1);
    let member = Member {
        id,
        room,
        ..Member::default()
    };
    let started = Instant::now();
    let ws = match timeout(ctx.connect_timeout, handshake(&ctx, id)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            ctx.stats.connect_errors.add(&e.kind());
            Stats::inc(&ctx.stats.settled);
            return member;
        }
        Err(_) => {
            ctx.stats.connect_errors.add("timeout");
            Stats::inc(&ctx.stats.settled);
            return member;
        }
    };
    let stats = &ctx.stats;
    Stats::inc(&stats.connected);
    stats.connect_latency.record(
        id,
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    );
    stats
        .last_connected_ns
        .fetch_max(ctx.since_epoch_ns(), Ordering::Relaxed);

    let mut client = Client {
        room_name: format!("bench-{room}"),
        ctx: ctx.clone(),
        member,
        ws,
        permit: Some(permit),
        pending: VecDeque::new(),
        next_n: 0,
        text: String::with_capacity(ctx.size + 48),
        sending: None,
        window: None,
        closing: false,
        reads: ctx.read_every.map(|every| Reads {
            every,
            newest: 0,
            marked: 0,
            next: Instant::now(),
            reading: false,
            next_ack: READ_ACKS,
        }),
    };
    client.main(phase).await;
    client.settle();
    client.member
}

struct Pending {
    ack: i64,
    sent_at: Instant,
}

#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    measure_from_ns: u64,
    until_ns: u64,
}

/// The read traffic of one client (--read-every): like a client showing its room, it marks the newest message
/// received as read, at most once per `every`, and only a seq it has not marked yet.
struct Reads {
    every: Duration,
    /// The newest seq received in the room, and the one last sent in `room:read`.
    newest: i64,
    marked: i64,
    /// The earliest time of the next `room:read`.
    next: Instant,
    /// While sending runs (reads stop with the sending, so that the drain ends when the messages are in).
    reading: bool,
    next_ack: i64,
}

impl Reads {
    fn due(&self) -> Option<Instant> {
        (self.reading && self.newest > self.marked).then_some(self.next)
    }
}

struct Client {
    ctx: Arc<Ctx>,
    member: Member,
    room_name: String,
    ws: Ws,
    /// Held while connecting and joining (bounds the handshakes in flight); released once settled.
    permit: Option<OwnedSemaphorePermit>,
    /// Acks awaited, oldest first: id 0 is the join, id n+1 is message n.
    pending: VecDeque<Pending>,
    next_n: u32,
    /// Reused buffer for the text of the next message.
    text: String,
    /// (next send, interval) while sending.
    sending: Option<(Instant, Duration)>,
    window: Option<Window>,
    /// The orchestrator said Close: connection losses from now on are not failures.
    closing: bool,
    reads: Option<Reads>,
}

const JOIN_ACK: i64 = 0;
/// Ack ids of `room:read` start here, far above any message number (message n is ack n + 1).
const READ_ACKS: i64 = 1 << 40;

enum Flow {
    Continue,
    /// The connection is gone, with this reason.
    Lost(String),
}

impl Client {
    fn settle(&mut self) {
        if self.permit.take().is_some() {
            Stats::inc(&self.ctx.stats.settled);
        }
    }

    async fn main(&mut self, mut phase: watch::Receiver<Phase>) {
        let join = codec::event(
            &self.ctx.namespace,
            "room:join",
            &JoinPayload {
                room: &self.room_name,
            },
            Some(JOIN_ACK),
        );
        let flow = match join {
            Ok(join) => self.send(join).await,
            Err(e) => Flow::Lost(format!("encode: {e}")),
        };
        if let Flow::Lost(reason) = flow {
            self.ctx.stats.join_errors.add(&reason);
            self.ctx.stats.disconnects.add(&reason);
            self.member.dropped = true;
            return;
        }
        self.pending.push_back(Pending {
            ack: JOIN_ACK,
            sent_at: Instant::now(),
        });
        // A phase set before this client connected counts too.
        let current = *phase.borrow_and_update();
        self.apply(current);

        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            if self.closing {
                break;
            }
            let deadline = self.next_deadline();
            if deadline != armed {
                if let Some(d) = deadline {
                    sleep.as_mut().reset(d);
                }
                armed = deadline;
            }
            let flow = tokio::select! {
                biased;
                changed = phase.changed() => {
                    let p = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Close };
                    self.apply(p);
                    Flow::Continue
                }
                msg = self.ws.next() => self.on_ws(msg).await,
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    self.on_timer().await
                }
            };
            if let Flow::Lost(reason) = flow {
                if !self.closing {
                    self.ctx.stats.disconnects.add(&reason);
                    self.member.dropped = true;
                }
                if self.permit.is_some() {
                    // Lost before the join was acked: that is the join's error.
                    self.ctx.stats.join_errors.add(&reason);
                    self.pending.retain(|p| p.ack != JOIN_ACK);
                }
                self.count_unanswered("connection lost");
                return;
            }
        }
        self.count_unanswered("timeout");
        // Polite goodbye: Socket.IO disconnect, then the WebSocket close handshake, bounded in time.
        let bye = codec::disconnect(&self.ctx.namespace);
        let _ = timeout(Duration::from_secs(2), async {
            let _ = self.ws.send(Message::text(bye)).await;
            let _ = self.ws.close(None).await;
        })
        .await;
    }

    /// Counts the acks still awaited when the client stops, as `why`.
    fn count_unanswered(&mut self, why: &str) {
        for p in self.pending.drain(..) {
            if p.ack == JOIN_ACK {
                self.ctx.stats.join_errors.add(why);
            } else {
                self.ctx.stats.send_errors.add(why);
            }
        }
    }

    fn apply(&mut self, phase: Phase) {
        match phase {
            Phase::Hold => {}
            Phase::Run {
                start,
                interval,
                measure_from,
                measure_from_ns,
                until_ns,
            } => {
                self.window = Some(Window {
                    measure_from,
                    measure_from_ns,
                    until_ns,
                });
                // Spread the clients evenly over one interval so that the total rate is smooth.
                let share = f64::from(self.member.id) / f64::from(self.ctx.clients.max(1));
                self.sending = Some((start + interval.mul_f64(share), interval));
                if let Some(r) = &mut self.reads {
                    r.reading = true;
                    // Spread the first reads over one period too.
                    r.next = start + r.every.mul_f64(share);
                }
            }
            Phase::Stop => {
                self.sending = None;
                if let Some(r) = &mut self.reads {
                    r.reading = false;
                }
            }
            Phase::Close => {
                self.sending = None;
                self.closing = true;
                if let Some(r) = &mut self.reads {
                    r.reading = false;
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let ack = self
            .pending
            .front()
            .map(|p| p.sent_at + self.ctx.ack_timeout);
        let send = match self.sending {
            Some((next, _)) if self.member.joined => Some(next),
            _ => None,
        };
        let read = match &self.reads {
            Some(r) if self.member.joined => r.due(),
            _ => None,
        };
        [ack, send, read].into_iter().flatten().min()
    }

    async fn send(&mut self, text: String) -> Flow {
        match self.ws.send(Message::text(text)).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Lost(ws_error_kind(&e)),
        }
    }

    async fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        while let Some(p) = self.pending.front() {
            if p.sent_at + self.ctx.ack_timeout > now {
                break;
            }
            if p.ack == JOIN_ACK {
                self.ctx.stats.join_errors.add("timeout");
                self.settle();
            } else {
                self.ctx.stats.send_errors.add("timeout");
            }
            self.pending.pop_front();
        }
        if let Some((next, interval)) = self.sending
            && self.member.joined
            && next <= now
        {
            // Open loop at a fixed pace; a client that fell behind (tool or server saturated) does not
            // burst to catch up, it just sends less, which shows in the achieved rate.
            let mut following = next + interval;
            if following <= now {
                following = now + interval;
            }
            self.sending = Some((following, interval));
            if let Flow::Lost(reason) = self.send_message().await {
                return Flow::Lost(reason);
            }
        }
        if self.member.joined
            && let Some(r) = &mut self.reads
            && r.due().is_some_and(|d| d <= now)
        {
            r.marked = r.newest;
            r.next = now + r.every;
            let ack = r.next_ack;
            r.next_ack += 1;
            let seq = r.marked;
            return self.send_read(seq, ack).await;
        }
        Flow::Continue
    }

    async fn send_read(&mut self, seq: i64, ack: i64) -> Flow {
        let payload = ReadPayload {
            room: &self.room_name,
            seq,
        };
        let packet = match codec::event(&self.ctx.namespace, "room:read", &payload, Some(ack)) {
            Ok(p) => p,
            Err(e) => return Flow::Lost(format!("encode: {e}")),
        };
        let flow = self.send(packet).await;
        if let Flow::Continue = flow {
            Stats::inc(&self.ctx.stats.reads_sent);
        }
        flow
    }

    async fn send_message(&mut self) -> Flow {
        let ctx = self.ctx.clone();
        let n = self.next_n;
        self.next_n += 1;
        stamp_text(
            &mut self.text,
            &ctx.run,
            self.member.id,
            n,
            unix_nanos(),
            ctx.size,
        );
        let client_id = format!("{}-{}-{}", ctx.run, self.member.id, n);
        let payload = SendPayload {
            room: &self.room_name,
            text: &self.text,
            client_id: &client_id,
        };
        let ack = i64::from(n) + 1;
        let packet = match codec::event(&ctx.namespace, "message:send", &payload, Some(ack)) {
            Ok(p) => p,
            Err(e) => return Flow::Lost(format!("encode: {e}")),
        };
        let sent_at = Instant::now();
        let flow = self.send(packet).await;
        if let Flow::Continue = flow {
            Stats::inc(&ctx.stats.sent);
            self.pending.push_back(Pending { ack, sent_at });
        } else {
            Stats::inc(&ctx.stats.send_failures);
        }
        flow
    }

    async fn on_ws(&mut self, msg: Option<Result<Message, tungstenite::Error>>) -> Flow {
        let text = match msg {
            None => return Flow::Lost("closed by server".to_owned()),
            Some(Err(e)) => return Flow::Lost(ws_error_kind(&e)),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => return Flow::Lost("closed by server".to_owned()),
            Some(Ok(_)) => return Flow::Continue,
        };
        let frame = match codec::decode(text.as_str(), &self.ctx.parse_config) {
            Ok(f) => f,
            Err(e) => {
                self.ctx.stats.protocol_errors.add(&e.to_string());
                return Flow::Continue;
            }
        };
        match frame {
            Frame::Ping => self.send(codec::pong()).await,
            Frame::Close => Flow::Lost("engine.io close".to_owned()),
            Frame::Sio(p) if p.ns.as_str() == self.ctx.namespace => match p.inner {
                Data::Event(mut value, _) => {
                    match codec::event_name(&value) {
                        Ok("message") => match codec::event_arg::<ChatMessage<'_>>(&mut value) {
                            Ok(m) => {
                                self.on_message(&m.text);
                                if let (Some(r), Some(seq)) = (&mut self.reads, m.seq) {
                                    r.newest = r.newest.max(seq);
                                }
                            }
                            Err(e) => self.ctx.stats.protocol_errors.add(&e.to_string()),
                        },
                        Ok("read") => Stats::inc(&self.ctx.stats.receipts),
                        _ => {}
                    }
                    Flow::Continue
                }
                Data::EventAck(mut value, id) => {
                    match codec::ack_arg::<ChatAck<'_>>(&mut value) {
                        Ok(ack) => self.on_ack(id, ack.error_code()),
                        Err(e) => self.on_ack(id, Some(format!("undecodable ack: {e}"))),
                    }
                    Flow::Continue
                }
                Data::Disconnect => Flow::Lost("disconnected by server".to_owned()),
                _ => Flow::Continue,
            },
            _ => Flow::Continue,
        }
    }

    fn on_ack(&mut self, id: i64, error: Option<String>) {
        let stats = &self.ctx.stats;
        if id >= READ_ACKS {
            match error {
                None => Stats::inc(&stats.reads_ok),
                Some(code) => stats.read_errors.add(&code),
            }
            return;
        }
        let now = Instant::now();
        let Some(pos) = self.pending.iter().position(|p| p.ack == id) else {
            // Its timeout was already counted (or the server acked something never asked).
            Stats::inc(&stats.late_acks);
            if error.is_none()
                && id > JOIN_ACK
                && id <= i64::from(self.next_n)
                && let Ok(n) = u32::try_from(id - 1)
            {
                self.member.acked.insert(n);
            }
            return;
        };
        let Some(p) = self.pending.remove(pos) else {
            return;
        };
        if id == JOIN_ACK {
            match error {
                None => {
                    self.member.joined = true;
                    Stats::inc(&stats.joined);
                    stats
                        .last_joined_ns
                        .fetch_max(self.ctx.since_epoch_ns(), Ordering::Relaxed);
                }
                Some(code) => stats.join_errors.add(&code),
            }
            self.settle();
            return;
        }
        if let Some(w) = self.window
            && p.sent_at >= w.measure_from
        {
            let us = u64::try_from((now - p.sent_at).as_micros()).unwrap_or(u64::MAX);
            stats.ack_latency.record(self.member.id, us);
        }
        match error {
            None => {
                Stats::inc(&stats.acked_ok);
                if let Ok(n) = u32::try_from(id - 1) {
                    self.member.acked.insert(n);
                }
            }
            Some(code) => stats.send_errors.add(&code),
        }
    }

    fn on_message(&mut self, text: &str) {
        let stats = &self.ctx.stats;
        let Some(stamp) = parse_stamp(text).filter(|s| s.run == self.ctx.run) else {
            Stats::inc(&stats.foreign);
            return;
        };
        let now_ns = unix_nanos();
        Stats::inc(&stats.delivered);
        if let Some(w) = self.window {
            if (w.measure_from_ns..w.until_ns).contains(&now_ns) {
                Stats::inc(&stats.delivered_in_window);
            }
            if (w.measure_from_ns..w.until_ns).contains(&stamp.sent_ns) {
                let us = now_ns.saturating_sub(stamp.sent_ns) / 1000;
                stats.delivery_latency.record(self.member.id, us);
            }
        }
        let fresh = self
            .member
            .received
            .entry(stamp.sender)
            .or_default()
            .insert(stamp.n);
        if !fresh {
            Stats::inc(&stats.duplicates);
        }
    }
}
