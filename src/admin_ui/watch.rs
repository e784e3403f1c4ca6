//! What the Admin UI is told, from this node: every [`TICK`] the watcher looks at this node's sockets in the
//! chat namespaces — their Socket.IO rooms and transport — and tells `/admin` what changed since the last look
//! (`socket_connected`, `socket_disconnected`, `room_joined`, `room_left`, `socket_updated`), and every two
//! seconds `server_stats`.
//!
//! Looking rather than hooking: a socket enters and leaves Socket.IO rooms in many places (the chat's events,
//! moderation on another node through the adapter, the UI's own commands), and a look catches them all,
//! wherever they came from, for the price of a latency of at most one tick. A join undone within one tick is
//! not seen. The watcher only looks while someone watches: an admin socket on this node or, with Redis, on any
//! node (a key each watching node refreshes); otherwise it costs nothing.
//!
//! A UI that connects gets `all_sockets` from the node it connected to, made from that node's look, then that
//! node bumps a counter in Redis, and every other node announces its sockets with `socket_connected` (which the
//! UI merges, where `all_sockets` replaces); the bump follows the `all_sockets`, so no announcement can arrive
//! before it and be wiped.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use fred::interfaces::KeysInterface;
use serde::Serialize;
use serde_json::{Value as Json, json};
use socketioxide::{
    SocketIo, TransportType, adapter::Adapter, extract::SocketRef, operators::BroadcastOperators,
    socket::Sid,
};

use super::{AdminUi, NAMESPACE};

/// How often the watcher looks at this node's sockets while someone watches.
pub const TICK: Duration = Duration::from_millis(250);
/// `server_stats` every this many ticks (two seconds, as the Node implementation).
const STATS_EVERY: u32 = 8;
/// How long a node's "someone is watching" mark lasts in Redis unless refreshed.
const WATCH_MARK: Duration = Duration::from_secs(6);

/// One socket as the last look saw it.
struct Seen<A: Adapter> {
    socket: SocketRef<A>,
    ns: String,
    rooms: BTreeSet<String>,
    transport: &'static str,
    /// When the watcher first saw it (the handshake's `issued`).
    since: chrono::DateTime<chrono::Utc>,
}

type Look<A> = HashMap<Sid, Seen<A>>;

/// A change the UI is told about: the event and its arguments.
type Change = (&'static str, Json);

/// Starts the watcher; abort it on shutdown.
pub fn spawn<A: Adapter>(admin: Arc<AdminUi>, io: SocketIo<A>) -> tokio::task::AbortHandle {
    let arrived = admin
        .arrived
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    tokio::spawn(async move {
        let Some(mut arrived) = arrived else { return };
        let mut watcher = Watcher {
            admin,
            io,
            last: Some(Look::new()),
            hello: None,
            own_hello: None,
            ticks: 0,
        };
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let mut arrivals = Vec::new();
            while let Ok(sid) = arrived.try_recv() {
                arrivals.push(sid);
            }
            watcher.tick(arrivals).await;
        }
    })
    .abort_handle()
}

struct Watcher<A: Adapter> {
    admin: Arc<AdminUi>,
    io: SocketIo<A>,
    /// The last look, while watched; `None` after a time nobody watched (the next look is a silent baseline).
    last: Option<Look<A>>,
    /// The cluster's arrival counter as last read, and the value this node last set.
    hello: Option<i64>,
    own_hello: Option<i64>,
    ticks: u32,
}

impl<A: Adapter> Watcher<A> {
    async fn tick(&mut self, arrivals: Vec<Sid>) {
        self.ticks = self.ticks.wrapping_add(1);
        let Some(admins) = self.io.of(NAMESPACE) else {
            return;
        };
        let watched_here = !admins.clone().sockets().is_empty();
        let (watched_elsewhere, hello) = self.cluster(watched_here).await;
        // Another node welcomed a UI since the last read (read whether or not anyone watches, so that the first
        // bump after a quiet time is noticed).
        let bumped = hello.is_some_and(|hello| {
            let bumped =
                self.hello.is_some_and(|last| last != hello) && self.own_hello != Some(hello);
            self.hello = Some(hello);
            bumped
        });
        if !watched_here && !watched_elsewhere {
            self.last = None;
            return;
        }
        let look = self.look();
        if let Some(last) = &self.last {
            for (event, args) in self.changes(last, &look) {
                self.tell(&admins, event, &args).await;
            }
        }
        self.last = Some(look);
        for sid in arrivals {
            self.welcome(&admins, sid).await;
        }
        if bumped {
            self.announce(&admins).await;
        }
        if self.ticks.is_multiple_of(STATS_EVERY) {
            let stats = self.stats();
            self.tell(&admins, "server_stats", &json!([stats])).await;
        }
    }

    /// With Redis: marks this node as watched, and reads whether another node is and the arrival counter.
    async fn cluster(&mut self, watched_here: bool) -> (bool, Option<i64>) {
        let Some(redis) = self.admin.redis.as_ref().filter(|r| r.is_up()) else {
            return (false, None);
        };
        let (mark, counter) = keys(redis);
        if watched_here && self.ticks % STATS_EVERY == 1 {
            let expiry = fred::types::Expiration::PX(WATCH_MARK.as_millis() as i64);
            let set: Result<(), _> = redis
                .commands
                .set(&mark, 1, Some(expiry), None, false)
                .await;
            if let Err(e) = set {
                tracing::debug!(error = %e, "admin UI: could not mark this node watched");
            }
        }
        let read: Result<Vec<Option<i64>>, _> = redis.commands.mget(vec![mark, counter]).await;
        match read {
            Ok(values) => {
                let mark = values.first().copied().flatten();
                let hello = values.get(1).copied().flatten();
                (mark.is_some(), Some(hello.unwrap_or(0)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin UI: could not read the watch mark");
                (false, None)
            }
        }
    }

    /// This node's sockets in the chat namespaces, now.
    fn look(&self) -> Look<A> {
        let now = chrono::Utc::now();
        let mut look = Look::new();
        for ns in &self.admin.namespaces {
            let Some(op) = self.io.of(ns) else { continue };
            for socket in op.sockets() {
                let since = self
                    .last
                    .as_ref()
                    .and_then(|last| last.get(&socket.id))
                    .map_or(now, |seen| seen.since);
                let seen = Seen {
                    rooms: socket.rooms().into_iter().map(|r| r.to_string()).collect(),
                    transport: transport(socket.transport_type()),
                    ns: ns.clone(),
                    since,
                    socket,
                };
                look.insert(seen.socket.id, seen);
            }
        }
        look
    }

    /// What changed from `last` to `now`, in an order the UI can apply: arrivals with their rooms, then room
    /// changes and transport upgrades, then departures.
    fn changes(&self, last: &Look<A>, now: &Look<A>) -> Vec<Change> {
        let stamp = timestamp();
        let mut changes = Vec::new();
        for (sid, seen) in now {
            let Some(before) = last.get(sid) else {
                changes.push(("socket_connected", json!([serialize(seen), stamp])));
                continue;
            };
            for room in seen.rooms.difference(&before.rooms) {
                changes.push((
                    "room_joined",
                    json!([seen.ns, room, sid.to_string(), stamp]),
                ));
            }
            for room in before.rooms.difference(&seen.rooms) {
                changes.push(("room_left", json!([seen.ns, room, sid.to_string(), stamp])));
            }
            if seen.transport != before.transport {
                let update =
                    json!({ "id": sid.to_string(), "nsp": seen.ns, "transport": seen.transport });
                changes.push(("socket_updated", json!([update])));
            }
        }
        for (sid, before) in last {
            if !now.contains_key(sid) {
                // The reason is not known to a look; Socket.IO's own words for "gone" stand in.
                changes.push((
                    "socket_disconnected",
                    json!([before.ns, sid.to_string(), "transport close", stamp]),
                ));
            }
        }
        changes
    }

    /// A UI that connected to this node: the sockets of the last look replace whatever it showed, then this
    /// node's stats, then (with Redis) the other nodes are asked to announce theirs.
    async fn welcome(&mut self, admins: &BroadcastOperators<A>, sid: Sid) {
        let Some(socket) = admins.get_socket(sid) else {
            return;
        };
        let sockets: Vec<Json> = self
            .last
            .iter()
            .flat_map(|look| look.values().map(serialize))
            .collect();
        let _ = socket.emit("all_sockets", &sockets);
        let _ = socket.emit("server_stats", &self.stats());
        let Some(redis) = self.admin.redis.as_ref().filter(|r| r.is_up()) else {
            return;
        };
        let (mark, counter) = keys(redis);
        let expiry = fred::types::Expiration::PX(WATCH_MARK.as_millis() as i64);
        let marked: Result<(), _> = redis
            .commands
            .set(&mark, 1, Some(expiry), None, false)
            .await;
        let bumped: Result<i64, _> = match marked {
            Ok(()) => redis.commands.incr(&counter).await,
            Err(e) => Err(e),
        };
        match bumped {
            Ok(value) => self.own_hello = Some(value),
            Err(e) => {
                tracing::debug!(error = %e, "admin UI: could not ask the other nodes for their sockets")
            }
        }
    }

    /// Tells every UI about every socket of this node (another node welcomed a UI).
    async fn announce(&mut self, admins: &BroadcastOperators<A>) {
        let Some(look) = &self.last else { return };
        let stamp = timestamp();
        let all: Vec<Json> = look
            .values()
            .map(|seen| json!([serialize(seen), stamp]))
            .collect();
        for args in all {
            self.tell(admins, "socket_connected", &args).await;
        }
    }

    /// Emits to every UI, on every node; this node's UIs alone while Redis is away.
    async fn tell(&self, admins: &BroadcastOperators<A>, event: &str, args: &Json) {
        // The arguments go out as separate Socket.IO arguments, as the UI's handlers take them.
        let Json::Array(args) = args else { return };
        crate::cluster::deliver(
            self.admin.redis.as_ref(),
            || admins.clone(),
            event,
            &Spread(args),
        )
        .await;
    }

    fn stats(&self) -> Json {
        let look = self.last.as_ref();
        let mut namespaces: Vec<Json> = Vec::new();
        for ns in &self.admin.namespaces {
            let count = look.map_or(0, |l| l.values().filter(|s| &s.ns == ns).count());
            namespaces.push(json!({ "name": ns, "socketsCount": count }));
        }
        let sockets = look.map_or(0, HashMap::len);
        let polling = look.map_or(0, |l| {
            l.values().filter(|s| s.transport == "polling").count()
        });
        let admins = self.io.of(NAMESPACE).map_or(0, |op| op.sockets().len());
        json!({
            "serverId": self.admin.server_id,
            "hostname": self.admin.hostname,
            "pid": std::process::id(),
            "uptime": self.admin.started.elapsed().as_secs_f64(),
            "clientsCount": sockets + admins,
            "pollingClientsCount": polling,
            // Byte and packet counts live below socketioxide's API; the UI is offered no aggregated charts.
            "aggregatedEvents": [],
            "namespaces": namespaces,
        })
    }
}

/// A list serialized as a tuple: socketioxide sends a tuple's elements as separate arguments.
struct Spread<'a>(&'a [Json]);

impl Serialize for Spread<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

/// The Redis keys of the watch mark and the arrival counter.
fn keys(redis: &crate::cluster::RedisLink) -> (String, String) {
    (
        format!("{}:admin-ui:watched", redis.prefix),
        format!("{}:admin-ui:arrivals", redis.prefix),
    )
}

fn transport(kind: TransportType) -> &'static str {
    match kind {
        TransportType::Polling => "polling",
        TransportType::Websocket => "websocket",
    }
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Handshake headers that carry credentials, shown as `<redacted>`.
const SECRET_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];
/// Handshake query parameters that carry credentials (Socket.IO 2.x clients send their token there).
const SECRET_PARAMS: &[&str] = &["token", "access_token"];

/// A socket as the UI's `SerializedSocket`: id, client, transport, namespace, `data` (palaver's user), the
/// handshake and the rooms.
fn serialize<A: Adapter>(seen: &Seen<A>) -> Json {
    let socket = &seen.socket;
    let parts = socket.req_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    let address = header("cf-connecting-ip")
        .or_else(|| header("x-forwarded-for"))
        .or(peer)
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let shown = match SECRET_HEADERS.contains(&name.as_str()) {
            true => "<redacted>".to_owned(),
            false => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        };
        headers.insert(name.as_str().to_owned(), shown.into());
    }
    let mut query = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()) {
        let shown = match SECRET_PARAMS.contains(&&*key) {
            true => "<redacted>".to_owned(),
            false => value.into_owned(),
        };
        query.entry(key.into_owned()).or_insert(shown.into());
    }
    let secure = header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
        || parts.uri.scheme_str() == Some("https");
    let data = match socket.extensions.get::<Arc<crate::chat::Conn>>() {
        Some(conn) => json!({ "user": conn.user(), "namespaceAdmin": conn.admin() }),
        None => json!({}),
    };
    let url = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |p| p.to_string());
    let id = socket.id.to_string();
    json!({
        "id": id,
        // socketioxide gives each namespace connection its own id and does not expose the Engine.IO one.
        "clientId": id,
        "transport": seen.transport,
        "nsp": seen.ns,
        "data": data,
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": seen.since.timestamp_millis(),
            "secure": secure,
            "time": seen.since.to_rfc2822(),
            "url": url,
            "xdomain": header("origin").is_some(),
        },
        "rooms": seen.rooms,
    })
}
