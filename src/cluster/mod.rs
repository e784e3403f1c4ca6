//! Several nodes behind a load balancer: the Redis link that the Socket.IO adapter and cluster-wide presence
//! share, its health, and delivery that falls back to this node's own sockets while Redis is away.
//!
//! Redis is a real dependency with real failures. The link keeps a reconnect policy and a command timeout,
//! restores every shard subscription of the adapter after a reconnect (fred 10.1's own `resubscribe_all` stops
//! at an empty `SUBSCRIBE` and never reaches the shard channels), and tracks whether Redis answers, so that
//! while it does not, broadcasts go straight to this node's sockets instead of waiting on a dead connection.

pub mod presence;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
    types::{Expiration, RespVersion},
};
use serde::Serialize;
use socketioxide::{adapter::Adapter, operators::BroadcastOperators};

/// How often the link checks Redis and refreshes this node's liveness key.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node whose liveness key has not been refreshed for this long is dead: its users leave presence.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// Longest a Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Pub/sub messages that may wait for the adapter before the oldest are dropped.
const PUBSUB_BUFFER: usize = 32 * 1024;
/// Delay between reconnection attempts: well inside the 5 s in which delivery must resume.
const RECONNECT_DELAY_MS: u32 = 500;

/// The connection to Redis and what this node knows about it.
#[derive(Clone)]
pub struct RedisLink {
    /// Carries the Socket.IO adapter's sharded pub/sub.
    pub subscriber: SubscriberClient,
    /// Runs presence scripts, liveness keys and health checks.
    pub commands: Client,
    /// Unique per process: names this node in presence and liveness keys.
    pub node_id: String,
    /// Prefix of every key and channel palaver uses, so several deployments can share one Redis.
    pub prefix: String,
    up: Arc<AtomicBool>,
}

impl RedisLink {
    /// Connects both clients. Fails when Redis cannot be reached at start-up: a node that starts without its
    /// cluster would silently split the chat.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, fred::error::Error> {
        let mut config = RedisConfig::from_url(url)?;
        config.version = RespVersion::RESP3;
        let builder = || {
            let mut builder = Builder::from_config(config.clone());
            builder
                .with_performance_config(|p| {
                    p.default_command_timeout = COMMAND_TIMEOUT;
                    // Pub/sub messages reach the adapter through this broadcast channel; fred's default (32)
                    // drops messages ("lagged") under a burst of cross-node broadcasts.
                    p.broadcast_channel_capacity = PUBSUB_BUFFER;
                })
                .with_connection_config(|c| {
                    c.connection_timeout = Duration::from_secs(2);
                    c.internal_command_timeout = COMMAND_TIMEOUT;
                    // A command sent while disconnected waits for the reconnection once, not forever.
                    c.max_command_attempts = 1;
                })
                // 0 attempts = retry forever.
                .set_policy(ReconnectPolicy::new_constant(0, RECONNECT_DELAY_MS));
            builder
        };
        let subscriber = builder().build_subscriber_client()?;
        let commands = builder().build()?;
        commands.init().await?;
        let link = Self {
            subscriber,
            commands,
            node_id: uuid::Uuid::new_v4().simple().to_string(),
            prefix: prefix.to_owned(),
            up: Arc::new(AtomicBool::new(true)),
        };
        link.refresh_liveness().await?;
        Ok(link)
    }

    /// Whether Redis answered the last check.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn node_key(&self) -> String {
        node_key(&self.prefix, &self.node_id)
    }

    async fn refresh_liveness(&self) -> Result<(), fred::error::Error> {
        let ttl = i64::try_from(NODE_TTL.as_millis()).unwrap_or(i64::MAX);
        self.commands
            .set::<(), _, _>(self.node_key(), "1", Some(Expiration::PX(ttl)), None, false)
            .await
    }

    /// Re-subscribes every shard channel the adapter uses. Called after each reconnection of the subscriber.
    async fn restore_subscriptions(subscriber: &SubscriberClient) {
        let channels = subscriber.tracked_shard_channels();
        for channel in channels {
            if let Err(e) = subscriber.ssubscribe(channel.to_string()).await {
                tracing::warn!(%channel, error = %e, "could not restore a Redis subscription");
            }
        }
    }

    /// Starts the background work: subscription restore on reconnect, and the heartbeat that refreshes this
    /// node's liveness key, tracks health (logging each change once), and re-syncs presence after an outage.
    pub fn spawn_watchers(&self, presence: Arc<presence::ClusterPresence>) {
        let subscriber = self.subscriber.clone();
        self.subscriber.on_reconnect(move |_server| {
            let subscriber = subscriber.clone();
            async move {
                Self::restore_subscriptions(&subscriber).await;
                tracing::info!("Redis subscriber reconnected; subscriptions restored");
                Ok(())
            }
        });
        let link = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let healthy = link.subscriber.is_connected()
                    && link.commands.is_connected()
                    && tokio::time::timeout(HEARTBEAT, link.refresh_liveness())
                        .await
                        .is_ok_and(|r| r.is_ok());
                let was = link.up.swap(healthy, Ordering::Relaxed);
                match (was, healthy) {
                    (true, false) => tracing::warn!(
                        "Redis unreachable: delivering to this node's sockets only until it is back"
                    ),
                    (false, true) => {
                        Self::restore_subscriptions(&link.subscriber).await;
                        presence.resync().await;
                        tracing::info!("Redis reachable again: cross-node delivery resumed");
                    }
                    _ => {}
                }
            }
        });
    }

    /// Removes this node's liveness key so that its users leave presence at once.
    pub async fn leave_cluster(&self) {
        let _ = self.commands.del::<(), _>(self.node_key()).await;
    }
}

pub fn node_key(prefix: &str, node_id: &str) -> String {
    format!("{prefix}:node:{node_id}")
}

/// Longest a broadcast may wait on Redis before it is delivered to this node only.
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(2);

/// Emits to the sockets `target` selects, cluster-wide when Redis is up, else to this node's sockets only.
/// `target` is called again for the fallback, since a selection is consumed by emitting.
pub async fn deliver<A: Adapter, T: Serialize + ?Sized>(
    link: Option<&RedisLink>,
    target: impl Fn() -> BroadcastOperators<A>,
    event: &str,
    data: &T,
) {
    let Some(link) = link else {
        if let Err(e) = target().emit(event, data).await {
            // Typically a socket that closed while the broadcast went out: nothing to do about it.
            tracing::debug!(event, error = %e, "broadcast failed");
        }
        return;
    };
    if link.is_up() {
        match tokio::time::timeout(BROADCAST_TIMEOUT, target().emit(event, data)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::debug!(event, error = %e, "cluster broadcast failed; delivering locally")
            }
            Err(_) => tracing::debug!(event, "cluster broadcast timed out; delivering locally"),
        }
    }
    // The adapter publishes before it delivers locally, so a failed or abandoned publish delivered nothing:
    // delivering locally now cannot duplicate.
    if let Err(e) = target().local().emit(event, data).await {
        tracing::debug!(event, error = %e, "local broadcast failed");
    }
}

/// Runs a room operation on every node (e.g. "all sockets of this user leave that room") when Redis is up. The
/// caller has already applied it to this node's sockets, which is all that can be done while Redis is away.
pub async fn on_every_node<E: std::fmt::Display>(
    link: Option<&RedisLink>,
    what: &str,
    operation: impl Future<Output = Result<(), E>>,
) {
    if !link.is_some_and(RedisLink::is_up) {
        return;
    }
    match tokio::time::timeout(BROADCAST_TIMEOUT, operation).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(what, error = %e, "cluster-wide room operation failed"),
        Err(_) => tracing::warn!(what, "cluster-wide room operation timed out"),
    }
}
