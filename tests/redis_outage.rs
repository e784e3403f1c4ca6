//! Redis goes away mid-conversation and comes back. The test runs its own `redis-server` on a port
//! of its own (the shared one on 6379 is left alone), two in-process nodes on it, and one Postgres
//! database.
//!
//! While Redis is down each node delivers to its own sockets only, every send is still acked and
//! stored, and `/readyz` says 503 with `checks.redis = "unreachable"`. When Redis is back,
//! cross-node delivery resumes within 5 s, presence is rebuilt, `/readyz` is 200 again, and history
//! holds every acked message, gap-free.
//!
//! A send whose ack the client never saw is retried with its original `clientId`: once on the same
//! node during the outage, once from a new connection on the other node after it. Both retries are
//! answered with the original message (same id and seq) and broadcast nothing.

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
        self.send_as(json!({ "room": ROOM, "text": text }), acked)
            .await
    }

    /// Sends `payload` (a whole `message:send` payload), requires an ok ack within 5 s, and records
    /// the acked message.
    async fn send_as(&self, payload: Value, acked: &mut Vec<Value>) -> Value {
        let text = payload["text"].clone();
        let started = Instant::now();
        let ack = self.client.ack("message:send", payload).await;
        assert_eq!(
            ack["ok"],
            json!(true),
            "{}: message:send {text}: {ack}",
            self.id
        );
        let message = ack["message"].clone();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: message:send {text} took {:?}",
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

    /// Nothing received twice, nothing of its own. Call it once the peer has received a last
    /// marker message (through [`Peer::expect`], which records everything before it): a duplicate
    /// would have come before that.
    fn assert_clean(&self) {
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

        // A send whose ack got lost is retried with its clientId, on the same node, while Redis is
        // still down: the original comes back, and nothing is broadcast again (checked at the end).
        let lost = json!({ "room": ROOM, "text": "outage: abe's lost ack", "clientId": "abe-lost-1" });
        let original = abe.send_as(lost.clone(), &mut acked).await;
        amy.expect("outage: abe's lost ack", step).await;
        let retry = abe.client.ack("message:send", lost.clone()).await;
        assert_eq!(
            retry,
            json!({ "ok": true, "message": original }),
            "abe's retry with the original clientId during the outage"
        );

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

        // The client whose ack got lost retries once more, from a new connection on the other node,
        // with Redis back: still the original message, and no broadcast (checked below).
        let abe_on_b = connect_user_at(&node_b.base_url, "abe", "Abe").await;
        abe_on_b.join(ROOM).await;
        let retry = abe_on_b.ack("message:send", lost).await;
        assert_eq!(
            retry,
            json!({ "ok": true, "message": original }),
            "abe's retry with the original clientId on node B after the outage"
        );

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

        // Nobody got anything twice or their own message back, and the retries were not broadcast:
        // a copy would have reached each peer before a last marker from another peer.
        ben.send("last: ben on B", &mut acked).await;
        amy.expect("last: ben on B", step).await;
        abe.expect("last: ben on B", step).await;
        amy.send("last: amy on A", &mut acked).await;
        ben.expect("last: amy on A", step).await;
        for peer in [&amy, &abe, &ben] {
            peer.assert_clean();
        }
        let copies = |peer: &Peer| {
            peer.received
                .iter()
                .filter(|m| m["id"] == original["id"])
                .count()
        };
        assert_eq!(copies(&amy), 1, "amy (node A) got abe's retried message {original} once");
        assert_eq!(copies(&ben), 0, "ben (node B) never gets abe's message of the outage");
        abe_on_b.disconnect().await;

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
