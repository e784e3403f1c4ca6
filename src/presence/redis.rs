//! Presence in Redis: what makes "first socket of this user in the room" and "last one" cluster-wide, and what
//! lists a room's users for every node.
//!
//! # Keys
//!
//! `P` is the deployment's prefix (`--redis-prefix`). Every key of one room carries the hash tag
//! `{<ns>|<room>}`, so that one room lives in one slot of a Redis Cluster and a script may touch several of its
//! keys; the node keys share the tag `{nodes}`.
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `P:presence:{ns\|room}:user:<user id>` | hash node → count | that user's sockets in the room, per node |
//! | `P:presence:{ns\|room}:users` | hash user id → `User` JSON | users online in the room (what `presence:list` reads) |
//! | `P:presence:{ns\|room}:node:<node>` | set of user ids | users one node has in the room (for its resync and its sweep) |
//! | `P:presence:{ns\|room}:version` | integer | version of the room's last `room:notice` |
//! | `P:{nodes}` | sorted set node → expiry (ms) | nodes and until when they are alive |
//! | `P:{nodes}:rooms:<node>` | set of `ns\|room` | rooms a node has entries in |
//! | `P:{nodes}:inbox:<node>` | list of JSON | `room:leave`s said elsewhere that a node must apply to its own registry |
//! | `P:{nodes}:sweep:<node>` | string, 60 s TTL | lock of the node sweeping a dead node's entries |
//!
//! An entry (user key, `users` field, node set) is removed as soon as its count drops to zero, and Redis drops
//! empty hashes and sets: a room nobody is in has no keys but its `version`, which expires an hour later.
//!
//! # Costs
//!
//! Entering and exiting read only the user's own key (one field per node the user is on), whatever the size of
//! the room: deciding "first" and "last" in a join storm into one room costs O(1) per join, not O(users in the
//! room). Listing reads the room's `users` hash with one `HVALS`: O(users in the room), which is what
//! `presence:list` and `room:join`'s `members` return anyway.
//!
//! # Dead nodes
//!
//! Each node refreshes its expiry in `P:{nodes}` every heartbeat. A node whose expiry has passed is dead: its
//! fields are ignored, and swept when met, by every enter and exit (the dead ids are passed as script arguments),
//! and the first live node to see it takes the sweep lock and removes all its entries, room by room, from its
//! `rooms` index, then the node itself. A crashed node's users thus leave `presence:list` within
//! [`NODE_TTL`] plus one heartbeat and the sweep (milliseconds per room). Nobody is told they left. A node whose own expiry passed (paused, or cut off from Redis for longer
//! than the TTL, or Redis restarted empty) never comes back under the same id: it takes a new one and rebuilds
//! its entries under it, so a sweep of its old id cannot remove them.
//!
//! Scripts only touch keys passed in `KEYS`, all of one slot; key names are never built inside a script.

use std::{
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::{HashesInterface, KeysInterface, LuaInterface, SetsInterface},
    prelude::FromValue,
    types::{Expiration, SetOptions},
};
use serde::{Deserialize, Serialize};

use super::local::{Resident, RoomSnapshot};
use crate::{
    auth::User,
    cluster::{NODE_TTL, RedisLink},
};

type Result<T> = std::result::Result<T, fred::error::Error>;

/// A room nobody is in keeps its version counter this long (ms), so that versions keep increasing when it fills
/// again soon.
const VERSION_TTL_MS: u64 = 3_600_000;
/// How long a sweep lock holds (ms): another node takes over a sweep that did not finish in that time.
const SWEEP_LOCK_MS: i64 = 60_000;
/// Most users one resync or sweep script handles at once.
const CHUNK: usize = 500;

/// Bumps a room's version: one more than the last, and never less than Redis's clock in microseconds, so that
/// versions keep increasing across an emptied room, a Redis restart, and the local versions of an outage.
const BUMP: &str = r#"
local function bump(key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = tonumber(redis.call('GET', key) or '0') + 1
  if v < now then v = now end
  redis.call('SET', key, string.format('%d', v))
  return v
end
local function version(key)
  return tonumber(redis.call('GET', key) or '0')
end
"#;

/// One more socket of a user in a room on this node.
/// KEYS: user key, users, this node's set, version. ARGV: node, user id, user JSON, dead nodes...
/// Returns {first anywhere (0/1), version}.
const ENTER: &str = r#"
local mine = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if mine ~= 1 then return {0, version(KEYS[4])} end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local dead = {}
for i = 4, #ARGV do dead[ARGV[i]] = true end
local first = 1
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local node = all[i]
  if node ~= ARGV[1] then
    if dead[node] then redis.call('HDEL', KEYS[1], node)
    elseif tonumber(all[i + 1]) > 0 then first = 0 end
  end
end
if first == 0 then return {0, version(KEYS[4])} end
return {1, bump(KEYS[4])}
"#;

/// One socket of a user fewer in a room on this node.
/// KEYS: user key, users, this node's set, version. ARGV: node, user id, dead nodes...
/// Returns {last anywhere (0/1), version}.
const EXIT: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n > 0 then return {0, 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
-- Below zero: the entry was already gone (the user left the room with room:leave), and so was the user.
if n < 0 then return {0, 0} end
local dead = {}
for i = 3, #ARGV do dead[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if dead[all[i]] then redis.call('HDEL', KEYS[1], all[i])
  elseif tonumber(all[i + 1]) > 0 then return {0, 0} end
end
redis.call('HDEL', KEYS[2], ARGV[2])
local v = bump(KEYS[4])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('PEXPIRE', KEYS[4], ARGV_TTL) end
return {1, v}
"#;

/// The user left the room on every socket and every node (`room:leave`).
/// KEYS: user key, users, version, this node's set. ARGV: user id.
/// Returns {version, nodes that had the user}.
const FORGET: &str = r#"
local nodes = redis.call('HKEYS', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
local v = bump(KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('PEXPIRE', KEYS[3], ARGV_TTL) end
return {v, nodes}
"#;

/// Sets one node's entries in a room: resync after an outage, or removal when the node is swept.
/// KEYS: users, the node's set, version, then one user key per entry (new ones first).
/// ARGV: node, number of new entries, {user id, count, JSON} per new entry, then the user id of each entry to
/// remove. A user whose key is left empty leaves the room's `users`.
const REPLACE: &str = r#"
local me, n = ARGV[1], tonumber(ARGV[2])
local a = 3
for i = 4, #KEYS do
  local key = KEYS[i]
  if i - 3 <= n then
    redis.call('HSET', key, me, ARGV[a + 1])
    redis.call('HSET', KEYS[1], ARGV[a], ARGV[a + 2])
    redis.call('SADD', KEYS[2], ARGV[a])
    a = a + 3
  else
    redis.call('HDEL', key, me)
    redis.call('SREM', KEYS[2], ARGV[a])
    if redis.call('EXISTS', key) == 0 then redis.call('HDEL', KEYS[1], ARGV[a]) end
    a = a + 1
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('PEXPIRE', KEYS[3], ARGV_TTL) end
return 0
"#;

/// Refreshes a node's expiry, lists the dead nodes and empties the node's inbox.
/// KEYS: nodes, the node's inbox. ARGV: node, TTL in ms, "join" (a new id) or "renew", "full" or "keep" (only
/// refresh). Returns {0} when a renewed node had already expired or vanished, else {1, dead nodes, inbox}.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'renew' then
  local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not prev or tonumber(prev) < now then return {0} end
end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
if ARGV[4] == 'keep' then return {1, {}, {}} end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now), 'LIMIT', 0, 64)
local inbox = redis.call('LRANGE', KEYS[2], 0, -1)
if #inbox > 0 then redis.call('DEL', KEYS[2]) end
return {1, dead, inbox}
"#;

/// Leaves a note in a node's inbox. KEYS: the inbox. ARGV: entry, TTL in ms.
const NOTIFY: &str = r#"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"#;

/// Removes a node from the cluster once its entries are gone. KEYS: nodes, its rooms, its inbox, its sweep
/// lock. ARGV: node.
const DEPART: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return 0
"#;

/// A Lua script run with `EVALSHA`, loaded again when Redis answers `NOSCRIPT` (after a restart).
struct Script {
    lua: String,
    sha: Mutex<Option<String>>,
}

impl Script {
    fn new(body: &str, with_bump: bool) -> Self {
        let ttl = VERSION_TTL_MS.to_string();
        let body = body.replace("ARGV_TTL", &ttl);
        let lua = if with_bump {
            format!("{BUMP}{body}")
        } else {
            body
        };
        Self {
            lua,
            sha: Mutex::new(None),
        }
    }

    async fn load(&self, client: &Client) -> Result<String> {
        let sha: String = client.script_load(self.lua.as_str()).await?;
        *self.sha.lock().unwrap_or_else(PoisonError::into_inner) = Some(sha.clone());
        Ok(sha)
    }

    async fn run<R: FromValue>(
        &self,
        client: &Client,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R> {
        let known = self
            .sha
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let sha = match known {
            Some(sha) => sha,
            None => self.load(client).await?,
        };
        match client.evalsha(sha, keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let sha = self.load(client).await?;
                client.evalsha(sha, keys, args).await
            }
            result => result,
        }
    }
}

struct Scripts {
    enter: Script,
    exit: Script,
    forget: Script,
    replace: Script,
    heartbeat: Script,
    notify: Script,
    depart: Script,
}

/// A `room:leave` said on another node, for this node's registry.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forgotten {
    pub ns: String,
    pub room: String,
    pub user: String,
    pub version: u64,
}

/// What a heartbeat found.
pub enum Beat {
    /// This node's id had expired or vanished: its entries are gone or about to be swept.
    Lapsed,
    Alive {
        dead: Vec<String>,
        inbox: Vec<Forgotten>,
    },
}

/// Presence in Redis for one node. Knows nothing of the local registry: the facade decides what to write.
pub struct RedisPresence {
    link: RedisLink,
    /// This node's id in presence; replaced when it lapsed.
    node: RwLock<Arc<str>>,
    /// The id is in `P:{nodes}`: heartbeats renew it rather than add it.
    registered: AtomicBool,
    /// Nodes found dead by the last heartbeat.
    dead: RwLock<Arc<[String]>>,
    /// Dead nodes this process is sweeping.
    sweeping: Mutex<std::collections::HashSet<String>>,
    scripts: Scripts,
}

fn new_node_id() -> Arc<str> {
    uuid::Uuid::new_v4().simple().to_string().into()
}

impl RedisPresence {
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            node: RwLock::new(new_node_id()),
            registered: AtomicBool::new(false),
            dead: RwLock::new(Arc::from(Vec::new())),
            sweeping: Mutex::default(),
            scripts: Scripts {
                enter: Script::new(ENTER, true),
                exit: Script::new(EXIT, true),
                forget: Script::new(FORGET, true),
                replace: Script::new(REPLACE, false),
                heartbeat: Script::new(HEARTBEAT, false),
                notify: Script::new(NOTIFY, false),
                depart: Script::new(DEPART, false),
            },
        }
    }

    /// Loads every script into Redis, so that the first burst of presence changes after start-up or after a
    /// Redis restart does not load each of them once per concurrent call.
    pub async fn load_scripts(&self) -> Result<()> {
        let s = &self.scripts;
        for script in [
            &s.enter,
            &s.exit,
            &s.forget,
            &s.replace,
            &s.heartbeat,
            &s.notify,
            &s.depart,
        ] {
            script.load(self.client()).await?;
        }
        Ok(())
    }

    fn client(&self) -> &Client {
        &self.link.commands
    }

    /// This node's current id in presence.
    pub fn node(&self) -> Arc<str> {
        self.node
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes a new id, after the old one lapsed; the next heartbeat registers it.
    fn renew_id(&self) -> Arc<str> {
        let id = new_node_id();
        *self.node.write().unwrap_or_else(PoisonError::into_inner) = id.clone();
        self.registered.store(false, Ordering::Release);
        id
    }

    fn dead(&self) -> Arc<[String]> {
        self.dead
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn room_tag(&self, ns: &str, room: &str) -> String {
        format!("{}:presence:{{{ns}|{room}}}", self.link.prefix)
    }
    fn user_key(tag: &str, user_id: &str) -> String {
        format!("{tag}:user:{user_id}")
    }
    fn users_key(tag: &str) -> String {
        format!("{tag}:users")
    }
    fn node_set_key(tag: &str, node: &str) -> String {
        format!("{tag}:node:{node}")
    }
    fn version_key(tag: &str) -> String {
        format!("{tag}:version")
    }
    fn nodes_key(&self) -> String {
        format!("{}:{{nodes}}", self.link.prefix)
    }
    fn rooms_key(&self, node: &str) -> String {
        format!("{}:{{nodes}}:rooms:{node}", self.link.prefix)
    }
    fn inbox_key(&self, node: &str) -> String {
        format!("{}:{{nodes}}:inbox:{node}", self.link.prefix)
    }
    fn sweep_key(&self, node: &str) -> String {
        format!("{}:{{nodes}}:sweep:{node}", self.link.prefix)
    }
    fn room_ref(ns: &str, room: &str) -> String {
        format!("{ns}|{room}")
    }
    /// `ns|room` back into its parts; room ids never contain `|`.
    fn parse_room_ref(room_ref: &str) -> Option<(&str, &str)> {
        room_ref.rsplit_once('|')
    }

    /// Refreshes this node's expiry (registers the id if new), and collects dead nodes and the inbox. When the
    /// id had lapsed, a new one is taken, to be registered by the next heartbeat.
    pub async fn heartbeat(&self) -> Result<Beat> {
        self.beat(true).await
    }

    /// Only refreshes this node's expiry (during a long resync).
    async fn keep_alive(&self) -> Result<()> {
        self.beat(false).await.map(drop)
    }

    async fn beat(&self, full: bool) -> Result<Beat> {
        let node = self.node();
        let join = !self.registered.load(Ordering::Acquire);
        let ttl = NODE_TTL.as_millis().to_string();
        let mode = if join { "join" } else { "renew" };
        let scope = if full { "full" } else { "keep" };
        let reply: fred::types::Value = self
            .scripts
            .heartbeat
            .run(
                self.client(),
                vec![self.nodes_key(), self.inbox_key(&node)],
                vec![node.to_string(), ttl, mode.to_owned(), scope.to_owned()],
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        let alive: i64 = parts.next().map(|v| v.convert()).transpose()?.unwrap_or(0);
        if alive != 1 {
            let id = self.renew_id();
            tracing::warn!(old = %node, new = %id, "this node's presence had expired in Redis; it rejoins under a new id");
            return Ok(Beat::Lapsed);
        }
        self.registered.store(true, Ordering::Release);
        let mut dead: Vec<String> = parts
            .next()
            .map(|v| v.convert())
            .transpose()?
            .unwrap_or_default();
        dead.retain(|d| *d != *node);
        let inbox: Vec<String> = parts
            .next()
            .map(|v| v.convert())
            .transpose()?
            .unwrap_or_default();
        if full {
            *self.dead.write().unwrap_or_else(PoisonError::into_inner) = dead.clone().into();
        }
        let inbox = inbox
            .iter()
            .filter_map(|entry| serde_json::from_str(entry).ok())
            .collect();
        Ok(Beat::Alive { dead, inbox })
    }

    /// Records that this node has entries in the room (before it writes any, so a sweep finds them).
    pub async fn index_room(&self, ns: &str, room: &str) -> Result<()> {
        let node = self.node();
        self.client()
            .sadd::<(), _, _>(self.rooms_key(&node), Self::room_ref(ns, room))
            .await
    }

    /// This node has nobody left in the room.
    pub async fn unindex_room(&self, ns: &str, room: &str) -> Result<()> {
        let node = self.node();
        self.client()
            .srem::<(), _, _>(self.rooms_key(&node), Self::room_ref(ns, room))
            .await
    }

    fn with_dead(mut args: Vec<String>, dead: &[String]) -> Vec<String> {
        args.extend(dead.iter().cloned());
        args
    }

    /// One more socket of the user in the room on this node: `(first socket of the user anywhere, version)`;
    /// the version is the new one when first, else the room's current one.
    pub async fn enter(&self, ns: &str, room: &str, user: &User) -> Result<(bool, u64)> {
        let (node, tag) = (self.node(), self.room_tag(ns, room));
        let json = serde_json::to_string(user).unwrap_or_default();
        let keys = vec![
            Self::user_key(&tag, &user.id),
            Self::users_key(&tag),
            Self::node_set_key(&tag, &node),
            Self::version_key(&tag),
        ];
        let args = vec![node.to_string(), user.id.clone(), json];
        let (first, version): (i64, u64) = self
            .scripts
            .enter
            .run(self.client(), keys, Self::with_dead(args, &self.dead()))
            .await?;
        Ok((first == 1, version))
    }

    /// One socket of the user fewer in the room on this node: the new version when it was the user's last
    /// socket anywhere.
    pub async fn exit(&self, ns: &str, room: &str, user_id: &str) -> Result<Option<u64>> {
        let (node, tag) = (self.node(), self.room_tag(ns, room));
        let keys = vec![
            Self::user_key(&tag, user_id),
            Self::users_key(&tag),
            Self::node_set_key(&tag, &node),
            Self::version_key(&tag),
        ];
        let args = vec![node.to_string(), user_id.to_owned()];
        let (last, version): (i64, u64) = self
            .scripts
            .exit
            .run(self.client(), keys, Self::with_dead(args, &self.dead()))
            .await?;
        Ok((last == 1).then_some(version))
    }

    /// The user left the room everywhere: removes every entry of theirs there, and tells the other nodes that
    /// had some. Returns the new version.
    pub async fn forget(&self, ns: &str, room: &str, user_id: &str) -> Result<u64> {
        let (node, tag) = (self.node(), self.room_tag(ns, room));
        let keys = vec![
            Self::user_key(&tag, user_id),
            Self::users_key(&tag),
            Self::version_key(&tag),
            Self::node_set_key(&tag, &node),
        ];
        let (version, nodes): (u64, Vec<String>) = self
            .scripts
            .forget
            .run(self.client(), keys, vec![user_id.to_owned()])
            .await?;
        let note = Forgotten {
            ns: ns.to_owned(),
            room: room.to_owned(),
            user: user_id.to_owned(),
            version,
        };
        let note = serde_json::to_string(&note).unwrap_or_default();
        let ttl = (NODE_TTL * 3).as_millis().to_string();
        for other in nodes.iter().filter(|n| **n != *node) {
            self.scripts
                .notify
                .run::<i64>(
                    self.client(),
                    vec![self.inbox_key(other)],
                    vec![note.clone(), ttl.clone()],
                )
                .await?;
        }
        Ok(version)
    }

    /// This node applied a `room:leave` of another node to its registry: the user is no longer in its set.
    pub async fn forgotten_here(&self, ns: &str, room: &str, user_id: &str) -> Result<()> {
        let (node, tag) = (self.node(), self.room_tag(ns, room));
        self.client()
            .srem::<(), _, _>(Self::node_set_key(&tag, &node), user_id)
            .await
    }

    /// Users online in the room cluster-wide, each once.
    pub async fn users(&self, ns: &str, room: &str) -> Result<Vec<User>> {
        #[derive(Deserialize)]
        struct Stored {
            id: String,
            name: String,
            anonymous: bool,
        }
        let tag = self.room_tag(ns, room);
        let stored: Vec<String> = self.client().hvals(Self::users_key(&tag)).await?;
        let mut users: Vec<User> = stored
            .iter()
            .filter_map(|json| serde_json::from_str::<Stored>(json).ok())
            .map(|s| User {
                id: s.id,
                name: s.name,
                anonymous: s.anonymous,
            })
            .collect();
        super::sort_users(&mut users);
        Ok(users)
    }

    /// Sets `node`'s entries in a room to `residents` (user, sockets), removing its other ones.
    async fn replace_room(
        &self,
        node: &str,
        ns: &str,
        room: &str,
        residents: &[Resident],
    ) -> Result<()> {
        let tag = self.room_tag(ns, room);
        let node_set = Self::node_set_key(&tag, node);
        let before: Vec<String> = self.client().smembers(&node_set).await?;
        let staying: std::collections::HashSet<&str> =
            residents.iter().map(|(u, _)| u.id.as_str()).collect();
        let gone: Vec<&String> = before
            .iter()
            .filter(|id| !staying.contains(id.as_str()))
            .collect();
        let head = || {
            (
                vec![
                    Self::users_key(&tag),
                    node_set.clone(),
                    Self::version_key(&tag),
                ],
                vec![node.to_owned()],
            )
        };
        for chunk in residents.chunks(CHUNK) {
            let (mut keys, mut args) = head();
            args.push(chunk.len().to_string());
            for (user, sockets) in chunk {
                keys.push(Self::user_key(&tag, &user.id));
                args.push(user.id.clone());
                args.push(sockets.to_string());
                args.push(serde_json::to_string(user).unwrap_or_default());
            }
            self.scripts
                .replace
                .run::<i64>(self.client(), keys, args)
                .await?;
        }
        for chunk in gone.chunks(CHUNK) {
            let (mut keys, mut args) = head();
            args.push("0".to_owned());
            for id in chunk {
                keys.push(Self::user_key(&tag, id));
                args.push((*id).clone());
            }
            self.scripts
                .replace
                .run::<i64>(self.client(), keys, args)
                .await?;
        }
        Ok(())
    }

    /// Rewrites this node's entries from its registry: `rooms` is every room it has someone in, with them.
    /// Entries Redis has for this node and the registry does not are removed. This node's expiry is kept fresh
    /// during a long resync.
    pub async fn resync(&self, rooms: &[RoomSnapshot]) -> Result<()> {
        let node = self.node();
        let rooms_key = self.rooms_key(&node);
        let mut listed: std::collections::HashSet<String> = self
            .client()
            .smembers::<Vec<String>, _>(&rooms_key)
            .await?
            .into_iter()
            .collect();
        let now: Vec<String> = rooms
            .iter()
            .map(|((ns, room), _)| Self::room_ref(ns, room))
            .collect();
        for chunk in now.chunks(CHUNK) {
            self.client()
                .sadd::<(), _, _>(&rooms_key, chunk.to_vec())
                .await?;
        }
        let mut last_beat = tokio::time::Instant::now();
        for ((ns, room), residents) in rooms {
            listed.remove(&Self::room_ref(ns, room));
            self.replace_room(&node, ns, room, residents).await?;
            if last_beat.elapsed() > Duration::from_secs(1) {
                self.keep_alive().await?;
                last_beat = tokio::time::Instant::now();
            }
        }
        // Rooms this node had entries in and nobody is in any more.
        for room_ref in listed {
            if let Some((ns, room)) = Self::parse_room_ref(&room_ref) {
                self.replace_room(&node, ns, room, &[]).await?;
            }
            self.client()
                .srem::<(), _, _>(&rooms_key, room_ref.as_str())
                .await?;
        }
        Ok(())
    }

    /// Removes every entry of `node` and the node itself: a dead node (after taking its sweep lock), or this
    /// one on shutdown.
    async fn sweep(&self, node: &str) -> Result<()> {
        let rooms: Vec<String> = self.client().smembers(self.rooms_key(node)).await?;
        for room_ref in &rooms {
            if let Some((ns, room)) = Self::parse_room_ref(room_ref) {
                self.replace_room(node, ns, room, &[]).await?;
            }
        }
        self.scripts
            .depart
            .run::<i64>(
                self.client(),
                vec![
                    self.nodes_key(),
                    self.rooms_key(node),
                    self.inbox_key(node),
                    self.sweep_key(node),
                ],
                vec![node.to_owned()],
            )
            .await?;
        Ok(())
    }

    /// Sweeps a dead node unless another node (or this one) already is.
    pub async fn sweep_dead(&self, node: &str) {
        {
            let mut sweeping = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
            if !sweeping.insert(node.to_owned()) {
                return;
            }
        }
        let me = self.node();
        let claimed: Result<Option<String>> = self
            .client()
            .set(
                self.sweep_key(node),
                me.to_string(),
                Some(Expiration::PX(SWEEP_LOCK_MS)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        match claimed {
            Ok(Some(_)) => match self.sweep(node).await {
                Ok(()) => tracing::info!(%node, "swept the presence of a dead node"),
                Err(e) => {
                    tracing::warn!(%node, error = %e, "could not sweep a dead node's presence")
                }
            },
            Ok(None) => {}
            Err(e) => tracing::debug!(%node, error = %e, "could not claim a dead node's sweep"),
        }
        self.sweeping
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
    }

    /// Removes this node's entries and the node itself (graceful shutdown), so its users leave at once.
    pub async fn depart(&self) -> Result<()> {
        let node = self.node();
        self.sweep(&node).await
    }
}
