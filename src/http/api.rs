//! The server API for the host's backend, under `/api/v1`: post messages as a user, a bot or the system, read
//! history and presence, disconnect a user, push custom events. Every call carries `Authorization: Bearer <key>`
//! with a key from `--api-key` whose scopes allow it; errors are the contract's `{ error: { code, message } }`.
//! The OpenAPI document is at `/api/v1/openapi.json`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use socketioxide::adapter::Adapter;

use crate::{
    auth,
    chat::{
        SharedChat,
        dm::{Dm, send_dm},
        messages, payload,
        presence::{self, NoticeKind},
        room_key, rooms, user_key,
    },
    config::NamespaceSettings,
    error::{ChatError, ChatResult},
    http::HistoryParams,
    store::{Appended, Author, HistoryPage, Message, Room, RoomKind, Visibility},
};

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Post messages and emit events.
    Publish,
    /// Read history and presence.
    Read,
    /// Disconnect users (and, later, manage rooms and members).
    Manage,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Publish, Scope::Read, Scope::Manage];

    fn name(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Manage => "manage",
        }
    }
}

/// The server API's keys, kept as SHA-256 digests with their scopes.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<Vec<([u8; 32], Vec<Scope>)>>);

/// Shortest key accepted: a key is a password for the whole chat.
const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Parses `--api-key` values, `SCOPES=KEY` each.
    pub fn parse(specs: &[String]) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(specs.len());
        for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
            let (scopes, key) = spec.split_once('=').ok_or_else(|| {
                "--api-key: write SCOPES=KEY, e.g. publish+read=<key> (scopes: publish, read, manage)".to_owned()
            })?;
            let scopes = scopes
                .split('+')
                .map(|name| {
                    Scope::ALL
                        .into_iter()
                        .find(|s| s.name() == name.trim())
                        .ok_or_else(|| {
                            format!("--api-key: unknown scope {name:?} (publish, read, manage)")
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let key = key.trim();
            if key.len() < MIN_KEY_LEN {
                return Err(format!(
                    "--api-key: a key must be at least {MIN_KEY_LEN} characters"
                ));
            }
            keys.push((Sha256::digest(key.as_bytes()).into(), scopes));
        }
        Ok(Self(Arc::new(keys)))
    }

    /// Whether the request's bearer key is known and has `scope`: `unauthorized` when not known, `forbidden`
    /// when known without the scope.
    fn authorize(&self, headers: &HeaderMap, scope: Scope) -> ChatResult<()> {
        let key = super::bearer(headers)
            .ok_or_else(|| ChatError::unauthorized("send Authorization: Bearer <api key>"))?;
        let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        let (_, scopes) = self
            .0
            .iter()
            .find(|(known, _)| *known == digest)
            .ok_or_else(|| ChatError::unauthorized("unknown API key"))?;
        if !scopes.contains(&scope) {
            return Err(ChatError::forbidden(format!(
                "this API key lacks the {:?} scope",
                scope.name()
            )));
        }
        Ok(())
    }
}

/// The `/api/v1` routes.
pub fn routes<A: Adapter>() -> Router<SharedChat<A>> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/rooms/{room}/messages",
            post(post_room_message::<A>).get(room_history::<A>),
        )
        .route("/api/v1/rooms/{room}", put(put_room::<A>))
        .route(
            "/api/v1/rooms/{room}/members/{user}",
            put(put_member::<A>).delete(delete_member::<A>),
        )
        .route("/api/v1/rooms/{room}/presence", get(room_presence::<A>))
        .route("/api/v1/users/{user}/messages", post(post_dm::<A>))
        .route(
            "/api/v1/users/{user}/disconnect",
            post(disconnect_user::<A>),
        )
        .route("/api/v1/users/{user}/sessions", delete(end_sessions::<A>))
        .route("/api/v1/emit", post(emit::<A>))
        .route("/api/v1/webhooks/failed", get(failed_webhooks::<A>))
        .route(
            "/api/v1/webhooks/failed/{id}/retry",
            post(retry_webhook::<A>),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedParams {
    limit: Option<i64>,
}

/// Most dead letters one listing returns.
const MAX_FAILED: i64 = 1000;

/// `GET /api/v1/webhooks/failed?limit` → `{ failed: [{ id, type, attempts, lastError, createdAt, data }] }`: the
/// webhook deliveries that gave up after `--webhook-max-attempts`, oldest first (100 unless `limit`).
async fn failed_webhooks<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    params: Result<Query<FailedParams>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<Json<Value>> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    let limit = query(params)?.limit.unwrap_or(100);
    if !(1..=MAX_FAILED).contains(&limit) {
        return Err(ChatError::bad_request(format!(
            "limit must be between 1 and {MAX_FAILED}"
        )));
    }
    let failed = chat.store.failed_hooks(limit).await?;
    Ok(Json(json!({ "failed": failed })))
}

/// `POST /api/v1/webhooks/failed/{id}/retry` → `204`: the dead letter is pending again, due now, with its attempts
/// reset (it goes out in its room's order again). `404` if there is no failed delivery with that id.
async fn retry_webhook<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ChatResult<StatusCode> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    if !chat.store.retry_hook(&id, crate::store::now()).await? {
        return Err(ChatError::not_found(format!(
            "no failed webhook delivery {id:?}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// `?ns=` on every call: the namespace, `/` by default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NsParam {
    ns: Option<String>,
}

/// The namespace a call addresses.
fn namespace<A: Adapter>(
    chat: &SharedChat<A>,
    ns: Option<String>,
) -> ChatResult<Arc<NamespaceSettings>> {
    let path = ns.unwrap_or_else(|| "/".to_owned());
    chat.namespaces
        .get(&path)
        .cloned()
        .ok_or_else(|| ChatError::not_found(format!("no namespace {path:?} on this server")))
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> ChatResult<T> {
    body.map(|Json(b)| b)
        .map_err(|e| ChatError::bad_request(e.body_text()))
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> ChatResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ChatError::bad_request(e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostMessage {
    text: String,
    from: Option<Sender>,
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Sender {
    id: String,
    name: String,
}

/// The sender of a message the API posts without `from`.
fn system() -> Author {
    Author {
        id: auth::SYSTEM_ID.to_owned(),
        name: "System".to_owned(),
    }
}

#[derive(Serialize)]
struct Posted {
    message: Message,
    duplicate: bool,
}

/// `POST /api/v1/rooms/{room}/messages { text, from?, clientId? }` → `201 { message }` (`200` with `duplicate:
/// true` for a retried `clientId`).
async fn post_room_message<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(room): Path<String>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<PostMessage>, JsonRejection>,
) -> ChatResult<Response> {
    chat.api_keys.authorize(&headers, Scope::Publish)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let request = body(request)?;
    let room = payload::room_id(&room)?;
    let from = match request.from {
        None => system(),
        Some(given) => sender(given)?,
    };
    let appended =
        messages::publish(&chat, &ns, room, from, &request.text, request.client_id).await?;
    Ok(posted(appended))
}

/// A sender the host names, checked like a signed-in user.
fn sender(Sender { id, name }: Sender) -> ChatResult<Author> {
    auth::checked_user(id, &name)
        .map(|user| user.author())
        .map_err(|reason| ChatError::bad_request(format!("from: {reason}")))
}

/// `201 { message, duplicate: false }`, or `200 { message, duplicate: true }` for a retry.
fn posted(appended: Appended) -> Response {
    let status = if appended.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let posted = Posted {
        message: appended.message,
        duplicate: appended.duplicate,
    };
    (status, Json(posted)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRoom {
    name: Option<String>,
    visibility: Option<Visibility>,
}

/// Longest room name (what `rooms:list` shows; the id is the room's address).
const MAX_ROOM_NAME_CHARS: usize = 100;

/// `PUT /api/v1/rooms/{room} { name?, visibility? }` → `201 { room }` when created, `200 { room }` when an
/// existing group room took the name and visibility given (by default: the id, public). A DM's room cannot be
/// changed.
async fn put_room<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(room): Path<String>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<PutRoom>, JsonRejection>,
) -> ChatResult<Response> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let request = body(request)?;
    let id = payload::new_room_id(&room)?;
    let name = request.name.unwrap_or_else(|| id.to_owned());
    let chars = name.trim().chars().count();
    if chars == 0 || chars > MAX_ROOM_NAME_CHARS {
        return Err(ChatError::bad_request(format!(
            "name must be 1–{MAX_ROOM_NAME_CHARS} characters"
        )));
    }
    payload::storable("name", &name, false)?;
    let wanted = Room {
        id: id.to_owned(),
        name: name.trim().to_owned(),
        kind: RoomKind::Group,
        visibility: request.visibility.unwrap_or(Visibility::Public),
        created_at: crate::store::now(),
    };
    let (stored, created) = chat.store.put_room(&ns.path, &wanted).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "room": stored }))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PutMember {
    name: Option<String>,
}

/// A group room of the namespace, or `not_found` / `forbidden` (a DM's members are its two users, for good).
async fn group_room<A: Adapter>(chat: &SharedChat<A>, ns: &str, room: &str) -> ChatResult<Room> {
    let room = payload::room_id(room)?;
    let found = chat
        .store
        .room(ns, room)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    if found.kind == RoomKind::Dm {
        return Err(ChatError::forbidden("a DM's members cannot be changed"));
    }
    Ok(found)
}

/// `PUT /api/v1/rooms/{room}/members/{user} { name? }` → `204`: the user is a member (no invitation: the host
/// decides), and their online sockets are in the room. `name` is how they are shown until they connect
/// (default: the id).
async fn put_member<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path((room, user)): Path<(String, String)>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
    request: axum::body::Bytes,
) -> ChatResult<StatusCode> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    // The body is optional: none at all, or a JSON object.
    let request: PutMember = super::optional_body(&headers, &request)?;
    let room = group_room(&chat, &ns.path, &room).await?;
    let name = request.name.unwrap_or_else(|| user.clone());
    let member = auth::checked_user(user, &name)
        .map_err(ChatError::bad_request)?
        .author();
    rooms::add_user(&chat, &ns.path, &room.id, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/rooms/{room}/members/{user}` → `204`: the membership is gone and every socket of the user
/// leaves the room, on every node; the room is told (`room:notice` leave). `404` if the user was not in it.
async fn delete_member<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path((room, user)): Path<(String, String)>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<StatusCode> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let room = group_room(&chat, &ns.path, &room).await?;
    // Shown in the notice as the room knew them.
    let known = chat
        .presence
        .users(&ns.path, &room.id)
        .await
        .into_iter()
        .find(|u| u.id == user);
    let Some(version) = rooms::remove_user(&chat, &ns.path, &room.id, &user).await? else {
        return Err(ChatError::not_found(format!(
            "user {user:?} is not in room {:?}",
            room.id
        )));
    };
    let gone = known.unwrap_or(auth::User {
        name: user.clone(),
        id: user,
        anonymous: false,
    });
    presence::announce_from_server(&chat, &ns, &room.id, NoticeKind::Leave(version), &gone).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostDm {
    from: Sender,
    text: String,
    client_id: Option<String>,
}

/// `POST /api/v1/users/{user}/messages { from, text, clientId? }` → `201 { message }`: a DM from a user or bot,
/// delivered to every socket of both, on every node (`200` with `duplicate: true` for a retried `clientId`).
async fn post_dm<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(to): Path<String>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<PostDm>, JsonRejection>,
) -> ChatResult<Response> {
    chat.api_keys.authorize(&headers, Scope::Publish)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let request = body(request)?;
    let from = sender(request.from)?;
    let dm = Dm {
        from,
        to: &to,
        text: &request.text,
        client_id: request.client_id,
    };
    let appended = send_dm(&chat, &ns, dm, None).await?;
    Ok(posted(appended))
}

/// `GET /api/v1/rooms/{room}/messages?before&after&limit` → `{ messages, hasMore }`, any room (the host's
/// backend reads on its users' behalf).
async fn room_history<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(room): Path<String>,
    params: Result<Query<HistoryParams>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<Json<HistoryPage>> {
    chat.api_keys.authorize(&headers, Scope::Read)?;
    let params = query(params)?;
    let (room, history) = params.page(&room)?;
    let ns = namespace(&chat, params.ns)?;
    chat.store
        .room(&ns.path, room)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    Ok(Json(chat.store.history(&ns.path, room, history).await?))
}

/// `GET /api/v1/rooms/{room}/presence` → `{ users }`: who is online in the room, on every node.
async fn room_presence<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(room): Path<String>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<Json<Value>> {
    chat.api_keys.authorize(&headers, Scope::Read)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let room = payload::room_id(&room)?;
    chat.store
        .room(&ns.path, room)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    let users = chat.presence.users(&ns.path, room).await;
    Ok(Json(json!({ "users": users })))
}

/// `POST /api/v1/users/{user}/disconnect` → `204`: every socket of that user, on every node, is disconnected.
async fn disconnect_user<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(user): Path<String>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<StatusCode> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    disconnect(&chat, &ns, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disconnects every socket of the user in the namespace, on every node.
async fn disconnect<A: Adapter>(
    chat: &SharedChat<A>,
    ns: &NamespaceSettings,
    user: &str,
) -> ChatResult<()> {
    messages::server_target(chat, ns, &user_key(user))
        .disconnect()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "disconnect did not reach every node");
            ChatError::new(
                crate::error::ErrorCode::Unavailable,
                "some nodes did not answer; the user's sockets on them may still be connected, retry",
            )
        })
}

/// `DELETE /api/v1/users/{user}/sessions` → `{ revoked }`: every session palaver issued the user (its refresh
/// tokens) is revoked, and every socket of the user is disconnected, on every node. The user is back only
/// through a new sign-in (a code exchange, a token from your identity provider, or your connect hook).
async fn end_sessions<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    Path(user): Path<String>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
) -> ChatResult<Json<Value>> {
    chat.api_keys.authorize(&headers, Scope::Manage)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let revoked = chat.store.revoke_user_sessions(&user).await?;
    disconnect(&chat, &ns, &user).await?;
    Ok(Json(json!({ "revoked": revoked })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Emit {
    room: Option<String>,
    user: Option<String>,
    event: String,
    #[serde(default)]
    data: Value,
}

/// palaver's own events, which a custom emit may not use (a client would take it for the chat's); nor may it use
/// Socket.IO's ([`crate::profile::SOCKET_IO_EVENTS`]).
const RESERVED_EVENTS: &[&str] = &[
    "message",
    "room:notice",
    "session",
    "chat:error",
    "invitation",
    "typing",
    "session:expiring",
    "session:expired",
];

/// Longest custom event name.
const MAX_EVENT_NAME: usize = 64;

/// `POST /api/v1/emit { room | user, event, data }` → `202`: a custom event, not stored, to the sockets in a
/// room or of a user, on every node.
async fn emit<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    params: Result<Query<NsParam>, QueryRejection>,
    headers: HeaderMap,
    request: Result<Json<Emit>, JsonRejection>,
) -> ChatResult<StatusCode> {
    chat.api_keys.authorize(&headers, Scope::Publish)?;
    let ns = namespace(&chat, query(params)?.ns)?;
    let request = body(request)?;
    let event = request.event.as_str();
    if event.is_empty() || event.len() > MAX_EVENT_NAME || event.chars().any(char::is_control) {
        return Err(ChatError::bad_request(format!(
            "event must be 1 to {MAX_EVENT_NAME} bytes without control characters"
        )));
    }
    if RESERVED_EVENTS.contains(&event) || crate::profile::SOCKET_IO_EVENTS.contains(&event) {
        return Err(ChatError::bad_request(format!(
            "event {event:?} is reserved (palaver's own or Socket.IO's); name your own"
        )));
    }
    let key = match (&request.room, &request.user) {
        (Some(room), None) => room_key(payload::room_id(room)?),
        (None, Some(user)) => user_key(user),
        _ => {
            return Err(ChatError::bad_request("give exactly one of room and user"));
        }
    };
    let target = || messages::server_target(&chat, &ns, &key);
    crate::cluster::deliver(chat.redis.as_ref(), target, event, &request.data).await;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(specs: &[&str]) -> Result<ApiKeys, String> {
        ApiKeys::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("header"),
        );
        headers
    }

    #[test]
    fn keys_carry_their_scopes() {
        let keys =
            keys(&["publish+read=0123456789abcdef", "manage=fedcba9876543210"]).expect("keys");
        let publisher = bearer("0123456789abcdef");
        assert!(keys.authorize(&publisher, Scope::Publish).is_ok());
        assert!(keys.authorize(&publisher, Scope::Read).is_ok());
        let no_scope = keys
            .authorize(&publisher, Scope::Manage)
            .expect_err("no manage");
        assert_eq!(no_scope.code, crate::error::ErrorCode::Forbidden);
        let unknown = keys
            .authorize(&bearer("not-a-key-at-all!"), Scope::Read)
            .expect_err("unknown");
        assert_eq!(unknown.code, crate::error::ErrorCode::Unauthorized);
        let missing = keys
            .authorize(&HeaderMap::new(), Scope::Read)
            .expect_err("missing");
        assert_eq!(missing.code, crate::error::ErrorCode::Unauthorized);
    }

    #[test]
    fn bad_key_specs_name_the_flag() {
        for spec in ["0123456789abcdef", "write=0123456789abcdef", "read=short"] {
            let err = keys(&[spec]).err().unwrap_or_default();
            assert!(err.contains("--api-key"), "{spec}: {err}");
        }
    }
}
