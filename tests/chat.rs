//! Socket.IO scenarios against a real in-process server, on SQLite and on Postgres.
//! See docs/protocol.md for the contract asserted here.

#[macro_use]
mod common;

use common::{Client, STEP_TIMEOUT, Store, TestDb, TestServer, assert_error, assert_message, jwt};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// 1. session
// ---------------------------------------------------------------------------------------------

async fn session_identifies_user(store: Store) {
    let db = TestDb::new(store).await;
    let server = TestServer::start(&db, &[]).await;

    // No auth at all: anonymous user with a random readable name and an anon- id.
    let anon = server.connect(None).await;
    let user = &anon.session["user"];
    assert_eq!(user["anonymous"], json!(true), "session: {}", anon.session);
    let anon_id = user["id"].as_str().expect("user.id string");
    assert!(
        anon_id.starts_with("anon-"),
        "anonymous id must start with anon-: {anon_id:?}"
    );
    let anon_name = user["name"].as_str().expect("user.name string");
    assert!(
        !anon_name.trim().is_empty(),
        "anonymous name must not be empty"
    );
    assert!(
        anon.session["rooms"].is_array(),
        "session.rooms must be an array: {}",
        anon.session
    );

    // Two anonymous connections never share an id.
    let anon2 = server.connect(None).await;
    assert_ne!(anon2.session["user"]["id"], anon.session["user"]["id"]);

    // Anonymous with a chosen name (trimmed).
    let ada = server.connect(Some(json!({ "name": "  ada  " }))).await;
    assert_eq!(
        ada.session["user"]["name"],
        json!("ada"),
        "session: {}",
        ada.session
    );
    assert_eq!(ada.session["user"]["anonymous"], json!(true));
    assert!(
        ada.session["user"]["id"]
            .as_str()
            .unwrap()
            .starts_with("anon-")
    );

    // Signed-in user: id = sub, name = `name` claim.
    let token = jwt("user-42", Some("Grace Hopper"));
    let grace = server.connect(Some(json!({ "token": token }))).await;
    assert_eq!(
        grace.session["user"]["id"],
        json!("user-42"),
        "session: {}",
        grace.session
    );
    assert_eq!(grace.session["user"]["name"], json!("Grace Hopper"));
    assert_eq!(grace.session["user"]["anonymous"], json!(false));
    assert!(grace.session["rooms"].is_array());

    // Without a `name` claim the display name falls back to `sub`.
    let bare = server
        .connect(Some(json!({ "token": jwt("user-7", None) })))
        .await;
    assert_eq!(bare.session["user"]["id"], json!("user-7"));
    assert_eq!(bare.session["user"]["name"], json!("user-7"));

    // A token signed with another key is refused with connect_error "unauthorized: bad_signature: …".
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "mallory", "exp": 4_000_000_000u64 }),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let err = match Client::connect(&server.base_url, Some(json!({ "token": forged }))).await {
        Ok(c) => panic!("forged token was accepted: {}", c.session),
        Err(e) => e,
    };
    assert!(
        err.contains("unauthorized: bad_signature"),
        "connect_error for a forged token should carry `unauthorized: bad_signature: …`, got {err:?}"
    );

    for c in [anon, anon2, ada, grace, bare] {
        c.disconnect().await;
    }
    server.stop().await;
}
store_test!(session_identifies_user => session_identifies_user_sqlite, session_identifies_user_postgres);

// ---------------------------------------------------------------------------------------------
// 2. join + send + broadcast
// ---------------------------------------------------------------------------------------------

async fn join_send_broadcast(store: Store) {
    let db = TestDb::new(store).await;
    let server = TestServer::start(&db, &[]).await;

    let mut alice = server.connect_user("alice", "Alice").await;
    let mut bob = server.connect_user("bob", "Bob").await;

    let join = alice.join("lobby").await;
    assert_eq!(join["room"]["id"], json!("lobby"), "join ack: {join}");
    assert_eq!(join["room"]["kind"], json!("group"), "join ack: {join}");
    assert_eq!(
        join["room"]["visibility"],
        json!("public"),
        "join ack: {join}"
    );
    assert_eq!(join["history"], json!([]), "join ack: {join}");
    assert_eq!(join["hasMore"], json!(false), "join ack: {join}");
    assert!(join["members"].is_array(), "join ack: {join}");
    let bob_join = bob.join("lobby").await;
    let mut member_ids: Vec<String> = bob_join["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members must be an array: {bob_join}"))
        .iter()
        .map(|u| u["id"].as_str().unwrap_or_default().to_string())
        .collect();
    member_ids.sort();
    assert_eq!(
        member_ids,
        vec!["alice", "bob"],
        "users online in lobby after both joined: {bob_join}"
    );
    assert!(
        bob_join["members"]
            .as_array()
            .unwrap()
            .contains(&json!({ "id": "alice", "name": "Alice", "anonymous": false })),
        "members must hold alice as a User: {bob_join}"
    );

    let m1 = alice.send("lobby", "hello").await;
    assert_message(&m1, "lobby", 1, "alice", "Alice", "hello");
    let m2 = alice.send("lobby", "second").await;
    assert_message(&m2, "lobby", 2, "alice", "Alice", "second");
    assert_ne!(m1["id"], m2["id"], "message ids must be unique");

    // Bob gets both, identical to what Alice's acks carried, in order.
    let got1 = bob.expect_event("message").await;
    let got2 = bob.expect_event("message").await;
    assert_eq!(got1, m1, "broadcast must equal the acked message");
    assert_eq!(got2, m2, "broadcast must equal the acked message");

    // Bob replies; Alice receives it, seq continues.
    let m3 = bob.send("lobby", "hi alice").await;
    assert_message(&m3, "lobby", 3, "bob", "Bob", "hi alice");
    let got3 = alice.expect_event("message").await;
    assert_eq!(got3, m3);

    // The sender never gets its own message as an event: an echo of m3 would reach bob before a
    // marker alice sends now (alice's own m1 and m2 would have come before m3, checked above).
    let marker = alice.send_marker("lobby").await;
    bob.expect_none_before_marker(
        "message",
        |_| true,
        &marker,
        "sender must not receive its own `message`",
    )
    .await;

    // A socket that did not enter the room may not send there.
    let carol = server.connect_user("carol", "Carol").await;
    let ack = carol
        .ack(
            "message:send",
            json!({ "room": "lobby", "text": "let me in" }),
        )
        .await;
    assert_error(
        &ack,
        "forbidden",
        "message:send to a room the socket did not enter",
    );

    for c in [alice, bob, carol] {
        c.disconnect().await;
    }
    server.stop().await;
}
store_test!(join_send_broadcast => join_send_broadcast_sqlite, join_send_broadcast_postgres);

// ---------------------------------------------------------------------------------------------
// 3. durability across a restart
// ---------------------------------------------------------------------------------------------

async fn acked_message_survives_restart(store: Store) {
    let db = TestDb::new(store).await;

    let server = TestServer::start(&db, &[]).await;
    let alice = server.connect_user("alice", "Alice").await;
    alice.join("durable").await;
    let ack = alice
        .ack(
            "message:send",
            json!({ "room": "durable", "text": "  persist me  ", "clientId": "c-1" }),
        )
        .await;
    assert_eq!(ack["ok"], json!(true), "send: {ack}");
    let sent = ack["message"].clone();
    assert_message(&sent, "durable", 1, "alice", "Alice", "  persist me  ");
    assert_eq!(sent["clientId"], json!("c-1"), "message.clientId: {sent}");
    alice.disconnect().await;
    server.stop().await;

    // A brand-new server process on the same database.
    let server = TestServer::start(&db, &[]).await;
    let bob = server.connect_user("bob", "Bob").await;
    let join = bob.join("durable").await;
    assert_eq!(
        join["history"],
        json!([sent.clone()]),
        "history after restart: {join}"
    );
    assert_eq!(join["hasMore"], json!(false));
    let fetched = bob.ack("history:fetch", json!({ "room": "durable" })).await;
    assert_eq!(fetched["ok"], json!(true), "history:fetch: {fetched}");
    assert_eq!(fetched["messages"], json!([sent.clone()]));
    // seq keeps counting from the stored history.
    let next = bob.send("durable", "after restart").await;
    assert_message(&next, "durable", 2, "bob", "Bob", "after restart");
    bob.disconnect().await;
    server.stop().await;

    // And the row itself.
    let rows = db.message_rows("durable").await;
    assert_eq!(rows.len(), 2, "rows: {rows:?}");
    let r = &rows[0];
    assert_eq!(r.ns, "/");
    assert_eq!(r.room, "durable");
    assert_eq!(r.seq, 1);
    assert_eq!(r.sender_id, "alice");
    assert_eq!(r.sender_name, "Alice");
    assert_eq!(r.text, "  persist me  ", "text is stored as sent");
    assert_eq!(r.client_id.as_deref(), Some("c-1"));
    assert!(r.has_created_at, "created_at must be set");
    assert_eq!(rows[1].seq, 2);
    assert_eq!(rows[1].sender_id, "bob");
}
store_test!(acked_message_survives_restart => acked_message_survives_restart_sqlite, acked_message_survives_restart_postgres);

// ---------------------------------------------------------------------------------------------
// 4. clientId dedupe
// ---------------------------------------------------------------------------------------------

async fn client_id_dedupes(store: Store) {
    let db = TestDb::new(store).await;
    let server = TestServer::start(&db, &[]).await;

    let alice = server.connect_user("alice", "Alice").await;
    let mut bob = server.connect_user("bob", "Bob").await;
    alice.join("dedupe").await;
    bob.join("dedupe").await;

    let payload = json!({ "room": "dedupe", "text": "once", "clientId": "dup-1" });
    let first = alice.ack("message:send", payload.clone()).await;
    assert_eq!(first["ok"], json!(true), "first send: {first}");
    let second = alice.ack("message:send", payload.clone()).await;
    assert_eq!(second["ok"], json!(true), "retry: {second}");
    assert_eq!(
        second["message"]["id"], first["message"]["id"],
        "retry must return the original id"
    );
    assert_eq!(second["message"]["seq"], json!(1));
    assert_eq!(
        second["message"], first["message"],
        "retry must return the original message"
    );

    // Even a retry with different text returns the original.
    let third = alice
        .ack(
            "message:send",
            json!({ "room": "dedupe", "text": "changed", "clientId": "dup-1" }),
        )
        .await;
    assert_eq!(
        third["message"], first["message"],
        "retry with other text: {third}"
    );

    // The next real message takes seq 2: the retries consumed no seq.
    let next = alice.send("dedupe", "next").await;
    assert_eq!(next["seq"], json!(2), "next: {next}");

    // Bob saw the original once and the next message: no broadcast for retries (one would have
    // come before `next`, which was sent after them).
    let (seen, got_next) = bob
        .events_before("message", "message", |m| m["id"] == next["id"])
        .await;
    assert_eq!(
        seen,
        vec![first["message"].clone()],
        "bob's `message` events before `next`"
    );
    assert_eq!(got_next, next, "bob's `next`");

    // Another user may use the same clientId independently.
    let other = bob
        .ack(
            "message:send",
            json!({ "room": "dedupe", "text": "mine", "clientId": "dup-1" }),
        )
        .await;
    assert_eq!(other["ok"], json!(true), "{other}");
    assert_eq!(
        other["message"]["seq"],
        json!(3),
        "same clientId from another user is a new message"
    );

    let rows = db.message_rows("dedupe").await;
    let dup_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.client_id.as_deref() == Some("dup-1") && r.sender_id == "alice")
        .collect();
    assert_eq!(
        dup_rows.len(),
        1,
        "exactly one row for alice's dup-1: {rows:?}"
    );
    assert_eq!(dup_rows[0].text, "once");
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "rows: {rows:?}"
    );

    alice.disconnect().await;
    bob.disconnect().await;
    server.stop().await;
}
store_test!(client_id_dedupes => client_id_dedupes_sqlite, client_id_dedupes_postgres);

// ---------------------------------------------------------------------------------------------
// 5. bad input
// ---------------------------------------------------------------------------------------------

async fn bad_input_is_rejected(store: Store) {
    let db = TestDb::new(store).await;
    let server = TestServer::start(&db, &[]).await;

    let alice = server.connect_anon("alice").await;
    alice.join("strict").await;

    let ack = alice.ack("message:send", json!("just a string")).await;
    assert_error(&ack, "bad_request", "message:send with a string payload");

    let ack = alice.ack("message:send", json!({ "room": "strict" })).await;
    assert_error(&ack, "bad_request", "message:send without text");

    let ack = alice
        .ack("message:send", json!({ "room": "strict", "text": "   " }))
        .await;
    assert_error(
        &ack,
        "bad_request",
        "message:send with whitespace-only text",
    );

    let ack = alice
        .ack("message:send", json!({ "room": "strict", "text": 42 }))
        .await;
    assert_error(&ack, "bad_request", "message:send with a number as text");

    let too_long = "x".repeat(4001);
    let ack = alice
        .ack(
            "message:send",
            json!({ "room": "strict", "text": too_long }),
        )
        .await;
    assert_error(&ack, "too_large", "message:send with 4001 characters");

    let ack = alice.ack("room:join", json!({ "room": "bad room!" })).await;
    assert_error(&ack, "bad_request", "room:join with an invalid room id");

    // The connection still works and nothing was stored for the rejected sends.
    let exactly_max = "y".repeat(4000);
    let m = alice.send("strict", &exactly_max).await;
    assert_eq!(
        m["seq"],
        json!(1),
        "first stored message after the rejections: {m}"
    );
    assert_eq!(m["text"].as_str().map(str::len), Some(4000));
    let m = alice.send("strict", "still here").await;
    assert_eq!(m["seq"], json!(2));

    let rows = db.message_rows("strict").await;
    assert_eq!(
        rows.len(),
        2,
        "only the valid messages are stored: {rows:?}"
    );

    // The server also keeps serving other clients.
    let bob = server.connect_anon("bob").await;
    let join = bob.join("strict").await;
    assert_eq!(join["history"].as_array().map(Vec::len), Some(2), "{join}");

    alice.disconnect().await;
    bob.disconnect().await;
    server.stop().await;
}
store_test!(bad_input_is_rejected => bad_input_is_rejected_sqlite, bad_input_is_rejected_postgres);

/// `--max-message-length` is honoured (the limit is per namespace; `/` takes the flag).
async fn max_message_length_flag(store: Store) {
    let db = TestDb::new(store).await;
    let server = TestServer::start(&db, &["--max-message-length", "10"]).await;
    let alice = server.connect_anon("alice").await;
    alice.join("short").await;
    let ack = alice
        .ack(
            "message:send",
            json!({ "room": "short", "text": "12345678901" }),
        )
        .await;
    assert_error(
        &ack,
        "too_large",
        "11 characters with --max-message-length 10",
    );
    let m = alice.send("short", "1234567890").await;
    assert_eq!(m["seq"], json!(1));
    // Characters, not bytes: 10 multi-byte characters fit.
    let m = alice.send("short", "éééééééééé").await;
    assert_eq!(m["seq"], json!(2));
    alice.disconnect().await;
    tokio::time::timeout(STEP_TIMEOUT, server.stop())
        .await
        .expect("stop");
}
store_test!(max_message_length_flag => max_message_length_flag_sqlite, max_message_length_flag_postgres);
