//! Group commit: every write of one kind on a node (appends; read positions) goes to a writer task, which commits
//! whatever has queued up meanwhile in one transaction. Under load many writes share one commit (and one fsync);
//! when idle a write commits alone, at once. On Postgres the appends have several writers, each room's always the
//! same one (`SqlStore::batcher_for`).

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Appended, NewMessage, StoreError, StoreResult};

/// Most writes one transaction commits.
pub const MAX_BATCH: usize = 512;
/// Writes that may wait for the writer before their callers are slowed down.
const QUEUE: usize = 16 * 1024;

/// One append waiting for its commit.
pub struct Pending {
    pub ns: String,
    pub message: NewMessage,
    pub reply: oneshot::Sender<StoreResult<Appended>>,
}

impl Pending {
    pub fn answer(self, result: StoreResult<Appended>) {
        // The sender may have gone away (disconnected); its message is committed all the same.
        let _ = self.reply.send(result);
    }
}

/// The queue in front of one writer task, for writes of type `P` (each carrying the sender of its answer).
pub struct Batcher<P> {
    queue: mpsc::Sender<P>,
}

impl<P: Send + 'static> Batcher<P> {
    /// Starts the writer task; `commit` must answer every write of the batch it is given.
    ///
    /// A second writer taking from the same queue measured no faster (BENCHMARKS.md §2): its batches wait on the
    /// rooms the first one holds. Message writers with rooms of their own do overlap (§10,
    /// `store::DEFAULT_MESSAGE_WRITERS`).
    pub fn spawn<F, Fut>(commit: F) -> Self
    where
        F: Fn(Vec<P>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        Self::spawn_gathering(Duration::ZERO, commit)
    }

    /// Like [`Batcher::spawn`], but a batch is committed `gather` after its first write arrived (or once full),
    /// so that writes nobody waits on urgently share a commit even when they trickle in: read positions, which
    /// at one commit each came to a commit per `room:read` (BENCHMARKS.md §10).
    pub fn spawn_gathering<F, Fut>(gather: Duration, commit: F) -> Self
    where
        F: Fn(Vec<P>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (queue, mut inbox) = mpsc::channel::<P>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
                if !gather.is_zero() {
                    let deadline = Instant::now() + gather;
                    while batch.len() < MAX_BATCH {
                        let space = MAX_BATCH - batch.len();
                        match tokio::time::timeout_at(deadline, inbox.recv_many(&mut batch, space))
                            .await
                        {
                            // Closed: commit what is here, and the outer loop ends.
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                commit(std::mem::take(&mut batch)).await;
            }
        });
        Self { queue }
    }

    /// Queues the write that `pending` makes of the answer's sender, and waits until it is committed (or
    /// refused).
    pub async fn submit<T>(
        &self,
        pending: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> P,
    ) -> StoreResult<T> {
        let (reply, committed) = oneshot::channel();
        self.queue
            .send(pending(reply))
            .await
            .map_err(|_| StoreError::Failed {
                unavailable: true,
                reason: "the writer has stopped".to_owned(),
            })?;
        committed.await.map_err(|_| StoreError::Failed {
            unavailable: true,
            reason: "the writer stopped before answering".to_owned(),
        })?
    }
}

impl Batcher<Pending> {
    /// Queues the message and waits until it is committed (or refused).
    pub async fn append(&self, ns: &str, message: NewMessage) -> StoreResult<Appended> {
        self.submit(|reply| Pending {
            ns: ns.to_owned(),
            message,
            reply,
        })
        .await
    }
}
