//! Plain HTTP next to Socket.IO: health and readiness probes, history for server-side rendering, the server API
//! for the host's backend ([`api`]), Prometheus metrics ([`metrics`]), the demo page at `/`, and the plain WebSocket
//! endpoints ([`websocket`]).

pub mod api;
pub mod auth;
pub mod metrics;
pub mod websocket;

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use tower_http::services::ServeDir;

use crate::{
    chat::{SharedChat, payload},
    config::Config,
    error::{ChatError, ChatResult},
    store::{HistoryPage, Visibility},
};

/// Paths of palaver's own HTTP routes (a plain WebSocket endpoint may not take one).
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/api", "/metrics"];

/// The HTTP routes, and a plain WebSocket endpoint at each of `websockets` served through `gateway`; Socket.IO is
/// layered on top by the server.
pub fn router<A: Adapter>(
    chat: SharedChat<A>,
    config: &Config,
    websockets: &[String],
    gateway: &std::sync::Arc<websocket::Gateway>,
) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<A>))
        .route("/api/rooms/{room}/messages", get(room_messages::<A>))
        .merge(api::routes::<A>())
        .merge(auth::routes::<A>())
        .with_state(chat)
        .merge(websocket::routes(websockets, gateway));
    let index = config.static_dir.join("index.html");
    if index.is_file() {
        router.fallback_service(ServeDir::new(&config.static_dir))
    } else {
        router.fallback(get(not_built))
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database answers within a second and, with several nodes, Redis is reachable.
async fn readyz<A: Adapter>(State(chat): State<SharedChat<A>>) -> Response {
    let database = match tokio::time::timeout(Duration::from_secs(1), chat.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "not ready: database");
            "unreachable"
        }
        Err(_) => "timeout",
    };
    let redis = chat
        .redis
        .as_ref()
        .map(|link| if link.is_up() { "ok" } else { "unreachable" });
    let ready = database == "ok" && redis.is_none_or(|r| r == "ok");
    let mut checks = json!({ "database": database });
    if let Some(redis) = redis {
        checks["redis"] = json!(redis);
    }
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The query of both history routes: `?before&after&limit&ns`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    before: Option<i64>,
    after: Option<i64>,
    limit: Option<i64>,
    ns: Option<String>,
}

impl HistoryParams {
    /// The room id and the page asked for, checked like `history:fetch`'s.
    pub(crate) fn page<'r>(
        &self,
        room: &'r str,
    ) -> ChatResult<(&'r str, crate::store::HistoryQuery)> {
        let room = payload::room_id(room)?;
        let query = payload::history_query(&payload::HistoryFetch {
            room: room.to_owned(),
            before: self.before,
            after: self.after,
            limit: self.limit,
        })?;
        Ok((room, query))
    }
}

/// `GET /api/rooms/{room}/messages` with `Authorization: Bearer <jwt>`: what `history:fetch` answers.
async fn room_messages<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(room): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<Json<HistoryPage>> {
    let Query(params) = params.map_err(|e| ChatError::bad_request(e.body_text()))?;
    let token = bearer(&headers)
        .ok_or_else(|| ChatError::unauthorized("send Authorization: Bearer <jwt>"))?;
    let verifier = chat
        .verifier
        .as_ref()
        .ok_or_else(|| ChatError::unauthorized("this server has no JWT key configured"))?;
    let user = verifier
        .verify(token)
        .map_err(|e| ChatError::unauthorized(format!("{}: {}", e.code, e.message)))?;
    let (room, query) = params.page(&room)?;
    let ns = params.ns.unwrap_or_else(|| "/".to_owned());
    let found = chat
        .store
        .room(&ns, room)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    if found.visibility == Visibility::Private && !chat.store.is_member(&ns, room, &user.id).await?
    {
        return Err(ChatError::forbidden(format!(
            "room {room:?} is private and you are not a member"
        )));
    }
    Ok(Json(chat.store.history(&ns, room, query).await?))
}

/// The bearer credential of a request (a token or an API key), if it sends one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// A JSON body that may be absent or empty. A body must say it is JSON: a cross-site form or `no-cors` request
/// cannot, so another site cannot post with the browser's cookies (it would need a preflight, which CORS
/// answers only for the allowed origins).
pub(crate) fn optional_body<T: Default + for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: &[u8],
) -> ChatResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json {
        return Err(ChatError::bad_request(
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ChatError::bad_request(e.to_string()))
}

/// `/` before the demo chat is built.
async fn not_built() -> Html<&'static str> {
    Html(
        "<!doctype html><meta charset=utf-8><title>palaver</title>\
         <h1>palaver is running</h1>\
         <p>Socket.IO is served on this address: connect with <code>io(\"http://localhost:3000\")</code>.</p>\
         <p>To serve the demo chat here, build it: <code>cd client-js &amp;&amp; npm ci &amp;&amp; npm run build</code>, \
         then restart palaver.</p>",
    )
}
