//! Puts the pieces together: storage, identity, the Socket.IO layer with every namespace, HTTP routes, CORS,
//! and a graceful shutdown that lets pending writes commit.

use std::{future::Future, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use socketioxide::{SocketIo, adapter::Adapter, layer::SocketIoLayer};
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::{
    admin_ui::AdminUi,
    auth::JwtVerifier,
    chat::{self, Chat, Limits},
    cluster::RedisLink,
    config::{Config, ConfigError},
    http,
    presence::Presence,
    store::{self, StoreError},
};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("redis: {0}")]
    Redis(String),
    /// A subcommand was given something it cannot act on.
    #[error("{0}")]
    Usage(String),
}

/// Packets a socket may have waiting to be written before further emits to it are refused.
const SOCKET_BUFFER: usize = 1024;
/// Bytes each WebSocket connection reads into at once; chat packets are small, and this is paid per idle connection.
const WS_READ_BUFFER: usize = 1024;

/// The configuration as the server reads it: every setting checked, everything built from it that needs no
/// connection. `palaver check-config` calls this too, so it refuses exactly what start-up refuses.
pub struct Checked {
    pub namespaces: Vec<crate::config::NamespaceSettings>,
    pub verifier: Option<JwtVerifier>,
    pub auth_hook: Option<Arc<crate::auth::AuthHook>>,
    pub api_keys: http::api::ApiKeys,
    pub sessions: Option<Arc<crate::auth::sessions::Sessions>>,
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    pub metrics_access: Arc<http::metrics::Access>,
}

/// Checks the configuration (flags, environment, the namespaces file and every profile) as start-up does.
pub fn check_config(config: &Config) -> Result<Checked, Error> {
    let namespaces = config.namespaces()?;
    config.check_sessions()?;
    let verifier = JwtVerifier::from_config(config)?;
    let auth_hook = crate::auth::AuthHook::from_config(config)
        .map_err(ConfigError::AuthHook)?
        .map(Arc::new);
    let api_keys = http::api::ApiKeys::parse(&config.api_keys).map_err(ConfigError::ApiKey)?;
    let sessions = crate::auth::sessions::Sessions::from_config(config).map(Arc::new);
    let webhooks = crate::webhooks::Webhooks::from_config(config)
        .map_err(ConfigError::Webhook)?
        .map(Arc::new);
    let metrics_access =
        Arc::new(http::metrics::Access::from_config(config).map_err(ConfigError::Metrics)?);
    Ok(Checked {
        namespaces,
        verifier,
        auth_hook,
        api_keys,
        sessions,
        webhooks,
        metrics_access,
    })
}

/// Runs palaver on an already-bound listener until `shutdown` resolves, then closes every socket with the
/// Socket.IO "server shutting down" reason, waits for pending events to commit, and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Checked {
        namespaces,
        verifier,
        auth_hook,
        api_keys,
        sessions,
        webhooks,
        metrics_access,
    } = check_config(&config)?;
    let websockets: Vec<String> = namespaces
        .iter()
        .filter(|ns| ns.websocket)
        .map(|ns| ns.path.clone())
        .collect();
    let retention = crate::retention::Retention::from_config(&config, &namespaces);
    let migrations = if config.migrate {
        store::Migrations::Apply
    } else {
        store::Migrations::Require
    };
    let (store, applied) = store::open_with(
        &config.database_url,
        config.db_pool_size,
        config.db_message_writers,
        migrations,
    )
    .await?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "migrated the database");
    }
    if let Some(webhooks) = &webhooks {
        store.enable_hooks(webhooks.events());
    }
    tracing::info!(database = %crate::config::redact_url(&config.database_url), "store ready");
    crate::profile::prepare(&store, &namespaces).await?;
    let socket_io = SocketIo::builder()
        .max_payload(config.max_payload)
        .max_buffer_size(SOCKET_BUFFER)
        .ws_read_buffer_size(WS_READ_BUFFER);
    let parts = Parts {
        config,
        store,
        verifier,
        auth_hook,
        sessions,
        api_keys,
        background: Background {
            webhooks,
            retention,
            metrics: metrics_access,
        },
        namespaces: namespaces
            .iter()
            .map(|ns| (ns.path.clone(), Arc::new(ns.clone())))
            .collect(),
    };

    let Some(url) = parts.config.redis_url.clone() else {
        let (layer, io) = socket_io.build_layer();
        let chat = parts.chat(io, None, Presence::local_only());
        let admin_ui = AdminUi::from_config(&parts.config, &namespaces, None)?;
        for settings in namespaces {
            chat::register_namespace(&chat, settings);
        }
        let admin_watch = admin_ui.map(|admin_ui| {
            crate::admin_ui::register(&admin_ui, &chat.io);
            crate::admin_ui::watch::spawn(admin_ui, chat.io.clone())
        });
        let result = run(
            parts.config,
            listener,
            shutdown,
            chat,
            layer,
            &websockets,
            parts.background,
        )
        .await;
        if let Some(watch) = admin_watch {
            watch.abort();
        }
        return result;
    };

    let link = RedisLink::connect(&url, &parts.config.redis_prefix)
        .await
        .map_err(|e| Error::Redis(e.to_string()))?;
    let adapter_config = RedisAdapterConfig::new()
        .with_prefix(format!("{}-sio", parts.config.redis_prefix))
        .with_request_timeout(Duration::from_secs(2))
        // The driver drops the whole subscription task if this buffer ever fills; keep it deep.
        .with_stream_buffer(64 * 1024);
    let adapter = RedisAdapterCtr::new_with_fred_config(link.subscriber.clone(), adapter_config)
        .await
        .map_err(|e| Error::Redis(e.to_string()))?;
    let (layer, io) = socket_io
        .with_adapter::<FredAdapter<_>>(adapter)
        .build_layer();
    let presence = Presence::with_redis(link.clone())
        .await
        .map_err(|e| Error::Redis(e.to_string()))?;
    let heartbeat = link.spawn_watchers(presence.clone());
    let admin_ui = AdminUi::from_config(&parts.config, &namespaces, Some(link.clone()))?;
    let chat = parts.chat(io, Some(link), presence.clone());
    for settings in namespaces {
        chat::register_namespace(&chat, settings)
            .await
            .map_err(|e| Error::Redis(e.to_string()))?;
    }
    let admin_watch = match admin_ui {
        Some(admin_ui) => {
            crate::admin_ui::register(&admin_ui, &chat.io)
                .await
                .map_err(|e| Error::Redis(e.to_string()))?;
            Some(crate::admin_ui::watch::spawn(admin_ui, chat.io.clone()))
        }
        None => None,
    };
    tracing::info!(node = %presence.node_id().unwrap_or_default(), "joined the cluster through Redis");
    let result = run(
        parts.config,
        listener,
        shutdown,
        chat,
        layer,
        &websockets,
        parts.background,
    )
    .await;
    if let Some(watch) = admin_watch {
        watch.abort();
    }
    heartbeat.abort();
    presence.depart().await;
    result
}

/// What every server needs whatever its adapter.
struct Parts {
    config: Config,
    store: store::SharedStore,
    verifier: Option<JwtVerifier>,
    auth_hook: Option<Arc<crate::auth::AuthHook>>,
    sessions: Option<Arc<crate::auth::sessions::Sessions>>,
    api_keys: http::api::ApiKeys,
    background: Background,
    namespaces: std::collections::HashMap<String, Arc<crate::config::NamespaceSettings>>,
}

impl Parts {
    fn chat<A: Adapter>(
        &self,
        io: SocketIo<A>,
        redis: Option<RedisLink>,
        presence: Presence,
    ) -> Arc<Chat<A>> {
        let config = &self.config;
        let budgets = Limits::from_config(config).budgets;
        let metrics = crate::metrics::Metrics::new(config.metrics, chat::event_names());
        self.store.enable_metrics(metrics.commit());
        Arc::new(Chat {
            store: self.store.clone(),
            verifier: self.verifier.clone(),
            auth_hook: self.auth_hook.clone(),
            sessions: self.sessions.clone(),
            api_keys: self.api_keys.clone(),
            namespaces: self.namespaces.clone(),
            limits: Limits::from_config(config),
            user_budgets: chat::budget::UserBudgets::new(&budgets),
            guest_creations: chat::guest_creation_quota(config),
            creation_turns: chat::rooms::CreationTurns::default(),
            replay_gates: chat::rooms::ReplayGates::default(),
            receipts: chat::reads::ReceiptThrottle::default(),
            auth_attempts: governor::RateLimiter::keyed(
                governor::Quota::per_second(std::num::NonZeroU32::MIN.saturating_add(4))
                    .allow_burst(std::num::NonZeroU32::MIN.saturating_add(19)),
            ),
            presence,
            redis,
            io,
            tasks: TaskTracker::new(),
            metrics,
        })
    }
}

/// What runs and serves beside the chat until the server stops.
struct Background {
    /// `--webhook-url`'s delivery.
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// The retention job, when a namespace keeps messages for a limited time.
    retention: Option<crate::retention::Retention>,
    /// Who may read `/metrics`, and where it is served.
    metrics: Arc<http::metrics::Access>,
}

/// Copies the request's URI and headers out of hyper's connection read buffer.
///
/// hyper parses them as slices of that buffer (16 KiB), axum's router adds a clone of the URI as the
/// `OriginalUri` extension, and engineioxide keeps the handshake request's head, extensions included, for the
/// whole life of the socket: every idle connection held its whole read buffer, 16.5 KB of heap per connection
/// measured with heaptrack (BENCHMARKS.md, memory). Owned copies take a few hundred bytes.
pub fn own_request_head<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    use axum::extract::OriginalUri;
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};

    let copy_uri = |uri: &Uri| uri.to_string().parse::<Uri>().ok();
    if let Some(uri) = copy_uri(req.uri()) {
        *req.uri_mut() = uri;
    }
    if let Some(OriginalUri(original)) = req.extensions_mut().get_mut::<OriginalUri>()
        && let Some(uri) = copy_uri(original)
    {
        *original = uri;
    }
    let mut headers = HeaderMap::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let (Ok(name), Ok(mut copy)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            continue;
        };
        copy.set_sensitive(value.is_sensitive());
        headers.append(name, copy);
    }
    *req.headers_mut() = headers;
    req
}

/// Serves HTTP, Socket.IO and the plain WebSocket endpoints at `websockets` until `shutdown`, then shuts down
/// gracefully.
async fn run<A: Adapter>(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    chat: Arc<Chat<A>>,
    socket_layer: SocketIoLayer<A>,
    websockets: &[String],
    background: Background,
) -> Result<(), Error> {
    let Background {
        webhooks,
        retention,
        metrics,
    } = background;
    let scrape = http::metrics::Scrape {
        chat: chat.clone(),
        access: metrics,
        webhooks: webhooks.clone(),
    };
    // `--metrics-listen` is bound before the chat's port serves, so a taken address stops start-up.
    let stop_metrics = CancellationToken::new();
    let metrics_server = match config.metrics_listen {
        Some(addr) if chat.metrics.enabled() => {
            let listener = TcpListener::bind(addr).await?;
            tracing::info!(metrics_addr = %listener.local_addr()?, "serving /metrics");
            let served =
                http::metrics::serve_separately(listener, scrape.clone(), stop_metrics.clone());
            Some(tokio::spawn(served))
        }
        _ => None,
    };
    let upkeep = chat.metrics.spawn_upkeep();
    let gateway = http::websocket::Gateway::new(config.max_payload);
    let app = http::router(chat.clone(), &config, websockets, &gateway)
        .merge(http::metrics::routes(scrape))
        .layer(
            ServiceBuilder::new()
                .layer(cors(&config.cors_origins))
                .map_request(own_request_head)
                .layer(socket_layer),
        );
    // Layered last, so it wraps each route with axum's `MatchedPath` known (the span's name).
    let app = app.layer(crate::telemetry::http_trace());
    // The plain WebSocket gateway connects its in-process Socket.IO clients to this very service (and so to its
    // Engine.IO session table); it holds it weakly, and `app_for_gateway` keeps it until the server stops.
    let app_for_gateway = Arc::new(app.clone());
    gateway.connect_to(&app_for_gateway);
    chat::spawn_housekeeping(&chat);
    // Webhook delivery runs beside the chat until the server has stopped (and its pending writes committed).
    let stop_delivery = CancellationToken::new();
    let delivery = webhooks.map(|w| w.spawn(chat.store.clone(), stop_delivery.clone()));
    let expiry = retention.map(|r| r.spawn(chat.store.clone(), stop_delivery.clone()));
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    // On shutdown the listener closes before any socket does: the clients reconnect at once, and a connection that
    // a stopping node accepted would find its namespaces gone ("Invalid namespace", which socket.io-client takes
    // for a refusal and never retries). Refused instead, they retry, and a load balancer sends them to another
    // node. axum drops the listener as soon as the shutdown signal resolves; its `tap_io` closure goes with it.
    let listener_closed = CancellationToken::new();
    let cancel_on_drop = listener_closed.clone().drop_guard();
    let drain = tokio::spawn(async move {
        listener_closed.cancelled().await;
        tracing::info!("shutting down: closing sockets");
        chat.io.close().await;
        chat.tasks.close();
        if tokio::time::timeout(grace, chat.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "pending events did not finish in time");
        }
    });
    // One service for the whole process: layering per connection would give each TCP connection its own
    // Engine.IO session table, and long-polling requests that arrive on another connection would be refused.
    // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle holds a frame back until the peer
    // acknowledges the previous one, and delayed ACKs turn that into ~40 ms per message.
    let listener = listener.tap_io(move |tcp| {
        let _listener_closed_on_drop = &cancel_on_drop;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
    });
    // Returns once every HTTP connection has ended; the drain closes the long-polling ones meanwhile.
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections");
    })
    .await;
    if let Err(e) = drain.await {
        tracing::error!(error = %e, "shutdown drain failed");
    }
    stop_metrics.cancel();
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    if let Some(metrics_server) = metrics_server {
        match tokio::time::timeout(Duration::from_secs(5), metrics_server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the metrics listener failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the metrics listener did not stop in time"),
        }
    }
    stop_delivery.cancel();
    if let Some(delivery) = delivery
        && tokio::time::timeout(Duration::from_secs(5), delivery)
            .await
            .is_err()
    {
        tracing::warn!("webhook delivery did not stop in time");
    }
    // Stopping a retention run rolls back the transaction in flight; the next run (on any node) goes on.
    if let Some(expiry) = expiry {
        expiry.abort();
        let _ = expiry.await;
    }
    served?;
    drop(app_for_gateway);
    tracing::info!("stopped");
    Ok(())
}

fn cors(origins: &[String]) -> CorsLayer {
    if origins.is_empty() || origins.iter().any(|o| o.trim() == "*") {
        return CorsLayer::new()
            .allow_methods(Any)
            .allow_headers(Any)
            .allow_origin(Any);
    }
    // Named origins may send credentials (palaver's session cookies): a browser only sends them to a server
    // that says so, and tower-http refuses credentials with `Any`, so methods and headers are mirrored.
    let layer = CorsLayer::new()
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .allow_credentials(true);
    let list = crate::config::named_origins(origins)
        .filter_map(|o| match o.parse() {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring an invalid CORS origin");
                None
            }
        })
        .collect::<Vec<_>>();
    layer.allow_origin(AllowOrigin::list(list))
}

#[cfg(test)]
mod tests {
    use axum::extract::OriginalUri;
    use axum::http::{HeaderValue, Request, Uri};

    use super::own_request_head;

    /// Whether `part` lies inside `buffer`'s allocation.
    fn inside(buffer: &[u8], part: &[u8]) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn request_head_no_longer_points_into_the_read_buffer() {
        // What hyper does: the URI and header values are slices of the connection's read buffer.
        let shared = axum::body::Bytes::from(
            b"/socket.io/?EIO=4&transport=websocket dGhlIHNhbXBsZQ==".to_vec(),
        );
        let uri = Uri::from_maybe_shared(shared.slice(0..37)).expect("uri");
        let key = HeaderValue::from_maybe_shared(shared.slice(38..)).expect("header");
        let mut req = Request::get(uri.clone())
            .header("sec-websocket-key", key)
            .body(())
            .expect("request");
        req.extensions_mut().insert(OriginalUri(uri));
        assert!(inside(
            &shared,
            req.headers()["sec-websocket-key"].as_bytes()
        ));

        let req = own_request_head(req);
        let key = &req.headers()["sec-websocket-key"];
        assert_eq!(key, "dGhlIHNhbXBsZQ==");
        assert!(
            !inside(&shared, key.as_bytes()),
            "header value still in the buffer"
        );
        assert_eq!(req.uri(), "/socket.io/?EIO=4&transport=websocket");
        let query = req.uri().query().expect("query");
        assert!(
            !inside(&shared, query.as_bytes()),
            "URI still in the buffer"
        );
        let OriginalUri(original) = req
            .extensions()
            .get::<OriginalUri>()
            .expect("OriginalUri kept");
        assert_eq!(original, req.uri());
        let query = original.query().expect("query");
        assert!(
            !inside(&shared, query.as_bytes()),
            "OriginalUri still in the buffer"
        );
    }
}
