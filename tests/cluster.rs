//! Scale-out: several in-process nodes on one Postgres database and one Redis prefix. Clients on
//! different nodes must see one chat: room messages, DMs to every tab, presence, `room:notice` once
//! per user cluster-wide, `room:leave` on every node, and typing.
//!
//! Needs Postgres (PALAVER_TEST_PG) and Redis on 127.0.0.1:6379 (PALAVER_TEST_REDIS); every test
//! has its own database and Redis prefix, so they run in parallel.

mod common;

use std::time::Duration;

use common::{
    RedisPrefix, STEP_TIMEOUT, Store, TestDb, TestServer, assert_message, connect_user_at, ids,
    redis_prefix, redis_url, user_ids, within,
};
use serde_json::{Value, json};

// "Nothing arrived" checks wait for a marker message sent after the action through the same room
// (one Redis channel per namespace carries every room's broadcasts, in order), never for a quiet
// window: see `Client::expect_none_before_marker`.
/// Deadline for a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(45);

/// `n` nodes sharing one fresh Postgres database and one fresh Redis prefix. Fields drop in
/// order: the nodes stop before the database and the prefix's keys go.
struct Cluster {
    nodes: Vec<TestServer>,
    _db: TestDb,
    _prefix: RedisPrefix,
}

impl std::ops::Index<usize> for Cluster {
    type Output = TestServer;
    fn index(&self, i: usize) -> &TestServer {
        &self.nodes[i]
    }
}

async fn cluster(n: usize) -> Cluster {
    let db = TestDb::new(Store::Postgres).await;
    let (url, prefix) = (redis_url(), redis_prefix());
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(TestServer::start_node(&db, &url, prefix.as_str()).await);
    }
    Cluster {
        nodes,
        _db: db,
        _prefix: prefix,
    }
}

fn notices_of<'a>(notices: &'a [Value], kind: &str, user: &str) -> Vec<&'a Value> {
    notices
        .iter()
        .filter(|n| n["kind"] == json!(kind) && n["user"]["id"] == json!(user))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_chat_crosses_nodes() {
    within(TEST_LIMIT, "room_chat_crosses_nodes", async {
        let nodes = cluster(3).await;
        let room = "lobby";
        let mut alice = connect_user_at(&nodes[0].base_url, "alice", "Alice").await;
        let mut bob = connect_user_at(&nodes[1].base_url, "bob", "Bob").await;
        let mut carol = connect_user_at(&nodes[2].base_url, "carol", "Carol").await;
        for c in [&alice, &bob, &carol] {
            c.join(room).await;
        }

        let sent = alice.send(room, "hello from node A").await;
        assert_message(&sent, room, 1, "alice", "Alice", "hello from node A");
        for (who, client) in [("bob", &mut bob), ("carol", &mut carol)] {
            let got = client
                .next_event("message", STEP_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{who} did not get alice's message across nodes"));
            assert_eq!(got, sent, "{who} got a different message than alice's ack");
        }

        let reply = bob.send(room, "hi from node B").await;
        assert_message(&reply, room, 2, "bob", "Bob", "hi from node B");
        for (who, client) in [("alice", &mut alice), ("carol", &mut carol)] {
            let got = client
                .next_event("message", STEP_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{who} did not get bob's message across nodes"));
            assert_eq!(got, reply, "{who} got a different message than bob's ack");
        }

        // One history, numbered gap-free across nodes, readable from any node.
        let history = carol.history_all(room).await;
        assert_eq!(history, vec![sent, reply], "history read on node C");

        // Nobody gets their own message, and nobody gets anything twice: such a copy would come
        // before a marker sent now (carol's for alice and bob, alice's for carol).
        let marker = carol.send_marker(room).await;
        for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
            let context = format!("{who} after both sends");
            client
                .expect_none_before_marker("message", |_| true, &marker, &context)
                .await;
        }
        let marker = alice.send_marker(room).await;
        carol
            .expect_none_before_marker("message", |_| true, &marker, "carol after both sends")
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dm_reaches_every_tab_on_every_node() {
    within(TEST_LIMIT, "dm_reaches_every_tab_on_every_node", async {
        let nodes = cluster(3).await;
        let mut dave_a = connect_user_at(&nodes[0].base_url, "dave", "Dave").await;
        let mut dave_b = connect_user_at(&nodes[1].base_url, "dave", "Dave").await;
        let mut erin = connect_user_at(&nodes[2].base_url, "erin", "Erin").await;

        let ack = erin
            .ack("dm:send", json!({ "to": "dave", "text": "psst, dave" }))
            .await;
        assert_eq!(ack["ok"], json!(true), "dm:send erin → dave: {ack}");
        let first = ack["message"].clone();
        let dm_room = first["room"].as_str().expect("dm room id").to_string();
        assert!(dm_room.starts_with("dm:"), "DM room id: {dm_room}");
        assert_message(&first, &dm_room, 1, "erin", "Erin", "psst, dave");
        for (tab, client) in [
            ("dave on node A", &mut dave_a),
            ("dave on node B", &mut dave_b),
        ] {
            let got = client
                .next_event("message", STEP_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{tab} did not get erin's DM"));
            assert_eq!(got, first, "{tab}");
        }

        // The reply from one of dave's tabs reaches erin and dave's other tab, not the sender.
        let ack = dave_a
            .ack("dm:send", json!({ "to": "erin", "text": "what, erin?" }))
            .await;
        assert_eq!(ack["ok"], json!(true), "dm:send dave → erin: {ack}");
        let second = ack["message"].clone();
        assert_message(&second, &dm_room, 2, "dave", "Dave", "what, erin?");
        for (tab, client) in [
            ("erin on node C", &mut erin),
            ("dave on node B", &mut dave_b),
        ] {
            let got = client
                .next_event("message", STEP_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{tab} did not get dave's DM reply"));
            assert_eq!(got, second, "{tab}");
        }

        // A tab dave opens later, on a third node, re-enters the DM on connect and gets the next one.
        let mut dave_c = connect_user_at(&nodes[2].base_url, "dave", "Dave").await;
        let ack = erin
            .ack("dm:send", json!({ "to": "dave", "text": "three tabs now" }))
            .await;
        assert_eq!(ack["ok"], json!(true), "third dm:send: {ack}");
        let third = ack["message"].clone();
        assert_message(&third, &dm_room, 3, "erin", "Erin", "three tabs now");
        for (tab, client) in [
            ("dave on node A", &mut dave_a),
            ("dave on node B", &mut dave_b),
            ("dave's new tab on node C", &mut dave_c),
        ] {
            let got = client
                .next_event("message", STEP_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("{tab} did not get erin's third DM"));
            assert_eq!(got, third, "{tab}");
        }

        let history = dave_b.history_all(&dm_room).await;
        assert_eq!(history, vec![first, second, third], "DM history on node B");

        // Exactly once each, never to the sending socket: a marker through the DM room, from dave's
        // tab on node C for the others, then from erin for that tab.
        let marker = dave_c.send_marker(&dm_room).await;
        for (tab, client) in [
            ("erin (sender of DMs 1 and 3)", &mut erin),
            ("dave on node A (sender of DM 2)", &mut dave_a),
            ("dave on node B", &mut dave_b),
        ] {
            client
                .expect_none_before_marker("message", |_| true, &marker, tab)
                .await;
        }
        let marker = erin.send_marker(&dm_room).await;
        dave_c
            .expect_none_before_marker("message", |_| true, &marker, "dave on node C")
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_lists_users_of_every_node() {
    within(TEST_LIMIT, "presence_lists_users_of_every_node", async {
        let nodes = cluster(3).await;
        let room = "plaza";
        let frank = connect_user_at(&nodes[0].base_url, "frank", "Frank").await;
        let guest = nodes[1].connect_anon("Guest").await;
        let guest_id = guest.session["user"]["id"]
            .as_str()
            .expect("guest id")
            .to_string();
        frank.join(room).await;
        guest.join(room).await;

        // `members` of a join on a third node lists the users of the other two.
        let grace = connect_user_at(&nodes[2].base_url, "grace", "Grace").await;
        let joined = grace.join(room).await;
        let expected = ids(&["frank", "grace", &guest_id]);
        assert_eq!(
            user_ids(&joined["members"]),
            expected,
            "members of room:join on node C: {}",
            joined["members"]
        );
        let guest_entry = joined["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == json!(guest_id))
            .cloned()
            .unwrap();
        assert_eq!(
            guest_entry,
            json!({ "id": guest_id, "name": "Guest", "anonymous": true }),
            "a user of another node is listed as a full User"
        );

        // A second tab of frank on another node does not list him twice.
        let frank2 = connect_user_at(&nodes[1].base_url, "frank", "Frank").await;
        for (node, client) in [
            ("A", &frank),
            ("B", &guest),
            ("C", &grace),
            ("B (frank's 2nd tab)", &frank2),
        ] {
            assert_eq!(
                client.presence_ids(room).await,
                expected,
                "presence:list asked on node {node}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_and_leave_are_said_once_per_user_cluster_wide() {
    within(
        TEST_LIMIT,
        "join_and_leave_are_said_once_per_user_cluster_wide",
        async {
            let nodes = cluster(3).await;
            let room = "hall";
            let mut obs_a = connect_user_at(&nodes[0].base_url, "obs-a", "Watcher A").await;
            let mut obs_b = connect_user_at(&nodes[1].base_url, "obs-b", "Watcher B").await;
            obs_a.join(room).await;
            obs_b.join(room).await;
            // The notice obs-b's arrival caused.
            obs_a
                .wait_for(
                    "room:notice",
                    |n| n["user"]["id"] == json!("obs-b"),
                    "obs-b's join",
                )
                .await;

            // Heidi's first tab, on node B: one `join`, seen on both nodes.
            let tab1 = connect_user_at(&nodes[1].base_url, "heidi", "Heidi").await;
            let ack = tab1.join(room).await;
            assert_eq!(
                user_ids(&ack["members"]),
                ids(&["heidi", "obs-a", "obs-b"]),
                "members"
            );
            let marker = tab1.send_marker(room).await;
            for (who, obs) in [("observer on A", &mut obs_a), ("observer on B", &mut obs_b)] {
                let notices = obs.events_before_marker("room:notice", &marker).await;
                let joins = notices_of(&notices, "join", "heidi");
                assert_eq!(joins.len(), 1, "{who}: one join for heidi, got {notices:?}");
                assert_eq!(joins[0]["room"], json!(room));
                assert_eq!(
                    joins[0]["user"],
                    json!({ "id": "heidi", "name": "Heidi", "anonymous": false })
                );
                assert!(
                    joins[0]["at"].as_str().is_some_and(common::is_rfc3339),
                    "notice.at: {}",
                    joins[0]
                );
                assert_eq!(notices.len(), 1, "{who}: nothing else, got {notices:?}");
            }

            // Her second tab, on ANOTHER node (C): it re-enters the room on connect, and an explicit
            // join too; nobody is told anything.
            let tab2 = connect_user_at(&nodes[2].base_url, "heidi", "Heidi").await;
            let ack = tab2.join(room).await;
            assert_eq!(
                user_ids(&ack["members"]),
                ids(&["heidi", "obs-a", "obs-b"]),
                "members seen by the second tab"
            );
            let marker = tab2.send_marker(room).await;
            for (who, obs) in [("observer on A", &mut obs_a), ("observer on B", &mut obs_b)] {
                let context = format!("{who}, after heidi's second tab on node C");
                obs.expect_none_before_marker("room:notice", |_| true, &marker, &context)
                    .await;
            }

            // Closing one tab says nothing; she is still online. Once node B has handled the
            // disconnect (her leave of a side room shows it), a marker through the room.
            tab1.disconnect_handled("heidi", &mut obs_a).await;
            let marker = tab2.send_marker(room).await;
            for (who, obs) in [("observer on A", &mut obs_a), ("observer on B", &mut obs_b)] {
                let context = format!("{who}, after heidi closed her tab on node B");
                let in_room = |n: &Value| n["room"] == json!(room);
                obs.expect_none_before_marker("room:notice", in_room, &marker, &context)
                    .await;
            }
            assert_eq!(
                obs_b.presence_ids(room).await,
                ids(&["heidi", "obs-a", "obs-b"]),
                "heidi is still online through node C"
            );

            // Closing the last tab says `leave`, once, and nothing else (up to a marker from the
            // other observer).
            tab2.disconnect().await;
            let heidi_left =
                |n: &Value| n["kind"] == json!("leave") && n["user"]["id"] == json!("heidi");
            for (who, obs) in [("observer on A", &mut obs_a), ("observer on B", &mut obs_b)] {
                obs.wait_for("room:notice", heidi_left, &format!("{who}: heidi's leave"))
                    .await;
            }
            let marker = obs_b.send_marker(room).await;
            obs_a
                .expect_none_before_marker("room:notice", |_| true, &marker, "observer on A")
                .await;
            let marker = obs_a.send_marker(room).await;
            obs_b
                .expect_none_before_marker("room:notice", |_| true, &marker, "observer on B")
                .await;
            assert_eq!(
                obs_a.presence_ids(room).await,
                ids(&["obs-a", "obs-b"]),
                "heidi gone"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_removes_a_user_with_tabs_on_two_nodes_everywhere() {
    within(
        TEST_LIMIT,
        "leave_removes_a_user_with_tabs_on_two_nodes_everywhere",
        async {
            let nodes = cluster(3).await;
            let room = "atrium";
            // Where markers reach ivan's tabs once they have left `room`.
            let aside = "atrium-aside";
            let mut ivan_a = connect_user_at(&nodes[0].base_url, "ivan", "Ivan").await;
            let mut ivan_b = connect_user_at(&nodes[1].base_url, "ivan", "Ivan").await;
            let mut judy = connect_user_at(&nodes[2].base_url, "judy", "Judy").await;
            // judy's second tab sends the markers judy waits for.
            let judy_b = connect_user_at(&nodes[1].base_url, "judy", "Judy").await;
            judy.join(room).await;
            judy_b.join(room).await;
            ivan_a.join(room).await;
            ivan_b.join(room).await;
            let marker = judy_b.send_marker(room).await;
            let notices = judy.events_before_marker("room:notice", &marker).await;
            assert_eq!(
                notices_of(&notices, "join", "ivan").len(),
                1,
                "one join for ivan: {notices:?}"
            );
            for c in [&judy, &ivan_a, &ivan_b] {
                c.join(aside).await;
            }
            assert_eq!(
                judy.presence_ids(room).await,
                ids(&["ivan", "judy"]),
                "before the leave"
            );

            let ack = ivan_a.ack("room:leave", json!({ "room": room })).await;
            assert_eq!(ack, json!({ "ok": true }), "room:leave");

            let ivan_left = |n: &Value| {
                n["room"] == json!(room)
                    && n["kind"] == json!("leave")
                    && n["user"]["id"] == json!("ivan")
            };
            judy.wait_for("room:notice", ivan_left, "ivan's leave")
                .await;
            let marker = judy_b.send_marker(room).await;
            let in_room = |n: &Value| n["room"] == json!(room);
            judy.expect_none_before_marker("room:notice", in_room, &marker, "after ivan's leave")
                .await;

            // Gone from presence as every node sees it, including the node of his other tab.
            for (node, client) in [("A", &ivan_a), ("B", &ivan_b), ("C", &judy)] {
                assert_eq!(
                    client.presence_ids(room).await,
                    ids(&["judy"]),
                    "presence:list on node {node} after ivan left"
                );
            }

            // His tab on node B left the room too: it no longer gets the room's messages and may not
            // send to it.
            judy.send(room, "is ivan gone?").await;
            let marker = judy.send_marker(aside).await;
            for (tab, client) in [("node B", &mut ivan_b), ("node A", &mut ivan_a)] {
                let context = format!("ivan's tab on {tab} after room:leave");
                client
                    .expect_none_before_marker("message", in_room, &marker, &context)
                    .await;
            }
            let ack = ivan_b
                .ack(
                    "message:send",
                    json!({ "room": room, "text": "still here?" }),
                )
                .await;
            common::assert_error(&ack, "forbidden", "message:send from node B after leaving");

            // Membership is gone too: a new tab does not re-enter the room.
            let ivan_c = connect_user_at(&nodes[2].base_url, "ivan", "Ivan").await;
            let rooms = ivan_c.session["rooms"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let entry = rooms.iter().find(|r| r["id"] == json!(room));
            assert!(
                entry.is_none_or(|r| r["member"] == json!(false)),
                "ivan is no longer a member: {entry:?}"
            );
            let marker = judy_b.send_marker(room).await;
            let context = "after ivan opened a new tab";
            judy.expect_none_before_marker("room:notice", |_| true, &marker, context)
                .await;
        },
    )
    .await;
}

/// After `room:leave` from one node, the user's tab on another node can come back with
/// `room:join`: the others are told, and presence lists the user again.
///
/// Fails today: `room:leave` on node A removes ivan's node-B socket from the Socket.IO room through
/// the adapter, but node B's in-memory presence still records that socket in the room, so the
/// re-join on node B is taken for a second tab: no `join` notice, and no Redis presence entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejoin_on_another_node_after_leave() {
    within(TEST_LIMIT, "rejoin_on_another_node_after_leave", async {
        let nodes = cluster(2).await;
        let room = "foyer";
        let ivan_a = connect_user_at(&nodes[0].base_url, "ivan", "Ivan").await;
        let ivan_b = connect_user_at(&nodes[1].base_url, "ivan", "Ivan").await;
        let mut judy = connect_user_at(&nodes[0].base_url, "judy", "Judy").await;
        // judy's second tab sends the markers judy waits for.
        let judy_b = connect_user_at(&nodes[1].base_url, "judy", "Judy").await;
        judy.join(room).await;
        judy_b.join(room).await;
        ivan_a.join(room).await;
        ivan_b.join(room).await;
        let ivan_is = |kind: &'static str| {
            move |n: &Value| n["kind"] == json!(kind) && n["user"]["id"] == json!("ivan")
        };
        judy.wait_for("room:notice", ivan_is("join"), "ivan's join")
            .await;

        let ack = ivan_a.ack("room:leave", json!({ "room": room })).await;
        assert_eq!(ack, json!({ "ok": true }), "room:leave");
        judy.wait_for("room:notice", ivan_is("leave"), "ivan's leave")
            .await;
        let marker = judy_b.send_marker(room).await;
        judy.expect_none_before_marker("room:notice", ivan_is("leave"), &marker, "a second leave")
            .await;

        // The tab on node B joins again.
        let ack = ivan_b.join(room).await;
        assert_eq!(
            user_ids(&ack["members"]),
            ids(&["ivan", "judy"]),
            "members in ivan's re-join on node B"
        );
        let marker = ivan_b.send_marker(room).await;
        let notices = judy.events_before_marker("room:notice", &marker).await;
        assert_eq!(
            notices_of(&notices, "join", "ivan").len(),
            1,
            "judy is told ivan is back: {notices:?}"
        );
        assert_eq!(
            judy.presence_ids(room).await,
            ids(&["ivan", "judy"]),
            "presence after ivan's re-join"
        );
        // And his messages from node B reach judy on node A.
        ivan_b.send(room, "back again").await;
        judy.expect_message_text("back again", STEP_TIMEOUT).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typing_crosses_nodes() {
    within(TEST_LIMIT, "typing_crosses_nodes", async {
        let nodes = cluster(2).await;
        let room = "den";
        let mut kim = connect_user_at(&nodes[0].base_url, "kim", "Kim").await;
        let mut lee = connect_user_at(&nodes[1].base_url, "lee", "Lee").await;
        kim.join(room).await;
        lee.join(room).await;

        // Without an ack, as clients usually send it.
        kim.emit("typing", json!({ "room": room })).await;
        let got = lee
            .next_event("typing", STEP_TIMEOUT)
            .await
            .expect("lee (node B) did not see kim (node A) typing");
        assert_eq!(
            got,
            json!({ "room": room, "user": { "id": "kim", "name": "Kim", "anonymous": false } })
        );

        // With an ack, the other way.
        let ack = lee.ack("typing", json!({ "room": room })).await;
        assert_eq!(ack, json!({ "ok": true }), "typing ack");
        let got = kim
            .next_event("typing", STEP_TIMEOUT)
            .await
            .expect("kim (node A) did not see lee (node B) typing");
        assert_eq!(got["user"]["id"], json!("lee"));

        // Never stored, never echoed to the typist (up to a marker from the other), and kim's typing
        // without an ack raised no `chat:error`.
        assert!(
            kim.history_all(room).await.is_empty(),
            "typing is not stored"
        );
        let marker = lee.send_marker(room).await;
        kim.expect_none_before_marker("typing", |_| true, &marker, "kim after her own typing")
            .await;
        assert_eq!(
            kim.discard_received("chat:error"),
            Vec::<Value>::new(),
            "kim's typing without an ack"
        );
        let marker = kim.send_marker(room).await;
        lee.expect_none_before_marker("typing", |_| true, &marker, "lee after his own typing")
            .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Presence in Redis: notice versions, key layout, dead nodes, resync
// ---------------------------------------------------------------------------------------------

/// A plain Redis client, to look at the keys presence leaves behind.
async fn redis_client(url: &str) -> fred::clients::Client {
    use fred::interfaces::ClientLike;
    let config = fred::types::config::Config::from_url(url).expect("redis url");
    let client = fred::types::Builder::from_config(config)
        .build()
        .expect("redis client");
    client.init().await.expect("connect to redis");
    client
}

/// Runs one Redis command.
async fn redis_cmd<R: fred::types::FromValue>(
    redis: &fred::clients::Client,
    name: &'static str,
    args: &[&str],
) -> R {
    use fred::interfaces::ClientLike;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    redis
        .custom(fred::cmd!(name), args.clone())
        .await
        .unwrap_or_else(|e| panic!("redis {name} {args:?}: {e}"))
}

/// The common part of every presence key of a room in the namespace `/`.
fn room_tag(prefix: &str, room: &str) -> String {
    format!("{prefix}:presence:{{/|{room}}}")
}

/// Every `room:notice` has a `version` that increases per room whoever's node said it, is the same for
/// every observer, and is the one kept in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notice_versions_increase_across_nodes() {
    within(TEST_LIMIT, "notice_versions_increase_across_nodes", async {
        let nodes = cluster(2).await;
        let room = "ledger";
        let mut obs_a = connect_user_at(&nodes[0].base_url, "obs-a", "Watcher A").await;
        let mut obs_b = connect_user_at(&nodes[1].base_url, "obs-b", "Watcher B").await;
        obs_a.join(room).await;
        obs_b.join(room).await;
        // obs-a hears obs-b arrive; after that neither has anything else pending about the two of them.
        obs_a
            .wait_for(
                "room:notice",
                |n| n["user"]["id"] == "obs-b",
                "obs-b's join",
            )
            .await;
        obs_a.discard_received("room:notice");
        obs_b.discard_received("room:notice");

        let redis = redis_client(&redis_url()).await;
        let version_key = format!("{}:version", room_tag(nodes._prefix.as_str(), room));
        let mut last = 0u64;
        let mut step = async |obs_a: &mut common::Client,
                              obs_b: &mut common::Client,
                              what: &str,
                              kind: &str,
                              user: &str| {
            let mut seen = Vec::new();
            for (who, obs) in [("observer on A", obs_a), ("observer on B", obs_b)] {
                let notice = obs
                    .next_event("room:notice", STEP_TIMEOUT)
                    .await
                    .unwrap_or_else(|| panic!("{who}: no room:notice after {what}"));
                assert_eq!(
                    (&notice["kind"], &notice["user"]["id"]),
                    (&json!(kind), &json!(user)),
                    "{who} after {what}: {notice}"
                );
                let version = notice["version"].as_u64().unwrap_or_else(|| {
                    panic!("{who}: notice without an integer version: {notice}")
                });
                seen.push(version);
            }
            assert_eq!(
                seen[0], seen[1],
                "both observers see one version for {what}"
            );
            // The version is Redis's: the room's counter holds the one just given.
            let stored: Option<String> = redis_cmd(&redis, "GET", &[&version_key]).await;
            assert_eq!(
                stored.as_deref().and_then(|v| v.parse::<u64>().ok()),
                Some(seen[0]),
                "{version_key} after {what}"
            );
            assert!(
                seen[0] > last,
                "version of {what} ({}) is not above the previous one ({last})",
                seen[0]
            );
            last = seen[0];
        };

        let uma_b = connect_user_at(&nodes[1].base_url, "uma", "Uma").await;
        uma_b.join(room).await;
        step(&mut obs_a, &mut obs_b, "uma joined on B", "join", "uma").await;
        let vic_a = connect_user_at(&nodes[0].base_url, "vic", "Vic").await;
        vic_a.join(room).await;
        step(&mut obs_a, &mut obs_b, "vic joined on A", "join", "vic").await;
        uma_b.disconnect().await;
        step(
            &mut obs_a,
            &mut obs_b,
            "uma closed her tab on B",
            "leave",
            "uma",
        )
        .await;
        let ack = vic_a.ack("room:leave", json!({ "room": room })).await;
        assert_eq!(ack, json!({ "ok": true }), "room:leave");
        step(
            &mut obs_a,
            &mut obs_b,
            "vic's room:leave on A",
            "leave",
            "vic",
        )
        .await;
        let uma_a = connect_user_at(&nodes[0].base_url, "uma", "Uma").await;
        uma_a.join(room).await;
        step(&mut obs_a, &mut obs_b, "uma came back on A", "join", "uma").await;
        uma_a.disconnect().await;
        step(&mut obs_a, &mut obs_b, "uma left on A", "leave", "uma").await;
    })
    .await;
}

/// Presence keeps a key per (room, user) while the user is there, and nothing of a room once everyone left
/// but its version counter, which expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_keys_are_pruned_when_users_leave() {
    within(
        TEST_LIMIT,
        "presence_keys_are_pruned_when_users_leave",
        async {
            let nodes = cluster(2).await;
            let prefix = nodes._prefix.as_str().to_owned();
            let (room, other) = ("pruned", "pruned-too");
            let alice_a = connect_user_at(&nodes[0].base_url, "alice", "Alice").await;
            let alice_b = connect_user_at(&nodes[1].base_url, "alice", "Alice").await;
            let bob = connect_user_at(&nodes[1].base_url, "bob", "Bob").await;
            let carol = connect_user_at(&nodes[0].base_url, "carol", "Carol").await;
            for client in [&alice_a, &alice_b, &bob, &carol] {
                client.join(room).await;
            }
            carol.join(other).await;

            let redis = redis_client(&redis_url()).await;
            let tag = room_tag(&prefix, room);
            let alice: std::collections::HashMap<String, String> =
                redis_cmd(&redis, "HGETALL", &[&format!("{tag}:user:alice")]).await;
            assert_eq!(
                alice.values().collect::<Vec<_>>(),
                vec!["1", "1"],
                "alice's key counts one socket on each of two nodes: {alice:?}"
            );
            for user in ["bob", "carol"] {
                let key = format!("{tag}:user:{user}");
                let n: i64 = redis_cmd(&redis, "HLEN", &[&key]).await;
                assert_eq!(n, 1, "{key}");
            }
            let mut listed: Vec<String> =
                redis_cmd(&redis, "HKEYS", &[&format!("{tag}:users")]).await;
            listed.sort();
            assert_eq!(listed, ids(&["alice", "bob", "carol"]), "{tag}:users");

            let ack = bob.ack("room:leave", json!({ "room": room })).await;
            assert_eq!(ack, json!({ "ok": true }), "room:leave");
            let n: i64 = redis_cmd(&redis, "EXISTS", &[&format!("{tag}:user:bob")]).await;
            assert_eq!(n, 0, "bob's key is gone once he left");
            alice_a.disconnect().await;
            carol.disconnect().await;
            alice_b.disconnect().await;

            // Disconnects are handled asynchronously: wait for the keys to go, then look at what is left.
            let presence_keys = format!("{prefix}:presence:*");
            let node_rooms = format!("{prefix}:{{nodes}}:rooms:*");
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            let left = loop {
                let keys: Vec<String> = redis_cmd(&redis, "KEYS", &[&presence_keys]).await;
                let rooms: Vec<String> = redis_cmd(&redis, "KEYS", &[&node_rooms]).await;
                let entries: Vec<&String> =
                    keys.iter().filter(|k| !k.ends_with(":version")).collect();
                if (entries.is_empty() && rooms.is_empty())
                    || tokio::time::Instant::now() > deadline
                {
                    assert!(
                        entries.is_empty(),
                        "presence keys left after everyone left: {entries:?}"
                    );
                    assert!(rooms.is_empty(), "room indexes of nodes left: {rooms:?}");
                    break keys;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let mut left = left;
            left.sort();
            let mut expected = vec![
                format!("{}:version", room_tag(&prefix, room)),
                format!("{}:version", room_tag(&prefix, other)),
            ];
            expected.sort();
            assert_eq!(left, expected, "only the version counters stay");
            for key in &left {
                let ttl: i64 = redis_cmd(&redis, "PTTL", &[key]).await;
                assert!(ttl > 0, "{key} must expire, PTTL {ttl}");
            }
        },
    )
    .await;
}

/// A node that dies without a goodbye: its users leave presence within the node TTL (plus a heartbeat),
/// its entries are swept from Redis, and a user who also has a tab on a live node stays, until that tab
/// leaves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashed_node_users_leave_presence() {
    within(
        Duration::from_secs(60),
        "crashed_node_users_leave_presence",
        async {
            let db = TestDb::new(Store::Postgres).await;
            let (url, prefix) = (redis_url(), redis_prefix());
            let args = [
                "--redis-url",
                url.as_str(),
                "--redis-prefix",
                prefix.as_str(),
            ];
            let mut node_a = common::NodeProcess::spawn(&db, &args).await;
            let node_b = TestServer::start_node(&db, &url, prefix.as_str()).await;
            let room = "wreck";
            let alice = connect_user_at(&node_a.base_url, "alice", "Alice").await;
            let dora_a = connect_user_at(&node_a.base_url, "dora", "Dora").await;
            let dora_b = connect_user_at(&node_b.base_url, "dora", "Dora").await;
            let mut bob = connect_user_at(&node_b.base_url, "bob", "Bob").await;
            for client in [&alice, &dora_a, &dora_b, &bob] {
                client.join(room).await;
            }
            assert_eq!(bob.presence_ids(room).await, ids(&["alice", "bob", "dora"]));
            let redis = redis_client(&url).await;
            let tag = room_tag(prefix.as_str(), room);
            let nodes_key = format!("{prefix}:{{nodes}}");
            let n: i64 = redis_cmd(&redis, "ZCARD", &[&nodes_key]).await;
            assert_eq!(n, 2, "two live nodes");

            node_a.kill();
            let killed = std::time::Instant::now();
            let limit = Duration::from_secs(10) + Duration::from_secs(3);
            loop {
                let users = bob.presence_ids(room).await;
                if users == ids(&["bob", "dora"]) {
                    break;
                }
                assert!(
                    killed.elapsed() < limit,
                    "{limit:?} after node A was killed, node B still lists {users:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let gone_after = killed.elapsed();

            // Node A's entries are swept: alice's key, dora's count on A, A's room index, A itself.
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            loop {
                let alice_key: i64 =
                    redis_cmd(&redis, "EXISTS", &[&format!("{tag}:user:alice")]).await;
                let dora: i64 = redis_cmd(&redis, "HLEN", &[&format!("{tag}:user:dora")]).await;
                let live: i64 = redis_cmd(&redis, "ZCARD", &[&nodes_key]).await;
                let indexes: Vec<String> =
                    redis_cmd(&redis, "KEYS", &[&format!("{prefix}:{{nodes}}:rooms:*")]).await;
                let node_sets: Vec<String> =
                    redis_cmd(&redis, "KEYS", &[&format!("{tag}:node:*")]).await;
                if (alice_key, dora, live, indexes.len(), node_sets.len()) == (0, 1, 1, 1, 1) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node A not swept: alice's key {alice_key}, dora's nodes {dora}, nodes {live}, \
                 room indexes {indexes:?}, node sets {node_sets:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }

            // Dora's tab on B is now her last one: closing it says `leave`.
            bob.discard_received("room:notice");
            dora_b.disconnect().await;
            let notice = bob
                .next_event("room:notice", STEP_TIMEOUT)
                .await
                .expect("no leave when dora's last live tab closed");
            assert_eq!(
                (&notice["kind"], &notice["user"]["id"]),
                (&json!("leave"), &json!("dora")),
                "{notice}"
            );
            assert_eq!(bob.presence_ids(room).await, ids(&["bob"]));
            eprintln!("crashed node: its users left presence {gone_after:?} after SIGKILL");
            drop((alice, dora_a));
        },
    )
    .await;
}

/// After a Redis outage, a node reports Redis up (`/readyz` 200) only once its entries are back in Redis,
/// including those of users who arrived during the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_is_rebuilt_before_redis_is_reported_up() {
    within(Duration::from_secs(90), "presence_is_rebuilt_before_redis_is_reported_up", async {
        let mut redis_server = common::RedisServer::start().await;
        let db = TestDb::new(Store::Postgres).await;
        let prefix = "palaver-resync-test";
        let node = TestServer::start_node(&db, &redis_server.url(), prefix).await;
        // Enough rooms that the resync takes a while: a node that said "up" before it would be caught. Five
        // users with 40 rooms each before the outage, five more in the same rooms during it (40 joins per
        // connection stays within any per-connection join budget).
        let rooms: Vec<String> = (0..200).map(|i| format!("resync-{i}")).collect();
        let groups: Vec<&[String]> = rooms.chunks(40).collect();
        let mut clients = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            let client = connect_user_at(&node.base_url, &format!("a{i}"), "A").await;
            for room in *group {
                client.join(room).await;
            }
            clients.push(client);
        }

        redis_server.kill();
        common::wait_readyz(&node.base_url, 503, Duration::from_secs(5)).await;
        // The b users arrive while Redis is away: only the node's registry knows them.
        for (i, group) in groups.iter().enumerate() {
            let client = connect_user_at(&node.base_url, &format!("b{i}"), "B").await;
            for room in *group {
                client.join(room).await;
            }
            clients.push(client);
        }

        // Redis comes back empty. Poll tightly, and look at Redis the moment the node says it is up: one
        // script reads every room at once.
        redis_server.spawn().await;
        let redis = redis_client(&redis_server.url()).await;
        let http = common::http_client();
        let readyz = format!("{}/readyz", node.base_url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = http
                .get(&readyz)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "/readyz never said 200 again");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        const INCOMPLETE: &str = "local out = {} for _, key in ipairs(KEYS) do \
            if redis.call('HLEN', key) ~= 2 then out[#out + 1] = key end end return out";
        let keys: Vec<String> = rooms
            .iter()
            .map(|room| format!("{}:users", room_tag(prefix, room)))
            .collect();
        let missing: Vec<String> = {
            use fred::interfaces::LuaInterface;
            redis
                .eval(INCOMPLETE, keys, Vec::<String>::new())
                .await
                .expect("eval")
        };
        assert!(
            missing.is_empty(),
            "Redis was reported up before presence was rebuilt: {} of {} rooms incomplete: {:?}",
            missing.len(),
            rooms.len(),
            &missing[..missing.len().min(5)]
        );
        assert_eq!(clients[0].presence_ids(&rooms[0]).await, ids(&["a0", "b0"]));
        assert_eq!(clients[9].presence_ids(&rooms[199]).await, ids(&["a4", "b4"]));
        drop(node);
    })
    .await;
}
