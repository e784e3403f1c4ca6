//! The official Socket.IO Admin UI (`@socket.io/admin-ui`) connects to palaver as it does to a Node server
//! instrumented with `instrument()`: a `/admin` namespace that exists only with `--admin-username`, signed into
//! with a username and a bcrypt-hashed password, that sends `config`, `server_stats` every two seconds, the list
//! of sockets with their handshake, user and Socket.IO rooms, and connections, disconnections, room joins and
//! leaves as they happen ([`watch`]); and that runs the UI's `join`, `leave` and `_disconnect` commands unless
//! `--admin-read-only`.
//!
//! Not to be confused with *namespace admins* (`--admin-claim`, [`crate::chat::moderation`]): those are chat
//! users with moderation rights; the Admin UI is an operator's dashboard with its own credentials.
//!
//! With several nodes each node reports as its own server (its `serverId`) and its own sockets, through the
//! Socket.IO adapter's cluster-wide broadcast to `/admin`: a UI connected to any node sees every node. See
//! docs/operations.md, "Admin UI".

pub mod watch;

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use fred::interfaces::KeysInterface;
use serde::Serialize;
use serde_json::Value as Json;
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, SocketRef, TryData},
    handler::ConnectHandler,
    socket::Sid,
};
use socketioxide_core::adapter::DefinedAdapter;
use tokio::sync::{Semaphore, mpsc};

// A command's arguments, however many the UI sent (`leave` with a room and no socket has two), are read as a
// profile's event arguments are.
use crate::{cluster::RedisLink, config::ConfigError, profile::Args};

/// The namespace the Admin UI connects to (its default; the UI can be told another, palaver serves this one).
pub const NAMESPACE: &str = "/admin";
/// How long a session id the UI was given signs it in again (a page reload), as in the Node implementation.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Sign-ins with a password per source address and minute (a session id costs none).
const SIGN_INS_PER_MINUTE: NonZeroU32 = match NonZeroU32::new(20) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};
/// Longest room name a command may name.
const MAX_ROOM: usize = 256;

/// The Admin UI's settings and state on this node.
pub struct AdminUi {
    username: String,
    password_hash: String,
    read_only: bool,
    /// This node, as the UI's server list names it: host name and process id, unique per running node.
    pub server_id: String,
    hostname: String,
    started: Instant,
    /// The chat namespaces whose sockets the UI sees and commands (never `/admin` itself).
    namespaces: Vec<String>,
    /// Sign-in attempts with a password, per source address: a brute force costs minutes per handful of guesses.
    attempts: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// bcrypt is slow on purpose; a flood of sign-ins from many addresses must not take every core.
    hashing: Semaphore,
    /// Session ids handed out by this node (alone, or while Redis is away), with when they were issued.
    sessions: Mutex<HashMap<String, Instant>>,
    /// The cluster's Redis, which shares sessions and tells every node that someone is watching.
    redis: Option<RedisLink>,
    /// Admin sockets of this node waiting for their first `all_sockets` and `server_stats` from the watcher.
    arrivals: mpsc::UnboundedSender<Sid>,
    arrived: Mutex<Option<mpsc::UnboundedReceiver<Sid>>>,
}

impl AdminUi {
    /// The Admin UI as configured, or `None` without `--admin-username`: then there is no `/admin` namespace.
    pub fn from_config(
        config: &crate::Config,
        namespaces: &[crate::config::NamespaceSettings],
        redis: Option<RedisLink>,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        let refuse = |why: String| Err(ConfigError::AdminUi(why));
        let (username, hash) = match (&config.admin_username, &config.admin_password_hash) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return refuse("--admin-username needs --admin-password-hash".into());
            }
            (None, Some(_)) => {
                return refuse("--admin-password-hash needs --admin-username".into());
            }
            (Some(user), Some(hash)) => (user.trim().to_owned(), hash.trim().to_owned()),
        };
        if username.is_empty() {
            return refuse("--admin-username must not be empty".into());
        }
        if bcrypt::HashParts::from_str(&hash).is_err() {
            return refuse(
                "--admin-password-hash must be a bcrypt hash ($2a$, $2b$ or $2y$…), e.g. from `htpasswd -bnBC 10 \"\" PASSWORD | tr -d ':'`"
                    .into(),
            );
        }
        if namespaces.iter().any(|ns| ns.path == NAMESPACE) {
            return refuse(format!(
                "the Admin UI takes the {NAMESPACE} namespace; the namespaces file serves a chat there"
            ));
        }
        if crate::config::named_origins(&config.cors_origins)
            .next()
            .is_none()
        {
            tracing::warn!(
                "--admin-username without named --cors-origins: a browser refuses the Admin UI's credentialed \
                 long-polling requests from another origin (its 'WebSocket only' option still works)"
            );
        }
        let hostname = hostname();
        let (arrivals, arrived) = mpsc::unbounded_channel();
        Ok(Some(Arc::new(Self {
            username,
            password_hash: hash,
            read_only: config.admin_read_only,
            server_id: format!("{hostname}#{}", std::process::id()),
            hostname,
            started: Instant::now(),
            namespaces: namespaces.iter().map(|ns| ns.path.clone()).collect(),
            attempts: governor::RateLimiter::keyed(
                governor::Quota::per_minute(SIGN_INS_PER_MINUTE).allow_burst(SIGN_INS_PER_MINUTE),
            ),
            hashing: Semaphore::new(2),
            sessions: Mutex::new(HashMap::new()),
            redis,
            arrivals,
            arrived: Mutex::new(Some(arrived)),
        })))
    }

    /// What the UI may do here: `config.supportedFeatures`. The UI shows its socket, room and client pages only
    /// to a server without `AGGREGATED_EVENTS` (byte and packet counts, which palaver does not offer) or with
    /// `ALL_EVENTS` (every event of every socket, which palaver does not mirror: they are the users' messages).
    fn features(&self) -> Vec<&'static str> {
        match self.read_only {
            true => vec![],
            // M*: the commands also take a room (or nothing: the whole namespace) instead of one socket.
            false => vec![
                "JOIN",
                "LEAVE",
                "DISCONNECT",
                "MJOIN",
                "MLEAVE",
                "MDISCONNECT",
            ],
        }
    }

    fn session_key(&self, redis: &RedisLink, id: &str) -> String {
        format!("{}:admin-ui:session:{id}", redis.prefix)
    }

    /// Remembers a new session: in Redis when there is one (any node accepts it), else on this node.
    async fn save_session(&self, id: &str) {
        if let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) {
            let key = self.session_key(redis, id);
            let expiry = fred::types::Expiration::EX(SESSION_TTL.as_secs() as i64);
            let saved: Result<(), _> = redis.commands.set(key, 1, Some(expiry), None, false).await;
            match saved {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "admin UI session kept on this node only"),
            }
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, issued| issued.elapsed() < SESSION_TTL);
        sessions.insert(id.to_owned(), Instant::now());
    }

    async fn session_exists(&self, id: &str) -> bool {
        let here = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .is_some_and(|issued| issued.elapsed() < SESSION_TTL);
        if here {
            return true;
        }
        let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) else {
            return false;
        };
        let found: Result<u32, _> = redis.commands.exists(self.session_key(redis, id)).await;
        found.is_ok_and(|n| n > 0)
    }

    /// Checks a sign-in: a session id this deployment handed out, or the username and password. `Ok(Some(id))`:
    /// signed in with the password, and `id` is the new session to give the UI.
    async fn sign_in(
        &self,
        auth: &Json,
        peer: Option<IpAddr>,
    ) -> Result<Option<String>, SignInError> {
        if let Some(session) = auth.get("sessionId").and_then(Json::as_str)
            && !session.is_empty()
            && session.len() <= 64
            && self.session_exists(session).await
        {
            return Ok(None);
        }
        let (Some(username), Some(password)) = (
            auth.get("username").and_then(Json::as_str),
            auth.get("password").and_then(Json::as_str),
        ) else {
            return Err(SignInError::InvalidCredentials);
        };
        if let Some(ip) = peer
            && self.attempts.check_key(&ip).is_err()
        {
            return Err(SignInError::TooManyAttempts);
        }
        // The hash is checked whatever the username, so the time taken does not tell whether it was right.
        let permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| SignInError::InvalidCredentials)?;
        let (password, hash) = (password.to_owned(), self.password_hash.clone());
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|_| SignInError::InvalidCredentials)?
            .unwrap_or(false);
        drop(permit);
        if !matches || username != self.username {
            return Err(SignInError::InvalidCredentials);
        }
        let session = format!("{:032x}", rand::random::<u128>());
        self.save_session(&session).await;
        Ok(Some(session))
    }
}

/// Why the UI could not sign in; the UI recognises the exact text "invalid credentials".
#[derive(Debug, thiserror::Error)]
enum SignInError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many sign-in attempts; retry in a minute")]
    TooManyAttempts,
}

/// Serves `/admin` for the Admin UI. Register after the chat's namespaces; the adapter's init result is the
/// caller's to handle, as for [`crate::chat::register_namespace`].
pub fn register<A: Adapter + DefinedAdapter>(admin: &Arc<AdminUi>, io: &SocketIo<A>) -> A::InitRes {
    tracing::info!(ns = NAMESPACE, read_only = admin.read_only, server = %admin.server_id, "admin UI");
    let for_middleware = admin.clone();
    let (for_connect, io_for_commands) = (admin.clone(), io.clone());
    let middleware = move |socket: SocketRef<A>, TryData(auth): TryData<Json>| {
        let admin = for_middleware.clone();
        async move {
            let peer = socket
                .req_parts()
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip());
            let auth = auth.unwrap_or(Json::Null);
            match admin.sign_in(&auth, peer).await {
                Ok(session) => {
                    if let Some(session) = session {
                        socket.extensions.insert(NewSession(session));
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(peer = ?peer, error = %e, "admin UI sign-in refused");
                    Err(e)
                }
            }
        }
    };
    let on_connect = move |socket: SocketRef<A>| {
        let (admin, io) = (for_connect.clone(), io_for_commands.clone());
        async move { connected(&admin, &io, socket) }
    };
    io.ns(NAMESPACE, on_connect.with(middleware))
}

/// The session id to give a UI that signed in with its password.
#[derive(Clone)]
struct NewSession(String);

fn connected<A: Adapter>(admin: &Arc<AdminUi>, io: &SocketIo<A>, socket: SocketRef<A>) {
    tracing::info!(socket = %socket.id, "admin UI connected");
    if let Some(NewSession(session)) = socket.extensions.remove::<NewSession>() {
        let _ = socket.emit("session", &session);
    }
    #[derive(Serialize)]
    struct Config {
        #[serde(rename = "supportedFeatures")]
        supported_features: Vec<&'static str>,
    }
    let _ = socket.emit(
        "config",
        &Config {
            supported_features: admin.features(),
        },
    );
    for command in [Command::Join, Command::Leave, Command::Disconnect] {
        let (admin, io) = (admin.clone(), io.clone());
        socket.on(
            command.event(),
            move |socket: SocketRef<A>, TryData(args): TryData<Args>, ack: AckSender<A>| {
                let (admin, io) = (admin.clone(), io.clone());
                async move {
                    let result = match args {
                        Ok(Args(args)) => run(&admin, &io, &socket, command, &args).await,
                        Err(e) => Err(format!(
                            "{}: arguments not understood: {e}",
                            command.event()
                        )),
                    };
                    answer(&socket, command, ack, result);
                }
            },
        );
    }
    // The watcher sends `all_sockets` and `server_stats` from its next look at the sockets, so that everything
    // it says afterwards follows from that list.
    let _ = admin.arrivals.send(socket.id);
}

#[derive(Clone, Copy, Debug)]
enum Command {
    Join,
    Leave,
    Disconnect,
}

impl Command {
    fn event(self) -> &'static str {
        match self {
            Command::Join => "join",
            Command::Leave => "leave",
            Command::Disconnect => "_disconnect",
        }
    }
}

/// Which sockets a command is for: one socket (its id), the sockets in a room, or the whole namespace.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Socket(Sid),
    Room(String),
    All,
}

/// The command's namespace and target, checked: a chat namespace of this server (never `/admin`), a room name
/// that is a non-empty string of at most [`MAX_ROOM`] bytes.
fn parse_command(
    command: Command,
    args: &[Json],
    served: &[String],
) -> Result<(String, Option<String>, Option<bool>, Target), String> {
    let name = command.event();
    let nsp = args
        .first()
        .and_then(Json::as_str)
        .filter(|nsp| served.iter().any(|s| s == nsp))
        .ok_or_else(|| format!("{name}: the first argument must be a namespace of this server"))?
        .to_owned();
    let room_name = |value: Option<&Json>, what: &str| match value.and_then(Json::as_str) {
        Some(room) if !room.is_empty() && room.len() <= MAX_ROOM => Ok(room.to_owned()),
        _ => Err(format!(
            "{name}: {what} must be a room name (1 to {MAX_ROOM} bytes)"
        )),
    };
    let (room, close, filter) = match command {
        Command::Join | Command::Leave => (
            Some(room_name(args.get(1), "the second argument")?),
            None,
            args.get(2),
        ),
        Command::Disconnect => (
            None,
            Some(args.get(1).and_then(Json::as_bool).unwrap_or(false)),
            args.get(2),
        ),
    };
    let target = match filter {
        None | Some(Json::Null) => Target::All,
        Some(value) => {
            let filter = room_name(Some(value), "the filter")?;
            match Sid::from_str(&filter) {
                Ok(sid) => Target::Socket(sid),
                Err(_) => Target::Room(filter),
            }
        }
    };
    Ok((nsp, room, close, target))
}

async fn run<A: Adapter>(
    admin: &AdminUi,
    io: &SocketIo<A>,
    socket: &SocketRef<A>,
    command: Command,
    args: &[Json],
) -> Result<(), String> {
    if admin.read_only {
        return Err(format!(
            "{}: the Admin UI is read-only here (--admin-read-only)",
            command.event()
        ));
    }
    let (nsp, room, _close, target) = parse_command(command, args, &admin.namespaces)?;
    tracing::info!(admin = %socket.id, command = command.event(), %nsp, ?room, ?target, "admin UI command");
    let Some(ns) = io.of(&nsp) else {
        return Err(format!("{}: no namespace {nsp:?}", command.event()));
    };
    let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", command.event());
    // One socket: this node's if it is here, else found on the other nodes (a socket id is not a room in
    // socketioxide, so the id cannot simply be broadcast to).
    if let Target::Socket(sid) = &target {
        if let Some(local) = ns.get_socket(*sid) {
            match (command, room) {
                (Command::Join, Some(room)) => local.join(room),
                (Command::Leave, Some(room)) => local.leave(room),
                _ => local.disconnect().map_err(|e| failed(&e))?,
            }
            return Ok(());
        }
        let remote = ns
            .clone()
            .fetch_sockets()
            .await
            .map_err(|e| failed(&e))?
            .into_iter()
            .find(|s| s.data().id == *sid);
        // Not found on any node: treat the filter as a room name, as the Node server would.
        if let Some(remote) = remote {
            match (command, room) {
                (Command::Join, Some(room)) => remote.join(room).await.map_err(|e| failed(&e))?,
                (Command::Leave, Some(room)) => remote.leave(room).await.map_err(|e| failed(&e))?,
                _ => remote.disconnect().await.map_err(|e| failed(&e))?,
            }
            return Ok(());
        }
    }
    let selected = match target {
        Target::Socket(sid) => ns.to(sid.to_string()),
        Target::Room(room) => ns.to(room),
        Target::All => ns,
    };
    match (command, room) {
        (Command::Join, Some(room)) => selected.join(room).await.map_err(|e| failed(&e)),
        (Command::Leave, Some(room)) => selected.leave(room).await.map_err(|e| failed(&e)),
        _ => selected.disconnect().await.map_err(|e| failed(&e)),
    }
}

/// Acks the command when the UI (or a script) asked for it; the UI itself does not, so refusals are logged too.
fn answer<A: Adapter>(
    socket: &SocketRef<A>,
    command: Command,
    ack: AckSender<A>,
    result: Result<(), String>,
) {
    let reply = match &result {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(message) => {
            tracing::info!(admin = %socket.id, command = command.event(), %message, "admin UI command refused");
            let code = if message.contains("read-only") {
                "forbidden"
            } else {
                "bad_request"
            };
            serde_json::json!({ "ok": false, "error": { "code": code, "message": message } })
        }
    };
    let _ = ack.send(&reply);
}

/// This machine's name: `$HOSTNAME`, else the kernel's, else "palaver".
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "palaver".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> Vec<String> {
        vec!["/".to_owned(), "/game".to_owned()]
    }

    #[test]
    fn commands_take_a_served_namespace_and_a_room() {
        let sid = Sid::new();
        let args = [
            Json::from("/"),
            Json::from("r:lobby"),
            Json::from(sid.to_string()),
        ];
        let (nsp, room, _, target) = parse_command(Command::Join, &args, &served()).expect("valid");
        assert_eq!((nsp.as_str(), room.as_deref()), ("/", Some("r:lobby")));
        assert_eq!(target, Target::Socket(sid));

        let args = [Json::from("/game"), Json::from("r:x")];
        let (_, _, _, target) = parse_command(Command::Leave, &args, &served()).expect("valid");
        assert_eq!(target, Target::All);

        let args = [Json::from("/"), Json::from(true), Json::from("r:lobby")];
        let (_, room, close, target) =
            parse_command(Command::Disconnect, &args, &served()).expect("valid");
        assert_eq!((room, close), (None, Some(true)));
        assert_eq!(target, Target::Room("r:lobby".into()));
    }

    #[test]
    fn commands_refuse_other_namespaces_and_bad_rooms() {
        for args in [
            vec![],
            vec![Json::from("/admin"), Json::from("r")],
            vec![Json::from("/nope"), Json::from("r")],
            vec![Json::from(1), Json::from("r")],
            vec![Json::from("/"), Json::from("")],
            vec![Json::from("/"), Json::from("x".repeat(MAX_ROOM + 1))],
            vec![Json::from("/"), Json::from("r"), Json::from(7)],
        ] {
            assert!(
                parse_command(Command::Join, &args, &served()).is_err(),
                "{args:?}"
            );
        }
    }
}
