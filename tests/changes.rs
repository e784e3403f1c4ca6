//! The store's changes to messages and read positions (`palaver::store::Changes`), driven directly on SQLite and on
//! Postgres:
//!
//! * edits, deletes (tombstones), reactions, replies and read positions follow the contract of the trait's doc
//!   comments, and every refused change leaves the room's revision where it was;
//! * revisions are gap-free and in commit order under concurrent changes (on Postgres from two stores, as from two
//!   nodes): every change gets a distinct revision, the room's counter ends at their number, and each message keeps
//!   the revision of its last change;
//! * the change feed returns each message changed after a cursor once, in its current state.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use common::{Store, TestDb};
use palaver::store::{
    self, Author, ClientIdScope, HistoryQuery, NewMessage, Reacted, ReadMark, ReplyTo, Room,
    RoomKind, SharedStore, Visibility,
};

const NS: &str = "/";

fn author(id: &str) -> Author {
    Author {
        id: id.to_owned(),
        name: format!("Name of {id}"),
    }
}

async fn room(store: &SharedStore, id: &str) {
    let room = Room {
        id: id.to_owned(),
        name: id.to_owned(),
        kind: RoomKind::Group,
        visibility: Visibility::Public,
        created_at: store::now(),
    };
    store.ensure_room(NS, &room, "owner").await.expect("room");
}

async fn send(
    store: &SharedStore,
    room: &str,
    from: &Author,
    text: &str,
    reply_to: Option<ReplyTo>,
) -> i64 {
    let message = NewMessage {
        room: room.to_owned(),
        from: from.clone(),
        text: text.to_owned(),
        client_id: None,
        client_id_scope: ClientIdScope::Sender,
        reply_to,
    };
    let appended = store.append_message(NS, message).await.expect("append");
    appended.message.seq
}

async fn rev_of(store: &SharedStore, room: &str) -> i64 {
    store
        .room_state(NS, room, "nobody")
        .await
        .expect("room state")
        .expect("room")
        .rev
}

async fn changes_contract(kind: Store) {
    let db = TestDb::new(kind).await;
    let store = store::open(&db.url, 4).await.expect("open store");
    let (ann, bob) = (author("ann"), author("bob"));
    room(&store, "lobby").await;
    store
        .add_member(NS, "lobby", &ann)
        .await
        .expect("ann joins");
    store
        .add_member(NS, "lobby", &bob)
        .await
        .expect("bob joins");
    let first = send(&store, "lobby", &ann, "hello", None).await;
    let parent = store
        .message(NS, "lobby", first)
        .await
        .expect("read")
        .expect("stored");
    let reply = send(
        &store,
        "lobby",
        &bob,
        "hi ann",
        Some(ReplyTo::quoting(&parent)),
    )
    .await;
    let third = send(&store, "lobby", &bob, "third", None).await;
    assert_eq!((first, reply, third), (1, 2, 3));
    assert_eq!(rev_of(&store, "lobby").await, 0, "sends take no revision");
    assert!(store.message(NS, "lobby", 4).await.expect("read").is_none());

    // Edits: only the author's, only a live message; a refused one takes no revision.
    let at = store::now();
    assert!(
        store
            .edit_message(NS, "lobby", first, "bob", "hacked", at)
            .await
            .expect("edit")
            .is_none()
    );
    assert_eq!(
        rev_of(&store, "lobby").await,
        0,
        "a refused edit takes no revision"
    );
    let edited = store
        .edit_message(NS, "lobby", first, "ann", "hello, edited", at)
        .await
        .expect("edit")
        .expect("edited");
    assert_eq!(
        (edited.text.as_str(), edited.edited_at, edited.rev),
        ("hello, edited", Some(at), Some(1))
    );

    // The reply shows the replied-to message as it is now.
    let page = store
        .history_for(NS, "lobby", HistoryQuery::latest(10), "ann")
        .await
        .expect("history");
    let quoted = page.messages[1].reply_to.clone().expect("a reply");
    assert_eq!(
        (
            quoted.seq,
            quoted.from.id.as_str(),
            quoted.excerpt.as_str(),
            quoted.deleted
        ),
        (1, "ann", "hello, edited", false)
    );

    // Reactions: one per user and emoji; a change takes a revision, no change none.
    assert_eq!(
        store
            .react(NS, "lobby", third, "ann", "👍", true)
            .await
            .expect("react"),
        Reacted::Changed { rev: 2 }
    );
    assert_eq!(
        store
            .react(NS, "lobby", third, "ann", "👍", true)
            .await
            .expect("react"),
        Reacted::Unchanged
    );
    assert_eq!(
        store
            .react(NS, "lobby", third, "bob", "👍", true)
            .await
            .expect("react"),
        Reacted::Changed { rev: 3 }
    );
    assert_eq!(
        store
            .react(NS, "lobby", third, "bob", "🎉", false)
            .await
            .expect("react"),
        Reacted::Unchanged
    );
    assert_eq!(
        store
            .react(NS, "lobby", 99, "bob", "🎉", true)
            .await
            .expect("react"),
        Reacted::NoMessage
    );
    assert_eq!(rev_of(&store, "lobby").await, 3);
    let seen_by = |viewer: &'static str| {
        let store = store.clone();
        async move {
            store
                .history_for(NS, "lobby", HistoryQuery::latest(10), viewer)
                .await
                .expect("history")
                .messages[2]
                .reactions
                .iter()
                .map(|r| (r.emoji.clone(), r.count, r.me))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(seen_by("ann").await, [("👍".to_owned(), 2, true)]);
    assert_eq!(seen_by("cid").await, [("👍".to_owned(), 2, false)]);

    // The emoji cap: a new emoji past the limit is refused, one already there still counts.
    for i in 0..store::MAX_EMOJI_PER_MESSAGE - 1 {
        let emoji = char::from_u32(0x1F600 + i as u32)
            .expect("emoji")
            .to_string();
        let outcome = store
            .react(NS, "lobby", third, "cid", &emoji, true)
            .await
            .expect("react");
        assert!(
            matches!(outcome, Reacted::Changed { .. }),
            "{i}: {outcome:?}"
        );
    }
    let before = rev_of(&store, "lobby").await;
    assert_eq!(
        store
            .react(NS, "lobby", third, "dan", "🤔", true)
            .await
            .expect("react"),
        Reacted::TooMany
    );
    assert_eq!(
        rev_of(&store, "lobby").await,
        before,
        "refused: no revision"
    );
    assert!(matches!(
        store
            .react(NS, "lobby", third, "dan", "👍", true)
            .await
            .expect("react"),
        Reacted::Changed { .. }
    ));

    // Deletes leave a tombstone, clear its reactions and reply, and happen once.
    let rev = store
        .delete_message(NS, "lobby", third, store::now())
        .await
        .expect("delete")
        .expect("deleted");
    assert!(
        store
            .delete_message(NS, "lobby", third, store::now())
            .await
            .expect("delete")
            .is_none(),
        "deleted once"
    );
    let tomb = store
        .message(NS, "lobby", third)
        .await
        .expect("read")
        .expect("kept");
    assert!(tomb.deleted);
    assert_eq!((tomb.text.as_str(), tomb.rev), ("", Some(rev)));
    assert!(
        seen_by("ann").await.is_empty(),
        "a tombstone has no reactions"
    );
    assert_eq!(
        store
            .react(NS, "lobby", third, "ann", "👍", true)
            .await
            .expect("react"),
        Reacted::NoMessage
    );
    assert!(
        store
            .edit_message(NS, "lobby", third, "bob", "back", store::now())
            .await
            .expect("edit")
            .is_none()
    );
    store
        .delete_message(NS, "lobby", first, store::now())
        .await
        .expect("delete")
        .expect("deleted");
    let page = store
        .history_for(NS, "lobby", HistoryQuery::latest(10), "ann")
        .await
        .expect("history");
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "gap-free"
    );
    let quoted = page.messages[1].reply_to.clone().expect("a reply");
    assert!(quoted.deleted && quoted.excerpt.is_empty(), "{quoted:?}");

    // The change feed: each message changed after the cursor once, current state, in revision order, up to a seq.
    let all = store
        .changed_messages(NS, "lobby", 3, 0, 100, "ann")
        .await
        .expect("changes");
    assert_eq!(
        all.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [3, 1]
    );
    assert!(all.messages.iter().all(|m| m.deleted));
    assert!(!all.has_more);
    let limited = store
        .changed_messages(NS, "lobby", 3, 0, 1, "ann")
        .await
        .expect("changes");
    assert_eq!((limited.messages.len(), limited.has_more), (1, true));
    let below = store
        .changed_messages(NS, "lobby", 2, 0, 100, "ann")
        .await
        .expect("changes");
    assert_eq!(
        below.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1],
        "only at or below the seq held"
    );
    let current = rev_of(&store, "lobby").await;
    assert!(
        store
            .changed_messages(NS, "lobby", 3, current, 100, "ann")
            .await
            .expect("changes")
            .messages
            .is_empty()
    );

    // Read positions: members only, forward only, only up to the last seq.
    let read = |user: &'static str, seq: i64| {
        let store = store.clone();
        async move {
            store
                .mark_read(NS, "lobby", user, seq, store::now())
                .await
                .expect("read")
        }
    };
    assert_eq!(read("bob", 2).await, ReadMark::Moved);
    assert_eq!(read("bob", 1).await, ReadMark::Unchanged);
    assert_eq!(read("bob", 2).await, ReadMark::Unchanged);
    assert_eq!(read("bob", 4).await, ReadMark::NoSuchMessage);
    assert_eq!(read("cid", 1).await, ReadMark::NotMember);
    let state = store
        .room_state(NS, "lobby", "bob")
        .await
        .expect("state")
        .expect("room");
    assert_eq!(
        (state.last_read, state.unread),
        (2, 0),
        "3 is bob's own (and deleted)"
    );
    let state = store
        .room_state(NS, "lobby", "ann")
        .await
        .expect("state")
        .expect("room");
    assert_eq!(
        (state.last_read, state.unread),
        (0, 1),
        "2 is bob's; 1 is ann's, 3 deleted"
    );
    let positions = store
        .read_positions(NS, "lobby", "ann", 10)
        .await
        .expect("positions");
    assert_eq!(
        positions
            .iter()
            .map(|p| (p.user.id.as_str(), p.seq))
            .collect::<Vec<_>>(),
        [("bob", 2)]
    );
    assert!(
        store
            .read_positions(NS, "lobby", "bob", 10)
            .await
            .expect("positions")
            .is_empty()
    );
    let listed = store.user_rooms(NS, "bob", 10).await.expect("rooms");
    assert_eq!(
        (listed[0].last_read, listed[0].unread, listed[0].rev),
        (2, 0, current)
    );
    assert!(
        store
            .room_state(NS, "nowhere", "bob")
            .await
            .expect("state")
            .is_none()
    );
}

store_test!(changes_contract => changes_contract_sqlite, changes_contract_postgres);

const MESSAGES: i64 = 8;
const CHANGES: usize = 240;

/// Many reactions at once on one room, from two stores on Postgres: revisions are distinct and gap-free, the room's
/// counter is their number, and each message keeps the revision of its latest change.
async fn revisions_gap_free_in_commit_order(kind: Store) {
    let db = TestDb::new(kind).await;
    let first = store::open(&db.url, 8).await.expect("open store");
    let second = match kind {
        Store::Sqlite => first.clone(),
        Store::Postgres => store::open(&db.url, 8).await.expect("open second store"),
    };
    room(&first, "busy").await;
    for i in 0..MESSAGES {
        send(&first, "busy", &author("ann"), &format!("m{i}"), None).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CHANGES {
        let store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.spawn(async move {
            let seq = 1 + (i as i64 % MESSAGES);
            let user = format!("u{}", i % 7);
            let emoji = ["👍", "🎉", "👀"][i % 3];
            // Every third change takes a reaction back (often one that is not there: no revision).
            let added = i % 3 != 2;
            let outcome = store
                .react(NS, "busy", seq, &user, emoji, added)
                .await
                .expect("react");
            (seq, outcome)
        });
    }
    let mut revs = Vec::new();
    let mut latest: BTreeMap<i64, i64> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (seq, outcome) = done.expect("task");
        if let Reacted::Changed { rev } = outcome {
            revs.push(rev);
            let held = latest.entry(seq).or_default();
            *held = (*held).max(rev);
        }
    }
    revs.sort_unstable();
    let expected: Vec<i64> = (1..=revs.len() as i64).collect();
    assert_eq!(revs, expected, "distinct, gap-free revisions");
    assert_eq!(rev_of(&first, "busy").await, revs.len() as i64);
    let feed = first
        .changed_messages(NS, "busy", MESSAGES, 0, 100, "u0")
        .await
        .expect("changes");
    let stored: BTreeMap<i64, i64> = feed
        .messages
        .iter()
        .map(|m| (m.seq, m.rev.expect("changed")))
        .collect();
    assert_eq!(
        stored, latest,
        "each message keeps the revision of its last change"
    );
}

store_test!(revisions_gap_free_in_commit_order => revisions_gap_free_in_commit_order_sqlite, revisions_gap_free_in_commit_order_postgres);
