//! A socket's life: authentication, the user's rooms and handler registration before the client is told it is
//! connected, then re-entry into those rooms and `session`, and cleanup on disconnect.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value as Json;
use socketioxide::{
    ProtocolVersion,
    adapter::Adapter,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
    socket::DisconnectReason,
};

use socketioxide_core::adapter::DefinedAdapter;

use super::{Conn, SharedChat, presence, register_events, user_key};
use crate::{
    auth::{self, AuthError, User},
    config::NamespaceSettings,
    store::{Invitation, RoomSummary},
};

/// Serves the chat on one namespace with its settings. The adapter's init result is the caller's to handle
/// (nothing for the in-process adapter, a future to await for Redis).
pub fn register_namespace<A: Adapter + DefinedAdapter>(
    chat: &SharedChat<A>,
    settings: NamespaceSettings,
) -> A::InitRes {
    tracing::info!(ns = %settings.path, anonymous = settings.anonymous, history = settings.history, "namespace");
    let settings = Arc::new(settings);
    let path = settings.path.clone();
    let (for_middleware, for_connect) = (chat.clone(), chat.clone());
    let admitted = chat.metrics.connects(&path);
    let middleware = move |socket: SocketRef<A>, TryData(auth): TryData<Json>| {
        let (chat, settings, admitted) =
            (for_middleware.clone(), settings.clone(), admitted.clone());
        async move {
            let result = admit(&chat, &socket, auth.ok(), settings.clone()).await;
            match &result {
                Ok(()) => admitted.increment(1),
                Err(refused) => chat.metrics.refused(&settings.path, refused.code),
            }
            result
        }
    };
    let on_connect = move |socket: SocketRef<A>| {
        let chat = for_connect.clone();
        async move { connected(chat, socket).await }
    };
    chat.io.ns(path, on_connect.with(middleware))
}

/// What a new connection is told in `session`: who it is, the rooms it is in, and its open invitations.
#[derive(Clone, Default, Serialize)]
struct Session {
    /// The rooms of this user (see [`crate::store::Store::user_rooms`]); the socket enters every one of them
    /// before the client hears of `session`, so each room listed delivers live messages.
    rooms: Vec<RoomSummary>,
    invitations: Vec<Invitation>,
}

/// Who the connection is, and until when its token stands: the user of its token (`auth.token`, else palaver's
/// access cookie from an allowed origin); else, when the host service has a connect hook, the user the host
/// names (never a guest); else a guest, if the namespace admits them.
async fn identify<A: Adapter>(
    chat: &SharedChat<A>,
    socket: &SocketRef<A>,
    auth: Option<&Json>,
    settings: &NamespaceSettings,
    peer_ip: Option<std::net::IpAddr>,
) -> Result<auth::Identity, AuthError> {
    if !auth::has_token(auth)
        && let Some(sessions) = &chat.sessions
        && let Some(token) = auth::sessions::Sessions::cookie(
            &socket.req_parts().headers,
            auth::sessions::ACCESS_COOKIE,
        )
    {
        if !sessions.origin_allowed(&socket.req_parts().headers) {
            return Err(AuthError::new(
                "forbidden_origin",
                "palaver's session cookie only counts from an origin in --cors-origins",
            ));
        }
        let payload = serde_json::json!({ "token": token });
        return auth::authenticate_until(Some(&payload), chat.verifier.as_ref(), false);
    }
    if let Some(hook) = chat.auth_hook.as_ref().filter(|h| h.admits())
        && !auth::has_token(auth)
    {
        let parts = socket.req_parts();
        let request = auth::hook::HookRequest {
            namespace: &settings.path,
            auth,
            query: auth::hook::query_of(parts.uri.query()),
            headers: auth::hook::headers_of(&parts.headers),
            address: peer_ip.map(|ip| ip.to_string()),
        };
        return hook.admit(&request).await.map(auth::Identity::untimed);
    }
    auth::authenticate_until(auth, chat.verifier.as_ref(), settings.anonymous)
}

/// Runs before the client learns it is connected: decides who it is, reads its rooms, and registers every event
/// handler, so no event the client sends right after connecting can arrive before its handler exists. When the
/// store cannot be read, the connection is refused (`unavailable`) rather than connected into no rooms.
async fn admit<A: Adapter>(
    chat: &SharedChat<A>,
    socket: &SocketRef<A>,
    auth: Option<Json>,
    settings: Arc<NamespaceSettings>,
) -> Result<(), AuthError> {
    // Protocol v4 (socket.io-client 2.x) has no auth payload: its handshake query carries `token` and `name`.
    let auth = match socket.protocol() {
        ProtocolVersion::V4 => Some(auth::auth_from_query(socket.req_parts().uri.query())),
        ProtocolVersion::V5 => auth,
    };
    let peer_ip = socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    let auth::Identity {
        user,
        valid_until,
        admin,
    } = identify(chat, socket, auth.as_ref(), &settings, peer_ip)
        .await
        .inspect_err(|e| {
            tracing::info!(ns = %settings.path, code = e.code, reason = %e.message, "connection refused");
        })?;
    // A guest is new on every connection and has no rooms yet.
    let session = if user.anonymous {
        Session::default()
    } else {
        session_of(chat, &settings.path, &user.id)
            .await
            .map_err(|e| {
                tracing::warn!(ns = %settings.path, user = %user.id, error = %e, "connection refused: cannot read the user's rooms");
                AuthError::new("unavailable", "the message store is unavailable; reconnect shortly")
            })?
    };
    let conn = Arc::new(Conn::new(
        user,
        settings,
        peer_ip,
        &chat.limits,
        valid_until,
    ));
    conn.set_admin(admin);
    conn.reserve_connect_turn();
    socket.extensions.insert(conn.clone());
    socket.extensions.insert(session);
    socket.join(user_key(&conn.user.id));
    match &conn.ns.profile {
        Some(profile) => {
            crate::profile::events::register(profile, socket, chat, &conn, auth.as_ref())
        }
        None => register_events(socket, chat, &conn),
    }
    let on_disconnect = {
        let (chat, conn) = (chat.clone(), conn.clone());
        move |socket: SocketRef<A>, reason: DisconnectReason| {
            let (chat, conn) = (chat.clone(), conn.clone());
            async move { disconnected(chat, conn, socket, reason).await }
        }
    };
    socket.on_disconnect(on_disconnect);
    super::expiry::watch(socket.clone(), &conn, chat.limits.session_notice_secs);
    Ok(())
}

/// The user's rooms (as many as one socket may be in) and invitations.
async fn session_of<A: Adapter>(
    chat: &SharedChat<A>,
    ns: &str,
    user_id: &str,
) -> Result<Session, crate::store::StoreError> {
    let rooms = chat
        .store
        .user_rooms(ns, user_id, chat.limits.max_rooms_per_socket)
        .await?;
    let invitations = chat.store.invitations(ns, user_id).await?;
    Ok(Session { rooms, invitations })
}

/// After the client is connected: enter the user's rooms, then send `session`.
async fn connected<A: Adapter>(chat: SharedChat<A>, socket: SocketRef<A>) {
    let Some(conn) = socket.extensions.get::<Arc<Conn>>() else {
        return;
    };
    let session = socket.extensions.remove::<Session>().unwrap_or_default();
    tracing::info!(socket = %socket.id, ns = %conn.ns.path, user = %conn.user.id, name = %conn.user.name, "connected");
    if let Some(profile) = conn.ns.profile.clone() {
        crate::profile::events::connected(&profile, &chat, &socket, &conn, &session.rooms).await;
        if profile.session_event {
            emit_session(&socket, &conn, session);
        }
        conn.release_connect_turn();
        return;
    }
    for room in &session.rooms {
        presence::enter_room(&chat, &socket, &conn, &room.room.id).await;
    }
    emit_session(&socket, &conn, session);
    // `session` is queued first: the answers to the client's first events come after it.
    conn.release_connect_turn();
}

fn emit_session<A: Adapter>(socket: &SocketRef<A>, conn: &Conn, session: Session) {
    #[derive(Serialize)]
    struct SessionEvent<'a> {
        user: &'a User,
        #[serde(flatten)]
        session: Session,
        /// A namespace admin (a claim of the token): moderates every group room. Absent for everyone else.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        admin: bool,
    }
    let event = SessionEvent {
        user: &conn.user,
        session,
        admin: conn.admin(),
    };
    if let Err(e) = socket.emit("session", &event) {
        tracing::debug!(socket = %socket.id, error = %e, "could not send session");
    }
}

/// Removes the socket from presence and says `leave` where it was the user's last socket.
async fn disconnected<A: Adapter>(
    chat: SharedChat<A>,
    conn: Arc<Conn>,
    socket: SocketRef<A>,
    reason: DisconnectReason,
) {
    // Ends the watch over the socket's token.
    conn.valid_until.send_replace(None);
    tracing::info!(socket = %socket.id, ns = %conn.ns.path, user = %conn.user.id, %reason, "disconnected");
    // Events still queued for this socket finish first (their writes commit), then presence is cleaned up.
    let (previous, done) = conn.take_turn();
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    for left in chat.presence.exit_all(&conn.user.id, socket.id).await {
        let kind = presence::NoticeKind::Leave(left.version);
        presence::announce(&chat, &socket, &conn, &left.room, kind, &conn.user()).await;
    }
    drop(done);
}
