//! A socket's life: authentication and handler registration before the client is told it is connected,
//! then `session` and re-entry into the user's rooms, and cleanup on disconnect.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value as Json;
use socketioxide::{
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
    store::RoomSummary,
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
    let middleware = move |socket: SocketRef<A>, TryData(auth): TryData<Json>| {
        let (chat, settings) = (for_middleware.clone(), settings.clone());
        async move { admit(&chat, &socket, auth.ok(), settings) }
    };
    let on_connect = move |socket: SocketRef<A>| {
        let chat = for_connect.clone();
        async move { connected(chat, socket).await }
    };
    chat.io.ns(path, on_connect.with(middleware))
}

/// Runs before the client learns it is connected: decides who it is and registers every event handler, so no
/// event the client sends right after connecting can arrive before its handler exists.
fn admit<A: Adapter>(
    chat: &SharedChat<A>,
    socket: &SocketRef<A>,
    auth: Option<Json>,
    settings: Arc<NamespaceSettings>,
) -> Result<(), AuthError> {
    let user = auth::authenticate(auth.as_ref(), chat.verifier.as_ref(), settings.anonymous)
        .inspect_err(|e| {
            tracing::info!(ns = %settings.path, code = e.code, reason = %e.message, "connection refused");
        })?;
    let conn = Arc::new(Conn::new(user, settings, &chat.limits));
    conn.reserve_connect_turn();
    socket.extensions.insert(conn.clone());
    socket.join(user_key(&conn.user.id));
    register_events(socket, chat, &conn);
    let on_disconnect = {
        let (chat, conn) = (chat.clone(), conn.clone());
        move |socket: SocketRef<A>, reason: DisconnectReason| {
            let (chat, conn) = (chat.clone(), conn.clone());
            async move { disconnected(chat, conn, socket, reason).await }
        }
    };
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// After the client is connected: re-enter the user's rooms, then send `session`.
async fn connected<A: Adapter>(chat: SharedChat<A>, socket: SocketRef<A>) {
    #[derive(Serialize)]
    struct Session<'a> {
        user: &'a User,
        rooms: Vec<RoomSummary>,
    }
    let Some(conn) = socket.extensions.get::<Arc<Conn>>() else {
        return;
    };
    tracing::info!(socket = %socket.id, ns = %conn.ns.path, user = %conn.user.id, name = %conn.user.name, "connected");
    let ns = conn.ns.path.as_str();
    let mut rooms = Vec::new();
    if !conn.user.anonymous {
        match chat
            .store
            .user_rooms(ns, &conn.user.id, chat.limits.max_rooms_per_socket)
            .await
        {
            Ok(list) => {
                for room in &list {
                    presence::enter_room(&chat, &socket, &conn, &room.room.id).await;
                }
                rooms = list;
            }
            Err(e) => tracing::warn!(user = %conn.user.id, error = %e, "could not re-enter rooms"),
        }
    }
    // `session` lists the user's own rooms only: public rooms can be many, and every connect would carry them
    // all (`rooms:list` has them). A guest is new on every connection and has none.
    if !conn.user.anonymous {
        match chat.store.list_rooms(ns, &conn.user.id, false).await {
            Ok(list) => rooms = list,
            Err(e) => {
                tracing::warn!(user = %conn.user.id, error = %e, "could not list rooms for session")
            }
        }
    }
    let session = Session {
        user: &conn.user,
        rooms,
    };
    if let Err(e) = socket.emit("session", &session) {
        tracing::debug!(socket = %socket.id, error = %e, "could not send session");
    }
    // `session` is queued first: the answers to the client's first events come after it.
    conn.release_connect_turn();
}

/// Removes the socket from presence and says `leave` where it was the user's last socket.
async fn disconnected<A: Adapter>(
    chat: SharedChat<A>,
    conn: Arc<Conn>,
    socket: SocketRef<A>,
    reason: DisconnectReason,
) {
    tracing::info!(socket = %socket.id, ns = %conn.ns.path, user = %conn.user.id, %reason, "disconnected");
    // Events still queued for this socket finish first (their writes commit), then presence is cleaned up.
    let (previous, done) = conn.take_turn();
    if let Some(previous) = previous {
        let _ = previous.await;
    }
    for left in chat.presence.exit_all(&conn.user.id, socket.id).await {
        let kind = presence::NoticeKind::Leave(left.version);
        presence::announce(chat.redis.as_ref(), &socket, &left.room, kind, &conn.user).await;
    }
    drop(done);
}
