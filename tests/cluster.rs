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
