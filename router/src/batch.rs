//! Group commit: callers submit one item each and wait for its result; a background task runs
//! whatever accumulated as one statement. Under load one round trip carries hundreds of
//! messages; when idle a batch is a single item and adds no delay (nothing waits for a timer).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

type Reply<R> = oneshot::Sender<Result<R, String>>;

/// A handle to submit items; cloning shares the one background task.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the background task. `run` gets a batch of at most `max_batch` items and returns
    /// one result per item, in order; at most `concurrency` batches run at once (each holds a
    /// database connection). The task ends when every handle is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, concurrency: usize, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, String>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<(T, Reply<R>)>(max_batch * concurrency.max(1) * 4);
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let run = Arc::new(run);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(max_batch);
            // Waiting for a free slot is what lets a batch grow while the others are running.
            while let Ok(slot) = slots.clone().acquire_owned().await {
                if rx.recv_many(&mut buf, max_batch).await == 0 {
                    return;
                }
                let (items, replies): (Vec<T>, Vec<Reply<R>>) = buf.drain(..).unzip();
                let run = run.clone();
                tokio::spawn(async move {
                    let n = items.len();
                    match run(items).await {
                        Ok(results) if results.len() == n => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Ok(results) => {
                            let e = format!("batch of {n} returned {} results", results.len());
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(slot);
                });
            }
        });
        Batcher { tx }
    }

    /// Submits one item and waits for its result.
    pub async fn submit(&self, item: T) -> Result<R, String> {
        let (reply, result) = oneshot::channel();
        self.tx
            .send((item, reply))
            .await
            .map_err(|_| "the batch writer has stopped".to_string())?;
        result
            .await
            .map_err(|_| "the batch writer dropped the item".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[tokio::test]
    async fn results_return_to_their_callers_and_batches_grow_under_load() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b = Batcher::spawn(64, 1, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                // A slow statement: submissions pile up meanwhile.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
        let results = futures::future::join_all((0..200u32).map(|i| {
            let b = b.clone();
            async move { (i, b.submit(i).await) }
        }))
        .await;
        for (i, r) in results {
            assert_eq!(r, Ok(i * 10));
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.iter().all(|&n| n <= 64), "{sizes:?}");
        assert!(sizes.len() < 20, "200 items took {} batches", sizes.len());
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_items() {
        let b = Batcher::spawn(8, 2, |_items: Vec<u32>| async {
            Err::<Vec<u32>, _>("database down".to_string())
        });
        assert_eq!(b.submit(1).await, Err("database down".to_string()));
    }
}
