//! Webhooks (`--webhook-url`): the events the host asked for, signed, at least once, in order per room.
//!
//! Two sources, one delivery task per node:
//! * `message.created` comes from the messages themselves: each room has a cursor ("delivered up to seq N",
//!   `webhook_cursors`). The batch writer tells this node's task which rooms it just committed to, and a sweep every
//!   [`SWEEP`] finds the rest (written on another node, or before a restart). A claimed room's messages go out one
//!   after the other, in seq order; the first failure stops the room until its retry is due. So the chat's write
//!   path is the same with webhooks as without.
//! * Member events and `message.missed` come from the outbox (`webhook_outbox`), written with their cause: the
//!   first pending row of each room at a time.
//!
//! Each delivery is a POST of `{ id, type, createdAt, data }` with `Palaver-Webhook-Id` and `Palaver-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`; a `2xx` is delivered, anything else (a timeout included)
//! is retried with exponential backoff until `--webhook-max-attempts`, then it is a dead letter (`failed` in the
//! outbox, listed and retried through the API). The host deduplicates by `Palaver-Webhook-Id`.
//!
//! After [`BREAKER`] failed attempts in a row the endpoint is taken for down: the node then makes one attempt at a
//! time (a probe), waiting longer after each failed one, and goes back to full speed at the first success. A dead
//! endpoint therefore costs the database a few queries a minute, and the events wait for it instead of burning
//! through their attempts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{
    self, ClaimedCursor, ClaimedHook, CursorFailure, CursorOutcome, HistoryQuery, HookEvent,
    HookEvents, NewHook, SharedStore,
};

/// Rooms (and outbox rows, each of another room) one round claims: deliveries in flight at once, per node.
const CLAIM: i64 = 32;
/// Rooms one round claims when the batch writer named more than [`CLAIM`]: all of them, up to this.
const CLAIM_NAMED: i64 = 1024;
/// Messages of one room delivered in a row before its cursor is recorded.
const RUN: u32 = 100;
/// How often a node looks for due outbox rows.
const POLL: Duration = Duration::from_millis(200);
/// How often a node sweeps every room for messages nobody told it about.
const SWEEP: Duration = Duration::from_secs(2);
/// Failed attempts in a row after which the endpoint is taken for down and only probed.
const BREAKER: u32 = 3;
/// Longest wait between two probes of an endpoint that is down.
const MAX_PROBE_WAIT: Duration = Duration::from_secs(60);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How much longer than a delivery's timeout a claim's lease lasts: time to record the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// The webhook configuration and its HTTP client.
pub struct Webhooks {
    client: reqwest::Client,
    url: String,
    secret: String,
    events: HookEvents,
    max_attempts: i64,
    backoff: Duration,
    timeout: Duration,
    /// Attempts delivered and failed, and events dead-lettered, so far (`/metrics`).
    delivered: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("url", &crate::config::redact_url(&self.url))
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .finish()
    }
}

/// The event types of `--webhook-events`; an unknown name is refused, naming the flag.
pub fn parse_events(names: &[String]) -> Result<HookEvents, String> {
    let mut events = HookEvents::NONE;
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let event = HookEvent::parse(name).ok_or_else(|| {
            let known: Vec<&str> = HookEvent::ALL.iter().map(|e| e.name()).collect();
            format!(
                "--webhook-events: unknown event {name:?} (known: {})",
                known.join(", ")
            )
        })?;
        events = events.with(event);
    }
    Ok(events)
}

/// Attempts one round made: whether the endpoint answered any, and how many failed.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    delivered: u32,
    failed: u32,
}

impl Tally {
    fn add(self, other: Tally) -> Tally {
        Tally {
            delivered: self.delivered + other.delivered,
            failed: self.failed + other.failed,
        }
    }
}

/// What a round claimed.
#[derive(Default)]
struct Claimed {
    rooms: Vec<ClaimedCursor>,
    rows: Vec<ClaimedHook>,
}

impl Webhooks {
    /// The webhooks of `--webhook-url`, if configured. The events are checked either way.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let events = parse_events(&config.webhook_events)?;
        let Some(url) = config.webhook_url.clone() else {
            return Ok(None);
        };
        let secret = config.webhook_secret.clone().ok_or_else(|| {
            "--webhook-url needs --webhook-secret (env PALAVER_WEBHOOK_SECRET): the host must be able to tell \
             palaver's deliveries from anyone else's"
                .to_owned()
        })?;
        let timeout = Duration::from_millis(config.webhook_timeout_ms.get().into());
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("--webhook-url: cannot build an HTTP client: {e}"))?;
        Ok(Some(Self {
            client,
            url,
            secret,
            events,
            max_attempts: config.webhook_max_attempts.get().into(),
            backoff: Duration::from_millis(config.webhook_backoff_ms.get().into()),
            timeout,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead: AtomicU64::new(0),
        }))
    }

    /// Attempts delivered, attempts failed, and events dead-lettered by this node so far.
    pub fn attempts(&self) -> (u64, u64, u64) {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        (read(&self.delivered), read(&self.failed), read(&self.dead))
    }

    /// An event used up its attempts.
    fn dead_lettered(&self) {
        self.dead.fetch_add(1, Ordering::Relaxed);
    }

    /// The event types the store must write to the outbox.
    pub fn events(&self) -> HookEvents {
        self.events
    }

    /// How long a claimed room is leased: several attempts, each up to the timeout, then recording the outcome.
    fn room_lease(&self) -> Duration {
        (self.timeout * 4).max(Duration::from_secs(60)) + LEASE_MARGIN
    }

    /// Starts this node's delivery task; it stops when `stop` is cancelled, giving up its unfinished leases.
    pub fn spawn(self: Arc<Self>, store: SharedStore, stop: CancellationToken) -> JoinHandle<()> {
        let node = uuid::Uuid::new_v4().to_string();
        tokio::spawn(async move {
            tracing::info!(url = %crate::config::redact_url(&self.url), %node, "webhook delivery started");
            let messages = self.events.contains(HookEvent::MessageCreated);
            if messages && let Err(e) = store.start_hook_cursors(store::now()).await {
                tracing::warn!(error = %e, "webhooks: cannot record when message.created started");
            }
            let wake = store.hook_wake();
            // Failed attempts in a row, across rooms: the breaker; and the waits since it opened.
            let mut failures: u32 = 0;
            let mut waits: i64 = 0;
            // Sweep at once: what was pending before a restart.
            let mut next_sweep = Instant::now();
            let mut next_poll = Instant::now();
            // Rooms whose failed message is due again then (this node failed it): claimed when due.
            let mut retries: Vec<(Instant, (String, String))> = Vec::new();
            loop {
                let probing = failures >= BREAKER;
                let now = Instant::now();
                let sweep = messages && now >= next_sweep;
                if sweep {
                    next_sweep = now + SWEEP;
                }
                let poll = now >= next_poll;
                if poll {
                    next_poll = now + POLL;
                }
                let mut named = wake.take_rooms();
                retries.retain(|(due, room)| {
                    let keep = *due > now;
                    if !keep {
                        named.push(room.clone());
                    }
                    keep
                });
                let claimed = tokio::select! {
                    _ = stop.cancelled() => break,
                    claimed = self.claim(&store, &node, probing, sweep, poll, named) => claimed,
                };
                if claimed.rooms.is_empty() && claimed.rows.is_empty() {
                    let mut until = if messages {
                        next_sweep.min(next_poll)
                    } else {
                        next_poll
                    };
                    if let Some(due) = retries.iter().map(|(due, _)| *due).min() {
                        until = until.min(due);
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                    continue;
                }
                // The outbox keeps its pace while it has rows.
                if !claimed.rows.is_empty() {
                    next_poll = Instant::now();
                }
                let lease_end = Instant::now() + self.room_lease() - LEASE_MARGIN;
                let rooms = claimed
                    .rooms
                    .iter()
                    .map(|cursor| self.deliver_room(&store, &node, cursor, lease_end));
                let rows = claimed
                    .rows
                    .iter()
                    .map(|hook| self.deliver_row(&store, &node, hook));
                let round = futures_util::future::join(
                    futures_util::future::join_all(rooms),
                    futures_util::future::join_all(rows),
                );
                let tally = tokio::select! {
                    _ = stop.cancelled() => break,
                    (rooms, rows) = round => {
                        let mut tally = rows.into_iter().fold(Tally::default(), Tally::add);
                        for (cursor, (room_tally, retry)) in claimed.rooms.iter().zip(rooms) {
                            tally = tally.add(room_tally);
                            if let Some(wait) = retry {
                                retries.push((Instant::now() + wait, (cursor.ns.clone(), cursor.room.clone())));
                            }
                        }
                        tally
                    }
                };
                if tally.delivered > 0 {
                    if failures >= BREAKER {
                        tracing::info!("webhook endpoint answers again");
                    }
                    failures = 0;
                    waits = 0;
                } else if tally.failed > 0 {
                    failures = failures.saturating_add(tally.failed);
                    if failures >= BREAKER {
                        // The first wait is the backoff, doubled after each failed probe.
                        waits += 1;
                        let wait = backoff(self.backoff, waits).min(MAX_PROBE_WAIT);
                        tracing::warn!(
                            failures,
                            wait_ms = wait.as_millis() as u64,
                            "webhook endpoint looks down: probing it"
                        );
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            if let Err(e) = store.release_hooks(&node).await {
                tracing::warn!(error = %e, "webhooks: could not release this node's claims");
            }
            tracing::info!("webhook delivery stopped");
        })
    }

    /// One round's claims: rooms the batch writer named (or every room, on a sweep) and due outbox rows. While
    /// the endpoint is down, one of them only.
    async fn claim(
        &self,
        store: &SharedStore,
        node: &str,
        probing: bool,
        sweep: bool,
        poll: bool,
        named: Vec<(String, String)>,
    ) -> Claimed {
        let now = store::now();
        let mut claimed = Claimed::default();
        let messages = self.events.contains(HookEvent::MessageCreated);
        if messages && (sweep || !named.is_empty()) {
            let limit = match (probing, sweep) {
                (true, _) => 1,
                (false, true) => CLAIM,
                (false, false) => i64::try_from(named.len())
                    .unwrap_or(CLAIM_NAMED)
                    .clamp(CLAIM, CLAIM_NAMED),
            };
            let lease = chrono::Duration::from_std(self.room_lease())
                .unwrap_or(chrono::Duration::seconds(120));
            let rooms = (!sweep).then_some(named.as_slice());
            match store
                .claim_hook_rooms(node, rooms, now, now + lease, limit)
                .await
            {
                Ok(rooms) => claimed.rooms = rooms,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot claim rooms with new messages")
                }
            }
        }
        // A probe is one attempt: a room, or else an outbox row.
        if poll && (!probing || claimed.rooms.is_empty()) {
            let limit = if probing { 1 } else { CLAIM };
            let lease = chrono::Duration::from_std(self.timeout + LEASE_MARGIN)
                .unwrap_or(chrono::Duration::seconds(60));
            match store.claim_hooks(node, now, now + lease, limit).await {
                Ok(rows) => claimed.rows = rows,
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot claim due events"),
            }
        }
        claimed
    }

    /// Delivers a claimed room's messages past its cursor, in order, until one fails or the lease runs short;
    /// then records how far it got. With the wait before the failed message's retry, if one is due.
    async fn deliver_room(
        &self,
        store: &SharedStore,
        node: &str,
        cursor: &ClaimedCursor,
        lease_end: Instant,
    ) -> (Tally, Option<Duration>) {
        let query = HistoryQuery {
            after: Some(cursor.delivered_seq),
            before: None,
            limit: RUN,
        };
        let messages = match store.history(&cursor.ns, &cursor.room, query).await {
            Ok(page) => page.messages,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read a room's new messages");
                Vec::new()
            }
        };
        let mut tally = Tally::default();
        let mut retry = None;
        let mut outcome = CursorOutcome {
            delivered_seq: cursor.delivered_seq,
            failure: None,
        };
        if messages.is_empty() {
            // Nothing stored past the cursor: a namespace that keeps no history numbers its messages all the same.
            match store.last_seq(&cursor.ns, &cursor.room).await {
                Ok(last) => outcome.delivered_seq = last,
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot read a room's last seq"),
            }
        }
        // A full run (or one cut short by its lease) leaves more to deliver at once.
        if messages.len() >= RUN as usize {
            retry = Some(Duration::ZERO);
        }
        for message in messages {
            if Instant::now() + self.timeout > lease_end {
                retry = Some(Duration::ZERO);
                break;
            }
            let hook = NewHook::message_created(&cursor.ns, &message);
            let id = format!("msg-{}", message.id);
            match self
                .post(&id, hook.event.name(), message.at, &hook.data)
                .await
            {
                Ok(()) => {
                    tally.delivered += 1;
                    outcome.delivered_seq = message.seq;
                }
                Err(error) => {
                    tally.failed += 1;
                    let attempts = if outcome.delivered_seq == cursor.delivered_seq {
                        cursor.attempts + 1
                    } else {
                        1
                    };
                    let dead = attempts >= self.max_attempts;
                    if dead {
                        self.dead_lettered();
                    }
                    tracing::warn!(webhook_id = %id, event = hook.event.name(), attempts, dead, %error, "webhook attempt failed");
                    outcome.failure = Some(if dead {
                        // Passed over: the room's next message is due at once.
                        retry = Some(Duration::ZERO);
                        CursorFailure::Dead {
                            hook,
                            webhook_id: id,
                            error,
                            attempts,
                            seq: message.seq,
                            created_at: message.at,
                        }
                    } else {
                        retry = Some(backoff(self.backoff, attempts));
                        CursorFailure::Retry {
                            error,
                            attempts,
                            next_attempt_at: retry_at(self.backoff, attempts),
                        }
                    });
                    break;
                }
            }
        }
        if let Err(e) = store.record_cursor(node, cursor, &outcome).await {
            // The lease runs out and the room's messages past the stored cursor go out again: at least once.
            tracing::warn!(error = %e, "webhooks: cannot record a room's deliveries");
        }
        (tally, retry)
    }

    /// One attempt at an outbox row, and its outcome recorded: a failure is retried after the backoff, or
    /// dead-lettered.
    async fn deliver_row(&self, store: &SharedStore, node: &str, hook: &ClaimedHook) -> Tally {
        let outcome = self
            .post(
                &hook.webhook_id(),
                &hook.event,
                hook.created_at,
                &hook.payload,
            )
            .await;
        let (tally, written) = match outcome {
            Ok(()) => (
                Tally {
                    delivered: 1,
                    failed: 0,
                },
                store.hook_delivered(hook.id, node).await,
            ),
            Err(error) => {
                let attempts = hook.attempts + 1;
                let dead = attempts >= self.max_attempts;
                if dead {
                    self.dead_lettered();
                }
                tracing::warn!(id = hook.id, event = %hook.event, attempts, dead, %error, "webhook attempt failed");
                let next = retry_at(self.backoff, attempts);
                (
                    Tally {
                        delivered: 0,
                        failed: 1,
                    },
                    store
                        .hook_failed(hook.id, node, &error, next, self.max_attempts)
                        .await,
                )
            }
        };
        if let Err(e) = written {
            // The lease runs out and the row is delivered again: at least once.
            tracing::warn!(id = hook.id, error = %e, "webhooks: cannot record a delivery");
        }
        tally
    }

    /// One attempt, counted: `Err` with the reason unless the host answered `2xx` in time.
    async fn post(
        &self,
        id: &str,
        event: &str,
        created_at: DateTime<Utc>,
        data: &str,
    ) -> Result<(), String> {
        let result = self.attempt(id, event, created_at, data).await;
        let outcome = match result {
            Ok(()) => &self.delivered,
            Err(_) => &self.failed,
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn attempt(
        &self,
        id: &str,
        event: &str,
        created_at: DateTime<Utc>,
        data: &str,
    ) -> Result<(), String> {
        let data: Json = serde_json::from_str(data).unwrap_or(Json::Null);
        let body = json!({
            "id": id,
            "type": event,
            "createdAt": created_at,
            "data": data,
        })
        .to_string();
        let t = chrono::Utc::now().timestamp();
        let signature = format!("t={t},v1={}", sign(&self.secret, t, &body));
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Palaver-Webhook-Id", id)
            .header("Palaver-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {} ms", self.timeout.as_millis())
                } else {
                    // Without the URL, which the failure's text repeats (its query may hold a token).
                    format!("request failed: {}", e.without_url())
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// When the next attempt is due after `attempts` failed ones.
fn retry_at(base: Duration, attempts: i64) -> DateTime<Utc> {
    store::now()
        + chrono::Duration::from_std(backoff(base, attempts))
            .unwrap_or(chrono::Duration::seconds(600))
}

/// The wait after `attempts` failed attempts: `base`, doubled each time, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(1u32 << exponent).min(MAX_BACKOFF)
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` with `secret`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    // An HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, 4), Duration::from_millis(800));
        assert_eq!(backoff(base, 60), MAX_BACKOFF);
        assert_eq!(backoff(base, 0), base);
    }

    #[test]
    fn signature_is_the_hmac_sha256_of_t_dot_body() {
        // The well-known vector HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let body = "The quick brown fox jumps over the lazy dog";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("any key length");
        mac.update(body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        // `sign` covers "<t>.<body>": the same as signing that string.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("any key length");
        mac.update(b"1700000000.{\"id\":\"1\"}");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sign("key", 1_700_000_000, "{\"id\":\"1\"}"), expected);
    }

    #[test]
    fn unknown_events_are_refused_naming_the_flag() {
        let all = parse_events(&["message.created".into(), " message.missed ".into()])
            .expect("known events");
        assert!(all.contains(HookEvent::MessageCreated));
        assert!(all.contains(HookEvent::MessageMissed));
        assert!(!all.contains(HookEvent::MemberAdded));
        let error = parse_events(&["message.deleted".into()]).expect_err("unknown");
        assert!(error.contains("--webhook-events"), "{error}");
    }
}
