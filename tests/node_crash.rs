//! A node dies without a goodbye. Two nodes run as processes of the built binary on one Postgres
//! database and one Redis prefix; node A is SIGKILLed. Node B keeps serving (sends, deliveries,
//! history), node A's users drop out of presence once A's liveness key expires (TTL 10 s, so within
//! 15 s), and a new node A brings its users back into the same chat.

mod common;

use std::time::{Duration, Instant};

use common::{
    NodeProcess, STEP_TIMEOUT, Store, TestDb, connect_user_at, ids, redis_prefix, redis_url, within,
};
use serde_json::json;

const ROOM: &str = "crash";
/// Node A's users must be gone from presence this soon after the kill.
const PRESENCE_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_crash_leaves_the_rest_of_the_cluster_serving() {
    within(Duration::from_secs(60), "node_crash", async {
        let db = TestDb::new(Store::Postgres).await;
        let (url, prefix) = (redis_url(), redis_prefix());
        let args = [
            "--redis-url",
            url.as_str(),
            "--redis-prefix",
            prefix.as_str(),
        ];
        let mut node_a = NodeProcess::spawn(&db, &args).await;
        let node_b = NodeProcess::spawn(&db, &args).await;

        let mut alice = connect_user_at(&node_a.base_url, "alice", "Alice").await;
        let mut abel = connect_user_at(&node_a.base_url, "abel", "Abel").await;
        let mut bob = connect_user_at(&node_b.base_url, "bob", "Bob").await;
        for c in [&alice, &abel, &bob] {
            c.join(ROOM).await;
        }
        let m1 = alice.send(ROOM, "hello from A").await;
        assert_eq!(
            bob.expect_message_text("hello from A", STEP_TIMEOUT).await,
            m1
        );
        let m2 = bob.send(ROOM, "hello from B").await;
        assert_eq!(
            alice
                .expect_message_text("hello from B", STEP_TIMEOUT)
                .await,
            m2
        );
        assert_eq!(
            abel.expect_message_text("hello from B", STEP_TIMEOUT).await,
            m2
        );
        assert_eq!(
            bob.presence_ids(ROOM).await,
            ids(&["abel", "alice", "bob"]),
            "presence on B before the crash"
        );
        bob.discard_received("room:notice");

        // SIGKILL: no graceful shutdown, no presence cleanup, the liveness key just stops being refreshed.
        node_a.kill();
        let killed = Instant::now();
        let closed = common::http_client()
            .get(format!("{}/healthz", node_a.base_url))
            .send()
            .await;
        assert!(
            closed.is_err(),
            "node A still answers after SIGKILL: {closed:?}"
        );

        // Node B keeps serving: sends are acked, new clients connect, join, get history, and chat.
        let m3 = bob.send(ROOM, "anyone left?").await;
        let mut carol = connect_user_at(&node_b.base_url, "carol", "Carol").await;
        let joined = carol.join(ROOM).await;
        assert_eq!(
            joined["history"],
            json!([m1, m2, m3]),
            "history through node B after the crash"
        );
        let m4 = carol.send(ROOM, "I am").await;
        assert_eq!(bob.expect_message_text("I am", STEP_TIMEOUT).await, m4);
        assert_eq!(m4["seq"], json!(4), "numbering goes on: {m4}");
        let (status, body) = common::http_get_json(&node_b.base_url, "/readyz").await;
        assert_eq!(status, 200, "node B /readyz after the crash: {body}");

        // Node A's users drop out of presence as B sees it, once A's liveness key expires.
        let gone_after = loop {
            let users = bob.presence_ids(ROOM).await;
            if users == ids(&["bob", "carol"]) {
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < PRESENCE_LIMIT,
                "{PRESENCE_LIMIT:?} after node A was killed, node B still lists {users:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };

        // A new node A: its users come back and chat with B's again.
        // (Nobody says `leave` for a crashed node's users: only presence forgets them.)
        bob.discard_received("room:notice");
        let node_a2 = NodeProcess::spawn(&db, &args).await;
        let mut alice = connect_user_at(&node_a2.base_url, "alice", "Alice").await;
        // alice is a member of the room, so her new connection re-enters it, and B is told.
        let notice = bob
            .next_event("room:notice", STEP_TIMEOUT)
            .await
            .expect("no room:notice when alice came back through the new node A");
        assert_eq!(
            (&notice["kind"], &notice["user"]["id"]),
            (&json!("join"), &json!("alice")),
            "notice: {notice}"
        );
        let joined = alice.join(ROOM).await;
        assert_eq!(
            joined["history"].as_array().map(Vec::len),
            Some(4),
            "history on the new node A: {}",
            joined["history"]
        );
        assert_eq!(
            common::user_ids(&joined["members"]),
            ids(&["alice", "bob", "carol"]),
            "members on the new node A"
        );
        let m5 = alice.send(ROOM, "back on a new A").await;
        assert_eq!(m5["seq"], json!(5), "{m5}");
        assert_eq!(
            bob.expect_message_text("back on a new A", STEP_TIMEOUT)
                .await,
            m5
        );
        assert_eq!(
            carol
                .expect_message_text("back on a new A", STEP_TIMEOUT)
                .await,
            m5
        );
        let m6 = bob.send(ROOM, "welcome back").await;
        assert_eq!(
            alice
                .expect_message_text("welcome back", STEP_TIMEOUT)
                .await,
            m6
        );
        assert_eq!(
            bob.presence_ids(ROOM).await,
            ids(&["alice", "bob", "carol"]),
            "presence on B with the new node A"
        );
        eprintln!("node crash: node A's users left presence on B {gone_after:?} after SIGKILL");
        drop(node_a2);
    })
    .await;
}
