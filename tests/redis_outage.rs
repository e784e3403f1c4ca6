//! Redis goes away mid-conversation and comes back. The test runs its own `redis-server` on a port
//! of its own (the shared one on 6379 is left alone), two in-process nodes on it, and one Postgres
//! database.
//!
//! While Redis is down each node delivers to its own sockets only, every send is still acked and
//! stored, and `/readyz` says 503 with `checks.redis = "unreachable"`. When Redis is back,
//! cross-node delivery resumes within 5 s, presence is rebuilt, `/readyz` is 200 again, and history
//! holds every acked message, gap-free.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    Client, RedisServer, Store, TestDb, TestServer, connect_user_at, ids, wait_readyz, within,
};
use serde_json::{Value, json};

const ROOM: &str = "outage";
/// Cross-node delivery must be back this soon after Redis is.
const RECOVERY: Duration = Duration::from_secs(5);

/// A client plus every `message` it has received, to check for duplicates at the end.
struct Peer {
    client: Client,
    id: &'static str,
    received: Vec<Value>,
}

impl Peer {
    async fn new(base_url: &str, id: &'static str, name: &str) -> Peer {
        let client = connect_user_at(base_url, id, name).await;
        client.join(ROOM).await;
        Peer {
            client,
            id,
            received: Vec::new(),
        }
    }

    /// Sends, requires an ok ack, and records the acked message.
    async fn send(&self, text: &str, acked: &mut Vec<Value>) -> Value {
        let started = Instant::now();
        let message = self.client.send(ROOM, text).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: message:send {text:?} took {:?}",
            self.id,
            started.elapsed()
        );
        acked.push(message.clone());
        message
    }

    /// Waits for the message with `text`, recording everything received on the way.
    async fn expect(&mut self, text: &str, timeout: Duration) -> Value {
        match self.wait_for(|m| m["text"] == json!(text), timeout).await {
            Some(m) => m,
            None => panic!(
                "{} did not get {text:?} within {timeout:?}; received so far: {:?}",
                self.id,
                self.texts()
            ),
        }
    }

    async fn wait_for(
        &mut self,
        want: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.client.next_event("message", left).await?;
            self.received.push(m.clone());
            if want(&m) {
                return Some(m);
            }
        }
    }

    fn texts(&self) -> Vec<String> {
        self.received
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Takes in what is still queued, then: nothing received twice, nothing of its own.
    async fn assert_clean(&mut self) {
        let rest = self
            .client
            .drain_events("message", Duration::from_millis(300))
            .await;
        self.received.extend(rest);
        let mut seen = HashSet::new();
        for m in &self.received {
            let id = m["id"].as_str().unwrap_or_default().to_string();
            assert!(
                seen.insert(id),
                "{} received message {m} twice; all: {:?}",
                self.id,
                self.texts()
            );
            assert_ne!(
                m["from"]["id"],
                json!(self.id),
                "{} received its own message {m}",
                self.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_survives_a_redis_outage() {
    within(Duration::from_secs(60), "chat_survives_a_redis_outage", async {
        let mut redis = RedisServer::start().await;
        let db = TestDb::new(Store::Postgres).await;
        // Its own Redis: no other test shares it, and its data dies with it.
        let prefix = "palaver-outage-test";
        let node_a = TestServer::start_node(&db, &redis.url(), prefix).await;
        let node_b = TestServer::start_node(&db, &redis.url(), prefix).await;
        let nodes = [("A", &node_a.base_url), ("B", &node_b.base_url)];

        let mut amy = Peer::new(&node_a.base_url, "amy", "Amy").await;
        let mut abe = Peer::new(&node_a.base_url, "abe", "Abe").await;
        let mut ben = Peer::new(&node_b.base_url, "ben", "Ben").await;
        let mut acked: Vec<Value> = Vec::new();
        let step = Duration::from_secs(5);

        // Before: one chat across both nodes.
        amy.send("before: amy on A", &mut acked).await;
        abe.expect("before: amy on A", step).await;
        ben.expect("before: amy on A", step).await;
        ben.send("before: ben on B", &mut acked).await;
        amy.expect("before: ben on B", step).await;
        abe.expect("before: ben on B", step).await;
        for (node, url) in nodes {
            let (status, body) = common::http_get_json(url, "/readyz").await;
            assert_eq!(
                (status, &body["checks"]["redis"]),
                (200, &json!("ok")),
                "node {node} /readyz before the outage: {body}"
            );
        }

        // Redis dies mid-conversation.
        redis.kill();
        let killed = Instant::now();

        // Right away, before the nodes have noticed: sends are acked and same-node delivery works.
        for i in 1..=3 {
            let text = format!("outage: amy {i}");
            amy.send(&text, &mut acked).await;
            abe.expect(&text, step).await;
        }
        abe.send("outage: abe 1", &mut acked).await;
        amy.expect("outage: abe 1", step).await;
        ben.send("outage: ben 1", &mut acked).await;
        let sends_right_after = killed.elapsed();

        // Both nodes report it.
        for (node, url) in nodes {
            let (_, body) = wait_readyz(url, 503, Duration::from_secs(5)).await;
            assert_eq!(
                body,
                json!({
                    "status": "unavailable",
                    "checks": { "database": "ok", "redis": "unreachable" },
                }),
                "node {node} /readyz during the outage"
            );
        }
        let noticed = killed.elapsed();

        // Once they know, same-node delivery still works, and quickly.
        for i in 2..=3 {
            let text = format!("outage: abe {i}");
            abe.send(&text, &mut acked).await;
            amy.expect(&text, Duration::from_secs(2)).await;
        }
        ben.send("outage: ben 2", &mut acked).await;
        // A client may still connect to a node and read history while Redis is down.
        let late = connect_user_at(&node_a.base_url, "ann", "Ann").await;
        let texts: Vec<Value> = late
            .history_all(ROOM)
            .await
            .iter()
            .map(|m| m["text"].clone())
            .collect();
        assert!(
            texts.contains(&json!("outage: ben 2")),
            "history on node A during the outage: {texts:?}"
        );
        late.disconnect().await;

        // Redis comes back on the same port, empty.
        redis.spawn().await;
        let restarted = Instant::now();

        // Poll both directions until each has crossed once: B → A and A → B.
        let (mut b_to_a, mut a_to_b) = (None, None);
        let mut probe = 0;
        while b_to_a.is_none() || a_to_b.is_none() {
            assert!(
                restarted.elapsed() < RECOVERY,
                "cross-node delivery not back {RECOVERY:?} after Redis restarted \
                 (B→A: {b_to_a:?}, A→B: {a_to_b:?}); amy got {:?}, ben got {:?}",
                amy.texts(),
                ben.texts()
            );
            probe += 1;
            if b_to_a.is_none() {
                ben.send(&format!("probe {probe}: ben on B"), &mut acked).await;
            }
            if a_to_b.is_none() {
                amy.send(&format!("probe {probe}: amy on A"), &mut acked).await;
            }
            let wait = Duration::from_millis(250);
            let is_probe_from = |from: &'static str| {
                move |m: &Value| {
                    m["from"]["id"] == json!(from)
                        && m["text"].as_str().is_some_and(|t| t.starts_with("probe "))
                }
            };
            if b_to_a.is_none() && amy.wait_for(is_probe_from("ben"), wait).await.is_some() {
                b_to_a = Some(restarted.elapsed());
            }
            if a_to_b.is_none() && ben.wait_for(is_probe_from("amy"), wait).await.is_some() {
                a_to_b = Some(restarted.elapsed());
            }
        }

        // Steady again: a message crosses at once, both ways.
        ben.send("after: ben on B", &mut acked).await;
        amy.expect("after: ben on B", Duration::from_secs(2)).await;
        abe.expect("after: ben on B", Duration::from_secs(2)).await;
        amy.send("after: amy on A", &mut acked).await;
        ben.expect("after: amy on A", Duration::from_secs(2)).await;

        for (node, url) in nodes {
            let left = RECOVERY.saturating_sub(restarted.elapsed()) + Duration::from_millis(500);
            let (_, body) = wait_readyz(url, 200, left).await;
            assert_eq!(
                body["checks"],
                json!({ "database": "ok", "redis": "ok" }),
                "node {node} /readyz after the outage: {body}"
            );
        }
        let ready_again = restarted.elapsed();

        // Presence was rebuilt in the new, empty Redis from every node.
        let want = ids(&["abe", "amy", "ben"]);
        loop {
            let (on_a, on_b) = (
                amy.client.presence_ids(ROOM).await,
                ben.client.presence_ids(ROOM).await,
            );
            if on_a == want && on_b == want {
                break;
            }
            assert!(
                restarted.elapsed() < RECOVERY + Duration::from_secs(1),
                "presence not rebuilt after the outage: node A lists {on_a:?}, node B {on_b:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Nobody got anything twice or their own message back.
        for peer in [&mut amy, &mut abe, &mut ben] {
            peer.assert_clean().await;
        }

        // Every acked message is in history, once, numbered 1..=N without a gap, read on either node.
        let mut expected = acked.clone();
        expected.sort_by_key(|m| m["seq"].as_i64());
        let seqs: Vec<i64> = expected.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        let n = i64::try_from(expected.len()).unwrap();
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "acked seqs are gap-free and distinct"
        );
        for (node, peer) in [("A", &abe), ("B", &ben)] {
            let history = peer.client.history_all(ROOM).await;
            assert_eq!(history, expected, "history read on node {node}");
        }
        assert_eq!(db.message_rows(ROOM).await.len(), expected.len(), "rows in Postgres");

        eprintln!(
            "redis outage: {} messages acked; sends right after the kill took {sends_right_after:?}; \
             both /readyz 503 after {noticed:?}; after restart: B→A {b_to_a:?}, A→B {a_to_b:?}, \
             both /readyz 200 by {ready_again:?}",
            expected.len()
        );
        drop((node_a, node_b));
    })
    .await;
}
