//! Plain WebSocket endpoints (`[[websocket]]` in the namespaces file): a gateway that turns each connection into
//! a Socket.IO client of the namespace at the same path, inside the process.
//!
//! The gateway speaks no chat at all. For each plain connection it opens an in-memory pipe, serves palaver's own
//! HTTP service (the one the listener serves, Socket.IO layer included) on one end, and on the other end connects
//! as a Socket.IO v5 client over WebSocket, authenticated with the plain URL's query parameters. From then on it
//! only translates frames:
//!
//! * each text frame from the plain client is sent as the event `message` with the frame (parsed as JSON, else
//!   the text as a string) as its argument;
//! * the first argument of every event the namespace sends is sent to the plain client as one JSON text frame.
//!
//! So the namespace's compatibility profile decides what a frame does and what goes out, and everything else is
//! the same as for any Socket.IO client: budgets, validation, durable history, presence, delivery through Redis,
//! the peer address for guest quotas (passed on as `ConnectInfo`), and shutdown (`io.close()` closes the inner
//! sockets, which ends their gateways).

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use axum::{
    Extension, Router,
    extract::{
        ConnectInfo, RawQuery, State,
        ws::{self, CloseFrame, WebSocket, WebSocketUpgrade, close_code},
    },
    response::Response,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde_json::{Map, Value as Json, json};
use tokio::io::DuplexStream;
use tokio_tungstenite::{WebSocketStream, tungstenite::Message as InnerMessage};
use tower::ServiceExt;

/// The event each plain frame is sent as (the profile's `[[on]] event = "message"`).
const FRAME_EVENT: &str = "message";
/// Bytes buffered each way in the in-memory pipe between a plain connection and its Socket.IO client.
const PIPE_BUFFER: usize = 64 * 1024;
/// How long the inner Socket.IO client may take to be admitted (the admission may read the user's rooms).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Query parameters that Engine.IO reads from the handshake URL: never taken from the plain client's URL.
const ENGINE_PARAMS: &[&str] = &["EIO", "transport", "sid", "b64"];

/// What every endpoint shares: the service to connect to, and the frame size limit.
pub struct Gateway {
    /// palaver's HTTP service, set once it is built. Weak: the service holds the routes that hold this, and a
    /// strong reference would keep the whole server (store pool included) alive after `serve` returns.
    service: OnceLock<Weak<Router>>,
    max_payload: usize,
}

impl Gateway {
    pub fn new(max_payload: u64) -> Arc<Self> {
        Arc::new(Self {
            service: OnceLock::new(),
            max_payload: usize::try_from(max_payload).unwrap_or(usize::MAX),
        })
    }

    /// Hands the gateway the finished service; the caller keeps `service` alive for as long as it serves.
    pub fn connect_to(&self, service: &Arc<Router>) {
        if self.service.set(Arc::downgrade(service)).is_err() {
            tracing::warn!("the WebSocket gateway was given a service twice; keeping the first");
        }
    }

    fn service(&self) -> Option<Router> {
        self.service
            .get()
            .and_then(Weak::upgrade)
            .map(|s| (*s).clone())
    }
}

/// One endpoint: the namespace its connections join.
struct Endpoint {
    ns: String,
    gateway: Arc<Gateway>,
}

/// `GET <path>` for each namespace served to plain WebSocket clients.
pub fn routes(paths: &[String], gateway: &Arc<Gateway>) -> Router {
    paths.iter().fold(Router::new(), |router, path| {
        let endpoint = Arc::new(Endpoint {
            ns: path.clone(),
            gateway: gateway.clone(),
        });
        tracing::info!(path = %path, "plain WebSocket endpoint");
        router.route(path, get(upgrade).with_state(endpoint))
    })
}

async fn upgrade(
    State(endpoint): State<Arc<Endpoint>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    // A frame above the packet limit would only be refused once wrapped (and the client disconnected); refusing
    // it here, as the WebSocket layer reads it, does the same without holding up to 64 MiB first.
    let max = endpoint.gateway.max_payload;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |plain| async move {
            match bridge(&endpoint, plain, peer, query.as_deref()).await {
                Ok(()) => {}
                // palaver could not connect to itself: the server's fault, not the client's.
                Err(e @ GatewayError::Handshake(_)) => {
                    tracing::warn!(ns = %endpoint.ns, peer = ?peer, error = %e, "plain WebSocket refused");
                }
                Err(e) => {
                    tracing::debug!(ns = %endpoint.ns, peer = ?peer, error = %e, "plain WebSocket ended");
                }
            }
        })
}

/// Why a gateway stopped other than by a close from either side.
#[derive(Debug, thiserror::Error)]
enum GatewayError {
    #[error("the server is shutting down")]
    Stopped,
    #[error("inner WebSocket: {0}")]
    Inner(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("plain WebSocket: {0}")]
    Plain(#[from] axum::Error),
    #[error("the Socket.IO handshake failed: {0}")]
    Handshake(String),
    #[error("the plain client did not answer a ping")]
    Unresponsive,
}

type Inner = WebSocketStream<DuplexStream>;

/// Connects the plain client to its namespace and relays frames until either side closes.
async fn bridge(
    endpoint: &Endpoint,
    mut plain: WebSocket,
    peer: Option<SocketAddr>,
    query: Option<&str>,
) -> Result<(), GatewayError> {
    let Some(service) = endpoint.gateway.service() else {
        close(&mut plain, close_code::AWAY, "the server is shutting down").await;
        return Err(GatewayError::Stopped);
    };
    let ns = endpoint.ns.as_str();
    let mut inner = match open(service, peer, query).await {
        Ok(inner) => inner,
        Err(e) => {
            close(&mut plain, close_code::ERROR, "the chat is unavailable").await;
            return Err(GatewayError::Handshake(e.to_string()));
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, join(&mut inner, ns, query)).await {
        Ok(Ok(Joined::Connected)) => {}
        Ok(Ok(Joined::Refused(reason))) => {
            close(&mut plain, close_code::POLICY, &reason).await;
            return Ok(());
        }
        Ok(Err(e)) => {
            close(&mut plain, close_code::ERROR, "the chat is unavailable").await;
            return Err(match e {
                GatewayError::Handshake(_) => e,
                other => GatewayError::Handshake(other.to_string()),
            });
        }
        Err(_) => {
            close(
                &mut plain,
                close_code::AGAIN,
                "the chat did not answer in time",
            )
            .await;
            return Err(GatewayError::Handshake("timed out".to_owned()));
        }
    }
    relay(ns, &mut plain, &mut inner).await
}

/// Serves palaver's service on one end of a pipe and opens a Socket.IO WebSocket on the other.
async fn open(
    service: Router,
    peer: Option<SocketAddr>,
    query: Option<&str>,
) -> Result<Inner, GatewayError> {
    let (client, server) = tokio::io::duplex(PIPE_BUFFER);
    // The chat reads the peer address from `ConnectInfo`, as `into_make_service_with_connect_info` sets it.
    let service = service.map_request(move |mut req: axum::http::Request<Incoming>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        req
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(server), TowerToHyperService::new(service))
        .with_upgrades();
    // Ends once the request is upgraded (Engine.IO then owns the pipe) or the pipe closes.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "in-process Socket.IO connection");
        }
    });
    let url = format!(
        "ws://localhost/socket.io/?{}",
        handshake_query(query.unwrap_or_default())
    );
    let (inner, _) = tokio_tungstenite::client_async(url, client).await?;
    Ok(inner)
}

/// The inner handshake query: Engine.IO's own parameters first, then the plain client's (for profiles that read
/// `query.*`), less any that Engine.IO would read.
fn handshake_query(plain: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("EIO", "4")
        .append_pair("transport", "websocket");
    for (key, value) in form_urlencoded::parse(plain.as_bytes()) {
        if !ENGINE_PARAMS.contains(&key.as_ref()) {
            query.append_pair(&key, &value);
        }
    }
    query.finish()
}

/// The plain URL's query parameters as the Socket.IO `auth` object (the first value of a repeated name).
fn handshake_auth(plain: &str) -> Json {
    let mut auth = Map::new();
    for (key, value) in form_urlencoded::parse(plain.as_bytes()) {
        auth.entry(key.into_owned())
            .or_insert_with(|| Json::String(value.into_owned()));
    }
    Json::Object(auth)
}

enum Joined {
    Connected,
    /// The namespace refused the connection (`44`), with its message.
    Refused(String),
}

/// The Engine.IO open packet, then the Socket.IO connect to the namespace and its answer.
async fn join(inner: &mut Inner, ns: &str, query: Option<&str>) -> Result<Joined, GatewayError> {
    let handshake = |what: &str| GatewayError::Handshake(what.to_owned());
    match next_text(inner).await? {
        Some(open) if open.starts_with('0') => {}
        Some(other) => {
            return Err(handshake(&format!(
                "expected the open packet, got {other:?}"
            )));
        }
        None => return Err(handshake("closed before the open packet")),
    }
    let auth = handshake_auth(query.unwrap_or_default());
    inner
        .send(InnerMessage::text(format!("40{}{auth}", ns_prefix(ns))))
        .await?;
    loop {
        let Some(text) = next_text(inner).await? else {
            return Err(handshake("closed before the namespace answered"));
        };
        if text == "2" {
            inner.send(InnerMessage::text("3")).await?;
            continue;
        }
        match SocketPacket::parse(&text, ns) {
            Some(SocketPacket::Connect) => return Ok(Joined::Connected),
            Some(SocketPacket::ConnectError(reason)) => return Ok(Joined::Refused(reason)),
            _ => tracing::debug!(ns, packet = %text, "ignored before the namespace answered"),
        }
    }
}

/// The next text frame of the inner WebSocket; `None` once it is closed.
async fn next_text(inner: &mut Inner) -> Result<Option<String>, GatewayError> {
    while let Some(message) = inner.next().await {
        match message? {
            InnerMessage::Text(text) => return Ok(Some(text.as_str().to_owned())),
            InnerMessage::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// `/chat,` before a packet's data, nothing for the main namespace.
fn ns_prefix(ns: &str) -> String {
    if ns == "/" {
        String::new()
    } else {
        format!("{ns},")
    }
}

/// The Socket.IO packets the gateway acts on.
#[derive(Debug, PartialEq)]
enum SocketPacket {
    Connect,
    ConnectError(String),
    Disconnect,
    /// An event's first argument, if it has any.
    Event(Option<Json>),
}

impl SocketPacket {
    /// Parses an Engine.IO message packet (`4…`) holding a Socket.IO packet of namespace `ns`.
    fn parse(text: &str, ns: &str) -> Option<Self> {
        let packet = text.strip_prefix('4')?;
        let mut chars = packet.chars();
        let kind = chars.next()?;
        let rest = chars.as_str();
        let data = if ns == "/" {
            rest
        } else {
            rest.strip_prefix(ns)?.strip_prefix(',')?
        };
        // An ack id may stand before the data.
        let data = data.trim_start_matches(|c: char| c.is_ascii_digit());
        match kind {
            '0' => Some(Self::Connect),
            '1' => Some(Self::Disconnect),
            '2' => {
                let args: Vec<Json> = serde_json::from_str(data).ok()?;
                Some(Self::Event(args.into_iter().nth(1)))
            }
            '4' => {
                let error: Json = serde_json::from_str(data).unwrap_or(Json::Null);
                let message = error
                    .get("message")
                    .and_then(Json::as_str)
                    .unwrap_or("connection refused");
                Some(Self::ConnectError(message.to_owned()))
            }
            _ => None,
        }
    }
}

/// Relays frames both ways until either side closes.
///
/// The gateway answers Engine.IO's pings for the plain client, so it checks the plain client in step: each
/// Engine.IO ping is answered only if the plain client has sent something (a pong at least) since the previous
/// one, and is followed by a WebSocket ping to it. A plain client that vanished without closing is noticed
/// within two ping intervals, as a Socket.IO client would be.
async fn relay(ns: &str, plain: &mut WebSocket, inner: &mut Inner) -> Result<(), GatewayError> {
    let prefix = ns_prefix(ns);
    let mut alive = true;
    loop {
        tokio::select! {
            from_plain = plain.recv() => {
                let frame = match from_plain {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        // A frame over the size limit ends the client's connection, as an oversized Socket.IO
                        // packet does.
                        let too_large = matches!(
                            std::error::Error::source(&e).and_then(|s| s.downcast_ref()),
                            Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
                        );
                        if too_large {
                            close(plain, close_code::SIZE, "the frame is too large").await;
                        }
                        hang_up(inner, &prefix).await;
                        return Err(e.into());
                    }
                    None => {
                        hang_up(inner, &prefix).await;
                        return Ok(());
                    }
                };
                alive = true;
                let text = match frame {
                    ws::Message::Text(text) => text.as_str().to_owned(),
                    // The `ws` package's servers read text and binary frames alike (`JSON.parse(buffer)`).
                    ws::Message::Binary(bytes) => match String::from_utf8(bytes.to_vec()) {
                        Ok(text) => text,
                        Err(_) => {
                            tracing::debug!(ns, "binary frame that is not UTF-8; ignored");
                            continue;
                        }
                    },
                    ws::Message::Close(_) => {
                        hang_up(inner, &prefix).await;
                        return Ok(());
                    }
                    ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
                };
                let arg = serde_json::from_str::<Json>(&text).unwrap_or(Json::String(text));
                let packet = format!("42{prefix}{}", json!([FRAME_EVENT, arg]));
                inner.send(InnerMessage::text(packet)).await?;
            }
            from_inner = inner.next() => {
                let text = match from_inner {
                    Some(Ok(InnerMessage::Text(text))) => text,
                    Some(Ok(InnerMessage::Close(_))) | None => {
                        close(plain, close_code::AWAY, "the chat connection closed").await;
                        return Ok(());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        close(plain, close_code::AWAY, "the chat connection closed").await;
                        return Err(e.into());
                    }
                };
                match text.as_str() {
                    "2" if alive => {
                        alive = false;
                        inner.send(InnerMessage::text("3")).await?;
                        plain.send(ws::Message::Ping(Default::default())).await?;
                        continue;
                    }
                    "2" => {
                        close(plain, close_code::AWAY, "no answer to ping").await;
                        hang_up(inner, &prefix).await;
                        return Err(GatewayError::Unresponsive);
                    }
                    "1" => {
                        close(plain, close_code::AWAY, "the chat connection closed").await;
                        return Ok(());
                    }
                    _ => {}
                }
                match SocketPacket::parse(&text, ns) {
                    Some(SocketPacket::Event(Some(arg))) => {
                        plain.send(ws::Message::text(arg.to_string())).await?;
                    }
                    Some(SocketPacket::Disconnect) => {
                        close(plain, close_code::NORMAL, "disconnected by the server").await;
                        inner.close(None).await.ok();
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Leaves the namespace and closes the inner WebSocket (its Socket.IO socket disconnects at once).
async fn hang_up(inner: &mut Inner, prefix: &str) {
    if let Err(e) = inner.send(InnerMessage::text(format!("41{prefix}"))).await {
        tracing::debug!(error = %e, "could not leave the namespace");
    }
    inner.close(None).await.ok();
}

/// Closes the plain WebSocket with a code and a reason (cut to the 123 bytes a close frame allows).
async fn close(plain: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    if let Err(e) = plain.send(ws::Message::Close(Some(frame))).await {
        tracing::debug!(error = %e, "could not close the plain WebSocket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_of_the_namespace_are_read() {
        let ns = "/live";
        assert_eq!(
            SocketPacket::parse(r#"40/live,{"sid":"abc"}"#, ns),
            Some(SocketPacket::Connect)
        );
        assert_eq!(
            SocketPacket::parse(r#"44/live,{"message":"no token"}"#, ns),
            Some(SocketPacket::ConnectError("no token".to_owned()))
        );
        assert_eq!(
            SocketPacket::parse(r#"42/live,["message",{"text":"hi"},2]"#, ns),
            Some(SocketPacket::Event(Some(json!({ "text": "hi" }))))
        );
        assert_eq!(
            SocketPacket::parse(r#"42/live,7["message","hi"]"#, ns),
            Some(SocketPacket::Event(Some(json!("hi"))))
        );
        assert_eq!(
            SocketPacket::parse(r#"42/live,["ping"]"#, ns),
            Some(SocketPacket::Event(None))
        );
        assert_eq!(
            SocketPacket::parse("41/live,", ns),
            Some(SocketPacket::Disconnect)
        );
        // Another namespace, or one whose path merely starts alike.
        assert_eq!(SocketPacket::parse(r#"42/other,["m",1]"#, ns), None);
        assert_eq!(SocketPacket::parse(r#"42/lively,["m",1]"#, ns), None);
        assert_eq!(
            SocketPacket::parse(r#"42["m",1]"#, "/"),
            Some(SocketPacket::Event(Some(json!(1))))
        );
        assert_eq!(SocketPacket::parse("42/live,not json", ns), None);
        assert_eq!(SocketPacket::parse("3", ns), None);
    }

    #[test]
    fn the_plain_query_is_the_auth_and_cannot_steer_engine_io() {
        let plain =
            "name=J%C3%BCrgen&token=t&serverOffset=12&EIO=3&sid=x&transport=polling&name=second";
        assert_eq!(
            handshake_auth(plain),
            json!({ "name": "Jürgen", "token": "t", "serverOffset": "12", "EIO": "3", "sid": "x", "transport": "polling" })
        );
        assert_eq!(
            handshake_query(plain),
            "EIO=4&transport=websocket&name=J%C3%BCrgen&token=t&serverOffset=12&name=second"
        );
        assert_eq!(handshake_auth(""), json!({}));
        assert_eq!(handshake_query(""), "EIO=4&transport=websocket");
    }
}
