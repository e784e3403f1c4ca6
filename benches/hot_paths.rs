//! Hot paths of a chat message: encoding it, broadcasting it to a room, and committing a batch of them.
//!
//!     cargo bench --bench hot_paths

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use palaver::store::{
    self, Author, ClientIdScope, Message, NewMessage, Room, RoomKind, Visibility,
};
use socketioxide::{SocketIo, extract::SocketRef};

fn message(seq: i64) -> Message {
    Message {
        id: seq.to_string(),
        room: "general".into(),
        seq,
        from: Author {
            id: "auth0|5f7c8ec7c33c6c004bbafe82".into(),
            name: "Ada Lovelace".into(),
        },
        text: "The Analytical Engine weaves algebraic patterns just as the Jacquard loom weaves flowers and leaves."
            .into(),
        client_id: Some("0b6f8c1e-6a4c-4f5e-9d7a-2f1f3c0d9e11".into()),
        at: store::now(),
        ..Default::default()
    }
}

fn encode(c: &mut Criterion) {
    let msg = message(42);
    c.bench_function("encode message (JSON)", |b| {
        b.iter(|| serde_json::to_vec(black_box(&msg)))
    });
}

fn broadcast(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (io, mut receivers) = rt.block_on(async {
        let (_svc, io) = SocketIo::new_svc();
        io.ns("/", async |s: SocketRef| s.join("r:general"));
        let mut receivers = Vec::new();
        for _ in 0..100 {
            let (_tx, rx) = io.new_dummy_sock("/", ()).await;
            receivers.push((_tx, rx));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        (io, receivers)
    });
    let drain = |receivers: &mut Vec<(_, tokio::sync::mpsc::Receiver<_>)>| {
        for (_, rx) in receivers.iter_mut() {
            while rx.try_recv().is_ok() {}
        }
    };
    drain(&mut receivers);
    let msg = message(42);
    c.bench_function("broadcast message to a room of 100", |b| {
        b.to_async(&rt).iter(|| async {
            io.to("r:general")
                .emit("message", black_box(&msg))
                .await
                .ok();
        });
        drain(&mut receivers);
    });
    // Stop the runtime before the dummy receivers go: its forwarding tasks would fail to hand them packets.
    drop(io);
    rt.shutdown_background();
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let store = rt.block_on(async {
        let store = store::open(&url, 4).await.expect("store");
        let room = Room {
            id: "general".into(),
            name: "general".into(),
            kind: RoomKind::Group,
            visibility: Visibility::Public,
            created_at: store::now(),
        };
        store.ensure_room("/", &room, "bench").await.expect("room");
        store
    });
    c.bench_function("commit 256 concurrent sends (SQLite, group commit)", |b| {
        b.to_async(&rt).iter_batched(
            || {
                (0..256)
                    .map(|i| NewMessage {
                        room: "general".into(),
                        from: Author {
                            id: format!("user-{}", i % 16),
                            name: "bench".into(),
                        },
                        text: "hello".into(),
                        client_id: None,
                        client_id_scope: ClientIdScope::Sender,
                        reply_to: None,
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                let store = store.clone();
                async move {
                    let sends = batch.into_iter().map(|m| {
                        let store = store.clone();
                        async move { store.append_message("/", m).await }
                    });
                    for result in futures_util::future::join_all(sends).await {
                        result.expect("append");
                    }
                }
            },
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, encode, broadcast, group_commit);
criterion_main!(benches);
