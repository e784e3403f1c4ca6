//! Who is online in which room, `room:notice` on a user's first arrival and last departure, `presence:list`
//! and `typing`.
//!
//! Presence counts users, not sockets: a user with three tabs in a room is one member online, announced once
//! when the first tab enters and once when the last one leaves. Each node keeps its own sockets in a
//! [`LocalPresence`]; with several nodes, [`ClusterPresence`] in Redis makes "first" and "last" cluster-wide, and
//! the local registry answers alone while Redis is away.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use chrono::Utc;
use serde::Serialize;
use socketioxide::{adapter::Adapter, extract::SocketRef, socket::Sid};

use super::{Call, Conn, Reply, payload, room_key};
use crate::{auth::User, cluster::presence::ClusterPresence, error::ChatResult};

/// (namespace, room id)
type RoomRef = (String, String);

#[derive(Default)]
struct Online {
    /// Per room, per user id: the user and the sockets through which they are in the room.
    rooms: HashMap<RoomRef, HashMap<String, (User, HashSet<Sid>)>>,
    /// Per socket, the rooms it is in, so a disconnect can clean up without asking anyone.
    sockets: HashMap<Sid, HashSet<RoomRef>>,
}

/// This node's registry of online users per room.
#[derive(Default)]
pub struct LocalPresence {
    online: Mutex<Online>,
}

impl LocalPresence {
    fn lock(&self) -> MutexGuard<'_, Online> {
        self.online.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the socket in the room: `None` if it already was, else whether it is the user's first socket
    /// there on this node.
    pub fn enter(&self, ns: &str, room: &str, user: &User, sid: Sid) -> Option<bool> {
        let key = (ns.to_owned(), room.to_owned());
        let mut online = self.lock();
        online.sockets.entry(sid).or_default().insert(key.clone());
        let (_, sockets) = online
            .rooms
            .entry(key)
            .or_default()
            .entry(user.id.clone())
            .or_insert_with(|| (user.clone(), HashSet::new()));
        sockets.insert(sid).then_some(sockets.len() == 1)
    }

    /// Removes the socket from the room: `None` if it was not there, else whether it was the user's last socket
    /// there on this node.
    pub fn exit(&self, ns: &str, room: &str, user_id: &str, sid: Sid) -> Option<bool> {
        let key = (ns.to_owned(), room.to_owned());
        let mut online = self.lock();
        if let Some(rooms) = online.sockets.get_mut(&sid) {
            rooms.remove(&key);
            if rooms.is_empty() {
                online.sockets.remove(&sid);
            }
        }
        Self::remove(&mut online, &key, user_id, sid)
    }

    /// Removes a disconnected socket everywhere: each room it was in, and whether it was the user's last socket
    /// there on this node.
    pub fn exit_all(&self, user_id: &str, sid: Sid) -> Vec<(RoomRef, bool)> {
        let mut online = self.lock();
        let rooms = online.sockets.remove(&sid).unwrap_or_default();
        rooms
            .into_iter()
            .filter_map(|key| {
                let last = Self::remove(&mut online, &key, user_id, sid)?;
                Some((key, last))
            })
            .collect()
    }

    fn remove(online: &mut Online, key: &RoomRef, user_id: &str, sid: Sid) -> Option<bool> {
        let users = online.rooms.get_mut(key)?;
        let (_, sockets) = users.get_mut(user_id)?;
        if !sockets.remove(&sid) {
            return None;
        }
        let last = sockets.is_empty();
        if last {
            users.remove(user_id);
        }
        if users.is_empty() {
            online.rooms.remove(key);
        }
        Some(last)
    }

    /// Keeps only the entries for which `keep(ns, room, socket)` holds: sockets can be taken out of a room by
    /// another node (a `room:leave` through the adapter), which this registry does not see happen.
    pub fn retain(&self, keep: &dyn Fn(&str, &str, Sid) -> bool) {
        let mut online = self.lock();
        let Online { rooms, sockets } = &mut *online;
        rooms.retain(|(ns, room), users| {
            users.retain(|_, (_, sids)| {
                sids.retain(|sid| {
                    let kept = keep(ns, room, *sid);
                    if !kept && let Some(of_socket) = sockets.get_mut(sid) {
                        of_socket.remove(&(ns.clone(), room.clone()));
                    }
                    kept
                });
                !sids.is_empty()
            });
            !users.is_empty()
        });
        sockets.retain(|_, of_socket| !of_socket.is_empty());
    }

    /// Every (namespace, room, user, sockets on this node) entry.
    pub fn snapshot(&self) -> Vec<(String, String, User, usize)> {
        let online = self.lock();
        online
            .rooms
            .iter()
            .flat_map(|((ns, room), users)| {
                users.values().map(move |(user, sockets)| {
                    (ns.clone(), room.clone(), user.clone(), sockets.len())
                })
            })
            .collect()
    }

    /// Users online in the room, each once.
    pub fn users(&self, ns: &str, room: &str) -> Vec<User> {
        let key = (ns.to_owned(), room.to_owned());
        let online = self.lock();
        let mut users: Vec<User> = online
            .rooms
            .get(&key)
            .map(|users| users.values().map(|(user, _)| user.clone()).collect())
            .unwrap_or_default();
        users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        users
    }
}

/// Presence as the chat sees it: cluster-wide when Redis is configured and up, this node's otherwise.
pub struct Presence {
    pub local: Arc<LocalPresence>,
    pub cluster: Option<Arc<ClusterPresence>>,
}

impl Presence {
    pub fn local_only() -> Self {
        Self {
            local: Arc::new(LocalPresence::default()),
            cluster: None,
        }
    }

    fn live_cluster(&self) -> Option<&ClusterPresence> {
        self.cluster.as_deref().filter(|c| c.is_up())
    }

    /// Records the socket; `true` when the user was not in the room anywhere before.
    pub async fn enter(&self, ns: &str, room: &str, user: &User, sid: Sid) -> bool {
        let Some(first_here) = self.local.enter(ns, room, user, sid) else {
            return false;
        };
        match self.live_cluster() {
            Some(cluster) => cluster.enter(ns, room, user).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "presence enter fell back to this node");
                first_here
            }),
            None => first_here,
        }
    }

    /// Removes the socket; `true` when it was the user's last socket in the room anywhere.
    pub async fn exit(&self, ns: &str, room: &str, user_id: &str, sid: Sid) -> bool {
        let Some(last_here) = self.local.exit(ns, room, user_id, sid) else {
            return false;
        };
        self.exit_cluster(ns, room, user_id, last_here).await
    }

    async fn exit_cluster(&self, ns: &str, room: &str, user_id: &str, last_here: bool) -> bool {
        match self.live_cluster() {
            Some(cluster) => cluster.exit(ns, room, user_id).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "presence exit fell back to this node");
                last_here
            }),
            None => last_here,
        }
    }

    /// Removes a disconnected socket everywhere; returns the rooms where it was the user's last socket.
    pub async fn exit_all(&self, user_id: &str, sid: Sid) -> Vec<RoomRef> {
        let mut left = Vec::new();
        for ((ns, room), last_here) in self.local.exit_all(user_id, sid) {
            if self.exit_cluster(&ns, &room, user_id, last_here).await {
                left.push((ns, room));
            }
        }
        left
    }

    /// The user left the room on every socket and every node.
    pub async fn forget_user(&self, ns: &str, room: &str, user_id: &str) {
        if let Some(cluster) = self.live_cluster()
            && let Err(e) = cluster.forget_user(ns, room, user_id).await
        {
            tracing::debug!(error = %e, "could not forget a user's presence in Redis");
        }
    }

    /// Users online in the room, each once.
    pub async fn users(&self, ns: &str, room: &str) -> Vec<User> {
        if let Some(cluster) = self.live_cluster() {
            match cluster.users(ns, room).await {
                Ok(users) => return users,
                Err(e) => tracing::debug!(error = %e, "presence list fell back to this node"),
            }
        }
        self.local.users(ns, room)
    }
}

#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    Join,
    Leave,
}

/// Tells the others in the room that a user arrived or left.
pub async fn announce<A: Adapter>(
    link: Option<&crate::cluster::RedisLink>,
    socket: &SocketRef<A>,
    room: &str,
    kind: NoticeKind,
    user: &User,
) {
    #[derive(Serialize)]
    struct Notice<'a> {
        room: &'a str,
        kind: NoticeKind,
        user: &'a User,
        at: chrono::DateTime<Utc>,
    }
    let notice = Notice {
        room,
        kind,
        user,
        at: Utc::now(),
    };
    let key = room_key(room);
    crate::cluster::deliver(link, || socket.to(key.clone()), "room:notice", &notice).await;
}

/// The socket enters a chat room: Socket.IO room, presence, and a `join` notice if the user is new there.
pub async fn enter_room<A: Adapter>(
    chat: &super::Chat<A>,
    socket: &SocketRef<A>,
    conn: &Conn,
    room: &str,
) {
    if in_room(socket, room) {
        return;
    }
    let ns = &conn.ns.path;
    // The registry may still hold this socket if another node took it out of the room (room:leave).
    chat.presence.local.exit(ns, room, &conn.user.id, socket.id);
    socket.join(room_key(room));
    if chat.presence.enter(ns, room, &conn.user, socket.id).await {
        announce(
            chat.redis.as_ref(),
            socket,
            room,
            NoticeKind::Join,
            &conn.user,
        )
        .await;
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

/// `typing { room }`: relayed, volatile, to the others in the room.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            name: id.into(),
            anonymous: false,
        }
    }

    #[test]
    fn users_are_announced_once_per_room() {
        let presence = LocalPresence::default();
        let (tab1, tab2) = (Sid::new(), Sid::new());
        let ada = user("ada");
        assert_eq!(presence.enter("/", "r", &ada, tab1), Some(true));
        assert_eq!(presence.enter("/", "r", &ada, tab2), Some(false));
        assert_eq!(
            presence.enter("/", "r", &ada, tab2),
            None,
            "re-entering is not a new arrival"
        );
        assert_eq!(presence.users("/", "r"), vec![ada.clone()]);
        assert_eq!(
            presence.snapshot(),
            vec![("/".into(), "r".into(), ada.clone(), 2)]
        );
        assert_eq!(presence.exit("/", "r", "ada", tab1), Some(false));
        assert_eq!(presence.exit("/", "r", "ada", tab1), None);
        assert_eq!(
            presence.exit_all("ada", tab2),
            vec![(("/".to_owned(), "r".to_owned()), true)]
        );
        assert!(presence.users("/", "r").is_empty());
    }

    #[test]
    fn retain_drops_sockets_taken_out_elsewhere() {
        let presence = LocalPresence::default();
        let (kept, gone) = (Sid::new(), Sid::new());
        presence.enter("/", "r", &user("a"), kept);
        presence.enter("/", "r", &user("b"), gone);
        presence.enter("/", "s", &user("b"), gone);
        presence.retain(&|_, room, sid| sid != gone || room == "s");
        assert_eq!(presence.users("/", "r"), vec![user("a")]);
        assert_eq!(presence.users("/", "s"), vec![user("b")]);
        assert_eq!(presence.exit("/", "r", "b", gone), None);
        assert_eq!(
            presence.exit_all("b", gone),
            vec![(("/".to_owned(), "s".to_owned()), true)]
        );
    }

    #[test]
    fn namespaces_are_separate() {
        let presence = LocalPresence::default();
        let sid = Sid::new();
        assert_eq!(presence.enter("/", "r", &user("a"), sid), Some(true));
        assert!(presence.users("/game", "r").is_empty());
    }
}
