//! Group commit: every append of a node goes to one writer task, which commits whatever has queued up
//! meanwhile in one transaction. Under load many messages share one commit (and one fsync); when idle a
//! message commits alone, at once.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{Appended, NewMessage, StoreError, StoreResult};

/// Most messages one transaction commits.
pub const MAX_BATCH: usize = 512;
/// Appends that may wait for the writer before senders are slowed down.
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

/// The queue in front of a store's writer task.
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the writer task; `commit` must answer every `Pending` of the batch it is given.
    ///
    /// One writer per node: a second one, gathering while the first commits, measured no faster on Postgres
    /// (BENCHMARKS.md, durable throughput), because the node's CPU, not the database, is the bound.
    pub fn spawn<F, Fut>(commit: F) -> Self
    where
        F: Fn(Vec<Pending>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (queue, mut inbox) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
                commit(std::mem::take(&mut batch)).await;
            }
        });
        Self { queue }
    }

    /// Queues the message and waits until it is committed (or refused).
    pub async fn append(&self, ns: &str, message: NewMessage) -> StoreResult<Appended> {
        let (reply, committed) = oneshot::channel();
        let pending = Pending {
            ns: ns.to_owned(),
            message,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::Failed {
                unavailable: true,
                reason: "the message writer has stopped".to_owned(),
            })?;
        committed.await.map_err(|_| StoreError::Failed {
            unavailable: true,
            reason: "the message writer stopped before answering".to_owned(),
        })?
    }
}
