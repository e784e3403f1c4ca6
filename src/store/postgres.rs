//! The Postgres backend, for production and for several nodes sharing one database.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::sql::SqlStore;
use super::{Migrations, StoreResult};

pub type PostgresStore = SqlStore<sqlx::Postgres>;

impl PostgresStore {
    pub async fn open(url: &str, pool_size: u32) -> StoreResult<Self> {
        let writers = super::DEFAULT_MESSAGE_WRITERS;
        Ok(Self::open_with(url, pool_size, writers, Migrations::Apply)
            .await?
            .0)
    }

    /// Connects, migrating the database as `migrations` says: the store and the migrations applied.
    pub async fn open_with(
        url: &str,
        pool_size: u32,
        message_writers: usize,
        migrations: Migrations,
    ) -> StoreResult<(Self, Vec<String>)> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A send must fail fast with `unavailable` rather than hang while the database is down.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        let applied =
            super::migrate(&sqlx::migrate!("./migrations/postgres"), &pool, migrations).await?;
        // Reads and writes share the pool: Postgres serves concurrent writers itself, the message writers too.
        Ok((Self::new(pool.clone(), pool, message_writers), applied))
    }
}
