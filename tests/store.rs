//! The store driven directly, on SQLite and on Postgres.
//!
//! * The group-commit writer: many concurrent appends across rooms, each sent twice with its `clientId` (on
//!   Postgres, the retry goes to a second store, as if to another node), plus appends to a room that does not
//!   exist. Every room's seqs must come out gap-free, every retry must return its original, and a bad append
//!   must not spoil its batch: neither one to a missing room nor one the database refuses (a trigger, a NUL).
//!   With several message writers (Postgres), a room's messages still commit in the order sent.
//! * The contract of rooms, invitations and creation quotas (see the `Store` trait's doc comments).

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Store, TestDb};
use palaver::store::{
    self, Author, ClientIdScope, HistoryQuery, NewMessage, Room, RoomKind, RoomSummary,
    SharedStore, StoreError, Visibility,
};

const ROOMS: usize = 20;
const SENDERS: usize = 600;

/// Public group rooms `{prefix}-0` … `{prefix}-{n - 1}`, created by `u0`.
async fn public_rooms(store: &SharedStore, prefix: &str, n: usize) {
    for r in 0..n {
        let room = Room {
            id: format!("{prefix}-{r}"),
            name: format!("{prefix}-{r}"),
            kind: RoomKind::Group,
            visibility: Visibility::Public,
            created_at: store::now(),
        };
        store
            .ensure_room("/", &room, "u0")
            .await
            .expect("ensure_room");
    }
}

async fn concurrent_appends_keep_seq_and_dedupe(kind: Store) {
    let db = TestDb::new(kind).await;
    let first = store::open(&db.url, 8).await.expect("open store");
    // SQLite has one writer per file; Postgres takes a second "node" on the same database.
    let second = match kind {
        Store::Sqlite => first.clone(),
        Store::Postgres => store::open(&db.url, 8).await.expect("open second store"),
    };
    public_rooms(&first, "g", ROOMS).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SENDERS {
        let (a, b): (SharedStore, SharedStore) = (first.clone(), second.clone());
        tasks.spawn(async move {
            let message = NewMessage {
                room: format!("g-{}", i % ROOMS),
                from: Author {
                    id: format!("u{i}"),
                    name: format!("User {i}"),
                },
                text: format!("hello {i}"),
                client_id: Some(format!("c{i}")),
                client_id_scope: ClientIdScope::Sender,
                reply_to: None,
            };
            let retry = NewMessage {
                text: format!("retried {i}"),
                ..message.clone()
            };
            let stray = NewMessage {
                room: format!("missing-{i}"),
                client_id: None,
                ..message.clone()
            };
            let (original, retried, stray) = tokio::join!(
                a.append_message("/", message),
                b.append_message("/", retry),
                a.append_message("/", stray)
            );
            (i, original, retried, stray)
        });
    }

    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (i, original, retried, stray) = done.expect("task");
        let original = original.unwrap_or_else(|e| panic!("append {i}: {e}"));
        let retried = retried.unwrap_or_else(|e| panic!("retry {i}: {e}"));
        assert_eq!(
            original.message, retried.message,
            "sender {i}: the retry must return the original"
        );
        assert!(
            original.duplicate != retried.duplicate,
            "sender {i}: exactly one of the two appends stores the message ({} / {})",
            original.duplicate,
            retried.duplicate
        );
        assert!(
            original.message.text == format!("hello {i}")
                || original.message.text == format!("retried {i}"),
            "sender {i}: {:?}",
            original.message
        );
        assert!(
            matches!(stray, Err(StoreError::NoSuchRoom(_))),
            "sender {i}: an append to a missing room fails alone: {stray:?}"
        );
        seqs.entry(original.message.room.clone())
            .or_default()
            .push(original.message.seq);
    }

    let expected: Vec<i64> = (1..=(SENDERS / ROOMS) as i64).collect();
    assert_eq!(seqs.len(), ROOMS);
    for (room, list) in &mut seqs {
        list.sort_unstable();
        assert_eq!(list, &expected, "acked seqs of {room}");
        let rows = db.message_rows(room).await;
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            expected,
            "stored seqs of {room}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_keep_seq_and_dedupe_sqlite() {
    concurrent_appends_keep_seq_and_dedupe(Store::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_keep_seq_and_dedupe_postgres() {
    concurrent_appends_keep_seq_and_dedupe(Store::Postgres).await
}

/// A room's messages commit in the order they were sent, also with several message writers (Postgres): each room
/// has one writer, so one room's appends are never split between two transactions racing for its lock. 7 rooms'
/// appends, queued interleaved and all at once, so that every writer's batches mix rooms.
async fn appends_to_a_room_commit_in_the_order_sent(kind: Store) {
    // Not a multiple of the 4 writers, so that spreading appends over the writers in turn would split rooms.
    const ORDER_ROOMS: usize = 7;
    const PER_ROOM: usize = 60;
    let db = TestDb::new(kind).await;
    let (store, _) = store::open_with(&db.url, 8, 4, store::Migrations::Apply)
        .await
        .expect("open store");
    public_rooms(&store, "o", ORDER_ROOMS).await;
    let from = Author {
        id: "u1".to_owned(),
        name: "User 1".to_owned(),
    };
    // Each append queues its message on its first poll, which happens here, in this order: one poll each, with
    // tokio's cooperative budget lifted (it would make a send past the budget wait for a later poll).
    let appended = tokio::task::unconstrained(async {
        let (mut appends, mut finished) = (Vec::new(), Vec::new());
        for k in 0..PER_ROOM {
            for r in 0..ORDER_ROOMS {
                let (store, from) = (store.clone(), from.clone());
                let mut append = Box::pin(async move {
                    let message = NewMessage {
                        room: format!("o-{r}"),
                        from,
                        text: format!("m{k}"),
                        client_id: Some(format!("c{r}-{k}")),
                        client_id_scope: ClientIdScope::Sender,
                        reply_to: None,
                    };
                    (r, k, store.append_message("/", message).await)
                });
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match append.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(done) => finished.push(done),
                    std::task::Poll::Pending => appends.push(append),
                }
            }
        }
        finished.extend(futures_util::future::join_all(appends).await);
        finished
    })
    .await;
    for (r, k, appended) in appended {
        let appended = appended.unwrap_or_else(|e| panic!("append {k} to o-{r}: {e}"));
        assert_eq!(
            appended.message.seq,
            k as i64 + 1,
            "o-{r}: the {k}th message sent must get seq {}",
            k + 1
        );
    }
    for r in 0..ORDER_ROOMS {
        let texts: Vec<String> = db
            .message_rows(&format!("o-{r}"))
            .await
            .into_iter()
            .map(|row| row.text)
            .collect();
        let sent: Vec<String> = (0..PER_ROOM).map(|k| format!("m{k}")).collect();
        assert_eq!(texts, sent, "o-{r}: stored in seq order");
    }
}

store_test!(appends_to_a_room_commit_in_the_order_sent => appends_to_a_room_commit_in_the_order_sent_sqlite, appends_to_a_room_commit_in_the_order_sent_postgres);

// ---------------------------------------------------------------------------------------------
// One row the database refuses fails alone
// ---------------------------------------------------------------------------------------------

/// Runs SQL on the test database through a connection of its own, not the store's.
async fn run_sql(db: &TestDb, sql: &'static str) {
    match db.store {
        Store::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = db.url.parse().expect("sqlite url");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.busy_timeout(Duration::from_secs(5)))
                .await
                .expect("open sqlite test db");
            sqlx::raw_sql(sql).execute(&pool).await.expect(sql);
            pool.close().await;
        }
        Store::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("open postgres test db");
            sqlx::raw_sql(sql).execute(&pool).await.expect(sql);
            pool.close().await;
        }
    }
}

/// A trigger that refuses every message whose text is `poison`: a row the database rejects although palaver's
/// validation would let it through.
async fn refuse_poison(db: &TestDb) {
    let sql = match db.store {
        Store::Sqlite => {
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON messages BEGIN \
                 SELECT RAISE(ABORT, 'poison') WHERE NEW.text = 'poison'; \
             END"
        }
        Store::Postgres => {
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
                 IF NEW.text = 'poison' THEN RAISE EXCEPTION 'poison'; END IF; \
                 RETURN NEW; \
             END $$; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON messages \
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
        }
    };
    run_sql(db, sql).await;
}

const BAD_ROOMS: usize = 4;
const APPENDS: usize = 200;
/// The appends that carry the bad text: in the middle of the burst, so that they share batches.
const BAD: [usize; 2] = [57, 143];

/// About 200 appends at once across a few rooms, two of them with a text the database refuses, and every tenth
/// sent twice with its client id. Only the bad ones fail, with `Rejected`; every other one commits, seqs stay
/// gap-free, retries return their originals, and nothing bad is stored.
async fn bad_row_fails_alone(db: &TestDb, store: SharedStore, bad_text: &'static str) {
    for r in 0..BAD_ROOMS {
        let room = group(&format!("b-{r}"), Visibility::Public, store::now());
        store
            .ensure_room("/", &room, "u0")
            .await
            .expect("ensure_room");
    }
    // Everyone sends at the same moment, so that the writer finds the appends queued together.
    let start = Arc::new(tokio::sync::Barrier::new(APPENDS + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..APPENDS {
        let (store, start) = (store.clone(), start.clone());
        tasks.spawn(async move {
            let message = NewMessage {
                room: format!("b-{}", i % BAD_ROOMS),
                from: author(&format!("u{i}")),
                text: if BAD.contains(&i) {
                    bad_text.to_owned()
                } else {
                    format!("fine {i}")
                },
                client_id: (i % 2 == 0).then(|| format!("c{i}")),
                client_id_scope: ClientIdScope::Sender,
                reply_to: None,
            };
            start.wait().await;
            if i % 10 == 0 {
                let (a, b) = tokio::join!(
                    store.append_message("/", message.clone()),
                    store.append_message("/", message)
                );
                (i, a, Some(b))
            } else {
                (i, store.append_message("/", message).await, None)
            }
        });
    }
    start.wait().await;

    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (i, result, retry) = done.expect("task");
        if BAD.contains(&i) {
            assert!(
                matches!(result, Err(StoreError::Rejected { .. })),
                "append {i}: the refused row fails alone, as Rejected: {result:?}"
            );
            continue;
        }
        let appended =
            result.unwrap_or_else(|e| panic!("append {i} shares a batch with a bad row: {e}"));
        if let Some(retry) = retry {
            let retry = retry.unwrap_or_else(|e| panic!("retry {i}: {e}"));
            assert_eq!(
                appended.message, retry.message,
                "append {i}: the retry returns the original"
            );
            assert!(
                appended.duplicate != retry.duplicate,
                "append {i}: exactly one of the two appends stores the message"
            );
        }
        assert_eq!(appended.message.text, format!("fine {i}"));
        seqs.entry(appended.message.room.clone())
            .or_default()
            .push(appended.message.seq);
    }

    assert_eq!(seqs.len(), BAD_ROOMS);
    let mut stored = 0;
    for (room, list) in &mut seqs {
        list.sort_unstable();
        let expected: Vec<i64> = (1..=list.len() as i64).collect();
        assert_eq!(list, &expected, "acked seqs of {room}");
        let rows = db.message_rows(room).await;
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            expected,
            "stored seqs of {room}"
        );
        assert!(
            rows.iter().all(|r| r.text.starts_with("fine ")),
            "nothing refused is stored in {room}"
        );
        stored += rows.len();
    }
    assert_eq!(stored, APPENDS - BAD.len());
}

async fn refused_by_trigger_fails_alone(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 8).await.expect("open store");
    refuse_poison(&db).await;
    bad_row_fails_alone(&db, store, "poison").await;
}

store_test!(refused_by_trigger_fails_alone => refused_by_trigger_fails_alone_sqlite, refused_by_trigger_fails_alone_postgres);

/// Postgres refuses a NUL character in text; nothing before the store catches it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_in_text_fails_alone_postgres() {
    let db = TestDb::new(Store::Postgres).await;
    let store = store::open(&db.url, 8).await.expect("open store");
    bad_row_fails_alone(&db, store, "nul \u{0} inside").await;
}

// ---------------------------------------------------------------------------------------------
// Rooms, invitations, creation quotas
// ---------------------------------------------------------------------------------------------

const NS: &str = "/";

fn author(id: &str) -> Author {
    Author {
        id: id.to_owned(),
        name: format!("Name of {id}"),
    }
}

fn group(id: &str, visibility: Visibility, created_at: DateTime<Utc>) -> Room {
    Room {
        id: id.to_owned(),
        name: id.to_owned(),
        kind: RoomKind::Group,
        visibility,
        created_at,
    }
}

fn dm_room(id: &str, created_at: DateTime<Utc>) -> Room {
    Room {
        kind: RoomKind::Dm,
        visibility: Visibility::Private,
        ..group(id, Visibility::Private, created_at)
    }
}

fn ids(rooms: &[RoomSummary]) -> Vec<&str> {
    rooms.iter().map(|r| r.room.id.as_str()).collect()
}

fn find<'a>(rooms: &'a [RoomSummary], id: &str) -> Option<&'a RoomSummary> {
    rooms.iter().find(|r| r.room.id == id)
}

async fn send(store: &SharedStore, room: &str, from: &Author) {
    let message = NewMessage {
        room: room.to_owned(),
        from: from.clone(),
        text: "hi".to_owned(),
        client_id: None,
        client_id_scope: ClientIdScope::Sender,
        reply_to: None,
    };
    store.append_message(NS, message).await.expect("append");
}

async fn invitations_contract(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (owner, ann, bob, cid) = (author("owner"), author("ann"), author("bob"), author("cid"));
    let plans = group("plans", Visibility::Private, store::now());

    // The creator's own id among the invited is ignored: they are a member.
    let invited = [ann.clone(), bob.clone(), owner.clone()];
    assert!(
        store
            .create_room(NS, &plans, &owner, &invited)
            .await
            .unwrap()
    );
    assert!(
        !store.create_room(NS, &plans, &cid, &[]).await.unwrap(),
        "a second create_room of the same id reports false"
    );
    assert_eq!(store.room(NS, "plans").await.unwrap(), Some(plans.clone()));
    assert!(store.is_member(NS, "plans", "owner").await.unwrap());
    assert!(!store.is_invited(NS, "plans", "owner").await.unwrap());
    assert!(
        !store.is_member(NS, "plans", "cid").await.unwrap(),
        "the failed create changed nothing"
    );

    // Invited users are not members: they see the room listed, and do not have it among their rooms.
    for user in ["ann", "bob"] {
        assert!(!store.is_member(NS, "plans", user).await.unwrap(), "{user}");
        assert!(store.is_invited(NS, "plans", user).await.unwrap(), "{user}");
        let listed = store.list_rooms(NS, user, false).await.unwrap();
        let summary =
            find(&listed, "plans").unwrap_or_else(|| panic!("{user} sees plans: {listed:?}"));
        assert!(summary.invited && !summary.member, "{user}: {summary:?}");
        let theirs = store.user_rooms(NS, user, 10).await.unwrap();
        assert!(
            theirs.is_empty(),
            "{user} has not joined anything: {theirs:?}"
        );
    }
    let owner_listed = store.list_rooms(NS, "owner", false).await.unwrap();
    let summary = find(&owner_listed, "plans").expect("owner sees plans");
    assert!(summary.member && !summary.invited, "{summary:?}");
    let invitations = store.invitations(NS, "ann").await.unwrap();
    assert_eq!(invitations.len(), 1, "{invitations:?}");
    assert_eq!(invitations[0].room, plans);
    assert_eq!(invitations[0].by, owner, "the invitation names its sender");

    // invite skips members and users already invited, and a user listed twice.
    let newly = store
        .invite(
            NS,
            "plans",
            &owner,
            &[ann.clone(), owner.clone(), cid.clone(), cid.clone()],
        )
        .await
        .unwrap();
    assert_eq!(newly, vec!["cid".to_owned()]);
    assert!(store.is_invited(NS, "plans", "cid").await.unwrap());
    assert!(matches!(
        store
            .invite(NS, "nowhere", &owner, std::slice::from_ref(&cid))
            .await,
        Err(StoreError::NoSuchRoom(_))
    ));

    // Accepting: add_member turns the invitation into a membership.
    store.add_member(NS, "plans", &ann).await.unwrap();
    assert!(store.is_member(NS, "plans", "ann").await.unwrap());
    assert!(!store.is_invited(NS, "plans", "ann").await.unwrap());
    let listed = store.list_rooms(NS, "ann", false).await.unwrap();
    let summary = find(&listed, "plans").expect("ann sees plans");
    assert!(summary.member && !summary.invited, "{summary:?}");
    assert!(store.invitations(NS, "ann").await.unwrap().is_empty());
    assert_eq!(
        ids(&store.user_rooms(NS, "ann", 10).await.unwrap()),
        ["plans"]
    );
    assert!(
        !store.decline(NS, "plans", "ann").await.unwrap(),
        "decline leaves a membership alone"
    );
    assert!(store.is_member(NS, "plans", "ann").await.unwrap());

    // Declining removes the invitation, once.
    assert!(store.decline(NS, "plans", "bob").await.unwrap());
    assert!(!store.decline(NS, "plans", "bob").await.unwrap());
    assert!(!store.is_invited(NS, "plans", "bob").await.unwrap());
    assert!(!store.is_member(NS, "plans", "bob").await.unwrap());
    assert!(find(&store.list_rooms(NS, "bob", true).await.unwrap(), "plans").is_none());
    assert_eq!(
        store
            .invite(NS, "plans", &ann, std::slice::from_ref(&bob))
            .await
            .unwrap(),
        vec!["bob".to_owned()],
        "a declined user can be invited again"
    );
    assert_eq!(store.invitations(NS, "bob").await.unwrap()[0].by, ann);

    // remove_member removes an invitation as well as a membership.
    assert!(store.remove_member(NS, "plans", "cid").await.unwrap());
    assert!(!store.is_invited(NS, "plans", "cid").await.unwrap());
    assert!(!store.remove_member(NS, "plans", "cid").await.unwrap());
    assert!(store.remove_member(NS, "plans", "ann").await.unwrap());
    assert!(!store.is_member(NS, "plans", "ann").await.unwrap());
    assert!(store.user_rooms(NS, "ann", 10).await.unwrap().is_empty());

    // Joining a room without an invitation, and public rooms in list_rooms.
    let lobby = group("lobby", Visibility::Public, store::now());
    assert_eq!(
        store.ensure_room(NS, &lobby, "owner").await.unwrap(),
        (lobby.clone(), true)
    );
    let everything = store.list_rooms(NS, "cid", true).await.unwrap();
    let summary = find(&everything, "lobby").expect("public rooms are listed");
    assert!(!summary.member && !summary.invited, "{summary:?}");
    assert!(find(&store.list_rooms(NS, "cid", false).await.unwrap(), "lobby").is_none());
    store.add_member(NS, "lobby", &cid).await.unwrap();
    assert!(store.is_member(NS, "lobby", "cid").await.unwrap());
    assert!(matches!(
        store.add_member(NS, "nowhere", &cid).await,
        Err(StoreError::NoSuchRoom(_))
    ));
}

store_test!(invitations_contract => invitations_contract_sqlite, invitations_contract_postgres);

async fn invitations_newest_first(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (owner, other, ann) = (author("owner"), author("other"), author("ann"));
    let first = group("first", Visibility::Private, store::now());
    let second = group("second", Visibility::Private, store::now());
    assert!(
        store
            .create_room(NS, &first, &owner, std::slice::from_ref(&ann))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.create_room(NS, &second, &other, &[]).await.unwrap());
    assert_eq!(
        store
            .invite(NS, "second", &other, std::slice::from_ref(&ann))
            .await
            .unwrap(),
        vec!["ann".to_owned()]
    );
    let invitations = store.invitations(NS, "ann").await.unwrap();
    let got: Vec<(&str, &str)> = invitations
        .iter()
        .map(|i| (i.room.id.as_str(), i.by.id.as_str()))
        .collect();
    assert_eq!(got, [("second", "other"), ("first", "owner")]);
    assert!(invitations[0].at > invitations[1].at, "{invitations:?}");
    assert_eq!(invitations[1].by.name, "Name of owner");
}

store_test!(invitations_newest_first => invitations_newest_first_sqlite, invitations_newest_first_postgres);

async fn user_rooms_groups_then_dms_most_recently_active_first(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (me, peer, owner) = (author("me"), author("peer"), author("owner"));
    let base = store::now() - chrono::Duration::hours(1);
    let at = |seconds: i64| base + chrono::Duration::seconds(seconds);
    for (id, created) in [("r1", at(0)), ("r2", at(1)), ("r3", at(2))] {
        let room = group(id, Visibility::Public, created);
        store.ensure_room(NS, &room, "owner").await.unwrap();
        store.add_member(NS, id, &me).await.unwrap();
    }
    assert!(
        store
            .create_dm(NS, &dm_room("dm:me:peer", at(3)), [&me, &peer])
            .await
            .unwrap()
    );
    // Rooms that are not the user's: a public room they never joined, a room they are only invited to.
    store
        .ensure_room(NS, &group("other", Visibility::Public, at(4)), "owner")
        .await
        .unwrap();
    let invited = group("invited", Visibility::Private, at(5));
    assert!(
        store
            .create_room(NS, &invited, &owner, std::slice::from_ref(&me))
            .await
            .unwrap()
    );

    // Without messages, the newest room first, group rooms before DMs.
    let rooms = store.user_rooms(NS, "me", 10).await.unwrap();
    assert_eq!(ids(&rooms), ["r3", "r2", "r1", "dm:me:peer"]);
    let dm = &rooms[3];
    assert!(dm.member && !dm.invited, "{dm:?}");
    let shown = dm.peer.as_ref().expect("a DM shows its other member");
    assert_eq!(
        (shown.id.as_str(), shown.name.as_str()),
        ("peer", "Name of peer")
    );
    assert!(
        rooms[..3]
            .iter()
            .all(|r| r.member && !r.invited && r.peer.is_none())
    );

    // A message makes its room the most recently active; the limit keeps the first ones.
    send(&store, "r1", &me).await;
    assert_eq!(
        ids(&store.user_rooms(NS, "me", 10).await.unwrap()),
        ["r1", "r3", "r2", "dm:me:peer"]
    );
    // A DM with a newer message still comes after every group room.
    send(&store, "dm:me:peer", &peer).await;
    assert_eq!(
        ids(&store.user_rooms(NS, "me", 10).await.unwrap()),
        ["r1", "r3", "r2", "dm:me:peer"]
    );
    send(&store, "r2", &owner).await;
    assert_eq!(
        ids(&store.user_rooms(NS, "me", 2).await.unwrap()),
        ["r2", "r1"]
    );
    let r2 = &store.user_rooms(NS, "me", 1).await.unwrap()[0];
    assert_eq!(r2.last_seq, 1);
    assert_eq!(
        ids(&store.user_rooms(NS, "peer", 10).await.unwrap()),
        ["dm:me:peer"]
    );
}

store_test!(user_rooms_groups_then_dms_most_recently_active_first => user_rooms_groups_then_dms_most_recently_active_first_sqlite, user_rooms_groups_then_dms_most_recently_active_first_postgres);

async fn rooms_created_since_counts_the_creators_rooms(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (owner, other) = (author("owner"), author("other"));
    let now = store::now();
    let ago = |minutes: i64| now - chrono::Duration::minutes(minutes);
    let create = |id: &str, minutes: i64| group(id, Visibility::Public, ago(minutes));
    assert!(
        store
            .create_room(NS, &create("old", 120), &owner, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .create_room(
                NS,
                &create("recent", 10),
                &owner,
                std::slice::from_ref(&other)
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .ensure_room(NS, &create("auto", 5), "owner")
            .await
            .unwrap()
            .1
    );
    assert!(
        store
            .create_room(NS, &create("theirs", 1), &other, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .create_room("/elsewhere", &create("away", 1), &owner, &[])
            .await
            .unwrap()
    );
    // A DM counts for no one.
    assert!(
        store
            .create_dm(NS, &dm_room("dm:other:owner", ago(1)), [&owner, &other])
            .await
            .unwrap()
    );
    // Joining someone else's room, even first, does not make the joiner its creator.
    assert!(
        !store
            .ensure_room(NS, &create("theirs", 0), "owner")
            .await
            .unwrap()
            .1
    );

    assert_eq!(
        store
            .rooms_created_since(NS, "owner", ago(60))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .rooms_created_since(NS, "owner", ago(180))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .rooms_created_since(NS, "owner", now + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .rooms_created_since(NS, "other", ago(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .rooms_created_since("/elsewhere", "owner", ago(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .rooms_created_since(NS, "nobody", ago(180))
            .await
            .unwrap(),
        0
    );
}

store_test!(rooms_created_since_counts_the_creators_rooms => rooms_created_since_counts_the_creators_rooms_sqlite, rooms_created_since_counts_the_creators_rooms_postgres);

async fn ensure_room_reports_creation_once(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let room = group(
        "town",
        Visibility::Public,
        store::now() - chrono::Duration::minutes(1),
    );
    assert_eq!(
        store.ensure_room(NS, &room, "first").await.unwrap(),
        (room.clone(), true)
    );
    // A later attempt, with other values, gets the stored room back and creates nothing.
    let again = Room {
        name: "renamed".to_owned(),
        visibility: Visibility::Private,
        created_at: store::now(),
        ..room.clone()
    };
    assert_eq!(
        store.ensure_room(NS, &again, "second").await.unwrap(),
        (room.clone(), false)
    );
    assert_eq!(store.room(NS, "town").await.unwrap(), Some(room.clone()));
    let since = room.created_at - chrono::Duration::minutes(1);
    assert_eq!(
        store.rooms_created_since(NS, "first", since).await.unwrap(),
        1
    );
    assert_eq!(
        store
            .rooms_created_since(NS, "second", since)
            .await
            .unwrap(),
        0
    );
    // ensure_room does not make anyone a member.
    assert!(!store.is_member(NS, "town", "first").await.unwrap());
}

store_test!(ensure_room_reports_creation_once => ensure_room_reports_creation_once_sqlite, ensure_room_reports_creation_once_postgres);

async fn create_dm_makes_both_members(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (ann, bob) = (author("ann"), author("bob"));
    let dm = dm_room("dm:ann:bob", store::now());
    assert!(store.create_dm(NS, &dm, [&ann, &bob]).await.unwrap());
    assert!(
        !store.create_dm(NS, &dm, [&ann, &bob]).await.unwrap(),
        "the DM exists"
    );
    assert_eq!(
        store.room(NS, "dm:ann:bob").await.unwrap(),
        Some(dm.clone())
    );
    for (user, other) in [("ann", "bob"), ("bob", "ann")] {
        assert!(
            store.is_member(NS, "dm:ann:bob", user).await.unwrap(),
            "{user}"
        );
        assert!(
            !store.is_invited(NS, "dm:ann:bob", user).await.unwrap(),
            "{user}"
        );
        let listed = store.list_rooms(NS, user, false).await.unwrap();
        let summary = find(&listed, "dm:ann:bob").expect("the DM is listed");
        assert!(summary.member && !summary.invited, "{summary:?}");
        assert_eq!(summary.peer.as_ref().map(|p| p.id.as_str()), Some(other));
        let theirs = store.user_rooms(NS, user, 10).await.unwrap();
        assert_eq!(ids(&theirs), ["dm:ann:bob"]);
        assert_eq!(theirs[0].peer, summary.peer);
    }
    assert!(store.invitations(NS, "bob").await.unwrap().is_empty());
}

store_test!(create_dm_makes_both_members => create_dm_makes_both_members_sqlite, create_dm_makes_both_members_postgres);

/// A room-scoped client id (a compatibility profile's) is unique in the room whoever sends it: a retry from
/// another sender (the same app user on a new connection, a new guest) gets the original, also when it shares a
/// batch with it; sender-scoped ids of the same value stay independent of it and of each other.
async fn room_scoped_client_ids_dedupe_across_senders(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let room = group("lobby", Visibility::Public, store::now());
    store.ensure_room(NS, &room, "").await.expect("room");
    let post = |from: &str, text: &str, key: &str, scope: ClientIdScope| NewMessage {
        room: "lobby".to_owned(),
        from: author(from),
        text: text.to_owned(),
        client_id: Some(key.to_owned()),
        client_id_scope: scope,
        reply_to: None,
    };
    let first = store
        .append_message(
            NS,
            post("guest-1", "hello", "sock-1-0", ClientIdScope::Room),
        )
        .await
        .expect("first");
    assert!(!first.duplicate);
    let retry = store
        .append_message(
            NS,
            post("guest-2", "hello", "sock-1-0", ClientIdScope::Room),
        )
        .await
        .expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message);
    // The original and its retry in one batch (sent at once from two connections).
    let (a, b) = tokio::join!(
        store.append_message(
            NS,
            post("guest-3", "twice", "sock-3-0", ClientIdScope::Room)
        ),
        store.append_message(
            NS,
            post("guest-4", "twice", "sock-3-0", ClientIdScope::Room)
        ),
    );
    let (a, b) = (a.expect("a"), b.expect("b"));
    assert_eq!(a.message, b.message);
    assert!(a.duplicate != b.duplicate, "exactly one of them is stored");
    // The same value as a sender-scoped id: its own message, once per sender.
    let own = store
        .append_message(NS, post("ann", "mine", "sock-1-0", ClientIdScope::Sender))
        .await
        .expect("sender-scoped");
    assert!(!own.duplicate);
    let others = store
        .append_message(
            NS,
            post("bob", "mine too", "sock-1-0", ClientIdScope::Sender),
        )
        .await
        .expect("another sender");
    assert!(!others.duplicate);
    let page = store
        .history(NS, "lobby", HistoryQuery::latest(50))
        .await
        .expect("history");
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello", "twice", "mine", "mine too"]);
    let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "gap-free");
}

store_test!(room_scoped_client_ids_dedupe_across_senders => room_scoped_client_ids_dedupe_across_senders_sqlite, room_scoped_client_ids_dedupe_across_senders_postgres);

/// The webhook outbox: without webhooks nothing writes a row; with them the batch writer still writes none
/// (`message.created` comes from the messages, past a cursor), and member rows follow membership changes only when
/// a user becomes or stops being a member. A room's rows are claimed one at a time, in order; a claimed row is not
/// claimed again while its lease lasts; a failure past the last attempt is a dead letter until retried.
async fn outbox_rows_follow_their_cause(kind: Store) {
    use palaver::store::{HookEvent, HookEvents};
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let room = group("lobby", Visibility::Public, store::now());
    store.ensure_room(NS, &room, "").await.expect("room");
    let claim = |node: &'static str| {
        let store = store.clone();
        async move {
            let now = store::now();
            store
                .claim_hooks(node, now, now + chrono::Duration::seconds(30), 100)
                .await
                .expect("claim")
        }
    };
    send(&store, "lobby", &author("alice")).await;
    store
        .add_member(NS, "lobby", &author("alice"))
        .await
        .expect("join");
    assert!(
        claim("n1").await.is_empty(),
        "rows written without webhooks"
    );

    store.enable_hooks(
        HookEvents::NONE
            .with(HookEvent::MessageCreated)
            .with(HookEvent::MemberAdded)
            .with(HookEvent::MemberRemoved),
    );
    let post = |text: &str| NewMessage {
        room: "lobby".to_owned(),
        from: author("alice"),
        text: text.to_owned(),
        client_id: Some("k1".to_owned()),
        client_id_scope: ClientIdScope::Sender,
        reply_to: None,
    };
    let (a, b) = tokio::join!(
        store.append_message(NS, post("one")),
        store.append_message(NS, post("one again"))
    );
    assert!(a.expect("a").duplicate != b.expect("b").duplicate);
    // Alice is already a member: no event; bob joins, then an invitation is removed (no event), bob leaves.
    store
        .add_member(NS, "lobby", &author("alice"))
        .await
        .expect("rejoin");
    store
        .add_member(NS, "lobby", &author("bob"))
        .await
        .expect("bob joins");
    store
        .invite(NS, "lobby", &author("bob"), &[author("carol")])
        .await
        .expect("invite");
    assert!(
        store
            .remove_member(NS, "lobby", "carol")
            .await
            .expect("uninvite")
    );
    assert!(
        store
            .remove_member(NS, "lobby", "bob")
            .await
            .expect("bob leaves")
    );

    let mut seen = Vec::new();
    loop {
        let claimed = claim("n1").await;
        // One room: one row at a time, and not claimed again by anyone while its lease lasts.
        assert!(claimed.len() <= 1, "{claimed:?}");
        let Some(hook) = claimed.first() else { break };
        assert!(claim("n2").await.is_empty(), "claimed twice");
        store
            .hook_delivered(hook.id, "n1")
            .await
            .expect("delivered");
        let data: serde_json::Value = serde_json::from_str(&hook.payload).expect("json");
        seen.push((
            hook.event.clone(),
            data["user"]["id"].as_str().map(str::to_owned),
        ));
    }
    let events: Vec<(&str, Option<&str>)> = seen
        .iter()
        .map(|(e, u)| (e.as_str(), u.as_deref()))
        .collect();
    assert_eq!(
        events,
        [
            ("room.member_added", Some("bob")),
            ("room.member_removed", Some("bob")),
        ]
    );

    // A failing row: retried until the last attempt, then a dead letter, then pending again through a retry.
    store
        .add_member(NS, "lobby", &author("dave"))
        .await
        .expect("dave joins");
    for attempt in 1..=2 {
        let claimed = claim("n1").await;
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].attempts, attempt - 1);
        store
            .hook_failed(claimed[0].id, "n1", "HTTP 500", store::now(), 2)
            .await
            .expect("failed");
    }
    assert!(claim("n1").await.is_empty(), "a dead letter was claimed");
    let failed = store.failed_hooks(10).await.expect("failed list");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 2);
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 500"));
    let id = failed[0].id.clone();
    assert!(store.retry_hook(&id, store::now()).await.expect("retry"));
    assert!(
        !store
            .retry_hook(&id, store::now())
            .await
            .expect("retry twice")
    );
    assert_eq!(claim("n1").await.len(), 1);
    assert!(
        store
            .failed_hooks(10)
            .await
            .expect("failed list")
            .is_empty()
    );
}

store_test!(outbox_rows_follow_their_cause => outbox_rows_follow_their_cause_sqlite, outbox_rows_follow_their_cause_postgres);

/// `message.created` past a cursor per room: messages from before webhooks were turned on are skipped; a claimed
/// room is not claimed again while its lease lasts, nor once its cursor has caught up; a failure waits for its
/// retry; past the last attempt the message is a dead letter (with the id its attempts carried) and the cursor
/// moves on.
async fn message_cursors_follow_the_log(kind: Store) {
    use palaver::store::{CursorFailure, CursorOutcome, HookEvent, HookEvents, NewHook};
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let room = group("lobby", Visibility::Public, store::now());
    store.ensure_room(NS, &room, "").await.expect("room");
    send(&store, "lobby", &author("alice")).await;
    store.enable_hooks(HookEvents::NONE.with(HookEvent::MessageCreated));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.start_hook_cursors(store::now()).await.expect("epoch");
    let claim = |node: &'static str| {
        let store = store.clone();
        async move {
            let now = store::now();
            store
                .claim_hook_rooms(node, None, now, now + chrono::Duration::seconds(30), 100)
                .await
                .expect("claim")
        }
    };
    assert!(claim("n1").await.is_empty(), "history before the epoch");
    for _ in 0..3 {
        send(&store, "lobby", &author("alice")).await;
    }
    // The batch writer names the room it wrote to.
    let named = store.hook_wake().take_rooms();
    assert_eq!(named, [(NS.to_owned(), "lobby".to_owned())]);
    let claimed = store
        .claim_hook_rooms(
            "n1",
            Some(&named),
            store::now(),
            store::now() + chrono::Duration::seconds(30),
            10,
        )
        .await
        .expect("claim named");
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].delivered_seq, 1,
        "the message from before the epoch is skipped"
    );
    assert!(claim("n2").await.is_empty(), "claimed twice");
    store
        .record_cursor(
            "n1",
            &claimed[0],
            &CursorOutcome {
                delivered_seq: 4,
                failure: None,
            },
        )
        .await
        .expect("record");
    assert!(claim("n1").await.is_empty(), "caught up");

    // A failure: not due before its retry; then out of attempts: a dead letter, and the cursor moves on.
    send(&store, "lobby", &author("alice")).await;
    let claimed = claim("n1").await;
    assert_eq!(claimed.len(), 1);
    let retry = CursorOutcome {
        delivered_seq: 4,
        failure: Some(CursorFailure::Retry {
            error: "HTTP 500".to_owned(),
            attempts: 1,
            next_attempt_at: store::now() + chrono::Duration::seconds(2),
        }),
    };
    store
        .record_cursor("n1", &claimed[0], &retry)
        .await
        .expect("retry");
    assert!(
        claim("n1").await.is_empty(),
        "claimed before its retry is due"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let cursor = loop {
        if let Some(cursor) = claim("n1").await.pop() {
            break cursor;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retry never came due"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(cursor.attempts, 1);
    assert_eq!(cursor.delivered_seq, 4);
    let page = store
        .history(NS, "lobby", HistoryQuery::latest(1))
        .await
        .expect("history");
    let message = &page.messages[0];
    // The lease is still n1's: record the last attempt as dead.
    let dead = CursorOutcome {
        delivered_seq: 4,
        failure: Some(CursorFailure::Dead {
            hook: NewHook::message_created(NS, message),
            webhook_id: format!("msg-{}", message.id),
            error: "HTTP 500".to_owned(),
            attempts: 2,
            seq: message.seq,
            created_at: message.at,
        }),
    };
    store
        .record_cursor("n1", &cursor, &dead)
        .await
        .expect("dead");
    let failed = store.failed_hooks(10).await.expect("failed list");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, format!("msg-{}", message.id));
    assert_eq!(failed[0].event, "message.created");
    assert_eq!(failed[0].attempts, 2);
    assert!(
        claim("n1").await.is_empty(),
        "the dead message is passed over"
    );
    assert!(
        store
            .retry_hook(&failed[0].id, store::now())
            .await
            .expect("retry")
    );
    let now = store::now();
    let rows = store
        .claim_hooks("n1", now, now + chrono::Duration::seconds(30), 10)
        .await
        .expect("claim the retried row");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].webhook_id(), failed[0].id, "the retry keeps the id");
}

store_test!(message_cursors_follow_the_log => message_cursors_follow_the_log_sqlite, message_cursors_follow_the_log_postgres);

// ---------------------------------------------------------------------------------------------
// Moderation, blocks and search (migration 0008)
// ---------------------------------------------------------------------------------------------

fn actor(id: &str, admin: bool) -> palaver::store::Actor {
    palaver::store::Actor {
        user: author(id),
        admin,
    }
}

/// Appends a message with this text; the store's answer.
async fn say(
    store: &SharedStore,
    room: &str,
    from: &Author,
    text: &str,
) -> Result<palaver::store::Message, StoreError> {
    let message = NewMessage {
        room: room.to_owned(),
        from: from.clone(),
        text: text.to_owned(),
        client_id: None,
        client_id_scope: ClientIdScope::Sender,
        reply_to: None,
    };
    store
        .append_message(NS, message)
        .await
        .map(|appended| appended.message)
}

/// The owner is the creator (room:create and a join that creates), a room the host made has none, a DM has no
/// roles; moderators come and go with set_role, a ban or a kick ends the role; every action is in the log with
/// its actor.
async fn roles_and_the_moderation_log(kind: Store) {
    use palaver::store::{RoomRole, Sanction, SanctionKind};
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (owner, ann, bob) = (author("owner"), author("ann"), author("bob"));
    let club = group("club", Visibility::Public, store::now());
    assert!(store.create_room(NS, &club, &owner, &[]).await.unwrap());
    let role = |user: &'static str| {
        let store = store.clone();
        async move { store.room_role(NS, "club", user).await.unwrap() }
    };
    assert_eq!(
        role("owner").await,
        Some((RoomKind::Group, RoomRole::Owner))
    );
    assert_eq!(role("ann").await, Some((RoomKind::Group, RoomRole::Member)));
    assert_eq!(store.room_role(NS, "nowhere", "ann").await.unwrap(), None);
    let joined = group("joined", Visibility::Public, store::now());
    store.ensure_room(NS, &joined, "ann").await.unwrap();
    assert_eq!(
        store.room_role(NS, "joined", "ann").await.unwrap(),
        Some((RoomKind::Group, RoomRole::Owner)),
        "a join that creates the room makes its owner"
    );
    let hosted = group("hosted", Visibility::Public, store::now());
    store.put_room(NS, &hosted).await.unwrap();
    assert_eq!(
        store.room_role(NS, "hosted", "ann").await.unwrap(),
        Some((RoomKind::Group, RoomRole::Member)),
        "a room of the server API has no owner"
    );
    let dm = dm_room("dm:ann:bob", store::now());
    store.create_dm(NS, &dm, [&ann, &bob]).await.unwrap();
    assert_eq!(
        store.room_role(NS, "dm:ann:bob", "ann").await.unwrap(),
        Some((RoomKind::Dm, RoomRole::Member))
    );

    let by_owner = actor("owner", false);
    store
        .set_role(NS, "club", "ann", RoomRole::Moderator, &by_owner)
        .await
        .unwrap();
    assert_eq!(
        role("ann").await,
        Some((RoomKind::Group, RoomRole::Moderator))
    );
    store
        .set_role(NS, "club", "ann", RoomRole::Moderator, &by_owner)
        .await
        .expect("appointing twice is fine");
    store
        .set_role(NS, "club", "ann", RoomRole::Member, &by_owner)
        .await
        .unwrap();
    assert_eq!(role("ann").await, Some((RoomKind::Group, RoomRole::Member)));
    assert!(matches!(
        store
            .set_role(NS, "nowhere", "ann", RoomRole::Moderator, &by_owner)
            .await,
        Err(StoreError::NoSuchRoom(_))
    ));

    // A ban and a kick end a moderator's role; a mute does not.
    for user in ["ann", "bob"] {
        store
            .set_role(NS, "club", user, RoomRole::Moderator, &by_owner)
            .await
            .unwrap();
    }
    let mute = Sanction {
        kind: SanctionKind::Mute,
        until: None,
    };
    store
        .sanction(NS, "club", "ann", mute, &actor("root", true))
        .await
        .unwrap();
    assert_eq!(
        role("ann").await,
        Some((RoomKind::Group, RoomRole::Moderator))
    );
    let ban = Sanction {
        kind: SanctionKind::Ban,
        until: Some(store::now() + chrono::Duration::hours(1)),
    };
    store
        .sanction(NS, "club", "ann", ban, &by_owner)
        .await
        .unwrap();
    assert_eq!(role("ann").await, Some((RoomKind::Group, RoomRole::Member)));
    store
        .record_kick(NS, "club", "bob", &by_owner)
        .await
        .unwrap();
    assert_eq!(role("bob").await, Some((RoomKind::Group, RoomRole::Member)));

    let log = store.moderation_log(NS, "club", 100).await.unwrap();
    let actions: Vec<(&str, &str, &str, bool)> = log
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.user_id.as_str(),
                r.by.id.as_str(),
                r.by_admin,
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("kick", "bob", "owner", false),
            ("ban", "ann", "owner", false),
            ("mute", "ann", "root", true),
            ("role", "bob", "owner", false),
            ("role", "ann", "owner", false),
            ("role", "ann", "owner", false),
            ("role", "ann", "owner", false),
            ("role", "ann", "owner", false),
        ],
        "newest first"
    );
    assert_eq!(log[0].by.name, "Name of owner", "the actor's name is kept");
    assert_eq!(log[1].until, ban.until, "a ban's end is recorded");
    assert_eq!(log[2].until, None, "a mute until lifted");
    assert_eq!(log[4].role.as_deref(), Some("moderator"));
    assert_eq!(log[5].role.as_deref(), Some("member"));
    assert!(
        store
            .moderation_log(NS, "joined", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

store_test!(roles_and_the_moderation_log => roles_and_the_moderation_log_sqlite, roles_and_the_moderation_log_postgres);

/// A ban or mute in force refuses the sender's messages in the batch (with its end), whatever else the batch
/// holds: the other senders' messages commit with gap-free seqs. An ended one, a lifted one, or one in another
/// room refuses nothing; a replaced one takes the new end. `next_seq` refuses the same way.
async fn sanctions_refuse_messages_in_the_batch(kind: Store) {
    use palaver::store::{Sanction, SanctionKind};
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 8).await.expect("open store");
    let (ann, bob, cid) = (author("ann"), author("bob"), author("cid"));
    for id in ["hall", "side"] {
        store
            .ensure_room(NS, &group(id, Visibility::Public, store::now()), "owner")
            .await
            .unwrap();
    }
    let by = actor("owner", false);
    let until = store::now() + chrono::Duration::hours(2);
    let muted = Sanction {
        kind: SanctionKind::Mute,
        until: Some(until),
    };
    store.sanction(NS, "hall", "ann", muted, &by).await.unwrap();
    let banned = Sanction {
        kind: SanctionKind::Ban,
        until: None,
    };
    store
        .sanction(NS, "hall", "cid", banned, &by)
        .await
        .unwrap();
    assert_eq!(
        store.sanctions(NS, "hall", "ann").await.unwrap(),
        vec![muted]
    );

    // Many sends at once share batches: the sanctioned ones fail alone.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let store = store.clone();
        let from = [&ann, &bob, &cid][i % 3].clone();
        let room = if i % 4 == 0 { "side" } else { "hall" };
        tasks.spawn(async move { (from.id.clone(), room, say(&store, room, &from, "x").await) });
    }
    let mut committed = 0;
    while let Some(done) = tasks.join_next().await {
        let (from, room, result) = done.expect("task");
        match (from.as_str(), room, result) {
            ("ann", "hall", Err(StoreError::Sanctioned { room, sanction })) => {
                assert_eq!((room.as_str(), sanction), ("hall", muted));
            }
            ("cid", "hall", Err(StoreError::Sanctioned { sanction, .. })) => {
                assert_eq!(sanction, banned);
            }
            (_, _, Ok(_)) if !(from != "bob" && room == "hall") => committed += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(committed > 0);
    for room in ["hall", "side"] {
        let seqs: Vec<i64> = db.message_rows(room).await.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{room}");
    }
    let refused = StoreError::Sanctioned {
        room: "hall".into(),
        sanction: muted,
    };
    let reason = palaver::error::ChatError::from(refused);
    assert_eq!(reason.code, palaver::error::ErrorCode::Forbidden);
    assert!(
        reason.message.contains("muted")
            && reason
                .message
                .contains(&until.format("%Y-%m-%dT%H:%M:%S").to_string()),
        "the reason says until when: {}",
        reason.message
    );

    // next_seq (a namespace without history) refuses the same way.
    assert!(matches!(
        store.next_seq(NS, "hall", "ann").await,
        Err(StoreError::Sanctioned { .. })
    ));
    assert!(store.next_seq(NS, "hall", "bob").await.is_ok());
    assert!(matches!(
        store.next_seq(NS, "nowhere", "bob").await,
        Err(StoreError::NoSuchRoom(_))
    ));

    // Ended, replaced, lifted.
    let ended = Sanction {
        kind: SanctionKind::Mute,
        until: Some(store::now() - chrono::Duration::seconds(1)),
    };
    store.sanction(NS, "hall", "ann", ended, &by).await.unwrap();
    assert!(store.sanctions(NS, "hall", "ann").await.unwrap().is_empty());
    say(&store, "hall", &ann, "free again")
        .await
        .expect("an ended mute");
    assert!(
        !store
            .lift_sanction(NS, "hall", "ann", SanctionKind::Mute, &by)
            .await
            .unwrap(),
        "an ended mute is not lifted"
    );
    assert!(
        store
            .lift_sanction(NS, "hall", "cid", SanctionKind::Ban, &by)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lift_sanction(NS, "hall", "cid", SanctionKind::Ban, &by)
            .await
            .unwrap()
    );
    say(&store, "hall", &cid, "back")
        .await
        .expect("a lifted ban");
    let log = store.moderation_log(NS, "hall", 10).await.unwrap();
    assert_eq!(
        log[0].action, "unban",
        "only the lifting in force is recorded"
    );
    assert_eq!(log[1].action, "mute");
}

store_test!(sanctions_refuse_messages_in_the_batch => sanctions_refuse_messages_in_the_batch_sqlite, sanctions_refuse_messages_in_the_batch_postgres);

/// Blocks: once per pair, either direction found for a DM, the blockers among invitees, and the DM listed as
/// blocked for the blocker only.
async fn blocks_between_users(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (ann, bob) = (author("ann"), author("bob"));
    let dm = dm_room("dm:ann:bob", store::now());
    store.create_dm(NS, &dm, [&ann, &bob]).await.unwrap();
    let blocked = |user: &'static str| {
        let store = store.clone();
        async move {
            let listed = store.list_rooms(NS, user, false).await.unwrap();
            let theirs = store.user_rooms(NS, user, 10).await.unwrap();
            let listed = find(&listed, "dm:ann:bob").expect("listed").blocked;
            assert_eq!(find(&theirs, "dm:ann:bob").expect("theirs").blocked, listed);
            listed
        }
    };
    assert_eq!(blocked("ann").await, Some(false));
    assert_eq!(store.blocker_between(NS, "ann", "bob").await.unwrap(), None);
    assert_eq!(
        store.dm_blocker(NS, "dm:ann:bob", "bob").await.unwrap(),
        None
    );

    assert!(store.block(NS, "ann", "bob").await.unwrap());
    assert!(
        !store.block(NS, "ann", "bob").await.unwrap(),
        "already blocked"
    );
    assert_eq!(blocked("ann").await, Some(true));
    assert_eq!(
        blocked("bob").await,
        Some(false),
        "the blocked user is not told"
    );
    for (a, b) in [("ann", "bob"), ("bob", "ann")] {
        assert_eq!(
            store.blocker_between(NS, a, b).await.unwrap().as_deref(),
            Some("ann")
        );
        assert_eq!(
            store
                .dm_blocker(NS, "dm:ann:bob", a)
                .await
                .unwrap()
                .as_deref(),
            Some("ann")
        );
    }
    assert_eq!(
        store.blocker_between("/other", "ann", "bob").await.unwrap(),
        None,
        "blocks are per namespace"
    );
    let invitees = ["ann".to_owned(), "cid".to_owned(), "bob".to_owned()];
    assert_eq!(
        store.blocked_by(NS, "bob", &invitees).await.unwrap(),
        ["ann".to_owned()]
    );
    assert!(
        store
            .blocked_by(NS, "cid", &invitees)
            .await
            .unwrap()
            .is_empty()
    );

    // A group room named like a DM (the server API cannot make one, but a DM check must not read a group).
    let lobby = group("lobby", Visibility::Public, store::now());
    store.ensure_room(NS, &lobby, "ann").await.unwrap();
    store.add_member(NS, "lobby", &ann).await.unwrap();
    store.add_member(NS, "lobby", &bob).await.unwrap();
    assert_eq!(store.dm_blocker(NS, "lobby", "bob").await.unwrap(), None);
    assert_eq!(
        find(&store.list_rooms(NS, "ann", false).await.unwrap(), "lobby")
            .expect("lobby")
            .blocked,
        None,
        "a group room has no blocked flag"
    );

    assert!(store.unblock(NS, "ann", "bob").await.unwrap());
    assert!(!store.unblock(NS, "ann", "bob").await.unwrap());
    assert_eq!(blocked("ann").await, Some(false));
    assert_eq!(
        store.dm_blocker(NS, "dm:ann:bob", "bob").await.unwrap(),
        None
    );
}

store_test!(blocks_between_users => blocks_between_users_sqlite, blocks_between_users_postgres);

/// Search finds the same messages on both stores: every word, any case, accents kept, punctuation splits words,
/// a prefix word; newest first, paged; in one room, or in the rooms the user joined and the public ones.
async fn search_matches_words_the_same_on_both_stores(kind: Store) {
    use palaver::store::{SearchQuery, SearchWord};
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (ann, bob) = (author("ann"), author("bob"));
    store
        .create_room(
            NS,
            &group("open", Visibility::Public, store::now()),
            &bob,
            &[],
        )
        .await
        .unwrap();
    store
        .create_room(
            NS,
            &group("mine", Visibility::Private, store::now()),
            &ann,
            &[],
        )
        .await
        .unwrap();
    store
        .create_room(
            NS,
            &group("theirs", Visibility::Private, store::now()),
            &bob,
            &[],
        )
        .await
        .unwrap();
    let texts = [
        ("open", "The Release notes are out"),
        ("mine", "release: mail ann@example.com"),
        ("theirs", "secret release plans"),
        ("open", "Écoles et cafés"),
        ("open", "releases galore"),
        ("mine", "nothing to see"),
    ];
    let mut ids = Vec::new();
    for (room, text) in texts {
        let from = if room == "theirs" { &bob } else { &ann };
        ids.push(say(&store, room, from, text).await.expect("stored").id);
    }
    let word = |text: &str, prefix: bool| SearchWord {
        text: text.to_owned(),
        prefix,
    };
    let found =
        |words: Vec<SearchWord>, room: Option<&'static str>, before: Option<i64>, limit: u32| {
            let store = store.clone();
            async move {
                let query = SearchQuery {
                    words: &words,
                    room,
                    user_id: "ann",
                    before,
                    limit,
                };
                let (messages, more) = store.search(NS, &query).await.expect("search");
                (
                    messages.into_iter().map(|m| m.text).collect::<Vec<_>>(),
                    more,
                )
            }
        };
    assert_eq!(
        found(vec![word("release", false)], None, None, 10).await,
        (
            vec![
                "release: mail ann@example.com".to_owned(),
                "The Release notes are out".to_owned()
            ],
            false
        ),
        "newest first, in rooms ann may read; bob's private room is not one"
    );
    assert_eq!(
        found(vec![word("release", true)], None, None, 10).await.0,
        [
            "releases galore",
            "release: mail ann@example.com",
            "The Release notes are out"
        ]
    );
    assert_eq!(
        found(vec![word("release", true)], None, None, 2).await,
        (
            vec![
                "releases galore".to_owned(),
                "release: mail ann@example.com".to_owned()
            ],
            true
        )
    );
    let before: i64 = ids[1].parse().expect("numeric id");
    assert_eq!(
        found(vec![word("release", true)], None, Some(before), 10)
            .await
            .0,
        ["The Release notes are out"],
        "the next page"
    );
    assert_eq!(
        found(vec![word("release", false)], Some("theirs"), None, 10)
            .await
            .0,
        ["secret release plans"],
        "one room (the caller checked access)"
    );
    assert_eq!(
        found(
            vec![word("example", false), word("ann", false)],
            None,
            None,
            10
        )
        .await
        .0,
        ["release: mail ann@example.com"],
        "punctuation separates words, all of which must match"
    );
    assert!(
        found(
            vec![word("release", false), word("plans", false)],
            None,
            None,
            10
        )
        .await
        .0
        .is_empty()
    );
    assert_eq!(
        found(vec![word("écoles", false)], None, None, 10).await.0,
        ["Écoles et cafés"],
        "case folded, accents kept"
    );
    assert!(
        found(vec![word("ecoles", false)], None, None, 10)
            .await
            .0
            .is_empty()
    );
    assert_eq!(
        found(vec![word("caf", true)], None, None, 10).await.0,
        ["Écoles et cafés"]
    );
    assert!(
        found(vec![word("rel", false)], None, None, 10)
            .await
            .0
            .is_empty(),
        "whole words"
    );
    let other_ns = SearchQuery {
        words: &[word("release", false)],
        room: None,
        user_id: "ann",
        before: None,
        limit: 10,
    };
    assert!(
        store
            .search("/other", &other_ns)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    // The server merges the index's pending entries in the background (Postgres; a no-op on SQLite): what a search
    // finds does not change with it, and messages stored after it are found at once.
    store.merge_search_index().await.expect("merge");
    store
        .merge_search_index()
        .await
        .expect("a merge with nothing pending");
    assert_eq!(
        found(vec![word("release", true)], None, None, 10).await.0,
        [
            "releases galore",
            "release: mail ann@example.com",
            "The Release notes are out"
        ],
        "after the merge"
    );
    assert_eq!(
        found(vec![word("release", true)], Some("open"), None, 10)
            .await
            .0,
        ["releases galore", "The Release notes are out"],
        "one room, after the merge"
    );
    let candidate = say(&store, "open", &ann, "release candidate")
        .await
        .expect("stored");
    assert_eq!(
        found(vec![word("release", false)], None, None, 10).await.0,
        [
            "release candidate",
            "release: mail ann@example.com",
            "The Release notes are out"
        ],
        "stored after the merge"
    );
    // An edit and a delete change what is found at once, whether the message's words were merged or pending.
    store.merge_search_index().await.expect("merge");
    let at = chrono::Utc::now();
    store
        .edit_message(NS, "open", candidate.seq, &ann.id, "final build", at)
        .await
        .expect("edit")
        .expect("edited");
    assert_eq!(
        found(vec![word("release", false)], None, None, 10).await.0,
        ["release: mail ann@example.com", "The Release notes are out"],
        "the edited text's old words are gone"
    );
    assert_eq!(
        found(vec![word("final", false)], Some("open"), None, 10)
            .await
            .0,
        ["final build"],
        "and its new words found"
    );
    let late = say(&store, "open", &ann, "late release")
        .await
        .expect("stored");
    for seq in [late.seq, candidate.seq] {
        store
            .delete_message(NS, "open", seq, at)
            .await
            .expect("delete")
            .expect("deleted");
    }
    store.merge_search_index().await.expect("merge");
    assert!(
        found(vec![word("final", false)], None, None, 10)
            .await
            .0
            .is_empty(),
        "a tombstone matches nothing, merged before its delete"
    );
    assert_eq!(
        found(vec![word("release", false)], None, None, 10).await.0,
        ["release: mail ann@example.com", "The Release notes are out"],
        "or pending"
    );
}

store_test!(search_matches_words_the_same_on_both_stores => search_matches_words_the_same_on_both_stores_sqlite, search_matches_words_the_same_on_both_stores_postgres);

/// Postgres's search index moved to words palaver stores with each message (migration 0011): the messages stored
/// before it are indexed by the migration, tombstones are not; a message written without its words (a server of
/// the previous release during a rolling restart, a text changed by hand) gets them from the database, so that it
/// is found by the words it holds and by no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_words_migration_indexes_older_messages_postgres() {
    use palaver::store::{SearchQuery, SearchWord};
    let db = TestDb::new(Store::Postgres).await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new("migrations/postgres"))
        .await
        .expect("migrations");
    let before_0011: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 11)
        .cloned()
        .collect();
    assert_eq!(before_0011.len(), 10);
    migrator.migrations = before_0011.into();
    migrator.run(&pool).await.expect("migrate to 0010");
    for statement in [
        "INSERT INTO rooms (ns, id, name, kind, visibility, last_seq) VALUES ('/', 'old', 'old', 'group', 'public', 3)",
        "INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, created_at) \
         VALUES ('/', 'old', 1, 'ann', 'Ann', 'Stored before the UPGRADE, ann@example.com', now())",
        "INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, created_at, deleted_at) \
         VALUES ('/', 'old', 2, 'ann', 'Ann', '', now(), now())",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    let store = store::open(&db.url, 4).await.expect("open applies 0011");
    let found = |text: &'static str| {
        let store = store.clone();
        async move {
            let words = [SearchWord {
                text: text.to_owned(),
                prefix: false,
            }];
            let query = SearchQuery {
                words: &words,
                room: Some("old"),
                user_id: "ann",
                before: None,
                limit: 10,
            };
            let (messages, _) = store.search(NS, &query).await.expect("search");
            messages.into_iter().map(|m| m.seq).collect::<Vec<_>>()
        }
    };
    assert_eq!(found("upgrade").await, [1], "indexed by the migration");
    assert_eq!(found("example").await, [1]);
    let words_of = |seq: i64| {
        let pool = pool.clone();
        async move {
            let (words,): (Option<String>,) = sqlx::query_as(
                "SELECT search_words::text FROM messages WHERE room = 'old' AND seq = $1",
            )
            .bind(seq)
            .fetch_one(&pool)
            .await
            .expect("row");
            words
        }
    };
    assert_eq!(words_of(2).await, None, "a tombstone is not indexed");
    sqlx::query("UPDATE messages SET text = 'Rewritten by hand' WHERE room = 'old' AND seq = 1")
        .execute(&pool)
        .await
        .expect("update");
    assert!(found("upgrade").await.is_empty(), "no stale words");
    assert_eq!(found("rewritten").await, [1], "the new text's words");
    sqlx::query(
        "INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, created_at) \
         VALUES ('/', 'old', 3, 'bob', 'Bob', 'Sent by the previous release', now())",
    )
    .execute(&pool)
    .await
    .expect("insert without words");
    assert_eq!(found("previous").await, [3], "indexed by the database");
    // What palaver stores for a send is its own cut of the text; for common text the database's cut is the same.
    let text = "Ünïcode straße, 日本語 and v2.0: CAFÉ café";
    let sent = say(&store, "old", &author("ann"), text)
        .await
        .expect("sent");
    let as_tsvector = |words: String| {
        words
            .split(' ')
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let ours = as_tsvector(store::search::index_words(text));
    assert_eq!(ours, "'0' 'and' 'café' 'straße' 'v2' 'ünïcode' '日本語'");
    assert_eq!(words_of(sent.seq).await.as_deref(), Some(ours.as_str()));
    let (theirs,): (String,) = sqlx::query_as("SELECT palaver_search_words($1)::text")
        .bind(text)
        .fetch_one(&pool)
        .await
        .expect("the database's cut");
    assert_eq!(theirs, ours);
    // An edit stores palaver's cut, like a send: Unicode lowercases a final Σ to ς, the database to σ.
    let edited = "Edited by palaver: ΟΔΟΣ";
    store
        .edit_message(NS, "old", 1, "ann", edited, store::now())
        .await
        .expect("edit")
        .expect("edited");
    assert_eq!(found("edited").await, [1], "an edit writes its words");
    assert_eq!(found("οδος").await, [1]);
    assert!(found("rewritten").await.is_empty());
    assert_eq!(
        words_of(1).await,
        Some(as_tsvector(store::search::index_words(edited)))
    );
}
