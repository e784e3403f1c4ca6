//! Presence across nodes, kept in Redis: per room, a hash of `<node>|<user id>` → sockets of that user on that
//! node. Each change runs as one Lua script, so "is this the user's first socket in the room anywhere?" and "was
//! it the last?" are answered atomically across nodes. Entries of a node whose liveness key has expired (it
//! crashed) are ignored and swept as they are met, so its users drop out within [`NODE_TTL`](super::NODE_TTL).

use std::sync::Arc;

use fred::interfaces::{HashesInterface, KeysInterface, LuaInterface, SetsInterface};
use socketioxide::socket::Sid;

use super::{RedisLink, node_key};
use crate::{auth::User, chat::LocalPresence};

/// Adds one socket of a user; returns 1 when no live node had a socket of that user in the room.
const ENTER: &str = r#"
local field = ARGV[1] .. '|' .. ARGV[2]
local mine = redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], KEYS[1])
if mine > 1 then return 0 end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local bar = string.find(f, '|', 1, true)
  if f ~= field and bar and string.sub(f, bar + 1) == ARGV[2] and tonumber(all[i + 1]) > 0 then
    if redis.call('EXISTS', ARGV[4] .. string.sub(f, 1, bar - 1)) == 1 then return 0 end
    redis.call('HDEL', KEYS[1], f)
  end
end
return 1
"#;

/// Removes one socket of a user; returns 1 when it was the user's last socket in the room on any live node.
const EXIT: &str = r#"
local field = ARGV[1] .. '|' .. ARGV[2]
local n = redis.call('HINCRBY', KEYS[1], field, -1)
if n > 0 then return 0 end
redis.call('HDEL', KEYS[1], field)
if n < 0 then return 0 end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local bar = string.find(f, '|', 1, true)
  if bar and string.sub(f, bar + 1) == ARGV[2] and tonumber(all[i + 1]) > 0 then
    if redis.call('EXISTS', ARGV[3] .. string.sub(f, 1, bar - 1)) == 1 then return 0 end
    redis.call('HDEL', KEYS[1], f)
  end
end
return 1
"#;

/// The user left the room on every node (room:leave): forget all their entries.
const FORGET_USER: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local f = all[i]
  local bar = string.find(f, '|', 1, true)
  if bar and string.sub(f, bar + 1) == ARGV[1] then redis.call('HDEL', KEYS[1], f) end
end
return 0
"#;

/// Users with a socket in the room on a live node, as stored JSON, each once.
const USERS: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
local alive, seen, ids = {}, {}, {}
for i = 1, #all, 2 do
  local f = all[i]
  local bar = string.find(f, '|', 1, true)
  if bar and tonumber(all[i + 1]) > 0 then
    local node = string.sub(f, 1, bar - 1)
    if alive[node] == nil then alive[node] = redis.call('EXISTS', ARGV[1] .. node) == 1 end
    local uid = string.sub(f, bar + 1)
    if alive[node] then
      if not seen[uid] then seen[uid] = true; ids[#ids + 1] = uid end
    else
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
local out = {}
for i = 1, #ids, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end
  local users = redis.call('HMGET', KEYS[2], unpack(chunk))
  for _, u in ipairs(users) do if u then out[#out + 1] = u end end
end
return out
"#;

/// Cluster-wide presence for one node. This node's own sockets are also kept in memory ([`LocalPresence`]), which
/// answers while Redis is away and rebuilds this node's Redis entries when it is back.
pub struct ClusterPresence {
    link: RedisLink,
    local: Arc<LocalPresence>,
    still_there: StillThere,
}

/// Whether a socket of this node is still in a room: `(namespace, room, socket)`.
pub type StillThere = Box<dyn Fn(&str, &str, Sid) -> bool + Send + Sync>;

impl ClusterPresence {
    pub fn new(link: RedisLink, local: Arc<LocalPresence>, still_there: StillThere) -> Self {
        Self {
            link,
            local,
            still_there,
        }
    }

    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    fn room_key(&self, ns: &str, room: &str) -> String {
        format!("{}:presence:{ns}:{room}", self.link.prefix)
    }
    fn users_key(&self) -> String {
        format!("{}:users", self.link.prefix)
    }
    fn node_rooms_key(&self) -> String {
        format!("{}:node-rooms:{}", self.link.prefix, self.link.node_id)
    }
    fn node_prefix(&self) -> String {
        node_key(&self.link.prefix, "")
    }

    /// `true` when this is the user's first socket in the room cluster-wide.
    pub async fn enter(
        &self,
        ns: &str,
        room: &str,
        user: &User,
    ) -> Result<bool, fred::error::Error> {
        let json = serde_json::to_string(user).unwrap_or_default();
        let first: i64 = self
            .link
            .commands
            .eval(
                ENTER,
                vec![
                    self.room_key(ns, room),
                    self.users_key(),
                    self.node_rooms_key(),
                ],
                vec![
                    self.link.node_id.clone(),
                    user.id.clone(),
                    json,
                    self.node_prefix(),
                ],
            )
            .await?;
        Ok(first == 1)
    }

    /// `true` when this was the user's last socket in the room cluster-wide.
    pub async fn exit(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> Result<bool, fred::error::Error> {
        let last: i64 = self
            .link
            .commands
            .eval(
                EXIT,
                vec![self.room_key(ns, room)],
                vec![
                    self.link.node_id.clone(),
                    user_id.to_owned(),
                    self.node_prefix(),
                ],
            )
            .await?;
        Ok(last == 1)
    }

    pub async fn forget_user(
        &self,
        ns: &str,
        room: &str,
        user_id: &str,
    ) -> Result<(), fred::error::Error> {
        self.link
            .commands
            .eval::<i64, _, _, _>(
                FORGET_USER,
                vec![self.room_key(ns, room)],
                vec![user_id.to_owned()],
            )
            .await?;
        Ok(())
    }

    pub async fn users(&self, ns: &str, room: &str) -> Result<Vec<User>, fred::error::Error> {
        #[derive(serde::Deserialize)]
        struct Stored {
            id: String,
            name: String,
            anonymous: bool,
        }
        let stored: Vec<String> = self
            .link
            .commands
            .eval(
                USERS,
                vec![self.room_key(ns, room), self.users_key()],
                vec![self.node_prefix()],
            )
            .await?;
        let mut users: Vec<User> = stored
            .iter()
            .filter_map(|json| serde_json::from_str::<Stored>(json).ok())
            .map(|s| User {
                id: s.id,
                name: s.name,
                anonymous: s.anonymous,
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(users)
    }

    /// Rewrites this node's entries from its in-memory registry: after an outage Redis may hold entries for
    /// sockets that left meanwhile, and miss those that arrived.
    pub async fn resync(&self) {
        if let Err(e) = self.try_resync().await {
            tracing::warn!(error = %e, "could not re-sync presence with Redis");
        }
    }

    async fn try_resync(&self) -> Result<(), fred::error::Error> {
        self.clear_mine().await?;
        self.local.retain(&self.still_there);
        let commands = &self.link.commands;
        for (ns, room, user, sockets) in self.local.snapshot() {
            let key = self.room_key(&ns, &room);
            let json = serde_json::to_string(&user).unwrap_or_default();
            let field = format!("{}|{}", self.link.node_id, user.id);
            commands
                .hset::<(), _, _>(&key, (field, sockets as i64))
                .await?;
            commands
                .hset::<(), _, _>(self.users_key(), (user.id.clone(), json))
                .await?;
            commands
                .sadd::<(), _, _>(self.node_rooms_key(), key)
                .await?;
        }
        Ok(())
    }

    /// Deletes this node's entries from every room hash it has touched.
    async fn clear_mine(&self) -> Result<(), fred::error::Error> {
        let commands = &self.link.commands;
        let mine = format!("{}|", self.link.node_id);
        let touched: Vec<String> = commands.smembers(self.node_rooms_key()).await?;
        for key in touched {
            let fields: Vec<String> = commands.hkeys(&key).await?;
            let stale: Vec<String> = fields
                .into_iter()
                .filter(|f| f.starts_with(&mine))
                .collect();
            if !stale.is_empty() {
                commands.hdel::<(), _, _>(&key, stale).await?;
            }
        }
        Ok(())
    }

    /// Removes every entry of this node (graceful shutdown), so its users leave presence at once.
    pub async fn leave(&self) {
        if let Err(e) = self.clear_mine().await {
            tracing::debug!(error = %e, "could not clear presence on shutdown");
        }
        let _ = self.link.commands.del::<(), _>(self.node_rooms_key()).await;
        self.link.leave_cluster().await;
    }
}
