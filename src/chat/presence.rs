//! The chat's side of presence: `room:notice` on a user's first arrival and last departure, `presence:list` and
//! `typing`. Who is online is kept by [`crate::presence`]; this file only says it.
//!
//! Presence counts users, not sockets: a user with three tabs in a room is one member online, announced once
//! when the first tab enters and once when the last one leaves. Every notice carries the room's `version`, which
//! increases per room cluster-wide, so clients can order notices that come from different nodes.

use chrono::Utc;
use serde::Serialize;
use socketioxide::{adapter::Adapter, extract::SocketRef};

use super::{Call, Chat, Conn, Reply, payload, room_key};
use crate::{auth::User, error::ChatResult};

/// What a `room:notice` says, with the room's version for the change (see [`crate::presence`]).
#[derive(Clone, Copy, Debug)]
pub enum NoticeKind {
    Join(u64),
    Leave(u64),
}

/// Tells the others in the room that a user arrived or left: natively as `room:notice`, in a profile
/// namespace as the app's own event, if it has one.
pub async fn announce<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &str,
    kind: NoticeKind,
    user: &User,
) {
    if let Some(profile) = &conn.ns.profile {
        crate::profile::events::deliver_notice(profile, chat, socket, conn, room, kind, user).await;
        return;
    }
    let key = room_key(room);
    let notice = Notice::new(room, kind, user);
    crate::cluster::deliver(
        chat.redis.as_ref(),
        || socket.to(key.clone()),
        "room:notice",
        &notice,
    )
    .await;
}

/// Tells everyone in the room that a user arrived or left through the server API, as `room:notice`. (A profile
/// namespace's notices are written for a sending socket; from the server API it gets none.)
pub async fn announce_from_server<A: Adapter>(
    chat: &Chat<A>,
    ns: &crate::config::NamespaceSettings,
    room: &str,
    kind: NoticeKind,
    user: &User,
) {
    if ns.profile.is_some() {
        return;
    }
    let key = room_key(room);
    let notice = Notice::new(room, kind, user);
    let target = || super::messages::server_target(chat, ns, &key);
    crate::cluster::deliver(chat.redis.as_ref(), target, "room:notice", &notice).await;
}

/// `room:notice { room, kind, user, at, version }`.
#[derive(Serialize)]
struct Notice<'a> {
    room: &'a str,
    kind: &'static str,
    user: &'a User,
    at: chrono::DateTime<Utc>,
    version: u64,
}

impl<'a> Notice<'a> {
    fn new(room: &'a str, kind: NoticeKind, user: &'a User) -> Self {
        let (kind, version) = match kind {
            NoticeKind::Join(version) => ("join", version),
            NoticeKind::Leave(version) => ("leave", version),
        };
        Self {
            room,
            kind,
            user,
            at: Utc::now(),
            version,
        }
    }
}

/// The socket enters a chat room: Socket.IO room, presence, and a `join` notice if the user is new there. A
/// socket that is not announced yet (a profile client that has not given its name) only listens.
pub async fn enter_room<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &str,
) {
    if in_room(socket, room) {
        return;
    }
    socket.join(room_key(room));
    if conn.announced() {
        arrive(chat, socket, conn, room).await;
    }
}

/// The user becomes present in a room the socket is in, and the room is told if the user is new there.
async fn arrive<A: Adapter>(chat: &Chat<A>, socket: &SocketRef<A>, conn: &Conn, room: &str) {
    let user = conn.user();
    if let Some(version) = chat
        .presence
        .enter(&conn.ns.path, room, &user, socket.id)
        .await
    {
        announce(chat, socket, conn, room, NoticeKind::Join(version), &user).await;
    }
}

/// A listening socket has just been announced (its client gave its name): it becomes present in every room it
/// is in.
pub async fn announce_arrival<A: Adapter>(chat: &Chat<A>, socket: &SocketRef<A>, conn: &Conn) {
    let rooms: Vec<String> = socket
        .rooms()
        .iter()
        .filter_map(|r| r.strip_prefix("r:").map(str::to_owned))
        .collect();
    for room in rooms {
        arrive(chat, socket, conn, &room).await;
    }
}

/// Whether this socket has entered the room.
pub fn in_room<A: Adapter>(socket: &SocketRef<A>, room: &str) -> bool {
    let key = room_key(room);
    socket.rooms().iter().any(|r| *r == key)
}

/// `presence:list { room }` → `{ users }`
pub async fn list<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomOnly = payload::parse(
        "presence:list",
        "{ room: \"general\" }",
        call.payload.take(),
    )?;
    let room = payload::room_id(&p.room)?;
    super::rooms::authorize_member(&call.chat, &call.socket, &call.conn, room).await?;
    Ok(Reply::Users {
        users: call.chat.presence.users(&call.conn.ns.path, room).await,
    })
}

/// `typing { room }`: relayed, volatile, to the others in the room (not in a DM closed by a block).
pub async fn typing<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    #[derive(Serialize)]
    struct Typing<'a> {
        room: &'a str,
        user: &'a User,
    }
    let p: payload::RoomOnly =
        payload::parse("typing", "{ room: \"general\" }", call.payload.take())?;
    let room = payload::room_id(&p.room)?;
    if !in_room(&call.socket, room) {
        return Err(super::rooms::not_in_room(room));
    }
    // A closed DM relays no typing either way; the sender is not told, so the block stays unrevealed.
    if room.starts_with(payload::DM_PREFIX)
        && call
            .chat
            .store
            .dm_blocker(&call.conn.ns.path, room, &call.conn.user.id)
            .await?
            .is_some()
    {
        return Ok(Reply::Done {});
    }
    let event = Typing {
        room,
        user: &call.conn.user,
    };
    // Volatile: a typing hint that cannot be sent right now is worth nothing later.
    let key = room_key(room);
    crate::cluster::deliver(
        call.chat.redis.as_ref(),
        || call.socket.to(key.clone()).volatile(),
        "typing",
        &event,
    )
    .await;
    Ok(Reply::Done {})
}
