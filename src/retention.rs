//! Message retention (`retention_days`): a background job that turns each namespace's messages older than its
//! retention into tombstones ([`crate::store::Lifecycle`]), and deletes its webhook outbox rows as old.
//!
//! The job runs on one node at a time: a node runs it only after claiming the `jobs` row `retention`, which it can
//! do once the last run is an interval old and nobody else holds the lease ([`crate::store::Lifecycle::claim_job`]).
//! On SQLite there is one node, and the claim simply succeeds. Every node tries every [`TICK`] (or interval, if
//! shorter), so a node that stops or dies is replaced within one: its lease runs out after [`LEASE_SECS`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NamespaceSettings};
use crate::store::{self, SharedStore, StoreResult};

/// The job's row in `jobs`.
pub const JOB: &str = "retention";
/// How long a claim holds the job, in seconds: longer than a run may take ([`RUN_BUDGET`]), so that two runs never
/// overlap.
const LEASE_SECS: i64 = 600;
/// How long one run works before it stops and leaves the rest to the next one (the lease must outlast it).
const RUN_BUDGET: Duration = Duration::from_secs(300);
/// Longest wait between two attempts to claim the job.
const TICK: Duration = Duration::from_secs(60);
/// Rooms read per query.
const ROOMS_PER_QUERY: i64 = 100;
/// Messages expired per transaction: what one room's lock is held for.
const MESSAGES_PER_TRANSACTION: i64 = 500;

/// What retention applies where.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Namespaces that keep history and have a retention: (path, days).
    namespaces: Vec<(String, u32)>,
    /// Seconds between two runs (`--retention-interval-secs`).
    interval_secs: u32,
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionRun {
    /// Messages turned into tombstones.
    pub messages_expired: u64,
    /// Rooms they were in.
    pub rooms: u64,
    /// Webhook outbox rows deleted.
    pub webhook_rows: u64,
    /// The run reached the end (`false`: it ran out of time; the next run goes on).
    pub complete: bool,
}

impl std::fmt::Display for RetentionRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} messages expired in {} rooms, {} webhook rows deleted{}",
            self.messages_expired,
            self.rooms,
            self.webhook_rows,
            if self.complete {
                ""
            } else {
                " (stopped early)"
            }
        )
    }
}

impl Retention {
    /// The retention of the namespaces served, if any keeps messages for a limited time.
    pub fn from_config(config: &Config, namespaces: &[NamespaceSettings]) -> Option<Self> {
        let namespaces: Vec<(String, u32)> = namespaces
            .iter()
            .filter(|ns| ns.history)
            .filter_map(|ns| Some((ns.path.clone(), ns.retention_days?)))
            .collect();
        if namespaces.is_empty() {
            return None;
        }
        Some(Self {
            namespaces,
            interval_secs: config.retention_interval_secs.get(),
        })
    }

    /// The namespaces with a retention, and its days.
    pub fn namespaces(&self) -> &[(String, u32)] {
        &self.namespaces
    }

    /// Claims the job for `node` and, if this node got it, runs it: `None` when it was not due or another node
    /// holds it.
    pub async fn run_once(
        &self,
        store: &SharedStore,
        node: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<RetentionRun>> {
        let due_before = now - chrono::Duration::seconds(self.interval_secs.into());
        let lease_until = now + chrono::Duration::seconds(LEASE_SECS);
        if !store
            .claim_job(JOB, node, now, lease_until, due_before)
            .await?
        {
            return Ok(None);
        }
        let result = self.expire(store, now).await;
        let summary = match &result {
            Ok(run) => run.to_string(),
            Err(e) => format!("failed: {e}"),
        };
        store.finish_job(JOB, node, store::now(), &summary).await?;
        result.map(Some)
    }

    /// One run: every namespace's old messages, room by room, until done or out of time.
    async fn expire(&self, store: &SharedStore, now: DateTime<Utc>) -> StoreResult<RetentionRun> {
        let deadline = tokio::time::Instant::now() + RUN_BUDGET;
        let mut run = RetentionRun::default();
        for (ns, days) in &self.namespaces {
            let cutoff = now - chrono::Duration::days(i64::from(*days));
            let mut after = String::new();
            loop {
                let rooms = store
                    .rooms_to_expire(ns, cutoff, &after, ROOMS_PER_QUERY)
                    .await?;
                for room in &rooms {
                    run.rooms += 1;
                    loop {
                        if tokio::time::Instant::now() > deadline {
                            return Ok(run);
                        }
                        let expired = store
                            .expire_messages(ns, room, cutoff, MESSAGES_PER_TRANSACTION, now)
                            .await?;
                        run.messages_expired += expired.tombstoned;
                        if !expired.more {
                            break;
                        }
                    }
                }
                match rooms.last() {
                    Some(last) if rooms.len() as i64 == ROOMS_PER_QUERY => after = last.clone(),
                    _ => break,
                }
            }
            run.webhook_rows += store.expire_hooks(ns, cutoff).await?;
        }
        run.complete = true;
        Ok(run)
    }

    /// Starts this node's retention task; it stops when `stop` is cancelled.
    pub fn spawn(self, store: SharedStore, stop: CancellationToken) -> JoinHandle<()> {
        let node = uuid::Uuid::new_v4().to_string();
        let tick = Duration::from_secs(self.interval_secs.into()).min(TICK);
        tokio::spawn(async move {
            tracing::info!(namespaces = ?self.namespaces, every_secs = self.interval_secs, "retention job started");
            loop {
                match self.run_once(&store, &node, store::now()).await {
                    Ok(Some(run)) => tracing::info!(%run, "retention run"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "retention run failed"),
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
            }
        })
    }
}
