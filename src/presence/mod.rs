//! Who is online in which room, in one place: this node's registry ([`local`]) and, with several nodes, the
//! cluster-wide entries in Redis ([`redis`]), behind one facade, [`Presence`]. The chat tells it when a socket
//! enters a room, when a socket disconnects, and when a user leaves a room (`room:leave`); it answers whether
//! that was the user's first or last socket in the room, with the room's notice version, and who is online.
//!
//! Presence counts users, not sockets: a user with three tabs in a room is one member online, announced once
//! when the first tab enters and once when the last one leaves, wherever the tabs are.
//!
//! # Versions
//!
//! Every change worth a `room:notice` gets a version: an integer that increases per room. While Redis is up it
//! is assigned in Redis, by the same script that decides "first" or "last", so notices from different nodes
//! are ordered by it. A version is never below Redis's clock in microseconds, so it keeps increasing when a
//! room empties and fills again, and when Redis restarts empty.
//!
//! # While Redis is away
//!
//! The facade is the only writer of the registry, so the registry always knows this node's sockets. While
//! Redis is down (or a presence command fails), each node answers from its registry alone: `presence:list` and
//! `members` list this node's users only, a notice is said when the user's first (last) socket *on this node*
//! enters (leaves), and its version is this node's clock in microseconds, strictly increasing on the node, so
//! notices stay ordered per node and roughly (up to clock skew) across nodes.
//!
//! When Redis answers again, this node's entries are rewritten from the registry — entries for sockets that
//! left meanwhile are removed, those that arrived are added — and only then is Redis reported up
//! ([`RedisLink::is_up`]), cross-node delivery resumes and the facade uses Redis again; presence changes wait
//! while the resync runs. Nobody is told about the arrivals and departures of the outage that their node did
//! not see: `presence:list` is right again, and the next versions are above those of the outage.
//!
//! A node that crashes is not announced as leaving: its users drop out of presence within
//! [`NODE_TTL`](crate::cluster::NODE_TTL) plus a heartbeat (see [`redis`]).

pub mod local;
pub mod redis;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use socketioxide::socket::Sid;
use tokio::sync::RwLock;

use crate::{
    auth::User,
    cluster::{Membership, RedisLink},
};
use local::Registry;
use redis::{Beat, RedisPresence};

/// A user left a room: where, and the version of the `leave` notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    pub ns: String,
    pub room: String,
    pub version: u64,
}

/// Presence as the chat sees it: cluster-wide when Redis is configured and up, this node's otherwise. Cheap
/// to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    local: Registry,
    redis: Option<RedisPresence>,
    /// Presence changes hold it shared; a resync holds it alone, so no change slips between its snapshot of the
    /// registry and Redis being used again.
    gate: RwLock<()>,
    /// Redis holds this node's entries as the registry has them: changes go to Redis too.
    in_sync: AtomicBool,
    /// A change could not reach Redis while in sync: Redis may disagree with the registry until a resync.
    dirty: AtomicBool,
}

impl Presence {
    /// One node, no Redis.
    pub fn local_only() -> Self {
        Self::build(None)
    }

    /// One node of several: registers the node in Redis. Fails when Redis does not answer.
    pub async fn with_redis(link: RedisLink) -> Result<Self, fred::error::Error> {
        let presence = Self::build(Some(RedisPresence::new(link)));
        if let Some(redis) = &presence.inner.redis {
            redis.load_scripts().await?;
            redis.heartbeat().await?;
        }
        presence.inner.in_sync.store(true, Ordering::Release);
        Ok(presence)
    }

    fn build(redis: Option<RedisPresence>) -> Self {
        Self {
            inner: Arc::new(Inner {
                local: Registry::default(),
                redis,
                gate: RwLock::new(()),
                in_sync: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
            }),
        }
    }

    /// This node's id in Redis presence, if it has one.
    pub fn node_id(&self) -> Option<String> {
        self.inner.redis.as_ref().map(|r| r.node().to_string())
    }

    /// Redis, when the facade may use it.
    fn synced(&self) -> Option<&RedisPresence> {
        self.inner
            .redis
            .as_ref()
            .filter(|_| self.inner.in_sync.load(Ordering::Acquire))
    }

    fn failed(&self, what: &str, error: fred::error::Error) {
        tracing::debug!(what, %error, "presence fell back to this node");
        self.inner.dirty.store(true, Ordering::Release);
    }

    /// The socket enters the room now (the caller knows it was not in it). `Some(version)` when the user was
    /// in the room nowhere before: say `join` with that version.
    pub async fn enter(&self, ns: &str, room: &str, user: &User, sid: Sid) -> Option<u64> {
        let _gate = self.inner.gate.read().await;
        let local = &self.inner.local;
        let entered = local.enter(ns, room, user, sid);
        if let Some(redis) = self.synced() {
            let result = async {
                if entered.room_new_here {
                    redis.index_room(ns, room).await?;
                }
                redis.enter(ns, room, user).await
            }
            .await;
            match result {
                Ok((first, version)) => {
                    local.seen(ns, room, &user.id, version);
                    return first.then_some(version);
                }
                Err(e) => self.failed("enter", e),
            }
        }
        entered.first_here.then(|| local.next_version())
    }

    /// The socket disconnected: it leaves every room it was in. Returns the rooms where it was the user's last
    /// socket: say `leave` there.
    pub async fn exit_all(&self, user_id: &str, sid: Sid) -> Vec<Departure> {
        let _gate = self.inner.gate.read().await;
        let local = &self.inner.local;
        let mut left = Vec::new();
        for exited in local.exit_all(user_id, sid) {
            let (ns, room) = &exited.room;
            let mut version = None;
            let mut decided = false;
            if let Some(redis) = self.synced() {
                let result = async {
                    let last = redis.exit(ns, room, user_id).await?;
                    if exited.room_empty_here {
                        self.unindex(redis, ns, room).await?;
                    }
                    Ok::<_, fred::error::Error>(last)
                }
                .await;
                match result {
                    Ok(last) => (version, decided) = (last, true),
                    Err(e) => self.failed("exit", e),
                }
            }
            if !decided && exited.last_here {
                version = Some(local.next_version());
            }
            if let Some(version) = version {
                let (ns, room) = exited.room;
                left.push(Departure { ns, room, version });
            }
        }
        left
    }

    /// The user left the room on every socket and every node (`room:leave`). Returns the version of the
    /// `leave` notice.
    pub async fn forget(&self, ns: &str, room: &str, user_id: &str) -> u64 {
        let _gate = self.inner.gate.read().await;
        let local = &self.inner.local;
        let emptied = local.forget(ns, room, user_id) == Some(true);
        if let Some(redis) = self.synced() {
            let result = async {
                let version = redis.forget(ns, room, user_id).await?;
                if emptied {
                    self.unindex(redis, ns, room).await?;
                }
                Ok::<_, fred::error::Error>(version)
            }
            .await;
            match result {
                Ok(version) => return version,
                Err(e) => self.failed("forget", e),
            }
        }
        local.next_version()
    }

    /// Users online in the room, each once, by name.
    pub async fn users(&self, ns: &str, room: &str) -> Vec<User> {
        if let Some(redis) = self.synced() {
            match redis.users(ns, room).await {
                Ok(users) => return users,
                Err(e) => tracing::debug!(error = %e, "presence list fell back to this node"),
            }
        }
        self.inner.local.users(ns, room)
    }

    /// Graceful shutdown: removes this node's entries and the node from Redis, so its users leave at once.
    pub async fn depart(&self) {
        if let Some(redis) = &self.inner.redis
            && let Err(e) = redis.depart().await
        {
            tracing::debug!(error = %e, "could not clear presence on shutdown");
        }
    }

    /// Takes a room this node emptied out of its Redis room index, and puts it back if a socket entered the room
    /// meanwhile: that socket's `enter` may have indexed the room before this removal ran, and a room missing
    /// from the index would never be swept (its entries would outlive the node).
    async fn unindex(
        &self,
        redis: &RedisPresence,
        ns: &str,
        room: &str,
    ) -> Result<(), fred::error::Error> {
        redis.unindex_room(ns, room).await?;
        if !self.inner.local.users(ns, room).is_empty() {
            redis.index_room(ns, room).await?;
        }
        Ok(())
    }

    /// Applies `room:leave`s said on other nodes to the registry. The caller holds the gate.
    async fn apply_inbox(&self, redis: &RedisPresence, inbox: Vec<redis::Forgotten>) {
        for note in inbox {
            let Some(emptied) =
                self.inner
                    .local
                    .forget_older(&note.ns, &note.room, &note.user, note.version)
            else {
                continue;
            };
            let result = async {
                redis
                    .forgotten_here(&note.ns, &note.room, &note.user)
                    .await?;
                if emptied {
                    self.unindex(redis, &note.ns, &note.room).await?;
                }
                Ok::<_, fred::error::Error>(())
            }
            .await;
            if let Err(e) = result {
                self.failed("inbox", e);
            }
        }
    }
}

impl Membership for Presence {
    async fn beat(&self) -> Result<bool, fred::error::Error> {
        let Some(redis) = &self.inner.redis else {
            return Ok(true);
        };
        match redis.heartbeat().await? {
            Beat::Lapsed => Ok(false),
            Beat::Alive { dead, inbox } => {
                if !inbox.is_empty() {
                    // The heartbeat has taken these notes out of Redis: apply them in a task of their own, so the
                    // heartbeat's time limit cannot cancel them halfway and lose the rest.
                    let presence = self.clone();
                    tokio::spawn(async move {
                        if let Some(redis) = &presence.inner.redis {
                            let _gate = presence.inner.gate.read().await;
                            presence.apply_inbox(redis, inbox).await;
                        }
                    });
                }
                for node in dead {
                    let presence = self.clone();
                    tokio::spawn(async move {
                        if let Some(redis) = &presence.inner.redis {
                            redis.sweep_dead(&node).await;
                        }
                    });
                }
                Ok(!self.inner.dirty.load(Ordering::Acquire))
            }
        }
    }

    async fn restore(&self) -> Result<(), fred::error::Error> {
        let Some(redis) = &self.inner.redis else {
            return Ok(());
        };
        let _gate = self.inner.gate.write().await;
        // Redis may have restarted without its scripts.
        redis.load_scripts().await?;
        let beat = match redis.heartbeat().await? {
            // The id expired while Redis was away (or Redis lost it): rebuild under a new one, which the
            // sweep of the old one cannot touch.
            Beat::Lapsed => redis.heartbeat().await?,
            alive => alive,
        };
        if let Beat::Alive { inbox, .. } = beat {
            self.apply_inbox(redis, inbox).await;
        }
        self.inner.dirty.store(false, Ordering::Release);
        redis.resync(&self.inner.local.snapshot()).await?;
        self.inner.in_sync.store(true, Ordering::Release);
        Ok(())
    }

    fn down(&self) {
        self.inner.in_sync.store(false, Ordering::Release);
    }
}

/// Users in a stable order: by name, then id.
fn sort_users(users: &mut [User]) {
    users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
}

/// Now, in microseconds since the Unix epoch.
fn now_micros() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
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

    #[tokio::test]
    async fn local_presence_counts_users_and_versions_increase() {
        let presence = Presence::local_only();
        let (tab1, tab2) = (Sid::new(), Sid::new());
        let joined = presence.enter("/", "r", &user("ada"), tab1).await;
        let joined = joined.expect("first tab says join");
        assert_eq!(presence.enter("/", "r", &user("ada"), tab2).await, None);
        assert_eq!(presence.users("/", "r").await, vec![user("ada")]);
        assert!(presence.exit_all("ada", tab1).await.is_empty());
        let left = presence.exit_all("ada", tab2).await;
        assert_eq!(left.len(), 1);
        assert!(left[0].version > joined, "{left:?} after {joined}");
        assert_eq!((left[0].ns.as_str(), left[0].room.as_str()), ("/", "r"));
        assert!(presence.users("/", "r").await.is_empty());
    }

    #[tokio::test]
    async fn forget_removes_every_tab_of_the_user() {
        let presence = Presence::local_only();
        let (tab1, tab2) = (Sid::new(), Sid::new());
        presence.enter("/", "r", &user("ada"), tab1).await;
        presence.enter("/", "r", &user("ada"), tab2).await;
        presence.enter("/", "s", &user("ada"), tab2).await;
        let version = presence.forget("/", "r", "ada").await;
        assert!(presence.users("/", "r").await.is_empty());
        let left = presence.exit_all("ada", tab2).await;
        assert_eq!(left.len(), 1, "only s is left: {left:?}");
        assert_eq!(left[0].room, "s");
        assert!(left[0].version > version);
    }
}
