//! Several nodes behind a load balancer: the Redis link that the Socket.IO adapter and cluster-wide presence
//! share, its health, and delivery that falls back to this node's own sockets while Redis is away.
//!
//! Redis is a real dependency with real failures. The link keeps a reconnect policy and a command timeout,
//! restores every shard subscription of the adapter after a reconnect (fred 10.1's own `resubscribe_all` stops
//! at an empty `SUBSCRIBE` and never reaches the shard channels), and tracks whether Redis answers, so that
//! while it does not, broadcasts go straight to this node's sockets instead of waiting on a dead connection.
//!
//! The heartbeat drives a [`Membership`] (presence): it refreshes this node's liveness through it on every
//! beat, and when Redis answers again after an outage it has the membership rebuild its entries *before*
//! reporting Redis up. This module knows nothing of the chat or of presence itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
    types::RespVersion,
};
use serde::Serialize;
use socketioxide::{adapter::Adapter, operators::BroadcastOperators};

/// How often the link checks Redis and refreshes this node's liveness.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// A node whose liveness has not been refreshed for this long is dead: its users leave presence.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// Longest a Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a rebuild of this node's state in Redis may take before it is abandoned (and retried next beat).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pub/sub messages that may wait for the adapter before the oldest are dropped.
const PUBSUB_BUFFER: usize = 32 * 1024;
/// Delay between reconnection attempts: well inside the 5 s in which delivery must resume.
const RECONNECT_DELAY_MS: u32 = 500;

/// What this node keeps in Redis besides the adapter's channels, kept alive by the heartbeat.
pub trait Membership: Send + Sync + 'static {
    /// Runs on every beat while Redis is connected: refreshes this node's liveness. `Ok(false)` when Redis
    /// answers but this node's state there is lost or stale (Redis restarted empty, the node was taken for
    /// dead, a write failed) and must be rebuilt by [`Membership::restore`] before Redis is reported up.
    fn beat(&self) -> impl Future<Output = Result<bool, fred::error::Error>> + Send;
    /// Rebuilds this node's state in Redis. Redis is reported up only once this has succeeded.
    fn restore(&self) -> impl Future<Output = Result<(), fred::error::Error>> + Send;
    /// Redis is reported down: stop relying on it until the next [`Membership::restore`].
    fn down(&self);
}

/// The connection to Redis and what this node knows about it.
#[derive(Clone)]
pub struct RedisLink {
    /// Carries the Socket.IO adapter's sharded pub/sub.
    pub subscriber: SubscriberClient,
    /// Runs presence scripts and health checks.
    pub commands: Client,
    /// Prefix of every key and channel palaver uses, so several deployments can share one Redis.
    pub prefix: String,
    up: Arc<AtomicBool>,
    /// Reconnections of either client so far (`/metrics`).
    reconnects: Arc<AtomicU64>,
    /// Broadcasts delivered to this node only because Redis was down or did not take them (`/metrics`).
    fallbacks: Arc<AtomicU64>,
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
        Ok(Self {
            subscriber,
            commands,
            prefix: prefix.to_owned(),
            up: Arc::new(AtomicBool::new(true)),
            reconnects: Arc::new(AtomicU64::new(0)),
            fallbacks: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Reconnections of the link's clients so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Broadcasts that fell back to this node's sockets so far.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether Redis answered the last check and this node's state there is complete.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
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

    /// Starts the background work: subscription restore on reconnect, and the heartbeat that keeps
    /// `membership` alive, tracks health (logging each change once), and has `membership` rebuilt after an
    /// outage before Redis is reported up again. Abort the returned handle on shutdown, before the membership
    /// departs, or the next beat would bring it back.
    pub fn spawn_watchers<M: Membership>(&self, membership: M) -> tokio::task::AbortHandle {
        let subscriber = self.subscriber.clone();
        let reconnects = self.reconnects.clone();
        self.subscriber.on_reconnect(move |_server| {
            let subscriber = subscriber.clone();
            reconnects.fetch_add(1, Ordering::Relaxed);
            async move {
                Self::restore_subscriptions(&subscriber).await;
                tracing::info!("Redis subscriber reconnected; subscriptions restored");
                Ok(())
            }
        });
        let reconnects = self.reconnects.clone();
        self.commands.on_reconnect(move |_server| {
            reconnects.fetch_add(1, Ordering::Relaxed);
            async { Ok::<(), fred::error::Error>(()) }
        });
        let link = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(HEARTBEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                link.beat(&membership).await;
            }
        })
        .abort_handle()
    }

    async fn beat<M: Membership>(&self, membership: &M) {
        let connected = self.subscriber.is_connected() && self.commands.is_connected();
        let beat = match connected {
            true => tokio::time::timeout(HEARTBEAT, membership.beat()).await,
            false => Ok(Err(fred::error::Error::new(
                fred::error::ErrorKind::IO,
                "not connected",
            ))),
        };
        let was = self.is_up();
        let in_sync = match beat {
            Ok(Ok(in_sync)) => in_sync,
            Ok(Err(e)) => {
                self.went_down(membership, was, &e.to_string());
                return;
            }
            Err(_) => {
                self.went_down(membership, was, "heartbeat timed out");
                return;
            }
        };
        if was && in_sync {
            return;
        }
        if was {
            self.went_down(membership, was, "this node's presence in Redis is stale");
        } else {
            Self::restore_subscriptions(&self.subscriber).await;
        }
        match tokio::time::timeout(RESTORE_TIMEOUT, membership.restore()).await {
            Ok(Ok(())) => {
                self.up.store(true, Ordering::Release);
                tracing::info!(
                    "Redis reachable again: presence rebuilt, cross-node delivery resumed"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not rebuild presence in Redis; retrying")
            }
            Err(_) => tracing::warn!("rebuilding presence in Redis timed out; retrying"),
        }
    }

    fn went_down<M: Membership>(&self, membership: &M, was: bool, why: &str) {
        if was {
            self.up.store(false, Ordering::Release);
            membership.down();
            tracing::warn!(
                why,
                "Redis not usable: delivering to this node's sockets only until it is back"
            );
        }
    }
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
    link.fallbacks.fetch_add(1, Ordering::Relaxed);
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
