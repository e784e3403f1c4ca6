//! Configuration: command-line flags with environment fallbacks, plus an optional namespaces file.

use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, sync::Arc};

use clap::Parser;
use serde::Deserialize;

/// Everything palaver can be told at start-up. `palaver --help` prints it.
#[derive(Clone, Parser)]
#[command(name = "palaver", version, about)]
pub struct Config {
    /// Address to listen on. When unset, `0.0.0.0:$PORT` (PORT defaults to 3000).
    #[arg(long, env = "PALAVER_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Port used when --listen is not given.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// `sqlite://path.db` (created if missing) or `postgres://user@host/db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://palaver.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Database connections in the pool.
    #[arg(long, env = "PALAVER_DB_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,

    /// Group-commit message writers on Postgres: each room's messages go to one of them, and their transactions
    /// overlap. SQLite always has one.
    #[arg(long, env = "PALAVER_DB_MESSAGE_WRITERS", default_value_t = crate::store::DEFAULT_MESSAGE_WRITERS,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u8).range(1..=16), usize::from))]
    pub db_message_writers: usize,

    /// Redis URL (`redis://host:6379`): run as one node of several, synced through Redis. Unset: a single node.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of palaver's Redis keys and channels, so several deployments can share one Redis.
    #[arg(long, env = "PALAVER_REDIS_PREFIX", default_value = "palaver")]
    pub redis_prefix: String,

    /// Shared secret for HS256 JWTs.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file holding the public key for RS256 or ES256 JWTs.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Algorithm of --jwt-public-key.
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value_t = PublicKeyAlgorithm::Rs256)]
    pub jwt_algorithm: PublicKeyAlgorithm,

    /// The JWT claim that makes a user a namespace admin, who moderates every group room: `CLAIM=VALUE`, where
    /// the claim holds the value, a list with it, or space-separated words with it (a dotted CLAIM reaches into
    /// nested objects). Empty: no admins.
    #[arg(long, env = "PALAVER_ADMIN_CLAIM", default_value = "roles=admin")]
    pub admin_claim: String,

    /// Serves the official Socket.IO Admin UI at the `/admin` namespace, signed into with this username and
    /// --admin-password-hash (not the chat's namespace admins of --admin-claim). Unset: no `/admin` namespace.
    #[arg(long, env = "PALAVER_ADMIN_USERNAME")]
    pub admin_username: Option<String>,

    /// The bcrypt hash of the Admin UI's password (`$2b$…`; e.g. `htpasswd -bnBC 10 "" PASSWORD | tr -d ':'`).
    #[arg(long, env = "PALAVER_ADMIN_PASSWORD_HASH", hide_env_values = true)]
    pub admin_password_hash: Option<String>,

    /// The Admin UI only watches: its commands (join, leave, disconnect) are refused.
    #[arg(long, env = "PALAVER_ADMIN_READ_ONLY", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub admin_read_only: bool,

    /// Secret that palaver signs its own access tokens with (HS256): enables the session exchange
    /// (`/api/v1/auth/*`, with --auth-exchange-url) and lets those tokens sign sockets and API calls in.
    #[arg(long, env = "PALAVER_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// The host service's endpoint that redeems a one-time code for its user (`POST { code }`, with the bearer
    /// --auth-hook-secret), for `POST /api/v1/auth/exchange`.
    #[arg(long, env = "PALAVER_AUTH_EXCHANGE_URL")]
    pub auth_exchange_url: Option<String>,

    /// Lifetime of palaver's access tokens, in seconds.
    #[arg(long, env = "PALAVER_ACCESS_TOKEN_TTL_SECS", default_value_t = nz(900))]
    pub access_token_ttl_secs: NonZeroU32,

    /// Lifetime of palaver's refresh tokens, in seconds.
    #[arg(long, env = "PALAVER_REFRESH_TOKEN_TTL_SECS", default_value_t = nz(30 * 24 * 3600))]
    pub refresh_token_ttl_secs: NonZeroU32,

    /// How long after its rotation a refresh token may be used again without being taken for stolen (two tabs
    /// refreshing at once, a retry whose answer was lost), in seconds; past it, a reuse revokes the session.
    #[arg(long, env = "PALAVER_REFRESH_REUSE_GRACE_SECS", default_value_t = 30)]
    pub refresh_reuse_grace_secs: u32,

    /// Whether palaver's session cookies are `Secure` (sent over HTTPS only); `false` for local HTTP development.
    #[arg(long, env = "PALAVER_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// `SameSite` of palaver's session cookies: `lax`, `strict`, or `none` (a web view or a frontend on another
    /// site; needs --cookie-secure).
    #[arg(long, env = "PALAVER_COOKIE_SAME_SITE", value_enum, default_value_t = SameSite::Lax)]
    pub cookie_same_site: SameSite,

    /// How long before a socket's token expires it is sent `session:expiring`, in seconds.
    #[arg(long, env = "PALAVER_SESSION_NOTICE_SECS", default_value_t = nz(60))]
    pub session_notice_secs: NonZeroU32,

    /// The host service's connect hook: a connection without a token is admitted as the user this URL names
    /// (see docs/integration.md), never as a guest.
    #[arg(long, env = "PALAVER_AUTH_HOOK_URL")]
    pub auth_hook_url: Option<String>,

    /// Bearer secret palaver sends to --auth-hook-url.
    #[arg(long, env = "PALAVER_AUTH_HOOK_SECRET", hide_env_values = true)]
    pub auth_hook_secret: Option<String>,

    /// How long a connection waits for the connect hook (including for a free call), in milliseconds.
    #[arg(long, env = "PALAVER_AUTH_HOOK_TIMEOUT_MS", default_value_t = nz(3000))]
    pub auth_hook_timeout_ms: NonZeroU32,

    /// Connect-hook calls in flight at once, at most; more connections wait their turn.
    #[arg(long, env = "PALAVER_AUTH_HOOK_CONCURRENCY", default_value_t = nz(64))]
    pub auth_hook_concurrency: NonZeroU32,

    /// A key of the server API (`/api/v1`) for the host's backend, as `SCOPES=KEY`: scopes `publish`, `read` and
    /// `manage` joined by `+` (e.g. `publish+read=…`). Repeatable; the environment variable is comma-separated.
    #[arg(
        long = "api-key",
        env = "PALAVER_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Webhooks: palaver POSTs the events of --webhook-events to this URL, from durable storage, signed with
    /// --webhook-secret (see docs/integration.md).
    #[arg(long, env = "PALAVER_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The HMAC-SHA256 key of the `Palaver-Signature` header; required with --webhook-url.
    #[arg(long, env = "PALAVER_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Event types sent to --webhook-url, comma-separated.
    #[arg(
        long,
        env = "PALAVER_WEBHOOK_EVENTS",
        value_delimiter = ',',
        default_value = "message.created,room.member_added,room.member_removed,message.missed"
    )]
    pub webhook_events: Vec<String>,

    /// Delivery attempts of one event before it becomes a dead letter (GET /api/v1/webhooks/failed).
    #[arg(long, env = "PALAVER_WEBHOOK_MAX_ATTEMPTS", default_value_t = nz(8))]
    pub webhook_max_attempts: NonZeroU32,

    /// How long one delivery may take, in milliseconds; past it the attempt counts as failed.
    #[arg(long, env = "PALAVER_WEBHOOK_TIMEOUT_MS", default_value_t = nz(10_000))]
    pub webhook_timeout_ms: NonZeroU32,

    /// First retry delay in milliseconds, doubled after each failed attempt (capped at 10 minutes). Hidden: for
    /// tests.
    #[arg(long, env = "PALAVER_WEBHOOK_BACKOFF_MS", default_value_t = nz(1000), hide = true)]
    pub webhook_backoff_ms: NonZeroU32,

    /// Prometheus metrics: record them and serve `/metrics` (on --metrics-listen, else on the main port with
    /// --metrics-token). `false` records nothing.
    #[arg(long, env = "PALAVER_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,

    /// A separate address for `/metrics` (e.g. a private interface); the main port then does not serve it.
    #[arg(long, env = "PALAVER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Bearer token a scrape must send (`Authorization: Bearer <token>`), at least 16 characters. Required to
    /// serve `/metrics` on the main port; optional on --metrics-listen.
    #[arg(long, env = "PALAVER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Allow connections without a token (default for every namespace).
    #[arg(long, env = "PALAVER_ANONYMOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous: bool,

    /// Allowed CORS origins, comma separated; `*` allows any origin.
    #[arg(
        long,
        env = "PALAVER_CORS_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Longest message text, in characters (default for every namespace).
    #[arg(long, env = "PALAVER_MAX_MESSAGE_LENGTH", default_value_t = 4000)]
    pub max_message_length: usize,

    /// Rooms one socket may be in at once; also how many of a user's rooms `session` lists and a new connection
    /// re-enters (the most recently active first).
    #[arg(long, env = "PALAVER_MAX_ROOMS_PER_SOCKET", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rooms_per_socket: u32,

    /// Sends (message:send and dm:send) per second allowed per socket.
    #[arg(long, env = "PALAVER_SEND_RATE", default_value_t = nz(10))]
    pub send_rate: NonZeroU32,

    /// Sends a socket may make in a burst above the rate.
    #[arg(long, env = "PALAVER_SEND_BURST", default_value_t = nz(20))]
    pub send_burst: NonZeroU32,

    /// Room changes (room:create, room:join, room:leave, room:invite, room:decline, moderation, blocks) per second
    /// per socket.
    #[arg(long, env = "PALAVER_JOIN_RATE", default_value_t = nz(10))]
    pub join_rate: NonZeroU32,

    /// Room changes a socket may make in a burst (a client re-joining its rooms after a reload).
    #[arg(long, env = "PALAVER_JOIN_BURST", default_value_t = nz(50))]
    pub join_burst: NonZeroU32,

    /// Reads (rooms:list, history:fetch, sync, invitations:list, messages:search) per second per socket.
    #[arg(long, env = "PALAVER_READ_RATE", default_value_t = nz(20))]
    pub read_rate: NonZeroU32,

    /// Reads a socket may make in a burst.
    #[arg(long, env = "PALAVER_READ_BURST", default_value_t = nz(60))]
    pub read_burst: NonZeroU32,

    /// presence:list requests per second per socket.
    #[arg(long, env = "PALAVER_PRESENCE_RATE", default_value_t = nz(5))]
    pub presence_rate: NonZeroU32,

    /// presence:list requests a socket may make in a burst.
    #[arg(long, env = "PALAVER_PRESENCE_BURST", default_value_t = nz(20))]
    pub presence_burst: NonZeroU32,

    /// typing events per second per socket.
    #[arg(long, env = "PALAVER_TYPING_RATE", default_value_t = nz(5))]
    pub typing_rate: NonZeroU32,

    /// typing events a socket may send in a burst.
    #[arg(long, env = "PALAVER_TYPING_BURST", default_value_t = nz(10))]
    pub typing_burst: NonZeroU32,

    /// A user's budget for each kind of event, shared by all their sockets on a node, as a multiple of one
    /// socket's: with 3, fifty tabs may together do what three could.
    #[arg(long, env = "PALAVER_USER_BUDGET_FACTOR", default_value_t = nz(3))]
    pub user_budget_factor: NonZeroU32,

    /// Events one socket may have waiting (received, not yet answered); past it, events get a `rate_limited`
    /// error ack without running.
    #[arg(long, env = "PALAVER_MAX_QUEUED_EVENTS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued_events: u32,

    /// Rooms one user may create per day (room:create, and room:join creating a room); guests count per source
    /// address on each node.
    #[arg(long, env = "PALAVER_ROOM_QUOTA", default_value_t = nz(100))]
    pub room_quota: NonZeroU32,

    /// Whether guests (connections without a token) may create rooms; `false` leaves creation to signed-in users.
    #[arg(long, env = "PALAVER_GUESTS_CREATE_ROOMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub guests_create_rooms: bool,

    /// Largest Socket.IO packet in bytes; a bigger one closes that client's connection.
    #[arg(long, env = "PALAVER_MAX_PAYLOAD", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_payload: u64,

    /// Most missed messages per room that one recovery (`since`, `sync`) returns; past it the reply says
    /// `truncated` and the client pages the rest with `history:fetch`.
    #[arg(long, env = "PALAVER_RECOVERY_LIMIT", default_value_t = 1000)]
    pub recovery_limit: u32,

    /// How long after sending it its author may edit a message, in seconds; 0: no limit.
    #[arg(long, env = "PALAVER_EDIT_WINDOW_SECS", default_value_t = 900)]
    pub edit_window_secs: u32,

    /// Whether the members of group rooms see each other's read receipts (`read` events and the `reads` of a
    /// catch-up; default for every namespace). In DMs they always do.
    #[arg(long, env = "PALAVER_READ_RECEIPTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub read_receipts: bool,

    /// Days a message is kept, for every namespace (`retention_days` in the namespaces file overrides it): older
    /// ones become tombstones, their text gone. Unset: kept forever.
    #[arg(long, env = "PALAVER_RETENTION_DAYS")]
    pub retention_days: Option<NonZeroU32>,

    /// How often the retention job runs (on one node of the cluster at a time), in seconds.
    #[arg(long, env = "PALAVER_RETENTION_INTERVAL_SECS", default_value_t = nz(3600), hide = true)]
    pub retention_interval_secs: NonZeroU32,

    /// Whether the server applies pending database migrations at start-up; `false`: it refuses to start on a
    /// database that lacks any (the deploy ran `palaver migrate` first).
    #[arg(long, env = "PALAVER_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// Joining a public room that does not exist creates it.
    #[arg(long, env = "PALAVER_AUTO_CREATE_ROOMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_rooms: bool,

    /// TOML file with extra namespaces and per-namespace settings (see README).
    #[arg(long, env = "PALAVER_NAMESPACES")]
    pub namespaces: Option<PathBuf>,

    /// Compatibility profile for the `/` namespace: an existing Socket.IO app's events instead of palaver's
    /// (docs/migrating.md).
    #[arg(long, env = "PALAVER_PROFILE")]
    pub profile: Option<PathBuf>,

    /// Folder served at `/` (the demo chat once built).
    #[arg(
        long,
        env = "PALAVER_STATIC_DIR",
        default_value = "client-js/demo/dist"
    )]
    pub static_dir: PathBuf,

    /// Seconds to let pending work finish on shutdown.
    #[arg(long, env = "PALAVER_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Log format and OpenTelemetry export (src/telemetry.rs).
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
}

/// A non-zero default for a flag.
const fn nz(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

impl Config {
    /// Refuses session settings that cannot work, naming the flags.
    pub fn check_sessions(&self) -> Result<(), ConfigError> {
        let refuse = |why: &str| Err(ConfigError::Sessions(why.to_owned()));
        if self.cookie_same_site == SameSite::None && !self.cookie_secure {
            return refuse(
                "--cookie-same-site none needs --cookie-secure true: browsers drop such cookies otherwise",
            );
        }
        let Some(secret) = self.token_secret.as_deref() else {
            return Ok(());
        };
        if secret.len() < 16 {
            return refuse("--token-secret must be at least 16 characters");
        }
        if self.jwt_secret.as_deref() == Some(secret) {
            return refuse(
                "--token-secret must differ from --jwt-secret: palaver's tokens and your identity provider's must not be interchangeable",
            );
        }
        if self.session_notice_secs.get() >= self.access_token_ttl_secs.get() {
            return refuse(
                "--session-notice-secs must be shorter than --access-token-ttl-secs: every token would be expiring as soon as issued",
            );
        }
        if named_origins(&self.cors_origins).next().is_none() {
            tracing::warn!(
                "--token-secret without named --cors-origins: palaver's session cookies will count on no request \
                 (tokens in auth.token and request bodies still work)"
            );
        }
        Ok(())
    }
}

/// The origins `--cors-origins` names, as browsers write them (no spaces, no trailing `/`); `*` is not one.
pub fn named_origins(origins: &[String]) -> impl Iterator<Item = String> + '_ {
    origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty() && o != "*")
}

/// `SameSite` of palaver's session cookies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// Algorithms accepted for a public-key JWT configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PublicKeyAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl Config {
    /// The address to bind: `--listen`, else `0.0.0.0:$PORT`.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.port)))
    }

    /// Settings of every namespace served: `/` first, then those of the namespaces file (its `[[namespace]]`
    /// entries, then one namespace per `[[websocket]]` endpoint). Every profile is read and checked here, so a
    /// broken one stops start-up.
    pub fn namespaces(&self) -> Result<Vec<NamespaceSettings>, ConfigError> {
        let root_profile = match &self.profile {
            Some(path) => Some(Arc::new(crate::profile::load(path)?)),
            None => None,
        };
        let defaults = NamespaceSettings {
            path: "/".to_owned(),
            anonymous: self.anonymous,
            history: true,
            max_message_length: self.max_message_length,
            read_receipts: self.read_receipts,
            retention_days: self.retention_days.map(NonZeroU32::get),
            profile: root_profile,
            websocket: false,
        };
        let mut all = vec![defaults.clone()];
        let Some(path) = &self.namespaces else {
            return Ok(all);
        };
        let fail = |reason: String| ConfigError::Namespaces {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let file: NamespacesFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        // Profile files are named relative to the namespaces file.
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let profile = |file: &Option<PathBuf>| -> Result<_, ConfigError> {
            match file {
                Some(file) => Ok(Some(Arc::new(crate::profile::load(&base.join(file))?))),
                None => Ok(None),
            }
        };
        let websockets = file.websocket.iter().map(|w| NamespaceEntry {
            path: w.path.clone(),
            anonymous: w.anonymous,
            history: w.history,
            max_message_length: w.max_message_length,
            read_receipts: None,
            retention_days: w.retention_days,
            profile: Some(w.profile.clone()),
        });
        let ws_count = file.websocket.len();
        let entries: Vec<NamespaceEntry> = file.namespace.into_iter().chain(websockets).collect();
        let first_ws = entries.len() - ws_count;
        for (i, entry) in entries.into_iter().enumerate() {
            let websocket = i >= first_ws;
            if !entry.path.starts_with('/') {
                return Err(fail(format!("path {:?} must start with '/'", entry.path)));
            }
            let settings = NamespaceSettings {
                anonymous: entry.anonymous.unwrap_or(defaults.anonymous),
                history: entry.history.unwrap_or(true),
                max_message_length: entry
                    .max_message_length
                    .unwrap_or(defaults.max_message_length),
                read_receipts: entry.read_receipts.unwrap_or(defaults.read_receipts),
                // 0 keeps the namespace's messages forever whatever --retention-days says.
                retention_days: match entry.retention_days {
                    Some(0) => None,
                    Some(days) => Some(days),
                    None => defaults.retention_days,
                },
                profile: profile(&entry.profile)?,
                websocket,
                path: entry.path,
            };
            if websocket {
                websocket_path(&settings.path).map_err(fail)?;
            }
            match all.iter_mut().find(|ns| ns.path == settings.path) {
                Some(_) if websocket => {
                    return Err(fail(format!(
                        "[[websocket]] path {:?} is also a [[namespace]]; a WebSocket endpoint is served as a namespace of its own",
                        settings.path
                    )));
                }
                Some(existing) => *existing = settings,
                None => all.push(settings),
            }
        }
        Ok(all)
    }
}

/// Whether a `[[websocket]]` path can be an HTTP route of its own: a literal path (axum would read `{…}` and `*`
/// as captures) that is neither Socket.IO's nor one of palaver's routes.
fn websocket_path(path: &str) -> Result<(), String> {
    let taken = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    // Engine.IO takes every path that starts with /socket.io.
    if path == "/" || path.starts_with("/socket.io") {
        return Err(format!("[[websocket]] path {path:?} is taken by Socket.IO"));
    }
    if let Some(route) = crate::http::RESERVED_PATHS.iter().find(|r| taken(r)) {
        return Err(format!(
            "[[websocket]] path {path:?} is taken by palaver's {route} route"
        ));
    }
    let literal = |c: char| c.is_ascii_alphanumeric() || "/-_.~".contains(c);
    if path.ends_with('/') || path.contains("//") || !path.chars().all(literal) {
        return Err(format!(
            "[[websocket]] path {path:?}: use letters, digits, '-', '_', '.' and '~' between single '/'s, with no '/' at the end"
        ));
    }
    Ok(())
}

/// Secrets are shown as `<redacted>` so that `Debug` output can be logged safely.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen_addr())
            .field("database_url", &redact_url(&self.database_url))
            .field("db_pool_size", &self.db_pool_size)
            .field("db_message_writers", &self.db_message_writers)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key", &self.jwt_public_key)
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field(
                "token_secret",
                &self.token_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "auth_exchange_url",
                &self.auth_exchange_url.as_deref().map(redact_url),
            )
            .field("access_token_ttl_secs", &self.access_token_ttl_secs)
            .field("refresh_token_ttl_secs", &self.refresh_token_ttl_secs)
            .field("refresh_reuse_grace_secs", &self.refresh_reuse_grace_secs)
            .field("cookie_secure", &self.cookie_secure)
            .field("cookie_same_site", &self.cookie_same_site)
            .field("session_notice_secs", &self.session_notice_secs)
            .field(
                "auth_hook_url",
                &self.auth_hook_url.as_deref().map(redact_url),
            )
            .field(
                "auth_hook_secret",
                &self.auth_hook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("auth_hook_timeout_ms", &self.auth_hook_timeout_ms)
            .field("auth_hook_concurrency", &self.auth_hook_concurrency)
            .field("webhook_url", &self.webhook_url.as_deref().map(redact_url))
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_events", &self.webhook_events)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("webhook_backoff_ms", &self.webhook_backoff_ms)
            .field("metrics", &self.metrics)
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("admin_claim", &self.admin_claim)
            .field("admin_username", &self.admin_username)
            .field(
                "admin_password_hash",
                &self.admin_password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_read_only", &self.admin_read_only)
            .field("anonymous", &self.anonymous)
            .field("cors_origins", &self.cors_origins)
            .field("max_message_length", &self.max_message_length)
            .field("max_rooms_per_socket", &self.max_rooms_per_socket)
            .field("send_rate", &self.send_rate)
            .field("send_burst", &self.send_burst)
            .field("join_rate", &self.join_rate)
            .field("join_burst", &self.join_burst)
            .field("read_rate", &self.read_rate)
            .field("read_burst", &self.read_burst)
            .field("presence_rate", &self.presence_rate)
            .field("presence_burst", &self.presence_burst)
            .field("typing_rate", &self.typing_rate)
            .field("typing_burst", &self.typing_burst)
            .field("user_budget_factor", &self.user_budget_factor)
            .field("max_queued_events", &self.max_queued_events)
            .field("room_quota", &self.room_quota)
            .field("guests_create_rooms", &self.guests_create_rooms)
            .field("max_payload", &self.max_payload)
            .field("auto_create_rooms", &self.auto_create_rooms)
            .field("recovery_limit", &self.recovery_limit)
            .field("edit_window_secs", &self.edit_window_secs)
            .field("read_receipts", &self.read_receipts)
            .field("retention_days", &self.retention_days)
            .field("retention_interval_secs", &self.retention_interval_secs)
            .field("migrate", &self.migrate)
            .field("namespaces", &self.namespaces)
            .field("profile", &self.profile)
            .field("static_dir", &self.static_dir)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("telemetry", &self.telemetry)
            .finish()
    }
}

/// Hides the password of a `scheme://user:password@host/db` URL, and its query (`?password=`, `?token=`).
pub fn redact_url(url: &str) -> String {
    if let Some((base, _)) = url.split_once('?') {
        return format!("{}?<redacted>", redact_url(base));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            if credentials.contains(':') {
                format!("{scheme}://{user}:<redacted>@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => url.to_owned(),
    }
}

/// One chat space: its own rooms, history and rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSettings {
    pub path: String,
    pub anonymous: bool,
    pub history: bool,
    pub max_message_length: usize,
    /// Whether the members of its group rooms see each other's read receipts (always in DMs).
    pub read_receipts: bool,
    /// Days its messages are kept before they become tombstones; `None`: forever.
    pub retention_days: Option<u32>,
    /// The compatibility profile this namespace speaks instead of palaver's own events.
    pub profile: Option<Arc<crate::profile::Profile>>,
    /// Also served to plain WebSocket clients at `path` (a `[[websocket]]` entry).
    pub websocket: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesFile {
    #[serde(default)]
    namespace: Vec<NamespaceEntry>,
    #[serde(default)]
    websocket: Vec<WebSocketEntry>,
}

/// A plain WebSocket endpoint: its frames go through a profile, as the events of a namespace at the same path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebSocketEntry {
    path: String,
    profile: PathBuf,
    anonymous: Option<bool>,
    history: Option<bool>,
    max_message_length: Option<usize>,
    retention_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceEntry {
    path: String,
    anonymous: Option<bool>,
    history: Option<bool>,
    max_message_length: Option<usize>,
    read_receipts: Option<bool>,
    retention_days: Option<u32>,
    profile: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("namespaces file {path:?}: {reason}")]
    Namespaces { path: PathBuf, reason: String },
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error("JWT public key {path:?}: {reason}")]
    PublicKey { path: PathBuf, reason: String },
    #[error("{0}")]
    AuthHook(String),
    #[error("{0}")]
    AdminClaim(String),
    #[error("{0}")]
    AdminUi(String),
    #[error("{0}")]
    ApiKey(String),
    #[error("{0}")]
    Sessions(String),
    #[error("{0}")]
    Webhook(String),
    #[error("{0}")]
    Metrics(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let config = Config::parse_from([
            "palaver",
            "--jwt-secret",
            "hunter2",
            "--auth-hook-secret",
            "hook-s3cret",
            "--webhook-secret",
            "whook-s3cret",
            "--api-key",
            "publish=api-s3cret-0123456789",
            "--token-secret",
            "tok-s3cret",
            "--metrics-token",
            "metrics-s3cret-0123456789",
            "--database-url",
            "postgres://app:s3cret@db/chat",
            "--webhook-url",
            "https://hooks:wh-s3cret@example.com/in?token=q-s3cret",
            "--auth-hook-url",
            "https://example.com/palaver?key=q-s3cret",
            "--otlp-endpoint",
            "https://otel:o-s3cret@collector:4318",
        ]);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("hook-s3cret"), "{shown}");
        assert!(!shown.contains("whook-s3cret"), "{shown}");
        assert!(!shown.contains("api-s3cret"), "{shown}");
        assert!(!shown.contains("tok-s3cret"), "{shown}");
        assert!(!shown.contains("metrics-s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:<redacted>@db/chat"),
            "{shown}"
        );
        assert!(
            shown.contains("https://hooks:<redacted>@example.com/in?<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn websocket_paths_are_literal_routes_of_their_own() {
        for ok in ["/live", "/chat/live-1", "/a.b_c~d", "/apis", "/healthz2"] {
            assert_eq!(websocket_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/",
            "/socket.io",
            "/socket.io/x",
            "/socket.iox",
            "/healthz",
            "/api",
            "/api/rooms",
            "/readyz",
            "/metrics",
            "/live/",
            "//live",
            "/{room}",
            "/live/*rest",
            "/l ive",
            "/caf\u{e9}",
        ] {
            assert!(websocket_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_file_overrides_and_adds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ns.toml");
        std::fs::write(
            &path,
            "[[namespace]]\npath = \"/game\"\nanonymous = false\nmax_message_length = 500\n",
        )
        .expect("write");
        let config = Config::parse_from(["palaver", "--namespaces", path.to_str().expect("utf8")]);
        let all = config.namespaces().expect("parse");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].path, "/");
        assert!(all[0].anonymous);
        assert_eq!(all[1].path, "/game");
        assert!(!all[1].anonymous);
        assert!(all[1].history);
        assert_eq!(all[1].max_message_length, 500);
    }
}
