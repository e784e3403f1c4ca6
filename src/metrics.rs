//! Prometheus metrics (`/metrics`; every series, and alerts worth setting, in docs/operations.md): what the server
//! counts and times as it goes, and the gauges of its state, read when it is scraped.
//!
//! Each [`crate::serve`] has a recorder of its own, never installed as the process's global recorder: several
//! servers in one process (the tests) keep separate numbers, and an application that embeds palaver keeps the
//! global recorder for itself. The series of the hot paths are registered once, at start-up (an error code's or
//! a refusal reason's at its first use), so recording one is an atomic add on a handle: no label is built, no map
//! searched, nothing allocated per event. Only the `process_*` series describe the whole process, whichever
//! server renders them.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::error::ErrorCode;

pub const CONNECTED_SOCKETS: &str = "palaver_connected_sockets";
pub const CONNECTS: &str = "palaver_connects_total";
pub const EVENTS: &str = "palaver_events_total";
pub const EVENT_DURATION: &str = "palaver_event_duration_seconds";
pub const ACK_DURATION: &str = "palaver_ack_duration_seconds";
pub const MESSAGES_STORED: &str = "palaver_messages_stored_total";
pub const DELIVERIES: &str = "palaver_deliveries_total";
pub const COMMIT_BATCH_SIZE: &str = "palaver_commit_batch_size";
pub const COMMIT_DURATION: &str = "palaver_commit_duration_seconds";
pub const DB_POOL_CONNECTIONS: &str = "palaver_db_pool_connections";
pub const DB_POOL_MAX: &str = "palaver_db_pool_max_connections";
pub const REDIS_UP: &str = "palaver_redis_up";
pub const REDIS_RECONNECTS: &str = "palaver_redis_reconnects_total";
pub const CLUSTER_FALLBACKS: &str = "palaver_cluster_fallbacks_total";
pub const WEBHOOK_ATTEMPTS: &str = "palaver_webhook_attempts_total";
pub const WEBHOOK_DEAD_LETTERS: &str = "palaver_webhook_dead_letters_total";
pub const WEBHOOK_OUTBOX: &str = "palaver_webhook_outbox_rows";

/// Events counted under a name of their own besides the contract's: a profile's operations that have no event of
/// the contract (its other operations count as the contract event they perform), and events nobody handles.
pub const PROFILE_EVENTS: [&str; 3] = ["identify", "relay", "ignore"];
pub const UNKNOWN_EVENT: &str = "unknown";

/// Latency buckets in seconds: a send commits in about a millisecond on an idle node, a store outage shows as
/// seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Messages per commit, up to the batch writer's cap (`store::batch::MAX_BATCH`).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// How often histogram samples (kept raw until then) are folded into their buckets, so that they never pile up:
/// at 100k events a second, a second of samples is about 1.6 MB.
const UPKEEP: Duration = Duration::from_secs(1);

/// One event's series.
struct EventSeries {
    name: &'static str,
    ok: Counter,
    /// Registered at the first failure with each code (`code as usize`), so the scrape lists only codes that
    /// happened.
    errors: [OnceLock<Counter>; ErrorCode::ALL.len()],
    handler: Histogram,
    ack: Histogram,
}

/// A server's metrics: its recorder (none with `--metrics false`, where every handle is a no-op) and the
/// handles of the hot paths.
pub struct Metrics {
    prometheus: Option<(PrometheusRecorder, PrometheusHandle)>,
    events: Vec<EventSeries>,
    messages_stored: Counter,
    deliveries: Counter,
    commit: CommitMetrics,
    process: metrics_process::Collector,
}

/// Where an event is counted: its index in [`Metrics`]' table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventSlot(usize);

/// The group-commit writer's series, handed to the store.
#[derive(Clone)]
pub struct CommitMetrics {
    batch_size: Histogram,
    duration: Histogram,
}

impl CommitMetrics {
    /// One transaction of `size` messages committed (or failed) in `elapsed`.
    pub fn record(&self, size: usize, elapsed: Duration) {
        self.batch_size.record(size as f64);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// The server's state at a scrape, as the gauges show it.
#[derive(Default)]
pub struct Snapshot {
    /// This node's sockets per namespace: (path, over WebSocket, over HTTP long-polling).
    pub sockets: Vec<(String, u64, u64)>,
    pub pools: Vec<crate::store::PoolStats>,
    /// With Redis: whether it is usable, and the link's reconnections and fallbacks to local delivery so far.
    pub redis: Option<RedisStats>,
    /// With webhooks: attempts so far, and the outbox (unknown when the database did not answer in time).
    pub webhooks: Option<WebhookStats>,
}

pub struct RedisStats {
    pub up: bool,
    pub reconnects: u64,
    pub fallbacks: u64,
}

#[derive(Default)]
pub struct WebhookStats {
    pub delivered: u64,
    pub failed: u64,
    pub dead: u64,
    /// Outbox rows waiting (`pending`) and dead letters (`failed`).
    pub outbox: Option<(i64, i64)>,
}

impl Metrics {
    /// Metrics with the events of the contract's table, `events`; none recorded unless `enabled`.
    pub fn new(enabled: bool, events: impl IntoIterator<Item = &'static str>) -> Self {
        let prometheus = enabled.then(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            (recorder, handle)
        });
        let names: Vec<&'static str> = events
            .into_iter()
            .chain(PROFILE_EVENTS)
            .chain([UNKNOWN_EVENT])
            .collect();
        let recorder: &dyn metrics::Recorder = match &prometheus {
            Some((recorder, _)) => recorder,
            None => &metrics::NoopRecorder,
        };
        let (events, messages_stored, deliveries, commit, process) =
            metrics::with_local_recorder(recorder, || {
                describe();
                let events = names
                    .iter()
                    .map(|&name| EventSeries {
                        name,
                        ok: counter!(EVENTS, "event" => name, "outcome" => "ok"),
                        errors: Default::default(),
                        handler: histogram!(EVENT_DURATION, "event" => name),
                        ack: histogram!(ACK_DURATION, "event" => name),
                    })
                    .collect();
                let process = metrics_process::Collector::default();
                process.describe();
                let commit = CommitMetrics {
                    batch_size: histogram!(COMMIT_BATCH_SIZE),
                    duration: histogram!(COMMIT_DURATION),
                };
                let stored = counter!(MESSAGES_STORED);
                (events, stored, counter!(DELIVERIES), commit, process)
            });
        let metrics = Self {
            prometheus,
            events,
            messages_stored,
            deliveries,
            commit,
            process,
        };
        if let Some((_, handle)) = &metrics.prometheus {
            // Publishes the descriptions.
            handle.run_upkeep();
        }
        metrics
    }

    /// Whether `/metrics` has anything to serve.
    pub fn enabled(&self) -> bool {
        self.prometheus.is_some()
    }

    /// Runs `f` with this server's recorder as the one the `metrics` macros reach (a no-op one when disabled:
    /// never the process's global recorder).
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.prometheus {
            Some((recorder, _)) => metrics::with_local_recorder(recorder, f),
            None => metrics::with_local_recorder(&metrics::NoopRecorder, f),
        }
    }

    /// The slot of an event of the contract, or of [`PROFILE_EVENTS`]; anything else counts as
    /// [`UNKNOWN_EVENT`].
    pub fn slot(&self, event: &str) -> EventSlot {
        let found = self.events.iter().position(|e| e.name == event);
        EventSlot(found.unwrap_or(self.events.len().saturating_sub(1)))
    }

    /// The slot of the contract's `index`th event (the order given to [`Metrics::new`]).
    pub fn table_slot(index: usize) -> EventSlot {
        EventSlot(index)
    }

    /// An event's handler ran from `started` until now.
    pub fn handled(&self, slot: EventSlot, started: Instant) {
        if let Some(series) = self.events.get(slot.0) {
            series.handler.record(started.elapsed().as_secs_f64());
        }
    }

    /// An event received at `received` has been answered (acked, or its error sent), `Ok` or with an error code.
    pub fn answered(&self, slot: EventSlot, received: Instant, outcome: Result<(), ErrorCode>) {
        let Some(series) = self.events.get(slot.0) else {
            return;
        };
        series.ack.record(received.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => series.ok.increment(1),
            Err(code) => {
                let Some(counter) = series.errors.get(code as usize) else {
                    return;
                };
                counter
                    .get_or_init(|| {
                        self.with(
                            || counter!(EVENTS, "event" => series.name, "outcome" => code.as_str()),
                        )
                    })
                    .increment(1);
            }
        }
    }

    /// The counter of connections admitted to namespace `ns`, registered once per namespace at start-up.
    pub fn connects(&self, ns: &str) -> Counter {
        self.with(|| counter!(CONNECTS, "namespace" => ns.to_owned(), "outcome" => "ok"))
    }

    /// A connection to `ns` was refused for `reason` (the code its `connect_error` names).
    pub fn refused(&self, ns: &str, reason: &'static str) {
        self.with(|| counter!(CONNECTS, "namespace" => ns.to_owned(), "outcome" => reason))
            .increment(1);
    }

    /// A message was committed to the store (a retry of one already stored is not counted again).
    pub fn message_stored(&self) {
        self.messages_stored.increment(1);
    }

    /// A new message went out to its room (cluster-wide, or to this node's sockets while Redis is away).
    pub fn delivered(&self) {
        self.deliveries.increment(1);
    }

    /// The batch writer's series, for the store.
    pub fn commit(&self) -> CommitMetrics {
        self.commit.clone()
    }

    /// Folds histogram samples into their buckets every few seconds while the server runs, so they do not pile up
    /// between scrapes (or without any).
    pub fn spawn_upkeep(&self) -> Option<tokio::task::AbortHandle> {
        let (_, handle) = self.prometheus.as_ref()?;
        let handle = handle.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(UPKEEP);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                handle.run_upkeep();
            }
        });
        Some(task.abort_handle())
    }

    /// The Prometheus text exposition of every series, with the gauges set from `state`; `None` when disabled.
    pub fn render(&self, state: &Snapshot) -> Option<String> {
        let (recorder, handle) = self.prometheus.as_ref()?;
        metrics::with_local_recorder(recorder, || {
            for (ns, websocket, polling) in &state.sockets {
                for (transport, n) in [("websocket", websocket), ("polling", polling)] {
                    gauge!(CONNECTED_SOCKETS, "namespace" => ns.clone(), "transport" => transport)
                        .set(*n as f64);
                }
            }
            for pool in &state.pools {
                let in_use = pool.size.saturating_sub(pool.idle);
                gauge!(DB_POOL_CONNECTIONS, "pool" => pool.pool, "state" => "in_use")
                    .set(f64::from(in_use));
                gauge!(DB_POOL_CONNECTIONS, "pool" => pool.pool, "state" => "idle")
                    .set(f64::from(pool.idle));
                gauge!(DB_POOL_MAX, "pool" => pool.pool).set(f64::from(pool.max));
            }
            if let Some(redis) = &state.redis {
                gauge!(REDIS_UP).set(if redis.up { 1.0 } else { 0.0 });
                counter!(REDIS_RECONNECTS).absolute(redis.reconnects);
                counter!(CLUSTER_FALLBACKS).absolute(redis.fallbacks);
            }
            if let Some(webhooks) = &state.webhooks {
                counter!(WEBHOOK_ATTEMPTS, "outcome" => "delivered").absolute(webhooks.delivered);
                counter!(WEBHOOK_ATTEMPTS, "outcome" => "failed").absolute(webhooks.failed);
                counter!(WEBHOOK_DEAD_LETTERS).absolute(webhooks.dead);
                if let Some((pending, failed)) = webhooks.outbox {
                    gauge!(WEBHOOK_OUTBOX, "state" => "pending").set(pending as f64);
                    gauge!(WEBHOOK_OUTBOX, "state" => "failed").set(failed as f64);
                }
            }
            self.process.collect();
        });
        Some(handle.render())
    }
}

/// Histograms with buckets (rendered as Prometheus histograms, which aggregate across nodes, not as summaries).
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_SIZE.to_owned()), BATCH_BUCKETS)
        })
        // Fails only on an empty list of buckets, and these are not empty.
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// The `# HELP` line of every palaver series.
fn describe() {
    describe_gauge!(
        CONNECTED_SOCKETS,
        "Sockets connected to this node, by namespace and Engine.IO transport"
    );
    describe_counter!(
        CONNECTS,
        "Connection attempts by namespace and outcome: ok, or the refusal reason of connect_error"
    );
    describe_counter!(
        EVENTS,
        "Client events answered, by event (the contract's name; a profile's operation) and outcome (ok or the error code)"
    );
    describe_histogram!(
        EVENT_DURATION,
        Unit::Seconds,
        "Time an event's handler ran, by event"
    );
    describe_histogram!(
        ACK_DURATION,
        Unit::Seconds,
        "Time from an event's arrival to its answer (queueing behind the socket's earlier events included), by event"
    );
    describe_counter!(
        MESSAGES_STORED,
        "Messages committed to the store (retries of a stored message not counted)"
    );
    describe_counter!(
        DELIVERIES,
        "New messages sent out to their room (one per message, whatever the number of recipients)"
    );
    describe_histogram!(
        COMMIT_BATCH_SIZE,
        Unit::Count,
        "Messages per group-commit transaction"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time one group commit took (waiting for the write connection included)"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database connections by pool and state (in_use, idle)"
    );
    describe_gauge!(DB_POOL_MAX, "Most connections a database pool may open");
    describe_gauge!(
        REDIS_UP,
        "1 while Redis answers and this node's state there is complete, else 0 (several nodes only)"
    );
    describe_counter!(REDIS_RECONNECTS, "Reconnections of the Redis link");
    describe_counter!(
        CLUSTER_FALLBACKS,
        "Broadcasts delivered to this node's sockets only because Redis was down or did not take them in time"
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook delivery attempts by outcome (delivered, failed)"
    );
    describe_counter!(
        WEBHOOK_DEAD_LETTERS,
        "Webhook events that used up their attempts (dead letters)"
    );
    describe_gauge!(
        WEBHOOK_OUTBOX,
        "Webhook outbox rows by state: pending (waiting for delivery) and failed (dead letters)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn events_count_by_outcome_and_render_as_prometheus_text() {
        let metrics = Metrics::new(true, ["message:send", "room:join"]);
        let send = metrics.slot("message:send");
        assert_eq!(send, Metrics::table_slot(0));
        let received = Instant::now();
        metrics.answered(send, received, Ok(()));
        metrics.answered(send, received, Ok(()));
        metrics.answered(send, received, Err(ErrorCode::RateLimited));
        metrics.handled(send, received);
        metrics.answered(metrics.slot("no such event"), received, Ok(()));
        metrics.commit().record(3, Duration::from_millis(2));
        let text = metrics.render(&Snapshot::default()).expect("enabled");
        assert_eq!(
            sample(
                &text,
                r#"palaver_events_total{event="message:send",outcome="ok"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"palaver_events_total{event="message:send",outcome="rate_limited"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"palaver_events_total{event="unknown",outcome="ok"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"palaver_ack_duration_seconds_count{event="message:send"}"#
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "palaver_commit_batch_size_sum"),
            Some(3.0),
            "{text}"
        );
        assert!(text.contains("# TYPE palaver_commit_duration_seconds histogram"));
    }

    #[test]
    fn two_servers_keep_their_own_numbers() {
        let a = Metrics::new(true, ["message:send"]);
        let b = Metrics::new(true, ["message:send"]);
        a.message_stored();
        let series = "palaver_messages_stored_total";
        let of = |m: &Metrics| sample(&m.render(&Snapshot::default()).expect("on"), series);
        assert_eq!(of(&a), Some(1.0));
        assert_eq!(of(&b), Some(0.0));
    }

    #[test]
    fn disabled_metrics_render_nothing_and_record_nowhere() {
        let metrics = Metrics::new(false, ["message:send"]);
        metrics.answered(metrics.slot("message:send"), Instant::now(), Ok(()));
        metrics.message_stored();
        assert!(metrics.render(&Snapshot::default()).is_none());
    }
}
