//! The Postgres backend, for production and for several nodes sharing one database.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::batch::Batcher;
use super::{
    Appended, Author, HistoryPage, HistoryQuery, Message, MessageRow, NewMessage, Room, RoomRow,
    RoomSummary, Store, StoreResult, SummaryRow,
};

pub struct PostgresStore {
    writer: PgPool,
    pool: PgPool,
    batcher: Batcher,
}

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
        let batch_pool = pool.clone();
        let batcher = Batcher::spawn(move |batch| {
            let pool = batch_pool.clone();
            async move { Self::commit_batch(&pool, batch).await }
        });
        Ok(Self {
            writer: pool.clone(),
            pool,
            batcher,
        })
    }
}

use super::sql::select_messages;
// Postgres locks the batch's room rows (in the ORDER BY's order); SQLite has one writer, whose transaction is the lock.
super::sql::sql_store!(PostgresStore, sqlx::Postgres, lock_rows: " FOR UPDATE");
