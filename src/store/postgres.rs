//! The Postgres backend, for production and for several nodes sharing one database.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreResult;
use super::sql::SqlStore;

pub type PostgresStore = SqlStore<sqlx::Postgres>;

impl PostgresStore {
    pub async fn open(url: &str, pool_size: u32) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            // A send must fail fast with `unavailable` rather than hang while the database is down.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // Reads and writes share the pool: Postgres serves concurrent writers itself.
        Ok(Self::new(pool.clone(), pool))
    }
}
