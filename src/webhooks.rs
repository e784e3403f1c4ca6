//! Webhooks (`--webhook-url`): the events the host asked for go out from the store's outbox
//! (`webhook_outbox`), where each was written with its cause.
//!
//! One delivery task per node claims due rows (the first pending row of each room, so a room's events go out in
//! order and a failing one holds back the later ones), POSTs each as `{ id, type, createdAt, data }` signed with
//! `Palaver-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, and records the outcome: a `2xx`
//! is delivered; anything else, a timeout included, is retried with exponential backoff until
//! `--webhook-max-attempts`, then the row is a dead letter (`failed`). Delivery is at least once: the host
//! deduplicates by `Palaver-Webhook-Id`. It runs off the message path: a slow or dead endpoint costs the chat
//! nothing but the outbox row each event writes.

use std::{sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{self, ClaimedHook, HookEvent, HookEvents, SharedStore};

/// Rows one claim takes (each of another room): deliveries in flight at once, per node.
const CLAIM: i64 = 32;
/// How often an idle node looks for due rows.
const POLL: Duration = Duration::from_millis(200);
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
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("url", &self.url)
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
        }))
    }

    /// The event types the store must write to the outbox.
    pub fn events(&self) -> HookEvents {
        self.events
    }

    /// Starts this node's delivery task; it stops when `stop` is cancelled, giving up its unfinished leases.
    pub fn spawn(self: Arc<Self>, store: SharedStore, stop: CancellationToken) -> JoinHandle<()> {
        let node = uuid::Uuid::new_v4().to_string();
        tokio::spawn(async move {
            tracing::info!(url = %self.url, %node, "webhook delivery started");
            loop {
                let claimed = tokio::select! {
                    _ = stop.cancelled() => break,
                    claimed = self.claim(&store, &node) => claimed,
                };
                if claimed.is_empty() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(POLL) => continue,
                    }
                }
                let deliveries = claimed.iter().map(|hook| self.deliver(hook));
                let outcomes = tokio::select! {
                    _ = stop.cancelled() => break,
                    outcomes = futures_util::future::join_all(deliveries) => outcomes,
                };
                for (hook, outcome) in claimed.iter().zip(outcomes) {
                    self.record(&store, &node, hook, outcome).await;
                }
            }
            if let Err(e) = store.release_hooks(&node).await {
                tracing::warn!(error = %e, "webhooks: could not release this node's claims");
            }
            tracing::info!("webhook delivery stopped");
        })
    }

    async fn claim(&self, store: &SharedStore, node: &str) -> Vec<ClaimedHook> {
        let now = store::now();
        let lease = chrono::Duration::from_std(self.timeout + LEASE_MARGIN)
            .unwrap_or(chrono::Duration::seconds(60));
        match store.claim_hooks(node, now, now + lease, CLAIM).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot claim due events");
                Vec::new()
            }
        }
    }

    /// Records an attempt's outcome; a failure is retried after the backoff, or dead-lettered.
    async fn record(
        &self,
        store: &SharedStore,
        node: &str,
        hook: &ClaimedHook,
        outcome: Result<(), String>,
    ) {
        let written = match outcome {
            Ok(()) => store.hook_delivered(hook.id, node).await,
            Err(error) => {
                let attempts = hook.attempts + 1;
                let dead = attempts >= self.max_attempts;
                tracing::warn!(id = hook.id, event = %hook.event, attempts, dead, %error, "webhook attempt failed");
                let delay = backoff(self.backoff, attempts);
                let next = store::now()
                    + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(600));
                store
                    .hook_failed(hook.id, node, &error, next, self.max_attempts)
                    .await
            }
        };
        if let Err(e) = written {
            // The lease runs out and the row is delivered again: at least once.
            tracing::warn!(id = hook.id, error = %e, "webhooks: cannot record a delivery");
        }
    }

    /// One attempt: `Err` with the reason unless the host answered `2xx` in time.
    async fn deliver(&self, hook: &ClaimedHook) -> Result<(), String> {
        let data: Json = serde_json::from_str(&hook.payload).unwrap_or(Json::Null);
        let body = json!({
            "id": hook.id.to_string(),
            "type": hook.event,
            "createdAt": hook.created_at,
            "data": data,
        })
        .to_string();
        let t = chrono::Utc::now().timestamp();
        let signature = format!("t={t},v1={}", sign(&self.secret, t, &body));
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Palaver-Webhook-Id", hook.id.to_string())
            .header("Palaver-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {} ms", self.timeout.as_millis())
                } else {
                    format!("request failed: {e}")
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
