//! `room:create`, `room:join`, `room:leave` and `rooms:list`, and the per-user room-creation quota.

use socketioxide::{adapter::Adapter, extract::SocketRef};

use super::{
    Call, Chat, Conn, Reply, invitations, payload,
    presence::{self, in_room},
    recovery, room_key, user_key,
};
use crate::cluster;
use crate::{
    error::{ChatError, ChatResult},
    store::{Author, HistoryQuery, Message, Room, RoomKind, Visibility},
};

pub fn not_in_room(room: &str) -> ChatError {
    ChatError::forbidden(format!("join room {room:?} first (room:join)"))
}

/// Private rooms are for members; public rooms can be read by anyone in the namespace.
pub async fn authorize_member<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &str,
) -> ChatResult<()> {
    if in_room(socket, room) {
        return Ok(());
    }
    let ns = &conn.ns.path;
    let found = chat
        .store
        .room(ns, room)
        .await?
        .ok_or_else(|| ChatError::room_not_found(room))?;
    if found.visibility == Visibility::Public
        || chat.store.is_member(ns, room, &conn.user.id).await?
    {
        Ok(())
    } else {
        Err(ChatError::forbidden(format!(
            "room {room:?} is private and you are not a member"
        )))
    }
}

/// Refuses a new room when the socket already is in as many rooms as allowed.
fn check_room_budget<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    room: &str,
) -> ChatResult<()> {
    let max = chat.limits.max_rooms_per_socket;
    let joined = socket
        .rooms()
        .iter()
        .filter(|r| r.starts_with("r:"))
        .count();
    if !in_room(socket, room) && joined >= max {
        return Err(ChatError::too_large(format!(
            "this connection is already in {joined} rooms, the most allowed ({max}); leave one first"
        )));
    }
    Ok(())
}

/// May this user create one more room? Signed-in users have `--room-quota` a day, counted in the store so that
/// it holds across nodes (two creations racing on two sockets may both pass: the quota is a brake, not a
/// ledger). Guests get a new id on every connection, so theirs is counted per source address on this node.
async fn check_creation_quota<A: Adapter>(chat: &Chat<A>, conn: &Conn) -> ChatResult<()> {
    let quota = chat.limits.room_quota;
    if conn.user.anonymous {
        if !chat.limits.guests_create_rooms {
            return Err(ChatError::forbidden(
                "guests cannot create rooms on this server; sign in, or join an existing room",
            ));
        }
        if let Some(ip) = conn.peer_ip
            && chat.guest_creations.check_key(&guest_network(ip)).is_err()
        {
            return Err(ChatError::rate_limited(format!(
                "guests from your address have created {quota} rooms today, the most allowed"
            )));
        }
        return Ok(());
    }
    let since = crate::store::now() - chrono::Duration::hours(24);
    let created = chat
        .store
        .rooms_created_since(&conn.ns.path, &conn.user.id, since)
        .await?;
    if created >= i64::from(quota) {
        return Err(ChatError::rate_limited(format!(
            "you have created {created} rooms in the last 24 hours, the most allowed ({quota})"
        )));
    }
    Ok(())
}

/// The address a guest's creation quota is counted against: the address itself for IPv4, its /64 network for
/// IPv6, since one host commonly holds a whole /64.
pub fn guest_network(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(prefix.into())
        }
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// `room:create { name, visibility?, members? }` → `{ room }`. The creator joins; `members` are invited.
pub async fn create<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomCreate = payload::parse(
        "room:create",
        "{ name: \"team-a\", visibility: \"private\", members: [\"user-id\"] }",
        call.payload.take(),
    )?;
    let id = payload::new_room_id(&p.name)?;
    let invited = payload::invitees(&p.members, "members", &call.conn.user.id)?;
    check_room_budget(&call.chat, &call.socket, id)?;
    check_creation_quota(&call.chat, &call.conn).await?;
    super::blocks::check_invitees(&call.chat, call.ns(), &call.conn.user.id, &invited).await?;
    let room = Room {
        id: id.to_owned(),
        name: id.to_owned(),
        kind: RoomKind::Group,
        visibility: p.visibility,
        created_at: crate::store::now(),
    };
    let me = call.conn.user.author();
    if !call
        .chat
        .store
        .create_room(call.ns(), &room, &me, &invited)
        .await?
    {
        return Err(ChatError::bad_request(format!(
            "room {id:?} already exists; join it with room:join"
        )));
    }
    presence::enter_room(&call.chat, &call.socket, &call.conn, id).await;
    let ids: Vec<String> = invited.into_iter().map(|a| a.id).collect();
    invitations::notify(&call, &room, &ids).await;
    Ok(Reply::Room { room })
}

/// `room:join { room, limit?, since?, rev? }` → `{ room, history, hasMore, members, rev, changes?, role? }`.
/// Joining a private room accepts the user's invitation to it.
pub async fn join<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomJoin = payload::parse(
        "room:join",
        "{ room: \"general\", limit: 50 }",
        call.payload.take(),
    )?;
    let id = payload::room_id(&p.room)?;
    let since = p.since.map(payload::since).transpose()?;
    let rev = p.rev.map(payload::rev).transpose()?;
    let request = JoinRequest {
        id,
        name: id,
        limit: payload::limit(p.limit)?,
        since,
    };
    let (chat, conn) = (&call.chat, &call.conn);
    // The room's revision before its history: the cursor of the changes the client will need (see `recovery`).
    let before = chat
        .store
        .room_state(call.ns(), id, &conn.user.id)
        .await?
        .map_or(0, |state| state.rev);
    let joined = join_room(chat, &call.socket, conn, request).await?;
    let (changes, rev) = match (since, rev) {
        (Some(since), Some(after)) => {
            let (page, next) = recovery::changed(chat, conn, id, since, after, before).await?;
            (Some(page.messages), next)
        }
        _ => (None, before),
    };
    let role = match joined.room.kind {
        RoomKind::Group => {
            Some(super::moderation::role_of(&chat.store, call.ns(), id, &conn.user.id).await?)
        }
        RoomKind::Dm => None,
    };
    Ok(Reply::Joined {
        room: joined.room,
        history: joined.history,
        has_more: joined.has_more,
        members: joined.members,
        truncated: joined.truncated,
        rev,
        changes,
        role,
    })
}

/// What a socket asks for when it joins a room.
pub struct JoinRequest<'a> {
    pub id: &'a str,
    /// The room's name if this join creates it (a profile's free-text name; natively the id).
    pub name: &'a str,
    /// Messages of history to return (0: none).
    pub limit: u32,
    /// The last seq the client holds: return every later message instead of the latest page.
    pub since: Option<i64>,
}

/// What joining returns: the room, its history as asked, and who is online.
pub struct Joined {
    pub room: Room,
    pub history: Vec<Message>,
    pub has_more: bool,
    pub members: Vec<crate::auth::User>,
    pub truncated: Option<bool>,
}

/// Turns for the joins that find no room and would create it: one lock per slot, a room's slot by its id's
/// hash. A rush of joins into a new room (a class behind one NAT opening the same link) then has one of them
/// create it and spend a creation from the quota; the others wait, find the room, and join it. On several nodes
/// two may still both create (`ensure_room` is idempotent) and both spend: the quota is a brake, not a ledger.
pub struct CreationTurns([tokio::sync::Mutex<()>; 64]);

impl Default for CreationTurns {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl CreationTurns {
    async fn take(&self, ns: &str, room: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.0[slot(ns, room, self.0.len())].lock().await
    }
}

/// A room's slot among `slots` (by a fixed hash of namespace and id).
fn slot(ns: &str, room: &str, slots: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    (ns, room).hash(&mut hasher);
    // The remainder is below `slots`, a usize.
    (hasher.finish() % slots as u64) as usize
}

/// Gates between the sends of a room and a socket that replays its history on connect (a profile's
/// `replay = "on_connect"`), per room on this node. A send holds its room's gate shared from before its commit
/// to after its broadcast; the replaying socket takes it alone to catch up on what was committed during its
/// replay and to enter the room. Then every message reaches the socket exactly once and in order: those
/// committed before, by the replay (their broadcasts are over); those after, live. A send on another node does
/// not take this node's gate: there, a message committed in the instant of the entry may arrive twice.
pub struct ReplayGates([tokio::sync::RwLock<()>; 64]);

impl Default for ReplayGates {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::RwLock::new(())))
    }
}

impl ReplayGates {
    /// A send's pass: shared with the other sends.
    pub async fn send(&self, ns: &str, room: &str) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.0[slot(ns, room, self.0.len())].read().await
    }

    /// A replaying socket's entry: no send of the room is between its commit and its broadcast meanwhile.
    pub async fn enter(&self, ns: &str, room: &str) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.0[slot(ns, room, self.0.len())].write().await
    }
}

/// A public room created by its first join, if the quota allows: see [`CreationTurns`].
async fn create_on_join<A: Adapter>(
    chat: &Chat<A>,
    conn: &Conn,
    id: &str,
    name: &str,
) -> ChatResult<Room> {
    let ns = conn.ns.path.as_str();
    let _turn = chat.creation_turns.take(ns, id).await;
    if let Some(room) = chat.store.room(ns, id).await? {
        return Ok(room);
    }
    check_creation_quota(chat, conn).await?;
    let room = Room {
        id: id.to_owned(),
        name: name.to_owned(),
        kind: RoomKind::Group,
        visibility: Visibility::Public,
        created_at: crate::store::now(),
    };
    Ok(chat.store.ensure_room(ns, &room, &conn.user.id).await?.0)
}

/// The one join operation (native `room:join` and every profile's join rule): creates a public room that does
/// not exist (when allowed), checks access, records the membership, enters the socket, reads history.
pub async fn join_room<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    request: JoinRequest<'_>,
) -> ChatResult<Joined> {
    let JoinRequest {
        id,
        name,
        limit,
        since,
    } = request;
    let ns = conn.ns.path.as_str();
    check_room_budget(chat, socket, id)?;
    let room = match chat.store.room(ns, id).await? {
        Some(room) => room,
        None if chat.limits.auto_create_rooms && !id.starts_with(payload::DM_PREFIX) => {
            create_on_join(chat, conn, id, name).await?
        }
        None => return Err(ChatError::room_not_found(id)),
    };
    if room.kind == RoomKind::Group {
        super::moderation::check_not_banned(chat, ns, id, &conn.user.id).await?;
    }
    if room.visibility == Visibility::Private
        && !chat.store.is_member(ns, id, &conn.user.id).await?
        && !chat.store.is_invited(ns, id, &conn.user.id).await?
    {
        return Err(ChatError::forbidden(format!(
            "room {id:?} is private and you are not a member"
        )));
    }
    // A guest's id lives only as long as its connection: a membership of a public room would never be used
    // again, and would only grow the table.
    if !(conn.user.anonymous && room.visibility == Visibility::Public) {
        chat.store.add_member(ns, id, &conn.user().author()).await?;
    }
    // Enter before reading history: a message committed in between then arrives as an event (the client
    // drops it by seq if history has it too) instead of being missed.
    presence::enter_room(chat, socket, conn, id).await;
    let (history, has_more, truncated) = match since {
        Some(since) => {
            let missed = recovery::missed(chat, conn, id, since).await?;
            (missed.messages, since > 0, Some(missed.has_more))
        }
        None if conn.ns.history && limit > 0 => {
            let page = chat
                .store
                .history_for(ns, id, HistoryQuery::latest(limit), &conn.user.id)
                .await?;
            (page.messages, page.has_more, None)
        }
        None => (Vec::new(), false, None),
    };
    Ok(Joined {
        room,
        history,
        has_more,
        members: chat.presence.users(ns, id).await,
        truncated,
    })
}

/// `room:leave { room }` → `{}`: the user leaves, on every socket.
pub async fn leave<A: Adapter>(mut call: Call<A>) -> ChatResult<Reply> {
    let p: payload::RoomOnly =
        payload::parse("room:leave", "{ room: \"general\" }", call.payload.take())?;
    let id = payload::room_id(&p.room)?;
    leave_room(&call.chat, &call.socket, &call.conn, id).await?;
    Ok(Reply::Done {})
}

/// The one leave operation: the user leaves the room on every socket and node, and the room is told.
pub async fn leave_room<A: Adapter>(
    chat: &Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    id: &str,
) -> ChatResult<()> {
    let ns = conn.ns.path.as_str();
    // Leaving a room one was only invited to declines the invitation: the user was never in it, so nobody is told.
    if chat.store.is_invited(ns, id, &conn.user.id).await? {
        chat.store.decline(ns, id, &conn.user.id).await?;
        return Ok(());
    }
    let Some(version) = remove_user(chat, ns, id, &conn.user.id).await? else {
        return Err(ChatError::not_found(format!("you are not in room {id:?}")));
    };
    if conn.announced() {
        let kind = presence::NoticeKind::Leave(version);
        presence::announce(chat, socket, conn, id, kind, &conn.user()).await;
    }
    Ok(())
}

/// The one removal from a room (`room:leave`, and the server API's member removal): the membership, every socket
/// of the user in the room on every node, and their presence there. `Some(notice version)` when the user was in
/// it (a member, or a socket inside); `None` when not.
pub async fn remove_user<A: Adapter>(
    chat: &Chat<A>,
    ns: &str,
    id: &str,
    user_id: &str,
) -> ChatResult<Option<u64>> {
    let removed = chat.store.remove_member(ns, id, user_id).await?;
    let (key, theirs) = (room_key(id), user_key(user_id));
    let mut was_in = false;
    for socket in chat
        .io
        .of(ns)
        .map(|op| op.within(theirs.clone()).sockets())
        .unwrap_or_default()
    {
        if in_room(&socket, id) {
            was_in = true;
            socket.leave(key.clone());
        }
    }
    if let Some(op) = chat.io.of(ns) {
        let operation = op.to(theirs).leave(key);
        cluster::on_every_node(chat.redis.as_ref(), "room:leave", operation).await;
    }
    let version = chat.presence.forget(ns, id, user_id).await;
    Ok((removed || was_in).then_some(version))
}

/// The server API's member addition: the membership (the host's backend decides, no invitation), and every
/// online socket of the user in the room. Sockets on this node enter it fully (presence, a `join` notice);
/// sockets on other nodes receive the room's messages at once and show in its presence from their next connect.
pub async fn add_user<A: Adapter>(
    chat: &Chat<A>,
    ns: &str,
    id: &str,
    user: &Author,
) -> ChatResult<()> {
    chat.store.add_member(ns, id, user).await?;
    let theirs = user_key(&user.id);
    for socket in chat
        .io
        .of(ns)
        .map(|op| op.within(theirs.clone()).sockets())
        .unwrap_or_default()
    {
        if let Some(conn) = socket.extensions.get::<std::sync::Arc<Conn>>() {
            presence::enter_room(chat, &socket, &conn, id).await;
        }
    }
    if let Some(op) = chat.io.of(ns) {
        let operation = op.to(theirs).join(room_key(id));
        cluster::on_every_node(chat.redis.as_ref(), "member join", operation).await;
    }
    Ok(())
}

/// `rooms:list {}` → `{ rooms }`
pub async fn list<A: Adapter>(call: Call<A>) -> ChatResult<Reply> {
    if !call.payload.is_object() {
        return Err(ChatError::bad_request(
            "rooms:list takes one object as payload: {}",
        ));
    }
    let rooms = call
        .chat
        .store
        .list_rooms(call.ns(), &call.conn.user.id, true)
        .await?;
    Ok(Reply::Rooms { rooms })
}

#[cfg(test)]
mod tests {
    use super::guest_network;

    #[test]
    fn guests_count_per_ipv4_address_and_per_ipv6_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert_eq!(guest_network(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(
            guest_network(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            guest_network(ip("2001:db8:1:2:ffff:1:2:3")),
            guest_network(ip("2001:db8:1:2::9"))
        );
        assert_ne!(guest_network(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(guest_network(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
    }
}
