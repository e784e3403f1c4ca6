//! Shared harness for the palaver integration tests.
//!
//! * [`TestDb`]: a fresh SQLite file (in a temp dir) or a fresh Postgres database per test.
//! * [`TestServer`]: `palaver::serve` running in-process on `127.0.0.1:0`, stopped through its
//!   shutdown future.
//! * [`Client`]: a `rust_socketio` (async, websocket) client that records every event it gets and
//!   turns acks into plain `serde_json::Value`s, with timeouts everywhere so a broken server fails
//!   the test instead of hanging it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The JWT secret every test server is started with.
pub const JWT_SECRET: &str = "test-secret";
/// How long any single ack / event / HTTP answer may take before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Generates one `#[tokio::test]` per store for a scenario `async fn scenario(store: Store)`.
///
/// ```ignore
/// store_test!(join_and_send => join_and_send_sqlite, join_and_send_postgres);
/// ```
#[macro_export]
macro_rules! store_test {
    ($scenario:ident => $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            $scenario(common::Store::Sqlite).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            $scenario(common::Store::Postgres).await
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// Base URL of the Postgres server, pointing at a database we may connect to for admin work.
pub fn pg_admin_url() -> String {
    std::env::var("PALAVER_TEST_PG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// `base` with its database name replaced by `db` (query string kept).
fn pg_url_with_db(base: &str, db: &str) -> String {
    let (main, query) = match base.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (base, None),
    };
    let scheme_end = main.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// Drops the Postgres test database when the test ends (also on panic).
struct PgDropGuard {
    admin_url: String,
    name: String,
}

impl Drop for PgDropGuard {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // We may be inside a runtime (or unwinding); do the cleanup on a fresh thread + runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&admin_url)
                    .await
                else {
                    return;
                };
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&pool)
                .await;
                pool.close().await;
            });
        })
        .join();
    }
}

/// One row of the `messages` table, read back with plain SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub ns: String,
    pub room: String,
    pub seq: i64,
    pub sender_id: String,
    pub sender_name: String,
    pub text: String,
    pub client_id: Option<String>,
    pub has_created_at: bool,
}

macro_rules! message_rows_sql {
    ($param:literal) => {
        concat!(
            "SELECT CAST(ns AS TEXT) AS ns, CAST(room AS TEXT) AS room, ",
            "CAST(seq AS BIGINT) AS seq, CAST(sender_id AS TEXT) AS sender_id, ",
            "CAST(sender_name AS TEXT) AS sender_name, CAST(\"text\" AS TEXT) AS body, ",
            "CAST(client_id AS TEXT) AS client_id, ",
            "CASE WHEN created_at IS NULL THEN 0 ELSE 1 END AS has_created_at ",
            "FROM messages WHERE room = ",
            $param,
            " ORDER BY seq"
        )
    };
}

/// A database private to one test.
pub struct TestDb {
    pub store: Store,
    /// The URL given to `palaver --database-url`.
    pub url: String,
    /// Postgres only: the database name.
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
    _pg_guard: Option<PgDropGuard>,
}

impl TestDb {
    pub async fn new(store: Store) -> TestDb {
        match store {
            Store::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}/palaver.db", dir.path().display());
                TestDb {
                    store,
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                    _pg_guard: None,
                }
            }
            Store::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("palaver_test_{}", uuid::Uuid::new_v4().simple());
                let admin = pg_admin_pool().await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
                admin.close().await;
                let url = pg_url_with_db(&admin_url, &name);
                TestDb {
                    store,
                    url,
                    pg_name: Some(name.clone()),
                    _dir: None,
                    _pg_guard: Some(PgDropGuard { admin_url, name }),
                }
            }
        }
    }

    /// All rows of `messages` for `room`, ordered by seq, read through a short-lived pool.
    pub async fn message_rows(&self, room: &str) -> Vec<MessageRow> {
        match self.store {
            Store::Sqlite => {
                let opts: sqlx::sqlite::SqliteConnectOptions =
                    self.url.parse().expect("sqlite url");
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts.busy_timeout(Duration::from_secs(5)))
                    .await
                    .expect("open sqlite test db");
                let rows = sqlx::query(message_rows_sql!("?"))
                    .bind(room)
                    .fetch_all(&pool)
                    .await
                    .expect("select from messages (sqlite)");
                let out = rows
                    .iter()
                    .map(|r| MessageRow {
                        ns: r.get("ns"),
                        room: r.get("room"),
                        seq: r.get("seq"),
                        sender_id: r.get("sender_id"),
                        sender_name: r.get("sender_name"),
                        text: r.get("body"),
                        client_id: r.get("client_id"),
                        has_created_at: r.get::<i64, _>("has_created_at") == 1,
                    })
                    .collect();
                pool.close().await;
                out
            }
            Store::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&self.url)
                    .await
                    .expect("open postgres test db");
                let rows = sqlx::query(message_rows_sql!("$1"))
                    .bind(room)
                    .fetch_all(&pool)
                    .await
                    .expect("select from messages (postgres)");
                let out = rows
                    .iter()
                    .map(|r| MessageRow {
                        ns: r.get("ns"),
                        room: r.get("room"),
                        seq: r.get("seq"),
                        sender_id: r.get("sender_id"),
                        sender_name: r.get("sender_name"),
                        text: r.get("body"),
                        client_id: r.get("client_id"),
                        has_created_at: r.get::<i32, _>("has_created_at") == 1,
                    })
                    .collect();
                pool.close().await;
                out
            }
        }
    }

    /// Postgres only: refuse new connections to the test database and kill the existing ones.
    pub async fn pg_cut_off(&self) {
        let name = self
            .pg_name
            .as_deref()
            .expect("pg_cut_off on a Postgres TestDb");
        let admin = pg_admin_pool().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        )))
        .execute(&admin)
        .await
        .expect("ALTER DATABASE ... ALLOW_CONNECTIONS false");
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&admin)
        .await
        .expect("pg_terminate_backend");
        admin.close().await;
    }

    /// Postgres only: allow connections to the test database again.
    pub async fn pg_restore(&self) {
        let name = self
            .pg_name
            .as_deref()
            .expect("pg_restore on a Postgres TestDb");
        let admin = pg_admin_pool().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
        )))
        .execute(&admin)
        .await
        .expect("ALTER DATABASE ... ALLOW_CONNECTIONS true");
        admin.close().await;
    }
}

pub async fn pg_admin_pool() -> sqlx::PgPool {
    let url = pg_admin_url();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect to Postgres at {url} (set PALAVER_TEST_PG): {e}"))
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), palaver::Error>>>,
}

impl TestServer {
    /// Starts `palaver::serve` on `db` with `--jwt-secret test-secret` plus `extra_args`, and
    /// waits until `/healthz` answers.
    pub async fn start(db: &TestDb, extra_args: &[&str]) -> TestServer {
        let mut args: Vec<String> = vec![
            "palaver".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database-url".into(),
            db.url.clone(),
            "--jwt-secret".into(),
            JWT_SECRET.into(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let config = palaver::Config::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("palaver::Config::try_parse_from({args:?}): {e}"));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
        };
        let handle = tokio::spawn(palaver::serve(config, listener, shutdown));
        let mut server = TestServer {
            addr,
            base_url: format!("http://{addr}"),
            shutdown: Some(tx),
            handle: Some(handle),
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&mut self) {
        let http = http_client();
        let url = format!("{}/healthz", self.base_url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let res = self.handle.take().unwrap().await;
                panic!("palaver::serve returned before becoming healthy: {res:?}");
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status() == 200
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "server at {} did not answer /healthz with 200 within 30s",
                    self.base_url
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resolves the shutdown future and waits (bounded) for `serve` to return `Ok(())`.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().expect("server already stopped");
        match tokio::time::timeout(Duration::from_secs(15), handle).await {
            Err(_) => panic!("palaver::serve did not return within 15s of shutdown"),
            Ok(Err(join_err)) => panic!("palaver::serve panicked: {join_err}"),
            Ok(Ok(Err(e))) => panic!("palaver::serve returned an error on shutdown: {e:?}"),
            Ok(Ok(Ok(()))) => {}
        }
    }

    /// True while the server task is still running (it must not die on DB failures).
    pub fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// GET `path` and return (status, JSON body). Panics on timeout or a non-JSON body.
    pub async fn get_json(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = http_client().get(format!("{}{}", self.base_url, path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = tokio::time::timeout(STEP_TIMEOUT, req.send())
            .await
            .unwrap_or_else(|_| panic!("GET {path} timed out"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path} body: {e}"));
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} ({status}): body is not JSON ({e}): {body:?}"));
        (status, json)
    }

    /// Connects a Socket.IO client to `/` with `auth` (or none) and waits for `session`.
    pub async fn connect(&self, auth: Option<Value>) -> Client {
        Client::connect(&self.base_url, auth.clone())
            .await
            .unwrap_or_else(|e| panic!("connect with auth {auth:?} failed: {e}"))
    }

    pub async fn connect_anon(&self, name: &str) -> Client {
        self.connect(Some(json!({ "name": name }))).await
    }

    pub async fn connect_user(&self, sub: &str, name: &str) -> Client {
        self.connect(Some(json!({ "token": jwt(sub, Some(name)) })))
            .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .build()
        .expect("reqwest client")
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

/// An HS256 token signed with [`JWT_SECRET`], valid for an hour.
pub fn jwt(sub: &str, name: Option<&str>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({ "sub": sub, "exp": exp });
    if let Some(name) = name {
        claims["name"] = json!(name);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign test JWT")
}

// ---------------------------------------------------------------------------------------------
// Socket.IO client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub enum Incoming {
    /// A server → client event with its first argument (`Null` when there is none).
    Event(String, Value),
    /// rust_socketio's error channel (connect_error frames, transport errors).
    Error(String),
    /// The server closed this namespace connection.
    Close,
}

pub struct Client {
    pub sio: SioClient,
    rx: mpsc::UnboundedReceiver<Incoming>,
    /// Events received but not yet consumed by `next_event`.
    buffered: VecDeque<Incoming>,
    /// The `session` payload received right after connecting.
    pub session: Value,
}

/// First argument of an event payload.
fn first_arg(payload: Payload) -> Value {
    match payload {
        Payload::Text(mut values) => {
            if values.is_empty() {
                Value::Null
            } else {
                values.swap_remove(0)
            }
        }
        Payload::Binary(b) => json!({ "__binary": b.len() }),
        #[allow(deprecated)]
        Payload::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
    }
}

/// rust_socketio hands an ack over as the raw JSON array of the ack packet (`[arg0, ...]`)
/// parsed into a single value; return `arg0`.
fn ack_arg(payload: Payload) -> Value {
    match first_arg(payload) {
        Value::Array(mut args) => {
            if args.is_empty() {
                Value::Null
            } else {
                args.swap_remove(0)
            }
        }
        other => other,
    }
}

impl Client {
    /// Connects over websocket and waits for `session`. Returns `Err(message)` when the server
    /// answers with a connect error (or nothing usable arrives in time).
    pub async fn connect(base_url: &str, auth: Option<Value>) -> Result<Client, String> {
        Self::connect_with_timeout(base_url, auth, STEP_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        base_url: &str,
        auth: Option<Value>,
        timeout: Duration,
    ) -> Result<Client, String> {
        let (tx, rx) = mpsc::unbounded_channel::<Incoming>();
        let tx_any = tx.clone();
        let tx_err = tx.clone();
        let tx_close = tx;
        let mut builder = ClientBuilder::new(base_url)
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on_any(move |event: Event, payload: Payload, _c: SioClient| {
                let _ = tx_any.send(Incoming::Event(
                    event.as_str().to_string(),
                    first_arg(payload),
                ));
                async {}.boxed()
            })
            .on(Event::Error, move |payload: Payload, _c: SioClient| {
                let msg = match first_arg(payload) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let _ = tx_err.send(Incoming::Error(msg));
                async {}.boxed()
            })
            .on(Event::Close, move |_payload: Payload, _c: SioClient| {
                let _ = tx_close.send(Incoming::Close);
                async {}.boxed()
            });
        if let Some(auth) = auth {
            builder = builder.auth(auth);
        }
        let sio = tokio::time::timeout(timeout, builder.connect())
            .await
            .map_err(|_| "websocket connect timed out".to_string())?
            .map_err(|e| format!("websocket connect failed: {e}"))?;
        let mut client = Client {
            sio,
            rx,
            buffered: VecDeque::new(),
            session: Value::Null,
        };

        // Wait for `session` (the namespace CONNECT is only confirmed by it) or a connect error.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let item = tokio::time::timeout_at(deadline, client.rx.recv())
                .await
                .map_err(|_| "no `session` event within the timeout".to_string())?;
            match item {
                None => return Err("client event channel closed before `session`".into()),
                Some(Incoming::Event(name, payload)) if name == "session" => {
                    client.session = payload;
                    return Ok(client);
                }
                Some(Incoming::Error(msg)) => {
                    let _ = client.sio.disconnect().await;
                    return Err(msg);
                }
                Some(Incoming::Close) => return Err("closed by the server before `session`".into()),
                Some(other) => client.buffered.push_back(other),
            }
        }
    }

    /// Emits `event` with `payload` and an ack callback; returns the ack's first argument.
    /// Panics if no ack arrives within [`STEP_TIMEOUT`].
    pub async fn ack(&self, event: &str, payload: Value) -> Value {
        self.ack_within(event, payload, STEP_TIMEOUT).await
    }

    pub async fn ack_within(&self, event: &str, payload: Value, timeout: Duration) -> Value {
        match self.try_ack(event, payload.clone(), timeout).await {
            Ok(v) => v,
            Err(e) => panic!("{event} {payload}: {e}"),
        }
    }

    pub async fn try_ack(
        &self,
        event: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let (tx, rx) = oneshot::channel::<Value>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        self.sio
            .emit_with_ack(event, payload, timeout, move |p: Payload, _c: SioClient| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(ack_arg(p));
                }
                async {}.boxed()
            })
            .await
            .map_err(|e| format!("emit failed: {e}"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("ack callback dropped".into()),
            Err(_) => Err(format!("no ack within {timeout:?}")),
        }
    }

    /// Emits without an ack callback.
    pub async fn emit(&self, event: &str, payload: Value) {
        self.sio.emit(event, payload).await.expect("emit");
    }

    /// Waits for the next server event named `name` (other events stay buffered).
    pub async fn next_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        if let Some(pos) = self
            .buffered
            .iter()
            .position(|i| matches!(i, Incoming::Event(n, _) if n == name))
            && let Some(Incoming::Event(_, v)) = self.buffered.remove(pos)
        {
            return Some(v);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) | Ok(None) => return None,
                Ok(Some(Incoming::Event(n, v))) if n == name => return Some(v),
                Ok(Some(other)) => self.buffered.push_back(other),
            }
        }
    }

    /// Like `next_event` but panics when nothing arrives.
    pub async fn expect_event(&mut self, name: &str) -> Value {
        match self.next_event(name, STEP_TIMEOUT).await {
            Some(v) => v,
            None => panic!("no `{name}` event within {STEP_TIMEOUT:?}"),
        }
    }

    /// Takes out every `name` event received so far, without waiting for more.
    pub fn discard_received(&mut self, name: &str) -> Vec<Value> {
        while let Ok(item) = self.rx.try_recv() {
            self.buffered.push_back(item);
        }
        let mut out = Vec::new();
        self.buffered.retain(|i| match i {
            Incoming::Event(n, v) if n == name => {
                out.push(v.clone());
                false
            }
            _ => true,
        });
        out
    }

    /// Waits (up to [`STEP_TIMEOUT`]) for the first `name` event matching `want` and takes out that one
    /// event only; everything else stays buffered. Panics when it does not come.
    pub async fn wait_for(
        &mut self,
        name: &str,
        want: impl Fn(&Value) -> bool,
        what: &str,
    ) -> Value {
        self.take_first(name, want, what).await.1
    }

    /// [`Client::wait_for`], also saying where in `buffered` the event was: everything before that
    /// position was received before it.
    async fn take_first(
        &mut self,
        name: &str,
        want: impl Fn(&Value) -> bool,
        what: &str,
    ) -> (usize, Value) {
        let is_it = |i: &Incoming| matches!(i, Incoming::Event(n, v) if n == name && want(v));
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let pos = loop {
            if let Some(pos) = self.buffered.iter().position(is_it) {
                break pos;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Incoming::Close)) | Ok(None) => {
                    panic!("{what}: the connection ended before the `{name}` event")
                }
                Ok(Some(item)) => self.buffered.push_back(item),
                Err(_) => panic!("{what}: no such `{name}` event within {STEP_TIMEOUT:?}"),
            }
        };
        match self.buffered.remove(pos) {
            Some(Incoming::Event(_, v)) => (pos, v),
            _ => unreachable!("position() found an event there"),
        }
    }

    /// Waits for the first `barrier` event matching `is_barrier` and takes it out together with every
    /// `name` event received before it: `(those, in order; the barrier)`. Other events stay buffered.
    pub async fn events_before(
        &mut self,
        name: &str,
        barrier: &str,
        is_barrier: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, Value) {
        let what = format!("waiting for the barrier `{barrier}`");
        let (pos, found) = self.take_first(barrier, is_barrier, &what).await;
        let later = self.buffered.split_off(pos);
        let mut before = Vec::new();
        self.buffered.retain(|i| match i {
            Incoming::Event(n, v) if n == name => {
                before.push(v.clone());
                false
            }
            _ => true,
        });
        self.buffered.extend(later);
        (before, found)
    }

    /// Sends a marker message to `room` (which this client has entered) and returns its text: a
    /// barrier for "nothing arrived" checks (see [`Client::expect_none_before_marker`]).
    pub async fn send_marker(&self, room: &str) -> String {
        let text = format!("{MARKER}{}", uuid::Uuid::new_v4().simple());
        self.send(room, &text).await;
        text
    }

    /// Every `name` event received before the marker message `marker` (other markers left out),
    /// taken out in order; the marker is taken out too.
    pub async fn events_before_marker(&mut self, name: &str, marker: &str) -> Vec<Value> {
        let (before, _) = self
            .events_before(name, "message", |m| m["text"] == json!(marker))
            .await;
        before.into_iter().filter(|v| !is_marker(v)).collect()
    }

    /// "Nothing arrived", checked against a barrier instead of a quiet window: waits for the marker
    /// message `marker` (sent, after the action that must not deliver anything, through the room
    /// the unwanted event would travel) and panics if a `name` event matching `unwanted` came first.
    pub async fn expect_none_before_marker(
        &mut self,
        name: &str,
        unwanted: impl Fn(&Value) -> bool,
        marker: &str,
        context: &str,
    ) {
        let got: Vec<Value> = self
            .events_before_marker(name, marker)
            .await
            .into_iter()
            .filter(|v| unwanted(v))
            .collect();
        assert!(
            got.is_empty(),
            "{context}: expected no `{name}` event before the marker, got {got:?}"
        );
    }

    /// Disconnects this client (a socket of `user_id`) and returns once the server has handled the
    /// disconnect, as `observer` sees it: both first enter a fresh room where this is the user's only
    /// socket, and the user's `leave` notice there is awaited. (A disconnect is handled on its own
    /// schedule; notices it causes in other rooms come from the same handler, so follow this with a
    /// marker through the room watched.)
    pub async fn disconnect_handled(self, user_id: &str, observer: &mut Client) {
        let side = format!("side-{}", uuid::Uuid::new_v4().simple());
        observer.join(&side).await;
        self.join(&side).await;
        self.disconnect().await;
        let left = |n: &Value| {
            n["room"] == json!(side)
                && n["kind"] == json!("leave")
                && n["user"]["id"] == json!(user_id)
        };
        observer
            .wait_for("room:notice", left, &format!("{user_id}'s leave of {side}"))
            .await;
    }

    /// `room:join` that must succeed; returns the ack.
    pub async fn join(&self, room: &str) -> Value {
        let ack = self.ack("room:join", json!({ "room": room })).await;
        assert_eq!(ack["ok"], json!(true), "room:join {room} failed: {ack}");
        ack
    }

    /// `message:send` that must succeed; returns `ack.message`.
    pub async fn send(&self, room: &str, text: &str) -> Value {
        let ack = self
            .ack("message:send", json!({ "room": room, "text": text }))
            .await;
        assert_eq!(
            ack["ok"],
            json!(true),
            "message:send to {room} failed: {ack}"
        );
        ack["message"].clone()
    }

    pub async fn disconnect(self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sio.disconnect()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// Asserts `ack` is `{ ok: false, error: { code, message: <string> } }`.
pub fn assert_error(ack: &Value, code: &str, context: &str) {
    assert_eq!(
        ack["ok"],
        json!(false),
        "{context}: expected an error ack, got {ack}"
    );
    assert_eq!(
        ack["error"]["code"],
        json!(code),
        "{context}: wrong error code in {ack}"
    );
    assert!(
        ack["error"]["message"].is_string(),
        "{context}: error.message must be a string in {ack}"
    );
}

/// Loose RFC 3339 check: `YYYY-MM-DDTHH:MM:SS` then fraction/offset.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains('+') || s[19..].contains('-'))
}

/// Asserts the shape and exact values of a `Message`.
pub fn assert_message(
    msg: &Value,
    room: &str,
    seq: i64,
    from_id: &str,
    from_name: &str,
    text: &str,
) {
    assert!(
        msg["id"].is_string() && !msg["id"].as_str().unwrap().is_empty(),
        "message.id: {msg}"
    );
    assert_eq!(msg["room"], json!(room), "message.room: {msg}");
    assert_eq!(msg["seq"], json!(seq), "message.seq: {msg}");
    assert_eq!(msg["from"]["id"], json!(from_id), "message.from.id: {msg}");
    assert_eq!(
        msg["from"]["name"],
        json!(from_name),
        "message.from.name: {msg}"
    );
    assert_eq!(msg["text"], json!(text), "message.text: {msg}");
    let at = msg["at"]
        .as_str()
        .unwrap_or_else(|| panic!("message.at must be a string: {msg}"));
    assert!(is_rfc3339(at), "message.at is not RFC 3339: {at:?}");
}

// ---------------------------------------------------------------------------------------------
// Scale-out: Redis, nodes as child processes, cluster helpers
// ---------------------------------------------------------------------------------------------

/// URL of the shared Redis the cluster tests use (`PALAVER_TEST_REDIS` overrides it). Tests keep
/// apart from each other by giving every test its own [`redis_prefix`].
pub fn redis_url() -> String {
    std::env::var("PALAVER_TEST_REDIS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}

/// A Redis key/channel prefix private to one test; its keys are deleted from the shared Redis
/// when it is dropped (declare it before the nodes that use it, so it drops after them).
pub struct RedisPrefix {
    pub name: String,
    url: String,
}

impl RedisPrefix {
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for RedisPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        // Best effort: one EVAL that SCANs and DELetes `<prefix>:*`, over a plain blocking socket.
        const SWEEP: &str = "local c = '0' repeat \
            local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000) c = r[1] \
            for _, k in ipairs(r[2]) do redis.call('DEL', k) end until c == '0' return 0";
        let Some(addr) = redis_host_port(&self.url) else {
            return;
        };
        let pattern = format!("{}:*", self.name);
        let args = ["EVAL", SWEEP, "0", pattern.as_str()];
        let mut command = format!("*{}\r\n", args.len());
        for a in args {
            command.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let sweep = || -> std::io::Result<()> {
            use std::io::{Read, Write};
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
                .next()
                .ok_or(std::io::ErrorKind::NotFound)?;
            let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            conn.write_all(command.as_bytes())?;
            let mut reply = [0u8; 64];
            let _ = conn.read(&mut reply)?;
            Ok(())
        };
        let _ = sweep();
    }
}

/// `host:port` of a `redis://[user:pass@]host:port[/db]` URL.
fn redis_host_port(url: &str) -> Option<String> {
    let rest = url.strip_prefix("redis://")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next()?;
    Some(if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:6379")
    })
}

/// A fresh [`RedisPrefix`] (`t-<uuid>`) on the shared Redis of [`redis_url`].
pub fn redis_prefix() -> RedisPrefix {
    RedisPrefix {
        name: format!("t-{}", uuid::Uuid::new_v4().simple()),
        url: redis_url(),
    }
}

/// Runs a whole test body under a deadline, so a stuck step can never hang the suite.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// A TCP port that is free now, chosen below the kernel's ephemeral range (32768+) so that it is
/// not handed out to some unrelated `bind(0)` or outgoing connection while a test restarts the
/// process that owns it.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port: u16 = rand::random_range(20000..32000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

/// GET `base_url` + `path`; (status, JSON body). Panics on timeout or a non-JSON body.
pub async fn http_get_json(base_url: &str, path: &str) -> (u16, Value) {
    let url = format!("{base_url}{path}");
    let resp = tokio::time::timeout(STEP_TIMEOUT, http_client().get(&url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url} timed out"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url} body: {e}"));
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {url} ({status}): body is not JSON ({e}): {body:?}"));
    (status, json)
}

/// Polls `GET /readyz` until it answers `status`; returns (time it took, last body). Panics after
/// `limit` with the last answer.
pub async fn wait_readyz(base_url: &str, status: u16, limit: Duration) -> (Duration, Value) {
    let started = tokio::time::Instant::now();
    loop {
        let (got, body) = http_get_json(base_url, "/readyz").await;
        if got == status {
            return (started.elapsed(), body);
        }
        if started.elapsed() > limit {
            panic!(
                "{base_url}/readyz still answers {got} {body} after {limit:?}, expected {status}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects a signed-in user (HS256 JWT with `sub` and `name`) to the node at `base_url`.
pub async fn connect_user_at(base_url: &str, sub: &str, name: &str) -> Client {
    Client::connect(base_url, Some(json!({ "token": jwt(sub, Some(name)) })))
        .await
        .unwrap_or_else(|e| panic!("connect {sub} to {base_url}: {e}"))
}

impl TestServer {
    /// Starts an in-process node of a cluster: `db` shared with the other nodes, Redis at
    /// `redis_url`, keys and channels under `prefix`.
    pub async fn start_node(db: &TestDb, redis_url: &str, prefix: &str) -> TestServer {
        Self::start(db, &["--redis-url", redis_url, "--redis-prefix", prefix]).await
    }
}

impl Client {
    /// `presence:list` that must succeed; the user ids, sorted.
    pub async fn presence_ids(&self, room: &str) -> Vec<String> {
        let ack = self.ack("presence:list", json!({ "room": room })).await;
        assert_eq!(ack["ok"], json!(true), "presence:list {room}: {ack}");
        user_ids(&ack["users"])
    }

    /// The room's whole history through `history:fetch`, paging forward with `after`.
    pub async fn history_all(&self, room: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut after = 0;
        loop {
            let ack = self
                .ack(
                    "history:fetch",
                    json!({ "room": room, "after": after, "limit": 100 }),
                )
                .await;
            assert_eq!(
                ack["ok"],
                json!(true),
                "history:fetch {room} after {after}: {ack}"
            );
            let page = ack["messages"].as_array().cloned().unwrap_or_default();
            if let Some(last) = page.last() {
                after = last["seq"].as_i64().expect("seq");
            }
            let more = ack["hasMore"] == json!(true);
            let empty = page.is_empty();
            out.extend(page);
            if !more || empty {
                return out;
            }
        }
    }

    /// Waits for the next `message` whose text is `text`, skipping (and dropping) other messages.
    pub async fn expect_message_text(&mut self, text: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event("message", left).await {
                Some(m) if m["text"] == json!(text) => return m,
                Some(m) => skipped.push(m["text"].clone()),
                None => panic!(
                    "no `message` with text {text:?} within {timeout:?} (other messages: {skipped:?})"
                ),
            }
        }
    }
}

/// Marker messages ([`Client::send_marker`]) have texts starting with this.
pub const MARKER: &str = "marker ";

/// True for a marker message.
pub fn is_marker(message: &Value) -> bool {
    message["text"]
        .as_str()
        .is_some_and(|t| t.starts_with(MARKER))
}

/// The `id`s of a `User[]` JSON array, sorted.
pub fn user_ids(users: &Value) -> Vec<String> {
    let mut ids: Vec<String> = users
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of users, got {users}"))
        .iter()
        .map(|u| {
            u["id"]
                .as_str()
                .unwrap_or_else(|| panic!("user without id: {u}"))
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

/// Sorted owned ids, for comparing with [`user_ids`].
pub fn ids(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A `redis-server` of the test's own, as a child process on a port of its own, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server --port P --save "" --appendonly no` on a free port and waits for PING.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("redis log file");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "redis-server on port {} exited with {status}: {}",
                    self.port,
                    self.log()
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "redis-server on port {} did not answer PING within 10s: {}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            conn.write_all(b"PING\r\n").await?;
            let mut buf = [0u8; 16];
            let n = conn.read(&mut buf).await?;
            Ok::<bool, std::io::Error>(buf[..n].starts_with(b"+PONG"))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Ok(true))
        )
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The built `palaver` binary running as a child process, killed (SIGKILL) on drop. Its output
/// goes to a log file, printed when the test panics.
pub struct NodeProcess {
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    child: Option<std::process::Child>,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Spawns `palaver --listen 127.0.0.1:<free port> --database-url <db> --jwt-secret test-secret
    /// <extra_args>` with a clean environment and waits until `/healthz` answers.
    pub async fn spawn(db: &TestDb, extra_args: &[&str]) -> NodeProcess {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_spawn(db, extra_args).await {
                Ok(node) => return node,
                // Most likely the port was taken between the check and the bind: try another.
                Err(e) => last_error = e,
            }
        }
        panic!("palaver did not start: {last_error}");
    }

    async fn try_spawn(db: &TestDb, extra_args: &[&str]) -> Result<NodeProcess, String> {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("palaver.log");
        let log = std::fs::File::create(&log_path).expect("node log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_palaver"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &db.url])
            .args(["--jwt-secret", JWT_SECRET])
            .args(["--static-dir", &dir.path().display().to_string()])
            .args(extra_args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", env!("CARGO_BIN_EXE_palaver")))?;
        let mut node = NodeProcess {
            port,
            base_url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
            log_path,
            _dir: dir,
        };
        let http = http_client();
        let url = format!("{}/healthz", node.base_url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                node.child = None;
                return Err(format!("exited with {status}:\n{}", node.log()));
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status() == 200
            {
                return Ok(node);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no 200 from {url} within 30s:\n{}", node.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL (`Child::kill` on Unix), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- last lines of palaver at {} ----\n{}",
                self.base_url,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
