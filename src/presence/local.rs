//! This node's own sockets, per room: the registry that answers alone while Redis is away and that this node's
//! Redis entries are rebuilt from when it is back. Only the [`Presence`](super::Presence) facade writes it.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use socketioxide::socket::Sid;

use crate::auth::User;

/// (namespace, room id)
pub type RoomRef = (String, String);

/// One user in one room on this node.
struct Entry {
    user: User,
    /// The sockets through which the user is in the room.
    sockets: HashSet<Sid>,
    /// Highest room version seen when one of these sockets entered: a `room:leave` said before it (a lower
    /// version) is older than this entry and must not remove it.
    since: u64,
}

#[derive(Default)]
struct Online {
    rooms: HashMap<RoomRef, HashMap<String, Entry>>,
    /// Per socket, the rooms it is in, so a disconnect can clean up without asking anyone.
    sockets: HashMap<Sid, HashSet<RoomRef>>,
}

/// What [`Registry::enter`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    /// The user had no socket in the room on this node before.
    pub first_here: bool,
    /// This node had nobody in the room before.
    pub room_new_here: bool,
}

/// What [`Registry::exit_all`] changed in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    pub room: RoomRef,
    /// It was the user's last socket in the room on this node.
    pub last_here: bool,
    /// Nobody is left in the room on this node.
    pub room_empty_here: bool,
}

/// One user of a room in a [`Registry::snapshot`]: the user and their sockets on this node.
pub type Resident = (User, usize);
/// One room in a [`Registry::snapshot`].
pub type RoomSnapshot = (RoomRef, Vec<Resident>);

/// This node's registry of online users per room.
#[derive(Default)]
pub struct Registry {
    online: Mutex<Online>,
    /// Last version this node gave a notice on its own (see [`Registry::next_version`]).
    last_version: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Online> {
        self.online.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that the socket enters the room now. The caller only says so for a socket that is not in the
    /// room: if the registry still has it there, the user left the room from another node (`room:leave` takes
    /// every socket of the user out of the room, on every node) and that departure has not reached this
    /// registry yet, so every socket of the user here is out of the room and the entry starts over.
    pub fn enter(&self, ns: &str, room: &str, user: &User, sid: Sid) -> Entered {
        let key = (ns.to_owned(), room.to_owned());
        let mut online = self.lock();
        let stale = online
            .rooms
            .get(&key)
            .and_then(|users| users.get(&user.id))
            .is_some_and(|entry| entry.sockets.contains(&sid));
        if stale {
            Self::remove_user(&mut online, &key, &user.id);
        }
        let room_new_here = !online.rooms.contains_key(&key);
        online.sockets.entry(sid).or_default().insert(key.clone());
        let entry = online
            .rooms
            .entry(key)
            .or_default()
            .entry(user.id.clone())
            .or_insert_with(|| Entry {
                user: user.clone(),
                sockets: HashSet::new(),
                since: 0,
            });
        entry.sockets.insert(sid);
        Entered {
            first_here: entry.sockets.len() == 1,
            room_new_here,
        }
    }

    /// Notes the room version Redis answered when the user's socket entered.
    pub fn seen(&self, ns: &str, room: &str, user_id: &str, version: u64) {
        let key = (ns.to_owned(), room.to_owned());
        if let Some(entry) = self
            .lock()
            .rooms
            .get_mut(&key)
            .and_then(|users| users.get_mut(user_id))
        {
            entry.since = entry.since.max(version);
        }
    }

    /// Removes a disconnected socket everywhere.
    pub fn exit_all(&self, user_id: &str, sid: Sid) -> Vec<Exited> {
        let mut online = self.lock();
        let rooms = online.sockets.remove(&sid).unwrap_or_default();
        let mut exited = Vec::new();
        for key in rooms {
            let Some(users) = online.rooms.get_mut(&key) else {
                continue;
            };
            let Some(entry) = users.get_mut(user_id) else {
                continue;
            };
            if !entry.sockets.remove(&sid) {
                continue;
            }
            let last_here = entry.sockets.is_empty();
            if last_here {
                users.remove(user_id);
            }
            let room_empty_here = users.is_empty();
            if room_empty_here {
                online.rooms.remove(&key);
            }
            exited.push(Exited {
                room: key,
                last_here,
                room_empty_here,
            });
        }
        exited
    }

    /// The user left the room on every socket: forgets them there. `Some(room_empty_here)` when they were in
    /// it on this node.
    pub fn forget(&self, ns: &str, room: &str, user_id: &str) -> Option<bool> {
        self.forget_if(ns, room, user_id, |_| true)
    }

    /// Like [`Registry::forget`], for a `room:leave` said elsewhere with `version`: an entry made after it
    /// (a socket that entered again since) is kept.
    pub fn forget_older(&self, ns: &str, room: &str, user_id: &str, version: u64) -> Option<bool> {
        self.forget_if(ns, room, user_id, |since| since < version)
    }

    fn forget_if(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
        older: impl Fn(u64) -> bool,
    ) -> Option<bool> {
        let key = (ns.to_owned(), room.to_owned());
        let mut online = self.lock();
        if !older(online.rooms.get(&key)?.get(user_id)?.since) {
            return None;
        }
        Self::remove_user(&mut online, &key, user_id);
        Some(!online.rooms.contains_key(&key))
    }

    fn remove_user(online: &mut Online, key: &RoomRef, user_id: &str) {
        let Some(users) = online.rooms.get_mut(key) else {
            return;
        };
        let Some(entry) = users.remove(user_id) else {
            return;
        };
        if users.is_empty() {
            online.rooms.remove(key);
        }
        for sid in entry.sockets {
            if let Some(rooms) = online.sockets.get_mut(&sid) {
                rooms.remove(key);
                if rooms.is_empty() {
                    online.sockets.remove(&sid);
                }
            }
        }
    }

    /// Every room with someone in it on this node, with its users and their number of sockets here.
    pub fn snapshot(&self) -> Vec<RoomSnapshot> {
        let online = self.lock();
        online
            .rooms
            .iter()
            .map(|(key, users)| {
                let residents = users
                    .values()
                    .map(|entry| (entry.user.clone(), entry.sockets.len()))
                    .collect();
                (key.clone(), residents)
            })
            .collect()
    }

    /// Users online in the room on this node, each once, by name.
    pub fn users(&self, ns: &str, room: &str) -> Vec<User> {
        let key = (ns.to_owned(), room.to_owned());
        let online = self.lock();
        let mut users: Vec<User> = online
            .rooms
            .get(&key)
            .map(|users| users.values().map(|entry| entry.user.clone()).collect())
            .unwrap_or_default();
        super::sort_users(&mut users);
        users
    }

    /// A version for a notice this node gives on its own (Redis away): the clock in microseconds, strictly
    /// increasing on this node. Redis versions are floored by the same clock (see the module doc of
    /// [`presence`](super)), so notices of the outage and after it stay in order on each node.
    pub fn next_version(&self) -> u64 {
        let now = super::now_micros();
        let mut last = self.last_version.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_version.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
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

    fn room(ns: &str, room: &str) -> RoomRef {
        (ns.to_owned(), room.to_owned())
    }

    #[test]
    fn users_count_once_per_room() {
        let registry = Registry::default();
        let (tab1, tab2) = (Sid::new(), Sid::new());
        let ada = user("ada");
        let entered = registry.enter("/", "r", &ada, tab1);
        assert_eq!(
            entered,
            Entered {
                first_here: true,
                room_new_here: true
            }
        );
        assert!(!registry.enter("/", "r", &ada, tab2).first_here);
        assert_eq!(registry.users("/", "r"), vec![ada.clone()]);
        assert_eq!(
            registry.snapshot(),
            vec![(room("/", "r"), vec![(ada.clone(), 2)])]
        );
        assert_eq!(
            registry.exit_all("ada", tab1),
            vec![Exited {
                room: room("/", "r"),
                last_here: false,
                room_empty_here: false
            }]
        );
        assert!(
            registry.exit_all("ada", tab1).is_empty(),
            "a socket exits once"
        );
        assert_eq!(
            registry.exit_all("ada", tab2),
            vec![Exited {
                room: room("/", "r"),
                last_here: true,
                room_empty_here: true
            }]
        );
        assert!(registry.users("/", "r").is_empty());
        assert!(registry.snapshot().is_empty());
    }

    #[test]
    fn entering_again_means_the_user_left_elsewhere() {
        let registry = Registry::default();
        let (tab1, tab2) = (Sid::new(), Sid::new());
        let ada = user("ada");
        registry.enter("/", "r", &ada, tab1);
        registry.enter("/", "r", &ada, tab2);
        registry.enter("/", "s", &ada, tab2);
        // room:leave on another node took both tabs out of r; tab1 comes back.
        let entered = registry.enter("/", "r", &ada, tab1);
        assert!(entered.first_here, "the user is new in r again");
        assert_eq!(registry.snapshot().len(), 2);
        // tab2 is no longer in r: its disconnect only leaves s.
        assert_eq!(
            registry.exit_all("ada", tab2),
            vec![Exited {
                room: room("/", "s"),
                last_here: true,
                room_empty_here: true
            }]
        );
        assert_eq!(registry.users("/", "r"), vec![ada]);
    }

    #[test]
    fn forget_keeps_entries_newer_than_the_leave() {
        let registry = Registry::default();
        let (sid, other) = (Sid::new(), Sid::new());
        registry.enter("/", "r", &user("ada"), sid);
        registry.enter("/", "r", &user("bob"), other);
        registry.seen("/", "r", "ada", 10);
        assert_eq!(registry.forget_older("/", "r", "ada", 7), None, "older");
        assert_eq!(registry.forget_older("/", "r", "ada", 11), Some(false));
        assert_eq!(registry.users("/", "r"), vec![user("bob")]);
        assert!(registry.exit_all("ada", sid).is_empty());
        assert_eq!(registry.forget("/", "r", "bob"), Some(true));
        assert_eq!(registry.forget("/", "r", "bob"), None);
    }

    #[test]
    fn namespaces_are_separate() {
        let registry = Registry::default();
        registry.enter("/", "r", &user("a"), Sid::new());
        assert!(registry.users("/game", "r").is_empty());
    }

    #[test]
    fn local_versions_increase() {
        let registry = Registry::default();
        let a = registry.next_version();
        let b = registry.next_version();
        assert!(b > a && a > 1_600_000_000_000_000, "{a} {b}");
    }
}
