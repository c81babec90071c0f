//! Group commit: the write side of [`super::SqliteStore`]. A write is
//! queued; its commit, when first polled, steps aside once (ready branches
//! of the same flow queue theirs), then whoever finds the write connection
//! free commits everything queued in one transaction and acknowledges each.
//! A commit whose write went out with someone else's meanwhile does not
//! lead: so concurrent sequential chains (branches, runs) share commits.

use super::{blocking, busy, classify, damage_marker};
use crate::store::{Commit, StoreError};
use rusqlite::{Connection, ErrorCode, Transaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

pub(super) type Job = Box<dyn FnOnce(&Transaction) -> rusqlite::Result<()> + Send>;

pub(super) struct Req {
    job: Job,
    ack: oneshot::Sender<Result<(), StoreError>>,
}

/// The write side: queued writes and the connection that commits them.
/// Shared with pending commits, which lead when first polled.
pub(super) struct Writes {
    path: PathBuf,
    queue: Mutex<Vec<Req>>,
    writer: Mutex<Connection>,
    /// Write transactions begun so far (see [`super::SqliteStore::transactions`]).
    pub(super) transactions: AtomicU64,
    /// Set once SQLite reports the file corrupt: from then on nothing is
    /// written to it (a write could spread the damage).
    pub(super) corrupt: std::sync::OnceLock<StoreError>,
}

impl Writes {
    pub(super) fn new(path: &Path, writer: Connection) -> Writes {
        Writes {
            path: path.to_path_buf(),
            queue: Mutex::new(Vec::new()),
            writer: Mutex::new(writer),
            transactions: AtomicU64::new(0),
            corrupt: std::sync::OnceLock::new(),
        }
    }

    /// Queues a write; the returned commit resolves once it is on disk.
    /// When first polled, the commit steps aside once (the branches of the
    /// same flow that are ready run meanwhile and queue their writes), then
    /// leads: so the steps of one `parallel`/`map` share one transaction,
    /// and a lone step pays one yield, not a hand-off to another thread.
    pub(super) fn submit(self: &Arc<Self>, job: Job) -> Commit {
        if let Some(e) = self.corrupt.get() {
            let e = e.clone();
            return Box::pin(async move { Err(e) });
        }
        let (ack, mut done) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Req { job, ack });
        // Dropped before it led (its run cancelled meanwhile), the commit
        // still leads: a write once submitted is written, waited for or not.
        let mut lead = LeadOnDrop(Some(self.clone()));
        Box::pin(async move {
            YieldOnce(false).await;
            let writes = lead.0.take();
            // Committed meanwhile by another leader: the writes queued since
            // are their own commits' to lead, after those have stepped aside
            // in turn. Leading them here would commit each sequential chain's
            // next write alone, one transaction per step.
            if let Ok(r) = done.try_recv() {
                return r;
            }
            if let Some(writes) = writes {
                writes.lead();
            }
            done.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Commits queued writes if no one else is: see the module doc. After
    /// letting go of the connection it looks at the queue again, so a write
    /// queued while it held the connection is never stranded.
    pub(super) fn lead(&self) {
        if self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return; // Another commit already took ours.
        }
        while let Ok(mut conn) = self.writer.try_lock() {
            let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
            if batch.is_empty() {
                return;
            }
            // On this thread when the write lock is free at once (the usual
            // case: a commit takes tens of µs); waiting for another
            // process's lock happens off the runtime's threads.
            let path = &self.path;
            self.transactions.fetch_add(1, Ordering::Relaxed);
            let (outcome, left) = match begin(&mut conn, Duration::ZERO) {
                Ok(tx) => (commit_batch(tx, batch, path), None),
                Err(e) if is_busy(&e) => (Ok(()), Some(batch)),
                Err(e) => (fail_batch(batch, &e, path), None),
            };
            let outcome = match left {
                Some(batch) => blocking(|| match begin(&mut conn, busy()) {
                    Ok(tx) => commit_batch(tx, batch, path),
                    Err(e) => fail_batch(batch, &e, path),
                }),
                None => outcome,
            };
            if let Err(e @ StoreError::Corrupt { .. }) = outcome {
                self.poison(e);
            }
            drop(conn);
            if self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return;
            }
        }
    }

    /// Stops all writes to this journal, here and (through the marker) in
    /// every later process.
    pub(super) fn poison(&self, e: StoreError) {
        if self.corrupt.set(e.clone()).is_ok() {
            let _ = std::fs::write(damage_marker(&self.path), format!("{e}\n"));
        }
    }
}

/// Leads the commit of queued writes when dropped, unless taken first.
struct LeadOnDrop(Option<Arc<Writes>>);

impl Drop for LeadOnDrop {
    fn drop(&mut self) {
        if let Some(writes) = self.0.take() {
            writes.lead();
        }
    }
}

/// Pending once, waking itself at once: a ready sibling future polled by the
/// same task (a branch of the same `parallel`) runs before this one goes on.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Takes the write lock (`BEGIN IMMEDIATE`), waiting at most `wait` for
/// another connection to let go of it.
fn begin(conn: &mut Connection, wait: Duration) -> rusqlite::Result<Transaction<'_>> {
    conn.busy_timeout(wait)?;
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Runs a batch of writes in the transaction `tx` and acknowledges each;
/// returns the batch's error, if the whole batch failed.
fn commit_batch(tx: Transaction<'_>, batch: Vec<Req>, path: &Path) -> Result<(), StoreError> {
    let mut acks = Vec::with_capacity(batch.len());
    for Req { job, ack } in batch {
        let r = job(&tx).map_err(|e| classify(path, &e, true));
        acks.push((ack, r));
    }
    match tx.commit() {
        Ok(()) => {
            let mut first_err = Ok(());
            for (ack, r) in acks {
                if let (Ok(()), Err(e)) = (&first_err, &r) {
                    first_err = Err(e.clone());
                }
                let _ = ack.send(r);
            }
            first_err
        }
        Err(e) => {
            let err = classify(path, &e, true);
            tracing::error!(%err, "journal commit failed");
            for (ack, _) in acks {
                let _ = ack.send(Err(err.clone()));
            }
            Err(err)
        }
    }
}

/// Fails every write of a batch whose transaction could not begin.
fn fail_batch(batch: Vec<Req>, e: &rusqlite::Error, path: &Path) -> Result<(), StoreError> {
    let err = classify(path, e, true);
    tracing::error!(%err, "journal commit failed");
    for Req { ack, .. } in batch {
        let _ = ack.send(Err(err.clone()));
    }
    Err(err)
}
