//! The session endpoints under `/api/v1/auth`: exchange a host's one-time code for palaver's tokens, refresh
//! them (rotating the refresh token; a reused one revokes its whole family), and log out. Tokens come back in
//! the JSON body and as `HttpOnly` cookies; a refresh or logout that relies on the cookie must come from an
//! allowed origin (see [`crate::auth::sessions`]).

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{Extensions, HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::{Deserialize, Serialize};
use socketioxide::adapter::Adapter;

use crate::{
    auth::{
        User,
        sessions::{self, REFRESH_COOKIE, Sessions},
    },
    chat::SharedChat,
    error::{ChatError, ChatResult, ErrorCode},
    http::optional_body,
    store::{NewRefresh, Rotation},
};

/// Longest one-time code accepted.
const MAX_CODE_LEN: usize = 512;

pub fn routes<A: Adapter>() -> Router<SharedChat<A>> {
    Router::new()
        .route("/api/v1/auth/exchange", post(exchange::<A>))
        .route("/api/v1/auth/refresh", post(refresh::<A>))
        .route("/api/v1/auth/logout", post(logout::<A>))
}

/// What the session endpoints answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tokens {
    user: User,
    access_token: String,
    access_token_expires_at: chrono::DateTime<chrono::Utc>,
    refresh_token: String,
    refresh_token_expires_at: chrono::DateTime<chrono::Utc>,
}

fn sessions_of<A: Adapter>(chat: &SharedChat<A>) -> ChatResult<Arc<Sessions>> {
    chat.sessions.clone().ok_or_else(|| {
        ChatError::not_found("this server issues no sessions (start it with --token-secret)")
    })
}

/// The session endpoints' answer to an address calling too often.
fn throttle<A: Adapter>(
    chat: &SharedChat<A>,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> ChatResult<()> {
    match peer {
        Some(ConnectInfo(addr)) if chat.auth_attempts.check_key(&addr.ip()).is_err() => {
            Err(ChatError::rate_limited(
                "too many sign-in calls from your address; retry in a few seconds",
            ))
        }
        _ => Ok(()),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Exchange {
    code: String,
}

/// `POST /api/v1/auth/exchange { code }` → `{ user, accessToken, …, refreshToken, … }` and both cookies. The
/// host redeems the code (`--auth-exchange-url`); a code works once.
async fn exchange<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> ChatResult<Response> {
    throttle(&chat, extensions.get::<ConnectInfo<SocketAddr>>())?;
    let sessions = sessions_of(&chat)?;
    let Exchange { code } = optional_body(&headers, &body)?;
    if code.is_empty() || code.len() > MAX_CODE_LEN {
        return Err(ChatError::bad_request(format!(
            "code must be 1 to {MAX_CODE_LEN} bytes"
        )));
    }
    let host = chat.auth_hook.as_ref().ok_or_else(|| {
        ChatError::not_found("this server has no --auth-exchange-url to redeem codes with")
    })?;
    // The host first: a code is only spent here once the host has said whose it is.
    let user = host.redeem(&code).await.map_err(|e| match e.code {
        "refused" => ChatError::unauthorized(e.message),
        "not_configured" => ChatError::not_found(e.message),
        _ => ChatError::new(ErrorCode::Unavailable, e.message),
    })?;
    if !chat.store.redeem_code(&sessions::digest(&code)).await? {
        return Err(ChatError::unauthorized("this code was already used"));
    }
    let refresh = sessions::new_refresh_token();
    let family = uuid::Uuid::new_v4().simple().to_string();
    let now = crate::store::now();
    let new = NewRefresh {
        hash: sessions::digest(&refresh),
        family,
        user: user.author(),
        created_at: now,
        expires_at: now + sessions.refresh_ttl,
    };
    chat.store.insert_refresh(&new).await?;
    issue(&sessions, user, refresh, new.expires_at)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WithRefresh {
    refresh_token: Option<String>,
}

/// The refresh token of a refresh or logout: from the body, else from the cookie (then only from an allowed
/// origin, which is what stops another site from using the browser's cookie).
fn refresh_token_of(sessions: &Sessions, headers: &HeaderMap, body: &Bytes) -> ChatResult<String> {
    let WithRefresh { refresh_token } = optional_body(headers, body)?;
    if let Some(token) = refresh_token {
        return Ok(token);
    }
    let token = Sessions::cookie(headers, REFRESH_COOKIE).ok_or_else(|| {
        ChatError::unauthorized("send { refreshToken } or the palaver_refresh cookie")
    })?;
    if !sessions.origin_allowed(headers) {
        return Err(ChatError::forbidden(
            "the refresh cookie only counts from an origin in --cors-origins",
        ));
    }
    Ok(token)
}

/// `POST /api/v1/auth/refresh { refreshToken? }` (or the cookie) → a new pair; the old refresh token is spent.
async fn refresh<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> ChatResult<Response> {
    throttle(&chat, extensions.get::<ConnectInfo<SocketAddr>>())?;
    let sessions = sessions_of(&chat)?;
    let old = refresh_token_of(&sessions, &headers, &body)?;
    let refresh = sessions::new_refresh_token();
    let rotation = chat
        .store
        .rotate_refresh(
            &sessions::digest(&old),
            &sessions::digest(&refresh),
            sessions.reuse_grace,
        )
        .await?;
    let (author, expires_at) = match rotation {
        Rotation::Rotated { user, expires_at } => (user, expires_at),
        Rotation::Unknown => return Err(ChatError::unauthorized("unknown refresh token")),
        Rotation::Expired => {
            return Err(ChatError::unauthorized(
                "the refresh token has expired; sign in again",
            ));
        }
        Rotation::Revoked => {
            return Err(ChatError::unauthorized(
                "the session was ended; sign in again",
            ));
        }
        Rotation::Reused => {
            tracing::warn!("a rotated refresh token was used again: its session is revoked");
            return Err(ChatError::unauthorized(
                "this refresh token was already used; the session is revoked, sign in again",
            ));
        }
    };
    let user = User {
        id: author.id,
        name: author.name,
        anonymous: false,
    };
    issue(&sessions, user, refresh, expires_at)
}

/// `POST /api/v1/auth/logout { refreshToken? }` (or the cookie) → `204`: the session's refresh tokens are
/// revoked and the cookies cleared. (An access token already handed out stands until it expires.)
async fn logout<A: Adapter>(
    State(chat): State<SharedChat<A>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> ChatResult<Response> {
    throttle(&chat, extensions.get::<ConnectInfo<SocketAddr>>())?;
    let sessions = sessions_of(&chat)?;
    let token = refresh_token_of(&sessions, &headers, &body)?;
    chat.store.revoke_refresh(&sessions::digest(&token)).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in sessions.clear_cookies() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// A fresh access token for the user, with the refresh token, as the body and both cookies.
fn issue(
    sessions: &Sessions,
    user: User,
    refresh_token: String,
    refresh_token_expires_at: chrono::DateTime<chrono::Utc>,
) -> ChatResult<Response> {
    let (access_token, access_token_expires_at) = sessions
        .issuer
        .issue(&user)
        .map_err(|e| ChatError::new(ErrorCode::Unavailable, e.message))?;
    let cookies = sessions.set_cookies(&access_token, &refresh_token);
    let tokens = Tokens {
        user,
        access_token,
        access_token_expires_at,
        refresh_token,
        refresh_token_expires_at,
    };
    let mut response = (StatusCode::OK, Json(tokens)).into_response();
    for cookie in cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}
