//! Scenario 6: the database goes away → `unavailable`, the process stays up, and it recovers.
//! Postgres only: SQLite is a file in-process and cannot be taken away the same way.

mod common;

use std::time::{Duration, Instant};

use common::{Store, TestDb, TestServer, assert_error};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_reports_unavailable_postgres() {
    let db = TestDb::new(Store::Postgres).await;
    let server = TestServer::start(&db, &[]).await;

    let alice = server.connect_user("alice", "Alice").await;
    alice.join("fragile").await;
    let before = alice.send("fragile", "before").await;
    assert_eq!(before["seq"], json!(1));

    // Take the database away: no new connections, existing ones killed.
    db.pg_cut_off().await;

    let started = Instant::now();
    let ack = alice
        .try_ack(
            "message:send",
            json!({ "room": "fragile", "text": "during", "clientId": "during-1" }),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("message:send while the database is down: {e}"));
    assert_error(
        &ack,
        "unavailable",
        "message:send while the database is down",
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the unavailable ack took {:?}",
        started.elapsed()
    );

    assert!(
        server.is_running(),
        "the server task must survive a database outage"
    );
    let (status, body) = server.get_json("/healthz", None).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("ok")),
        "/healthz during the outage: {body}"
    );
    let (status, body) = server.get_json("/readyz", None).await;
    assert_eq!(
        (status, &body["status"]),
        (503, &json!("unavailable")),
        "/readyz during the outage: {body}"
    );

    // Bring it back; the failed send, retried with its original clientId as a client would, must succeed soon:
    // nothing of it was stored, so it is stored now, once.
    db.pg_restore().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut codes_seen = Vec::new();
    let recovered = loop {
        let ack = alice
            .try_ack(
                "message:send",
                json!({ "room": "fragile", "text": "during", "clientId": "during-1" }),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("message:send after the database came back: {e}"));
        if ack["ok"] == json!(true) {
            break ack["message"].clone();
        }
        assert_error(
            &ack,
            "unavailable",
            "message:send while the database recovers",
        );
        codes_seen.push(ack["error"]["code"].clone());
        assert!(
            Instant::now() < deadline,
            "no successful send within 30s of restoring the database ({} unavailable acks)",
            codes_seen.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        recovered["seq"],
        json!(2),
        "the failed send must not consume a seq: {recovered}"
    );
    assert_eq!(recovered["text"], json!("during"));
    // One more retry of the same send is answered with the stored original, not stored again.
    let again = alice
        .ack(
            "message:send",
            json!({ "room": "fragile", "text": "during", "clientId": "during-1" }),
        )
        .await;
    assert_eq!(again["ok"], json!(true), "retry after recovery: {again}");
    assert_eq!(
        again["message"], recovered,
        "the retry answers the original"
    );

    // /readyz is back to 200.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.get_json("/readyz", None).await;
        if status == 200 {
            assert_eq!(body["status"], json!("ready"), "/readyz body: {body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body} 10s after recovery"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing from the outage was stored.
    let rows = db.message_rows("fragile").await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.seq, r.text.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "before"), (2, "during")],
        "rows after recovery"
    );

    alice.disconnect().await;
    server.stop().await;
}
