//! The SQL both backends run, written once: the placeholders (`$1`…) and every statement are valid in Postgres
//! and in SQLite, so each backend module only opens its pools and applies its migrations.
//!
//! A backend is a struct with a `writer` pool (every write) and a `pool` (reads); `sql_store!` implements
//! [`Store`](super::Store) for it.

/// `SELECT <every message column> FROM messages `, as a literal for `concat!`.
macro_rules! select_messages {
    () => {
        "SELECT id, room, seq, sender_id, sender_name, text, client_id, created_at FROM messages "
    };
}

macro_rules! sql_store {
    ($store:ty, $db:ty, lock_rows: $lock_rows:literal) => {
        impl $store {
            /// Commits a batch of appends in one transaction and answers each of them.
            async fn commit_batch(pool: &sqlx::Pool<$db>, batch: Vec<super::batch::Pending>) {
                match Self::write_batch(pool, &batch).await {
                    Ok(results) => {
                        for (pending, result) in batch.into_iter().zip(results) {
                            pending.answer(result);
                        }
                    }
                    Err(e) => {
                        let unavailable = matches!(e, super::StoreError::Unavailable(_));
                        tracing::warn!(error = %e, messages = batch.len(), "message batch failed");
                        for pending in batch {
                            pending.answer(Err(super::StoreError::Failed {
                                unavailable,
                                reason: e.to_string(),
                            }));
                        }
                    }
                }
            }

            /// One transaction for the whole batch, in a fixed number of statements however many rooms it
            /// touches: lock the rooms' counters, read the originals of any retried client ids, bump the
            /// counters, insert the messages. Rooms are locked in (ns, id) order, so writers on several nodes
            /// cannot deadlock; a room's lock is taken before its client ids are checked, so a retry racing on
            /// another node cannot slip in between.
            async fn write_batch(
                pool: &sqlx::Pool<$db>,
                batch: &[super::batch::Pending],
            ) -> StoreResult<Vec<StoreResult<Appended>>> {
                use std::collections::{BTreeMap, HashMap};

                let at = super::now();
                /// What became of one append of the batch.
                enum Outcome {
                    Unwritten,
                    Done(StoreResult<Appended>),
                    /// A retry queued in the same batch as its original (at this index).
                    SameAs(usize),
                }
                let mut results: Vec<Outcome> = batch.iter().map(|_| Outcome::Unwritten).collect();
                let mut by_room: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
                for (i, pending) in batch.iter().enumerate() {
                    by_room
                        .entry((pending.ns.as_str(), pending.message.room.as_str()))
                        .or_default()
                        .push(i);
                }
                let mut tx = pool.begin().await?;

                let mut lock = sqlx::QueryBuilder::<$db>::new(
                    "SELECT ns, id, last_seq FROM rooms WHERE (ns, id) IN (VALUES ",
                );
                let mut list = lock.separated(", ");
                for (ns, room) in by_room.keys() {
                    list.push("(").push_bind_unseparated(*ns).push_unseparated(", ");
                    list.push_bind_unseparated(*room).push_unseparated(")");
                }
                lock.push(") ORDER BY ns, id").push($lock_rows);
                let counters: HashMap<(String, String), i64> = lock
                    .build_query_as::<(String, String, i64)>()
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|(ns, room, last)| ((ns, room), last))
                    .collect();

                // Messages already stored under this batch's client ids (the originals of retries), read under
                // the room locks, by (ns, room, sender, client id).
                let mut originals: HashMap<(String, String, String, String), MessageRow> = HashMap::new();
                let with_client_id: Vec<&super::batch::Pending> = batch
                    .iter()
                    .filter(|p| p.message.client_id.is_some())
                    .collect();
                if !with_client_id.is_empty() {
                    let mut select = sqlx::QueryBuilder::<$db>::new(
                        "SELECT ns, id, room, seq, sender_id, sender_name, text, client_id, created_at FROM messages \
                         WHERE client_id IS NOT NULL AND (ns, room, sender_id, client_id) IN (VALUES ",
                    );
                    let mut list = select.separated(", ");
                    for p in &with_client_id {
                        list.push("(").push_bind_unseparated(p.ns.as_str()).push_unseparated(", ");
                        list.push_bind_unseparated(p.message.room.as_str()).push_unseparated(", ");
                        list.push_bind_unseparated(p.message.from.id.as_str()).push_unseparated(", ");
                        list.push_bind_unseparated(p.message.client_id.as_deref()).push_unseparated(")");
                    }
                    select.push(")");
                    for row in select.build().fetch_all(&mut *tx).await? {
                        use sqlx::{FromRow, Row};
                        let ns: String = row.try_get("ns")?;
                        let row = MessageRow::from_row(&row)?;
                        let key = (ns, row.room.clone(), row.sender_id.clone(), row.client_id.clone().unwrap_or_default());
                        originals.insert(key, row);
                    }
                }

                // (index in batch, seq) of every message to insert, and the new counter of each room.
                let mut fresh: Vec<(usize, i64)> = Vec::with_capacity(batch.len());
                let mut bumped: Vec<(&str, &str, i64)> = Vec::with_capacity(by_room.len());
                for ((ns, room), indexes) in &by_room {
                    let Some(&last) = counters.get(&((*ns).to_owned(), (*room).to_owned())) else {
                        for &i in indexes {
                            results[i] = Outcome::Done(Err(super::StoreError::NoSuchRoom((*room).to_owned())));
                        }
                        continue;
                    };
                    let mut seq = last;
                    // Client ids already used in this batch: a retry queued next to its original.
                    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
                    for &i in indexes {
                        let message = &batch[i].message;
                        if let Some(client_id) = message.client_id.as_deref() {
                            let key = (message.from.id.as_str(), client_id);
                            if let Some(&first) = seen.get(&key) {
                                results[i] = Outcome::SameAs(first);
                                continue;
                            }
                            seen.insert(key, i);
                            let original = if originals.is_empty() {
                                None
                            } else {
                                let stored = ((*ns).to_owned(), (*room).to_owned(), key.0.to_owned(), key.1.to_owned());
                                originals.remove(&stored)
                            };
                            if let Some(original) = original {
                                results[i] = Outcome::Done(Ok(Appended {
                                    message: original.into(),
                                    duplicate: true,
                                }));
                                continue;
                            }
                        }
                        seq += 1;
                        fresh.push((i, seq));
                    }
                    if seq > last {
                        bumped.push((*ns, *room, seq));
                    }
                }
                if !bumped.is_empty() {
                    let mut update = sqlx::QueryBuilder::<$db>::new("UPDATE rooms SET last_seq = v.column3, last_active_at = ");
                    update.push_bind(at).push(" FROM (VALUES ");
                    let mut list = update.separated(", ");
                    for &(ns, room, seq) in &bumped {
                        list.push("(").push_bind_unseparated(ns).push_unseparated(", ");
                        list.push_bind_unseparated(room).push_unseparated(", ");
                        list.push_bind_unseparated(seq).push_unseparated(")");
                    }
                    update.push(") AS v WHERE rooms.ns = v.column1 AND rooms.id = v.column2");
                    update.build().execute(&mut *tx).await?;
                }
                let mut ids: HashMap<(String, String, i64), i64> = HashMap::with_capacity(fresh.len());
                if !fresh.is_empty() {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, client_id, created_at) ",
                    );
                    insert.push_values(&fresh, |mut row, &(i, seq)| {
                        let pending = &batch[i];
                        row.push_bind(pending.ns.clone())
                            .push_bind(pending.message.room.clone())
                            .push_bind(seq)
                            .push_bind(pending.message.from.id.clone())
                            .push_bind(pending.message.from.name.clone())
                            .push_bind(pending.message.text.clone())
                            .push_bind(pending.message.client_id.clone())
                            .push_bind(at);
                    });
                    insert.push(" RETURNING id, ns, room, seq");
                    let rows: Vec<(i64, String, String, i64)> =
                        insert.build_query_as().fetch_all(&mut *tx).await?;
                    ids.extend(rows.into_iter().map(|(id, ns, room, seq)| ((ns, room, seq), id)));
                }
                tx.commit().await?;

                for &(i, seq) in &fresh {
                    let pending = &batch[i];
                    let key = (pending.ns.clone(), pending.message.room.clone(), seq);
                    let id = ids.get(&key).copied().unwrap_or_default();
                    results[i] = Outcome::Done(Ok(Appended {
                        message: Message {
                            id: id.to_string(),
                            room: pending.message.room.clone(),
                            seq,
                            from: pending.message.from.clone(),
                            text: pending.message.text.clone(),
                            client_id: pending.message.client_id.clone(),
                            at,
                        },
                        duplicate: false,
                    }));
                }
                let answers: Vec<StoreResult<Appended>> = results
                    .iter()
                    .map(|outcome| match outcome {
                        Outcome::Done(Ok(appended)) => Ok(appended.clone()),
                        Outcome::SameAs(first) => match &results[*first] {
                            Outcome::Done(Ok(original)) => Ok(Appended {
                                message: original.message.clone(),
                                duplicate: true,
                            }),
                            _ => Err(super::StoreError::NoSuchRoom(String::new())),
                        },
                        Outcome::Done(Err(super::StoreError::NoSuchRoom(room))) => {
                            Err(super::StoreError::NoSuchRoom(room.clone()))
                        }
                        Outcome::Done(Err(_)) | Outcome::Unwritten => Err(super::StoreError::Failed {
                            unavailable: false,
                            reason: "message was not written".to_owned(),
                        }),
                    })
                    .collect();
                Ok(answers)
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn room(&self, ns: &str, room: &str) -> StoreResult<Option<Room>> {
                let row: Option<RoomRow> = sqlx::query_as(
                    "SELECT id, name, kind, visibility, created_at FROM rooms WHERE ns = $1 AND id = $2",
                )
                .bind(ns)
                .bind(room)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Room::from))
            }

            async fn create_room(&self, ns: &str, room: &Room, creator: &Author, invited: &[Author]) -> StoreResult<bool> {
                let _ = (ns, room, creator, invited);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn create_dm(&self, ns: &str, room: &Room, users: [&Author; 2]) -> StoreResult<bool> {
                let _ = (ns, room, users);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn rooms_created_since(&self, ns: &str, creator: &str, since: chrono::DateTime<chrono::Utc>) -> StoreResult<i64> {
                let _ = (ns, creator, since);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn invite(&self, ns: &str, room: &str, by: &Author, users: &[Author]) -> StoreResult<Vec<String>> {
                let _ = (ns, room, by, users);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn decline(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
                let _ = (ns, room, user_id);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn is_invited(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
                let _ = (ns, room, user_id);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn user_rooms(&self, ns: &str, user_id: &str, limit: usize) -> StoreResult<Vec<RoomSummary>> {
                let _ = (ns, user_id, limit);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }
            async fn invitations(&self, ns: &str, user_id: &str) -> StoreResult<Vec<super::Invitation>> {
                let _ = (ns, user_id);
                Err(super::StoreError::Failed { unavailable: false, reason: "todo".into() })
            }

            async fn ensure_room(&self, ns: &str, room: &Room, creator: &str) -> StoreResult<(Room, bool)> {
                let _ = creator;
                sqlx::query(
                    "INSERT INTO rooms (ns, id, name, kind, visibility, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(ns)
                .bind(&room.id)
                .bind(&room.name)
                .bind(room.kind.as_str())
                .bind(room.visibility.as_str())
                .bind(room.created_at)
                .execute(&self.writer)
                .await?;
                let row: RoomRow = sqlx::query_as(
                    "SELECT id, name, kind, visibility, created_at FROM rooms WHERE ns = $1 AND id = $2",
                )
                .bind(ns)
                .bind(&room.id)
                .fetch_one(&self.writer)
                .await?;
                Ok((row.into(), false))
            }

            async fn add_member(&self, ns: &str, room: &str, user: &Author) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO memberships (ns, room, user_id, user_name, joined_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (ns, room, user_id) DO UPDATE SET user_name = EXCLUDED.user_name",
                )
                .bind(ns)
                .bind(room)
                .bind(&user.id)
                .bind(&user.name)
                .bind(super::now())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn remove_member(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
                let removed =
                    sqlx::query("DELETE FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3")
                        .bind(ns)
                        .bind(room)
                        .bind(user_id)
                        .execute(&self.writer)
                        .await?
                        .rows_affected();
                Ok(removed > 0)
            }

            async fn is_member(&self, ns: &str, room: &str, user_id: &str) -> StoreResult<bool> {
                let found: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM memberships WHERE ns = $1 AND room = $2 AND user_id = $3",
                )
                .bind(ns)
                .bind(room)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(found.is_some())
            }

            async fn list_rooms(
                &self,
                ns: &str,
                user_id: &str,
                with_public: bool,
            ) -> StoreResult<Vec<RoomSummary>> {
                let rows: Vec<SummaryRow> = sqlx::query_as(
                    "SELECT r.id, r.name, r.kind, r.visibility, r.created_at, r.last_seq, \
                            (m.user_id IS NOT NULL) AS member, p.user_id AS peer_id, p.user_name AS peer_name \
                     FROM rooms r \
                     LEFT JOIN memberships m ON m.ns = r.ns AND m.room = r.id AND m.user_id = $2 \
                     LEFT JOIN memberships p ON r.kind = 'dm' AND p.ns = r.ns AND p.room = r.id AND p.user_id <> $2 \
                     WHERE r.ns = $1 AND (m.user_id IS NOT NULL OR ($4 AND r.visibility = 'public')) \
                     ORDER BY COALESCE(r.last_active_at, r.created_at) DESC, r.id LIMIT $3",
                )
                .bind(ns)
                .bind(user_id)
                .bind(super::MAX_LISTED_ROOMS)
                .bind(with_public)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(RoomSummary::from).collect())
            }

            async fn append_message(&self, ns: &str, new: NewMessage) -> StoreResult<Appended> {
                self.batcher.append(ns, new).await
            }

            async fn next_seq(&self, ns: &str, room: &str) -> StoreResult<i64> {
                let seq = sqlx::query_scalar(
                    "UPDATE rooms SET last_seq = last_seq + 1 WHERE ns = $1 AND id = $2 RETURNING last_seq",
                )
                .bind(ns)
                .bind(room)
                .fetch_one(&self.writer)
                .await?;
                Ok(seq)
            }

            async fn history(&self, ns: &str, room: &str, query: HistoryQuery) -> StoreResult<HistoryPage> {
                // Two static statements: sqlx only runs SQL known at compile time.
                let sql = if query.ascending() {
                    concat!(
                        select_messages!(),
                        "WHERE ns = $1 AND room = $2 AND seq < $3 AND seq > $4 ORDER BY seq ASC LIMIT $5"
                    )
                } else {
                    concat!(
                        select_messages!(),
                        "WHERE ns = $1 AND room = $2 AND seq < $3 AND seq > $4 ORDER BY seq DESC LIMIT $5"
                    )
                };
                let rows: Vec<MessageRow> = sqlx::query_as(sql)
                .bind(ns)
                .bind(room)
                .bind(query.before.unwrap_or(i64::MAX))
                .bind(query.after.unwrap_or(0))
                .bind(i64::from(query.limit) + 1)
                .fetch_all(&self.pool)
                .await?;
                let messages = rows.into_iter().map(Message::from).collect();
                Ok(HistoryPage::from_rows(messages, &query))
            }
        }
    };
}

pub(crate) use select_messages;
pub(crate) use sql_store;
