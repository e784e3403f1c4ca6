//! The SQLite backend: an embedded file, the zero-setup default for one node.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::SqlStore;
use super::{Migrations, StoreResult};

pub type SqliteStore = SqlStore<sqlx::Sqlite>;

impl SqliteStore {
    pub async fn open(url: &str, pool_size: u32) -> StoreResult<Self> {
        Ok(Self::open_with(url, pool_size, Migrations::Apply).await?.0)
    }

    /// Opens the file, migrating it as `migrations` says: the store and the migrations applied.
    pub async fn open_with(
        url: &str,
        pool_size: u32,
        migrations: Migrations,
    ) -> StoreResult<(Self, Vec<String>)> {
        // WAL lets readers work while a write commits. With WAL, synchronous=NORMAL makes a commit durable
        // against a crash of the process (SIGKILL included) without an fsync per commit; only an OS crash or
        // power loss can take back the last commits. Deployments that need that too run on Postgres.
        let options: SqliteConnectOptions = url
            .parse::<SqliteConnectOptions>()?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // SQLite has one writer at a time: a single-connection writer pool queues writers in palaver instead of
        // letting them collide on the file lock (SQLITE_BUSY). The wait is a queue, not a sign of an outage, so
        // it may be long.
        let writer = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        let applied =
            super::migrate(&sqlx::migrate!("./migrations/sqlite"), &writer, migrations).await?;
        // Readers are opened once, at start-up, and kept: a file handle opened later could fail when the process
        // is near its descriptor limit with thousands of sockets open.
        let readers = pool_size.clamp(1, 8);
        let pool = SqlitePoolOptions::new()
            .min_connections(readers)
            .max_connections(readers)
            .idle_timeout(None)
            .max_lifetime(None)
            // An embedded file has no outage to detect: waiting here only means the node is busy (a connect
            // storm queues thousands of history reads), and a late answer beats a false `unavailable`.
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        // One message writer: the file has one write connection, so a second writer would only take turns on it.
        Ok((Self::new(writer, pool, 1), applied))
    }
}
