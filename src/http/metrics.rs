//! `GET /metrics`: the Prometheus text exposition of [`crate::metrics`]. The chat's port is public, so there it is
//! served only behind `--metrics-token`; `--metrics-listen` serves it on an address of its own (a private
//! interface), the token optional there, and the chat's port then answers `404`.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};
use socketioxide::{TransportType, adapter::Adapter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    chat::SharedChat,
    config::Config,
    metrics::{RedisStats, Snapshot, WebhookStats},
    webhooks::Webhooks,
};

/// Shortest `--metrics-token` accepted (as for `--api-key`).
const MIN_TOKEN_LEN: usize = 16;
/// Longest a scrape waits for the database to count the webhook outbox; past it the outbox gauge is left out.
const OUTBOX_TIMEOUT: Duration = Duration::from_secs(1);
/// The version of the text format, as Prometheus asks for it.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Who may scrape, and where.
pub struct Access {
    /// SHA-256 of `--metrics-token`: requests are compared by digest, in constant time whatever they send.
    token: Option<[u8; 32]>,
    /// `--metrics-listen`: the chat's port does not serve `/metrics`.
    separate: bool,
}

impl Access {
    /// Checks the metrics flags, naming them.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let token = config.metrics_token.as_deref().map(str::trim);
        if !config.metrics && (config.metrics_listen.is_some() || token.is_some()) {
            return Err("--metrics-listen and --metrics-token need --metrics true".to_owned());
        }
        if let Some(token) = token
            && (token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace))
        {
            return Err(format!(
                "--metrics-token must be at least {MIN_TOKEN_LEN} characters, without spaces"
            ));
        }
        Ok(Self {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            separate: config.metrics_listen.is_some(),
        })
    }

    /// Whether the request carries the token (always, when there is none).
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(sent) = super::bearer(headers) else {
            return false;
        };
        let sent: [u8; 32] = Sha256::digest(sent.trim().as_bytes()).into();
        sent == *expected
    }
}

/// What a scrape reads.
pub struct Scrape<A: Adapter> {
    pub chat: SharedChat<A>,
    pub access: Arc<Access>,
    pub webhooks: Option<Arc<Webhooks>>,
}

impl<A: Adapter> Clone for Scrape<A> {
    fn clone(&self) -> Self {
        Self {
            chat: self.chat.clone(),
            access: self.access.clone(),
            webhooks: self.webhooks.clone(),
        }
    }
}

/// `/metrics` on the chat's port.
pub fn routes<A: Adapter>(scrape: Scrape<A>) -> Router {
    Router::new()
        .route("/metrics", get(on_main_port::<A>))
        .with_state(scrape)
}

/// Serves `/metrics` alone on `listener` (`--metrics-listen`) until `stop`.
pub async fn serve_separately<A: Adapter>(
    listener: TcpListener,
    scrape: Scrape<A>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(scraped::<A>))
        .with_state(scrape);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn on_main_port<A: Adapter>(State(scrape): State<Scrape<A>>, headers: HeaderMap) -> Response {
    let refused = if !scrape.chat.metrics.enabled() {
        Some("metrics are off (--metrics false)")
    } else if scrape.access.separate {
        Some("metrics are served on --metrics-listen, not on this port")
    } else if scrape.access.token.is_none() {
        Some(
            "set --metrics-token to serve /metrics on this port, or --metrics-listen to serve it on another address",
        )
    } else {
        None
    };
    match refused {
        Some(why) => (StatusCode::NOT_FOUND, why).into_response(),
        None => scraped(State(scrape), headers).await,
    }
}

async fn scraped<A: Adapter>(State(scrape): State<Scrape<A>>, headers: HeaderMap) -> Response {
    if !scrape.access.admits(&headers) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <--metrics-token>",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let state = snapshot(&scrape).await;
    match scrape.chat.metrics.render(&state) {
        Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are off (--metrics false)").into_response(),
    }
}

/// The server's state as the gauges show it.
async fn snapshot<A: Adapter>(scrape: &Scrape<A>) -> Snapshot {
    let chat = &scrape.chat;
    let mut sockets: Vec<(String, u64, u64)> = chat
        .namespaces
        .keys()
        .map(|path| {
            let (mut websocket, mut polling) = (0, 0);
            // This node's sockets (the adapter's local ones), by the transport each is on now.
            for socket in chat.io.of(path).map(|ns| ns.sockets()).unwrap_or_default() {
                match socket.transport_type() {
                    TransportType::Websocket => websocket += 1,
                    TransportType::Polling => polling += 1,
                }
            }
            (path.clone(), websocket, polling)
        })
        .collect();
    sockets.sort();
    let redis = chat.redis.as_ref().map(|link| RedisStats {
        up: link.is_up(),
        reconnects: link.reconnects(),
        fallbacks: link.fallbacks(),
    });
    let webhooks = match &scrape.webhooks {
        Some(webhooks) => {
            let outbox = match tokio::time::timeout(OUTBOX_TIMEOUT, chat.store.outbox_depth()).await
            {
                Ok(Ok(depth)) => Some(depth),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "metrics: cannot count the webhook outbox");
                    None
                }
                Err(_) => None,
            };
            let (delivered, failed, dead) = webhooks.attempts();
            Some(WebhookStats {
                delivered,
                failed,
                dead,
                outbox,
            })
        }
        None => None,
    };
    Snapshot {
        sockets,
        pools: chat.store.pool_stats(),
        redis,
        webhooks,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn access(args: &[&str]) -> Result<Access, String> {
        let config = Config::parse_from(std::iter::once("palaver").chain(args.iter().copied()));
        Access::from_config(&config)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn the_token_is_checked_and_its_flags_too() {
        let open = access(&[]).expect("defaults");
        assert!(open.admits(&HeaderMap::new()));
        let guarded = access(&["--metrics-token", "scrape-me-0123456789"]).expect("token");
        assert!(guarded.admits(&bearer("scrape-me-0123456789")));
        assert!(!guarded.admits(&bearer("scrape-me-012345678")));
        assert!(!guarded.admits(&HeaderMap::new()));
        assert!(access(&["--metrics-token", "short"]).is_err());
        assert!(access(&["--metrics-token", "with a space in it, long enough"]).is_err());
        let off = ["--metrics", "false", "--metrics-listen", "127.0.0.1:9100"];
        assert!(access(&off).is_err());
    }
}
