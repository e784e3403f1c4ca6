//! HTTP routes: /healthz, /readyz, /api/rooms/{room}/messages.

#[macro_use]
mod common;

use common::{Store, TestDb, TestServer, jwt};
use serde_json::{Value, json};

/// `{ messages, hasMore }` of a successful `history:fetch` ack, without `ok`.
fn without_ok(mut ack: Value) -> Value {
    assert_eq!(ack["ok"], json!(true), "history:fetch failed: {ack}");
    ack.as_object_mut().unwrap().remove("ok");
    ack
}

fn assert_http_error(status: u16, body: &Value, want_status: u16, code: &str, context: &str) {
    assert_eq!(status, want_status, "{context}: status (body {body})");
    assert_eq!(body["error"]["code"], json!(code), "{context}: body {body}");
    assert!(
        body["error"]["message"].is_string(),
        "{context}: error.message must be a string: {body}"
    );
}

async fn http_routes(store: Store) {
    let db = TestDb::new(store).await;
    let server = TestServer::start(&db, &[]).await;

    let (status, body) = server.get_json("/healthz", None).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("ok")),
        "/healthz: {body}"
    );
    let (status, body) = server.get_json("/readyz", None).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("ready")),
        "/readyz: {body}"
    );

    let token = jwt("hedy", Some("Hedy"));
    let hedy = server.connect(Some(json!({ "token": token }))).await;
    hedy.join("http-room").await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(hedy.send("http-room", text).await);
    }
    assert_eq!(
        sent.iter().map(|m| m["seq"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2), json!(3)]
    );

    // Latest page.
    let fetched = without_ok(
        hedy.ack("history:fetch", json!({ "room": "http-room" }))
            .await,
    );
    assert_eq!(
        fetched,
        json!({ "messages": sent, "hasMore": false }),
        "history:fetch"
    );
    let (status, body) = server
        .get_json("/api/rooms/http-room/messages", Some(&token))
        .await;
    assert_eq!(status, 200, "GET messages: {body}");
    assert_eq!(
        body, fetched,
        "HTTP must answer exactly what history:fetch answers"
    );

    // limit.
    let fetched = without_ok(
        hedy.ack("history:fetch", json!({ "room": "http-room", "limit": 2 }))
            .await,
    );
    assert_eq!(
        fetched,
        json!({ "messages": [sent[1], sent[2]], "hasMore": true })
    );
    let (status, body) = server
        .get_json("/api/rooms/http-room/messages?limit=2", Some(&token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, fetched, "?limit=2");

    // before (paging back).
    let fetched = without_ok(
        hedy.ack(
            "history:fetch",
            json!({ "room": "http-room", "before": 3, "limit": 1 }),
        )
        .await,
    );
    assert_eq!(fetched, json!({ "messages": [sent[1]], "hasMore": true }));
    let (status, body) = server
        .get_json(
            "/api/rooms/http-room/messages?before=3&limit=1",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, fetched, "?before=3&limit=1");

    // after (catching up).
    let fetched = without_ok(
        hedy.ack("history:fetch", json!({ "room": "http-room", "after": 1 }))
            .await,
    );
    assert_eq!(
        fetched,
        json!({ "messages": [sent[1], sent[2]], "hasMore": false })
    );
    let (status, body) = server
        .get_json("/api/rooms/http-room/messages?after=1", Some(&token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, fetched, "?after=1");

    // No token / a bad token → 401 unauthorized.
    let (status, body) = server.get_json("/api/rooms/http-room/messages", None).await;
    assert_http_error(
        status,
        &body,
        401,
        "unauthorized",
        "GET messages without a token",
    );
    let (status, body) = server
        .get_json("/api/rooms/http-room/messages", Some("not-a-jwt"))
        .await;
    assert_http_error(
        status,
        &body,
        401,
        "unauthorized",
        "GET messages with a garbage token",
    );

    // A room that does not exist → 404 not_found.
    let (status, body) = server
        .get_json("/api/rooms/no-such-room/messages", Some(&token))
        .await;
    assert_http_error(
        status,
        &body,
        404,
        "not_found",
        "GET messages of a missing room",
    );

    // A bad limit → 400 bad_request.
    let (status, body) = server
        .get_json("/api/rooms/http-room/messages?limit=0", Some(&token))
        .await;
    assert_http_error(status, &body, 400, "bad_request", "GET messages?limit=0");

    hedy.disconnect().await;
    server.stop().await;
}
store_test!(http_routes => http_routes_sqlite, http_routes_postgres);
