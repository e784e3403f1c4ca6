//! Retention and erasure (`palaver::store::Lifecycle`, `palaver::retention`), on SQLite and on Postgres:
//!
//! * erasing a user turns their messages into tombstones (each under its own revision, so the change feed brings
//!   them to clients), removes their reactions, memberships and read state, invitations, roles, sanctions, blocks
//!   and sessions, leaves everyone else's data alone, reports what it removed, and does nothing the second time;
//!   erasing from one namespace leaves the others (and the sessions) alone;
//! * retention expires a namespace's messages older than its `retention_days` (made old with SQL, not by waiting),
//!   keeps the young ones and the other namespaces', and is a job one node runs at a time: on Postgres two stores
//!   claiming at once get one run between them, and the revisions of a 1200-message expiry come out gap-free;
//! * a running server (two, on Postgres) expires old messages by itself, and a client sees the tombstones.

#[macro_use]
mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use common::{Store, TestDb, TestServer};
use palaver::store::{
    self, Actor, Author, ClientIdScope, HistoryQuery, NewMessage, NewRefresh, Reacted, Room,
    RoomKind, RoomRole, Sanction, SanctionKind, SharedStore, Visibility,
};
use serde_json::json;

const NS: &str = "/";

fn author(id: &str) -> Author {
    Author {
        id: id.to_owned(),
        name: format!("Name of {id}"),
    }
}

fn group(id: &str, visibility: Visibility) -> Room {
    Room {
        id: id.to_owned(),
        name: id.to_owned(),
        kind: RoomKind::Group,
        visibility,
        created_at: store::now(),
    }
}

async fn send(store: &SharedStore, ns: &str, room: &str, from: &Author, text: &str) -> i64 {
    let message = NewMessage {
        room: room.to_owned(),
        from: from.clone(),
        text: text.to_owned(),
        client_id: Some(format!("{}-{text}", from.id)),
        client_id_scope: ClientIdScope::Sender,
        reply_to: None,
    };
    store
        .append_message(ns, message)
        .await
        .expect("append")
        .message
        .seq
}

async fn rev_of(store: &SharedStore, ns: &str, room: &str) -> i64 {
    store
        .room_state(ns, room, "nobody")
        .await
        .expect("room state")
        .expect("room")
        .rev
}

/// A short-lived connection to the test database for plain SQL (`$1`… works on both).
enum Sql {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Sql {
    async fn open(db: &TestDb) -> Sql {
        match db.store {
            Store::Sqlite => {
                let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().expect("sqlite url");
                Sql::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(opts.busy_timeout(Duration::from_secs(5)))
                        .await
                        .expect("open sqlite"),
                )
            }
            Store::Postgres => Sql::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&db.url)
                    .await
                    .expect("open postgres"),
            ),
        }
    }

    /// `SELECT COUNT(*) …` with one bound text.
    async fn count(&self, sql: &'static str, arg: &str) -> i64 {
        match self {
            Sql::Sqlite(pool) => sqlx::query_scalar(sql).bind(arg).fetch_one(pool).await,
            Sql::Postgres(pool) => sqlx::query_scalar(sql).bind(arg).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Backdates the messages of `ns`/`room` with seq <= `up_to` to `at`.
    async fn backdate(&self, ns: &str, room: &str, up_to: i64, at: DateTime<Utc>) {
        let sql = "UPDATE messages SET created_at = $1 WHERE ns = $2 AND room = $3 AND seq <= $4";
        match self {
            Sql::Sqlite(pool) => sqlx::query(sql)
                .bind(at)
                .bind(ns)
                .bind(room)
                .bind(up_to)
                .execute(pool)
                .await
                .map(|_| ()),
            Sql::Postgres(pool) => sqlx::query(sql)
                .bind(at)
                .bind(ns)
                .bind(room)
                .bind(up_to)
                .execute(pool)
                .await
                .map(|_| ()),
        }
        .expect("backdate");
    }

    async fn close(self) {
        match self {
            Sql::Sqlite(pool) => pool.close().await,
            Sql::Postgres(pool) => pool.close().await,
        }
    }
}

async fn erasure_contract(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (alice, bob, carol) = (author("alice"), author("bob"), author("carol"));
    let admin = Actor {
        user: bob.clone(),
        admin: true,
    };

    // Alice created "general"; bob and she talk there, react to each other, and she replies.
    store
        .ensure_room(NS, &group("general", Visibility::Public), "alice")
        .await
        .expect("general");
    store.add_member(NS, "general", &alice).await.expect("join");
    store.add_member(NS, "general", &bob).await.expect("join");
    let a1 = send(&store, NS, "general", &alice, "alice one").await;
    let b1 = send(&store, NS, "general", &bob, "bob one").await;
    let a2 = send(&store, NS, "general", &alice, "alice two").await;
    let a3 = send(&store, NS, "general", &alice, "alice deleted before").await;
    let b2 = send(&store, NS, "general", &bob, "bob two").await;
    assert!(
        store
            .delete_message(NS, "general", a3, store::now())
            .await
            .expect("delete")
            .is_some()
    );
    for (seq, who, emoji) in [
        (b1, "alice", "👍"),
        (b1, "bob", "👍"),
        (a1, "bob", "🎉"),
        (b2, "alice", "😀"),
    ] {
        assert!(matches!(
            store
                .react(NS, "general", seq, who, emoji, true)
                .await
                .expect("react"),
            Reacted::Changed { .. }
        ));
    }
    store
        .mark_read(NS, "general", "alice", b2, store::now())
        .await
        .expect("read");
    // A DM, an invitation, a role, a mute, blocks both ways, a session.
    let dm = Room {
        id: "dm:ab".to_owned(),
        name: String::new(),
        kind: RoomKind::Dm,
        visibility: Visibility::Private,
        created_at: store::now(),
    };
    store.create_dm(NS, &dm, [&alice, &bob]).await.expect("dm");
    let d1 = send(&store, NS, "dm:ab", &alice, "secret dm").await;
    let d2 = send(&store, NS, "dm:ab", &bob, "bob's dm").await;
    store
        .create_room(
            NS,
            &group("private", Visibility::Private),
            &carol,
            std::slice::from_ref(&alice),
        )
        .await
        .expect("private room with alice invited");
    store
        .set_role(NS, "general", "alice", RoomRole::Moderator, &admin)
        .await
        .expect("role");
    store
        .sanction(
            NS,
            "private",
            "alice",
            Sanction {
                kind: SanctionKind::Mute,
                until: None,
            },
            &Actor {
                user: carol.clone(),
                admin: false,
            },
        )
        .await
        .expect("mute");
    assert!(store.block(NS, "alice", "carol").await.expect("block"));
    assert!(store.block(NS, "bob", "alice").await.expect("block"));
    store
        .insert_refresh(&NewRefresh {
            hash: "h1".to_owned(),
            family: "f1".to_owned(),
            user: alice.clone(),
            created_at: store::now(),
            expires_at: store::now() + chrono::Duration::days(1),
        })
        .await
        .expect("refresh token");
    // The same user in another namespace.
    store
        .ensure_room("/other", &group("lobby", Visibility::Public), "bob")
        .await
        .expect("lobby");
    store
        .add_member("/other", "lobby", &alice)
        .await
        .expect("join");
    let o1 = send(&store, "/other", "lobby", &alice, "alice elsewhere").await;

    let rev_before = rev_of(&store, NS, "general").await;
    let dm_rev_before = rev_of(&store, NS, "dm:ab").await;

    // Only "/other" first: "/" and the session stay.
    let other = store
        .erase_user("alice", Some("/other"), store::now())
        .await
        .expect("erase in /other");
    assert_eq!(other.namespaces.len(), 1);
    assert_eq!(other.namespaces[0].messages_tombstoned, 1);
    assert_eq!(other.namespaces[0].memberships_removed, 1);
    assert_eq!(other.refresh_tokens_removed, 0);
    let lobby = store
        .history("/other", "lobby", HistoryQuery::latest(10))
        .await
        .expect("history");
    assert!(lobby.messages[0].deleted && lobby.messages[0].text.is_empty());
    assert_eq!(lobby.messages[0].seq, o1);
    assert_eq!(
        rev_of(&store, NS, "general").await,
        rev_before,
        "/ untouched"
    );
    assert!(
        store
            .is_member(NS, "general", "alice")
            .await
            .expect("member")
    );

    let erasure = store
        .erase_user("alice", None, store::now())
        .await
        .expect("erase everywhere");
    let ns = erasure
        .namespaces
        .iter()
        .find(|n| n.namespace == NS)
        .expect("report of /");
    // a1, a2 and the DM message; a3 was a tombstone already.
    assert_eq!(ns.messages_tombstoned, 3, "{ns:?}");
    assert_eq!(ns.tombstones_scrubbed, 1, "{ns:?}");
    // Hers on b1 and b2; bob's 🎉 on a1 went with a1's text (not counted: it was not hers).
    assert_eq!(ns.reactions_removed, 2, "{ns:?}");
    assert_eq!(ns.memberships_removed, 2, "general and the DM: {ns:?}");
    assert_eq!(ns.invitations_removed, 1, "{ns:?}");
    assert_eq!(ns.roles_removed, 1, "{ns:?}");
    assert_eq!(ns.sanctions_removed, 1, "{ns:?}");
    assert_eq!(ns.blocks_removed, 2, "{ns:?}");
    assert_eq!(ns.rooms_disowned, 1, "{ns:?}");
    assert!(ns.moderation_entries_removed >= 2, "role and mute: {ns:?}");
    assert_eq!(
        ns.rooms_changed,
        vec!["dm:ab".to_owned(), "general".to_owned()]
    );
    assert_eq!(erasure.refresh_tokens_removed, 1);

    // Every change took its own revision: 2 tombstones and 2 reaction changes in general, 1 tombstone in the DM.
    assert_eq!(rev_of(&store, NS, "general").await, rev_before + 4);
    assert_eq!(rev_of(&store, NS, "dm:ab").await, dm_rev_before + 1);
    let changed = store
        .changed_messages(NS, "general", i64::MAX, rev_before, 100, "bob")
        .await
        .expect("change feed");
    let mut seqs: Vec<i64> = changed.messages.iter().map(|m| m.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        vec![a1, b1, a2, b2],
        "the feed brings every changed message"
    );
    let revs: Vec<i64> = changed.messages.iter().filter_map(|m| m.rev).collect();
    assert_eq!(
        revs,
        ((rev_before + 1)..=(rev_before + 4)).collect::<Vec<_>>()
    );

    let page = store
        .history_for(NS, "general", HistoryQuery::latest(50), "bob")
        .await
        .expect("history");
    for m in &page.messages {
        if m.from.id == "alice" {
            assert!(m.deleted && m.text.is_empty(), "{m:?}");
            assert!(m.from.name.is_empty() && m.client_id.is_none(), "{m:?}");
            assert!(m.reactions.is_empty(), "{m:?}");
        } else {
            assert!(!m.deleted && m.text.starts_with("bob"), "bob's stay: {m:?}");
            assert_eq!(m.from.name, "Name of bob");
        }
    }
    let b1_now = page.messages.iter().find(|m| m.seq == b1).expect("b1");
    assert_eq!(b1_now.reactions.len(), 1);
    assert_eq!(b1_now.reactions[0].count, 1, "bob's 👍 stays, alice's went");
    assert!(
        page.messages
            .iter()
            .find(|m| m.seq == b2)
            .expect("b2")
            .reactions
            .is_empty()
    );
    let dm_page = store
        .history(NS, "dm:ab", HistoryQuery::latest(10))
        .await
        .expect("dm history");
    assert!(dm_page.messages.iter().any(|m| m.seq == d1 && m.deleted));
    assert!(
        dm_page
            .messages
            .iter()
            .any(|m| m.seq == d2 && m.text == "bob's dm")
    );

    // Nothing of alice is left where palaver keeps users.
    assert!(
        !store
            .is_member(NS, "general", "alice")
            .await
            .expect("member")
    );
    assert!(
        !store
            .is_invited(NS, "private", "alice")
            .await
            .expect("invited")
    );
    assert!(
        store
            .user_rooms(NS, "alice", 100)
            .await
            .expect("rooms")
            .is_empty()
    );
    assert!(
        store
            .sanctions(NS, "private", "alice")
            .await
            .expect("sanctions")
            .is_empty()
    );
    assert_eq!(
        store
            .blocker_between(NS, "alice", "bob")
            .await
            .expect("blocks"),
        None
    );
    let sql = Sql::open(&db).await;
    let text_left = sql
        .count(
            "SELECT COUNT(*) FROM messages WHERE sender_id = $1 AND (text <> '' OR sender_name <> '')",
            "alice",
        )
        .await;
    assert_eq!(text_left, 0, "no text or name of alice's in messages");
    for (table, sql_text) in [
        (
            "memberships",
            "SELECT COUNT(*) FROM memberships WHERE user_id = $1",
        ),
        (
            "reactions",
            "SELECT COUNT(*) FROM reactions WHERE user_id = $1",
        ),
        (
            "user_blocks",
            "SELECT COUNT(*) FROM user_blocks WHERE blocker_id = $1 OR blocked_id = $1",
        ),
        (
            "room_roles",
            "SELECT COUNT(*) FROM room_roles WHERE user_id = $1",
        ),
        (
            "room_sanctions",
            "SELECT COUNT(*) FROM room_sanctions WHERE user_id = $1",
        ),
        (
            "moderation_log",
            "SELECT COUNT(*) FROM moderation_log WHERE user_id = $1",
        ),
        (
            "refresh_tokens",
            "SELECT COUNT(*) FROM refresh_tokens WHERE user_id = $1",
        ),
        ("rooms", "SELECT COUNT(*) FROM rooms WHERE created_by = $1"),
    ] {
        assert_eq!(sql.count(sql_text, "alice").await, 0, "{table}");
    }
    // Others' rows are still there.
    assert_eq!(
        sql.count("SELECT COUNT(*) FROM memberships WHERE user_id = $1", "bob")
            .await,
        2,
        "bob's general and DM"
    );
    sql.close().await;

    // Erasing again finds nothing and changes no revision.
    let again = store
        .erase_user("alice", None, store::now())
        .await
        .expect("erase again");
    let total = again.total();
    assert_eq!(
        (
            total.messages_tombstoned,
            total.reactions_removed,
            total.memberships_removed
        ),
        (0, 0, 0)
    );
    assert!(total.rooms_changed.is_empty());
    assert_eq!(rev_of(&store, NS, "general").await, rev_before + 4);
}

store_test!(erasure_contract => erasure_contract_sqlite, erasure_contract_postgres);

/// `--retention-days 30`, with a namespaces file adding "/keep" (kept forever) and "/short" (1 day).
fn retention_config(dir: &std::path::Path, interval: &str) -> palaver::Config {
    let path = dir.join("ns.toml");
    std::fs::write(
        &path,
        "[[namespace]]\npath = \"/keep\"\nretention_days = 0\n\n[[namespace]]\npath = \"/short\"\nretention_days = 1\n",
    )
    .expect("namespaces file");
    palaver::Config::parse_from([
        "palaver",
        "--retention-days",
        "30",
        "--retention-interval-secs",
        interval,
        "--namespaces",
        path.to_str().expect("utf-8 path"),
    ])
}

async fn retention_expires_old_messages(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = retention_config(dir.path(), "60");
    let namespaces = config.namespaces().expect("namespaces");
    let retention = palaver::retention::Retention::from_config(&config, &namespaces)
        .expect("a retention is configured");
    let mut configured: Vec<(String, u32)> = retention.namespaces().to_vec();
    configured.sort();
    assert_eq!(
        configured,
        vec![("/".to_owned(), 30), ("/short".to_owned(), 1)],
        "/keep keeps forever"
    );

    let bob = author("bob");
    let sql = Sql::open(&db).await;
    let now = store::now();
    for ns in ["/", "/keep", "/short"] {
        store
            .ensure_room(ns, &group("r", Visibility::Public), "bob")
            .await
            .expect("room");
        for i in 1..=5 {
            send(&store, ns, "r", &bob, &format!("{ns} message {i}")).await;
        }
    }
    // "/": 1–3 are 40 days old, 4–5 new. "/keep": all 400 days old. "/short": 1–2 are 2 days old.
    sql.backdate("/", "r", 3, now - chrono::Duration::days(40))
        .await;
    sql.backdate("/keep", "r", 5, now - chrono::Duration::days(400))
        .await;
    sql.backdate("/short", "r", 2, now - chrono::Duration::days(2))
        .await;
    assert!(matches!(
        store
            .react("/", "r", 2, "bob", "👍", true)
            .await
            .expect("react"),
        Reacted::Changed { .. }
    ));
    let rev_before = rev_of(&store, "/", "r").await;

    let run = retention
        .run_once(&store, "node-a", now)
        .await
        .expect("run")
        .expect("the job was due");
    assert_eq!(run.messages_expired, 5, "3 in / and 2 in /short: {run:?}");
    assert_eq!(run.rooms, 2);
    assert!(run.complete);

    let page = store
        .history("/", "r", HistoryQuery::latest(10))
        .await
        .expect("history");
    let states: Vec<(i64, bool, &str)> = page
        .messages
        .iter()
        .map(|m| (m.seq, m.deleted, m.text.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, true, ""),
            (2, true, ""),
            (3, true, ""),
            (4, false, "/ message 4"),
            (5, false, "/ message 5"),
        ],
        "seqs stay gap-free; only the old text went"
    );
    assert!(page.messages[1].reactions.is_empty());
    assert_eq!(
        sql.count("SELECT COUNT(*) FROM reactions WHERE ns = $1", "/")
            .await,
        0,
        "the expired message's reactions went with it"
    );
    // Each expiry took its own revision, and the change feed brings them in order.
    assert_eq!(rev_of(&store, "/", "r").await, rev_before + 3);
    let feed = store
        .changed_messages("/", "r", i64::MAX, rev_before, 10, "bob")
        .await
        .expect("feed");
    assert_eq!(
        feed.messages
            .iter()
            .map(|m| (m.seq, m.rev))
            .collect::<Vec<_>>(),
        vec![
            (1, Some(rev_before + 1)),
            (2, Some(rev_before + 2)),
            (3, Some(rev_before + 3))
        ]
    );
    let keep = store
        .history("/keep", "r", HistoryQuery::latest(10))
        .await
        .expect("keep");
    assert!(
        keep.messages.iter().all(|m| !m.deleted),
        "/keep keeps forever"
    );
    let short = store
        .history("/short", "r", HistoryQuery::latest(10))
        .await
        .expect("short");
    assert_eq!(
        short.messages.iter().filter(|m| m.deleted).count(),
        2,
        "1 day in /short"
    );
    assert_eq!(
        sql.count(
            "SELECT COUNT(*) FROM messages WHERE ns = $1 AND text LIKE '%message 1'",
            "/"
        )
        .await,
        0,
        "the text is gone from the database"
    );

    // Not due again before the interval; due after it, with nothing left to do.
    assert!(
        retention
            .run_once(&store, "node-a", now + chrono::Duration::seconds(30))
            .await
            .expect("run")
            .is_none()
    );
    // Message 4 ages past the cutoff meanwhile.
    sql.backdate("/", "r", 4, now - chrono::Duration::days(31))
        .await;
    let later = retention
        .run_once(&store, "node-b", now + chrono::Duration::seconds(120))
        .await
        .expect("run")
        .expect("due after the interval");
    assert_eq!(later.messages_expired, 1, "only message 4: {later:?}");
    assert_eq!(rev_of(&store, "/", "r").await, rev_before + 4);
    sql.close().await;
}

store_test!(retention_expires_old_messages => retention_expires_old_messages_sqlite, retention_expires_old_messages_postgres);

async fn retention_runs_on_one_node_at_a_time(kind: Store) {
    let db = TestDb::new(kind).await;
    let first = store::open(&db.url, 4).await.expect("open store");
    // On Postgres a second store is a second node on the same database.
    let second = match kind {
        Store::Sqlite => first.clone(),
        Store::Postgres => store::open(&db.url, 4).await.expect("open second store"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = retention_config(dir.path(), "60");
    let retention = palaver::retention::Retention::from_config(
        &config,
        &config.namespaces().expect("namespaces"),
    )
    .expect("retention");
    let bob = author("bob");
    first
        .ensure_room(NS, &group("big", Visibility::Public), "bob")
        .await
        .expect("room");
    // More than one transaction's worth (500), all old.
    const OLD: i64 = 1200;
    let sends = (0..OLD).map(|i| {
        let store = first.clone();
        let bob = bob.clone();
        async move { send(&store, NS, "big", &bob, &format!("m{i}")).await }
    });
    futures_util::future::join_all(sends).await;
    send(&first, NS, "big", &bob, "young").await;
    let sql = Sql::open(&db).await;
    let now = store::now();
    sql.backdate(NS, "big", OLD, now - chrono::Duration::days(31))
        .await;

    // Both nodes claim at the same moment: one runs, the other finds the job taken.
    let (a, b) = tokio::join!(
        retention.run_once(&first, "node-a", now),
        retention.run_once(&second, "node-b", now)
    );
    let runs: Vec<_> = [a.expect("node a"), b.expect("node b")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1, "exactly one node ran the job: {runs:?}");
    assert_eq!(runs[0].messages_expired, OLD as u64);
    assert_eq!(
        rev_of(&first, NS, "big").await,
        OLD,
        "one revision per expired message"
    );
    assert_eq!(
        sql.count(
            "SELECT COUNT(DISTINCT rev) FROM messages WHERE room = $1 AND deleted_at IS NOT NULL",
            "big"
        )
        .await,
        OLD,
        "distinct revisions, each message expired once"
    );
    let last = first
        .history(NS, "big", HistoryQuery::latest(1))
        .await
        .expect("history");
    assert_eq!(last.messages[0].text, "young");

    // A lease in force keeps the job from another node even when it is due; once it runs out, it does not.
    // (A claim at `at` leases the job for 30 s and takes it if it last ran at or before `due_before`.)
    let claim = async |store: &SharedStore, node: &str, at: DateTime<Utc>, due_before| {
        store
            .claim_job(
                palaver::retention::JOB,
                node,
                at,
                at + chrono::Duration::seconds(30),
                due_before,
            )
            .await
            .expect("claim")
    };
    let later = now + chrono::Duration::seconds(120);
    let due = later - chrono::Duration::seconds(60);
    assert!(claim(&first, "node-a", later, due).await);
    assert!(!claim(&second, "node-b", later, due).await);
    let expired = later + chrono::Duration::seconds(31);
    assert!(
        claim(&second, "node-b", expired, later).await,
        "claimed once the lease ran out"
    );
    sql.close().await;
}

store_test!(retention_runs_on_one_node_at_a_time => retention_runs_on_one_node_at_a_time_sqlite, retention_runs_on_one_node_at_a_time_postgres);

/// Servers with `--retention-days 1` expire old messages by themselves; two of them on Postgres.
async fn servers_expire_by_themselves(kind: Store) {
    let db = TestDb::new(kind).await;
    let flags = ["--retention-days", "1", "--retention-interval-secs", "1"];
    let first = TestServer::start(&db, &flags).await;
    let second = match kind {
        Store::Postgres => Some(TestServer::start(&db, &flags).await),
        Store::Sqlite => None,
    };
    let alice = first.connect_user("alice", "Alice").await;
    alice.join("aging").await;
    for i in 1..=3 {
        alice.send("aging", &format!("old {i}")).await;
    }
    let sql = Sql::open(&db).await;
    sql.backdate(NS, "aging", 2, store::now() - chrono::Duration::days(2))
        .await;
    // The job runs every second on some node: wait for it through the client's own view.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ack = alice
            .ack("history:fetch", json!({ "room": "aging", "limit": 10 }))
            .await;
        let messages = ack["messages"].as_array().cloned().unwrap_or_default();
        let deleted: Vec<i64> = messages
            .iter()
            .filter(|m| m["deleted"] == json!(true))
            .filter_map(|m| m["seq"].as_i64())
            .collect();
        if deleted == vec![1, 2] {
            assert!(
                messages
                    .iter()
                    .all(|m| m["deleted"] == json!(true) || m["text"] == "old 3")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no expiry within 30 s: {ack}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sql.count(
            "SELECT COUNT(*) FROM jobs WHERE name = $1 AND last_run_at IS NOT NULL",
            "retention"
        )
        .await,
        1
    );
    sql.close().await;
    alice.disconnect().await;
    if let Some(second) = second {
        second.stop().await;
    }
    first.stop().await;
}

store_test!(servers_expire_by_themselves => servers_expire_by_themselves_sqlite, servers_expire_by_themselves_postgres);

/// `--migrate false` refuses a database that lacks migrations, and starts once `palaver migrate` ran.
async fn migrate_before_start(kind: Store) {
    let db = TestDb::new(kind).await;
    let config = palaver::Config::parse_from([
        "palaver",
        "--database-url",
        db.url.as_str(),
        "--migrate",
        "false",
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = palaver::serve(config.clone(), listener, async {}).await;
    let message = refused
        .expect_err("an unmigrated database is refused")
        .to_string();
    assert!(
        message.contains("palaver migrate") && message.contains("0010 lifecycle"),
        "{message}"
    );
    let applied = palaver::cli::migrate(&config).await.expect("migrate");
    assert!(
        applied.len() >= 9 && applied[0].starts_with("0001"),
        "{applied:?}"
    );
    assert!(
        palaver::cli::migrate(&config)
            .await
            .expect("again")
            .is_empty()
    );
    let server = TestServer::start(&db, &["--migrate", "false"]).await;
    server.stop().await;
}

store_test!(migrate_before_start => migrate_before_start_sqlite, migrate_before_start_postgres);

/// Runs the real binary with `args` and only `env` (and PATH) in its environment: (exit code, stdout, stderr).
fn palaver_bin(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palaver"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run palaver");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `palaver check-config` checks what start-up checks, hides secrets, and with `--connect` reaches the database;
/// `palaver migrate` migrates; flags go after the subcommand (before it they are refused), the environment works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subcommands_check_and_migrate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns_file = dir.path().join("ns.toml");
    std::fs::write(
        &ns_file,
        "[[namespace]]\npath = \"/game\"\nanonymous = false\nretention_days = 7\n",
    )
    .expect("write");
    let ns_path = ns_file.to_str().expect("utf-8");
    let (code, out, err) = palaver_bin(
        &[
            "check-config",
            "--jwt-secret",
            "hunter2",
            "--webhook-url",
            "http://127.0.0.1:9/hooks",
            "--webhook-secret",
            "whook-s3cret",
            "--database-url",
            "postgres://app:pg-s3cret@127.0.0.1:1/chat",
            "--namespaces",
            ns_path,
        ],
        &[("PALAVER_RETENTION_DAYS", "30")],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("configuration OK"), "{out}");
    assert!(
        out.contains("postgres://app:<redacted>@127.0.0.1:1/chat"),
        "{out}"
    );
    assert!(
        out.contains("  /: guests admitted") && out.contains("retention 30 days"),
        "{out}"
    );
    assert!(
        out.contains("  /game: guests refused") && out.contains("retention 7 days"),
        "{out}"
    );
    for secret in ["hunter2", "s3cret"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} shown: {out}{err}"
        );
    }

    // The mistakes start-up refuses, each named, with a non-zero exit.
    std::fs::write(&ns_file, "[[namespace]]\npath = \"game\"\n").expect("write");
    let (code, _, err) = palaver_bin(&["check-config", "--namespaces", ns_path], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("ns.toml") && err.contains("must start with '/'"),
        "{err}"
    );
    let (code, _, err) = palaver_bin(
        &["check-config", "--webhook-url", "http://127.0.0.1:9/h"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--webhook-url needs --webhook-secret"),
        "{err}"
    );
    let (code, _, err) = palaver_bin(&["check-config"], &[("PALAVER_SEND_RATE", "0")]);
    assert_ne!(code, 0);
    assert!(err.contains("send-rate"), "{err}");
    // Flags belong after the subcommand.
    let (code, _, err) = palaver_bin(&["--port", "4000", "migrate"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("migrate"), "{err}");

    // --connect: an unreachable database fails; a reachable one says what is pending, until `palaver migrate`.
    let (code, _, err) = palaver_bin(
        &[
            "check-config",
            "--connect",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ],
        &[],
    );
    assert_ne!(code, 0, "{err}");
    let db = TestDb::new(Store::Postgres).await;
    let (code, out, err) = palaver_bin(
        &["check-config", "--connect"],
        &[("DATABASE_URL", db.url.as_str())],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("database: reachable, migrations pending: 0001 init"),
        "{out}"
    );
    let (code, out, err) = palaver_bin(&["migrate"], &[("DATABASE_URL", db.url.as_str())]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("applied migrations: 0001 init") && out.contains("0010 lifecycle"),
        "{out}"
    );
    let (code, out, _) = palaver_bin(&["migrate", "--database-url", &db.url], &[]);
    assert_eq!((code, out.as_str()), (0, "the database is up to date\n"));
    let (code, out, err) = palaver_bin(
        &["check-config", "--connect", "--database-url", &db.url],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("database: reachable, schema up to date"),
        "{out}"
    );
    // A SQLite file is never created by a check.
    let file = dir.path().join("new.db");
    let url = format!("sqlite://{}", file.display());
    let (code, out, _) = palaver_bin(&["check-config", "--connect", "--database-url", &url], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("does not exist yet") && !file.exists(),
        "{out}"
    );
}
