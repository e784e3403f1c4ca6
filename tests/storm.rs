//! Scenario 8: a connect storm. N clients connect at once, each joins one of 10 rooms and sends
//! one message with an ack; every ack must be ok and each room's seqs must be exactly 1..=N/10.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Client, Store, TestDb, TestServer};
use serde_json::json;
use tokio::task::JoinSet;

/// Default storm size; `PALAVER_STORM_CLIENTS=<n>` overrides it (a multiple of ROOMS).
const DEFAULT_CLIENTS: usize = 1000;
const ROOMS: usize = 10;
const PER_STEP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_storm_sqlite() {
    let n_clients: usize = std::env::var("PALAVER_STORM_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CLIENTS);
    assert!(
        n_clients.is_multiple_of(ROOMS) && n_clients > 0,
        "PALAVER_STORM_CLIENTS must be a positive multiple of {ROOMS}"
    );
    let db = TestDb::new(Store::Sqlite).await;
    let server = TestServer::start(&db, &[]).await;
    let started = Instant::now();

    let mut tasks = JoinSet::new();
    for i in 0..n_clients {
        let base_url = server.base_url.clone();
        tasks.spawn(async move {
            let room = format!("storm-{}", i % ROOMS);
            let client =
                Client::connect_with_timeout(&base_url, Some(json!({ "name": format!("u{i}") })), PER_STEP)
                    .await
                    .map_err(|e| format!("client {i}: connect: {e}"))?;
            let join = client
                .try_ack("room:join", json!({ "room": room, "limit": 1 }), PER_STEP)
                .await
                .map_err(|e| format!("client {i}: room:join: {e}"))?;
            if join["ok"] != json!(true) {
                return Err(format!("client {i}: room:join {room}: {join}"));
            }
            let ack = client
                .try_ack(
                    "message:send",
                    json!({ "room": room, "text": format!("hello from {i}"), "clientId": format!("storm-{i}") }),
                    PER_STEP,
                )
                .await
                .map_err(|e| format!("client {i}: message:send: {e}"))?;
            if ack["ok"] != json!(true) {
                return Err(format!("client {i}: message:send: {ack}"));
            }
            let m = &ack["message"];
            if m["room"] != json!(room) || m["text"] != json!(format!("hello from {i}")) {
                return Err(format!("client {i}: wrong message in ack: {ack}"));
            }
            let seq = m["seq"].as_i64().ok_or_else(|| format!("client {i}: seq: {ack}"))?;
            Ok::<_, String>((client, room, seq))
        });
    }

    let mut clients = Vec::with_capacity(n_clients);
    let mut seqs: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut failures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(Ok((client, room, seq))) => {
                    seqs.entry(room).or_default().push(seq);
                    clients.push(client);
                }
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(format!("task panicked: {e}")),
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "connect storm: {} of {n_clients} clients connected+joined+sent in {elapsed:?}",
        clients.len()
    );
    assert!(
        all.is_ok(),
        "storm did not finish within 180s ({} ok so far)",
        clients.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {n_clients} clients failed; first few: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(clients.len(), n_clients);

    // Each room got exactly n_clients/ROOMS messages numbered 1..=n_clients/ROOMS, no gaps, no dupes.
    assert_eq!(
        seqs.len(),
        ROOMS,
        "rooms: {:?}",
        seqs.keys().collect::<Vec<_>>()
    );
    let expected: Vec<i64> = (1..=(n_clients / ROOMS) as i64).collect();
    for (room, list) in seqs.iter_mut() {
        list.sort_unstable();
        assert_eq!(list, &expected, "seqs of {room}");
    }

    futures_util::future::join_all(clients.into_iter().map(Client::disconnect)).await;
    server.stop().await;

    for r in 0..ROOMS {
        let room = format!("storm-{r}");
        let rows = db.message_rows(&room).await;
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            expected,
            "stored seqs of {room}"
        );
    }
}
