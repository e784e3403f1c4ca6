//! Blocks between users: the store's side of `chat::blocks` (the table: `migrations/*/0008_moderation.sql`). A
//! block is one row (blocker, blocked) per namespace; every question about it is a primary-key lookup.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};

use super::StoreResult;
use super::sql::{Backend, SqlStore};

/// Blocks. Part of [`super::Store`].
#[async_trait]
pub trait Blocks {
    /// `blocker` blocks `blocked`; `false` if it already did.
    async fn block(&self, ns: &str, blocker: &str, blocked: &str) -> StoreResult<bool>;

    /// Ends a block; `false` if there was none.
    async fn unblock(&self, ns: &str, blocker: &str, blocked: &str) -> StoreResult<bool>;

    /// Those of `users` who blocked `user`.
    async fn blocked_by(&self, ns: &str, user: &str, users: &[String]) -> StoreResult<Vec<String>>;

    /// Whether one of the two users blocked the other: the blocker (`a` if both did).
    async fn blocker_between(&self, ns: &str, a: &str, b: &str) -> StoreResult<Option<String>>;

    /// For a DM room: whether `user` or the room's other user blocked the other: the blocker (`user` if both
    /// did).
    async fn dm_blocker(&self, ns: &str, room: &str, user: &str) -> StoreResult<Option<String>>;
}

#[async_trait]
impl<DB> Blocks for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    DateTime<Utc>: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %blocker, %blocked))]
    async fn block(&self, ns: &str, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO user_blocks (ns, blocker_id, blocked_id, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(ns)
        .bind(blocker)
        .bind(blocked)
        .bind(super::now())
        .execute(self.writer())
        .await?;
        Ok(DB::rows_affected(&inserted) == 1)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %blocker, %blocked))]
    async fn unblock(&self, ns: &str, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let removed = sqlx::query(
            "DELETE FROM user_blocks WHERE ns = $1 AND blocker_id = $2 AND blocked_id = $3",
        )
        .bind(ns)
        .bind(blocker)
        .bind(blocked)
        .execute(self.writer())
        .await?;
        Ok(DB::rows_affected(&removed) > 0)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %user, users = users.len()))]
    async fn blocked_by(&self, ns: &str, user: &str, users: &[String]) -> StoreResult<Vec<String>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut select =
            sqlx::QueryBuilder::<DB>::new("SELECT blocker_id FROM user_blocks WHERE ns = ");
        select
            .push_bind(ns)
            .push(" AND blocked_id = ")
            .push_bind(user);
        select.push(" AND blocker_id IN (");
        let mut list = select.separated(", ");
        for id in users {
            list.push_bind(id.as_str());
        }
        select.push(")");
        let rows: Vec<(String,)> = select.build_query_as().fetch_all(self.reader()).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %a, %b))]
    async fn blocker_between(&self, ns: &str, a: &str, b: &str) -> StoreResult<Option<String>> {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT blocker_id FROM user_blocks WHERE ns = $1 \
                 AND ((blocker_id = $2 AND blocked_id = $3) OR (blocker_id = $3 AND blocked_id = $2)) \
             ORDER BY blocker_id = $2 DESC LIMIT 1",
        )
        .bind(ns)
        .bind(a)
        .bind(b)
        .fetch_optional(self.reader())
        .await?;
        Ok(found.map(|(id,)| id))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%ns, %room, %user))]
    async fn dm_blocker(&self, ns: &str, room: &str, user: &str) -> StoreResult<Option<String>> {
        // The DM's other member `p`, and a block in either direction (primary-key lookups all along).
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT b.blocker_id FROM rooms r \
             JOIN memberships p ON p.ns = r.ns AND p.room = r.id AND p.user_id <> $3 \
             JOIN user_blocks b ON b.ns = p.ns \
                 AND ((b.blocker_id = $3 AND b.blocked_id = p.user_id) \
                   OR (b.blocker_id = p.user_id AND b.blocked_id = $3)) \
             WHERE r.ns = $1 AND r.id = $2 AND r.kind = 'dm' \
             ORDER BY b.blocker_id = $3 DESC LIMIT 1",
        )
        .bind(ns)
        .bind(room)
        .bind(user)
        .fetch_optional(self.reader())
        .await?;
        Ok(found.map(|(id,)| id))
    }
}
