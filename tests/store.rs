//! The group-commit writer, driven directly through the store: many concurrent appends across rooms, each
//! sent twice with its `clientId` (on Postgres, the retry goes to a second store, as if to another node),
//! plus appends to a room that does not exist. Every room's seqs must come out gap-free, every retry must
//! return its original, and a bad append must not spoil its batch.

mod common;

use std::collections::BTreeMap;

use common::{Store, TestDb};
use palaver::store::{
    self, Author, NewMessage, Room, RoomKind, SharedStore, StoreError, Visibility,
};

const ROOMS: usize = 20;
const SENDERS: usize = 600;

async fn concurrent_appends_keep_seq_and_dedupe(kind: Store) {
    let db = TestDb::new(kind).await;
    let first = store::open(&db.url, 8).await.expect("open store");
    // SQLite has one writer per file; Postgres takes a second "node" on the same database.
    let second = match kind {
        Store::Sqlite => first.clone(),
        Store::Postgres => store::open(&db.url, 8).await.expect("open second store"),
    };
    for r in 0..ROOMS {
        let room = Room {
            id: format!("g-{r}"),
            name: format!("g-{r}"),
            kind: RoomKind::Group,
            visibility: Visibility::Public,
            created_at: store::now(),
        };
        first.ensure_room("/", &room).await.expect("ensure_room");
    }

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
