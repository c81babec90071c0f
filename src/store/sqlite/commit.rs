//! Group commit: the write side of [`super::SqliteStore`]. A write is
//! queued; its commit, when first polled, steps aside once (ready branches
//! of the same flow queue theirs), then whoever finds the write connection
//! free commits everything queued in one transaction and acknowledges each.
//! A commit whose write went out with someone else's meanwhile does not
//! lead: so concurrent sequential chains (branches, runs) share commits.

use super::entries::{insert_entries, unrecorded};
use super::steplog::{self, Logged, StepLog};
use super::{blocking, busy, classify, damage_marker};
use crate::store::{Commit, JournalEntry, StoreError};
use rusqlite::{Connection, ErrorCode, Transaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

pub(super) type Job = Box<dyn FnOnce(&Transaction) -> rusqlite::Result<()> + Send>;

/// Tells a write's commit how it went.
type Ack = oneshot::Sender<Result<(), StoreError>>;

pub(super) struct Req {
    job: Job,
    ack: Ack,
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
    /// Journal entries made durable in a file, folded into each commit.
    pub(super) log: StepLog,
}

impl Writes {
    pub(super) fn new(path: &Path, writer: Connection) -> Writes {
        Writes {
            path: path.to_path_buf(),
            queue: Mutex::new(Vec::new()),
            writer: Mutex::new(writer),
            transactions: AtomicU64::new(0),
            corrupt: std::sync::OnceLock::new(),
            log: StepLog::new(path),
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

    /// Commits queued writes (and pending step-log entries, when enough
    /// are pending) if no one else is: see the module doc.
    ///
    /// A write whose commit finds the connection taken leaves its commit to
    /// the holder, so whoever lets go of the connection looks again — here
    /// after every round, whatever it found, and after [`Self::holding`].
    /// A step log that failed to fold is left for the next write: looking
    /// again for it alone would retry a full disk in a loop.
    pub(super) fn lead(&self) {
        let mut log_folds = true;
        while self.queued() || (log_folds && self.log.due()) {
            let Ok(conn) = self.writer.try_lock() else {
                return; // Its holder looks again once it lets go.
            };
            log_folds = self.round(conn);
        }
    }

    fn queued(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Runs `f` with the write connection, waiting for it, then leads:
    /// writes queued meanwhile found the connection taken and count on
    /// its holder to commit them.
    fn holding<T>(&self, f: impl FnOnce(MutexGuard<'_, Connection>) -> T) -> T {
        let out = f(self.writer.lock().unwrap_or_else(|e| e.into_inner()));
        self.lead();
        out
    }

    /// Commits everything queued and pending now, waiting for a leader
    /// that is committing meanwhile: the store is closing.
    pub(super) fn flush(&self) {
        self.holding(|conn| {
            blocking(|| self.round(conn));
        });
    }

    /// One transaction: the step log's pending entries, then the queued
    /// writes. False when it did not commit (nothing of it is written).
    fn round(&self, mut conn: MutexGuard<'_, Connection>) -> bool {
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let logged = self.log.take();
        if batch.is_empty() && logged.entries.is_empty() {
            return true;
        }
        // On this thread when the write lock is free at once (the usual
        // case: a commit takes tens of µs); waiting for another process's
        // lock happens off the runtime's threads.
        let path = &self.path;
        let entries = &logged.entries;
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let (outcome, left) = match begin(&mut conn, Duration::ZERO) {
            Ok(tx) => (commit_batch(tx, entries, batch, path), None),
            Err(e) if is_busy(&e) => (Ok(None), Some(batch)),
            Err(e) => (fail_batch(batch, &e, path), None),
        };
        let outcome = match left {
            Some(batch) => blocking(|| match begin(&mut conn, busy()) {
                Ok(tx) => commit_batch(tx, entries, batch, path),
                Err(e) => fail_batch(batch, &e, path),
            }),
            None => outcome,
        };
        drop(conn);
        match outcome {
            Ok(corrupt) => {
                self.log.folded(logged);
                if let Some(e) = corrupt {
                    self.poison(e);
                }
                true
            }
            Err(e) => {
                if matches!(e, StoreError::Corrupt { .. }) {
                    self.poison(e.clone());
                }
                self.log.unfolded(logged, e);
                false
            }
        }
    }

    /// Runs `f` while no fold can run.
    pub(super) fn quiet<T>(&self, f: impl FnOnce() -> T) -> T {
        self.holding(|_conn| f())
    }

    /// Folds in the step logs of processes that died, and returns the
    /// entries of `run` in logs still held (a live owner, or another
    /// process folding them right now) for the caller to read alongside
    /// the database.
    pub(super) fn adopt(&self, run: Option<&str>) -> Vec<JournalEntry> {
        let mut live = Vec::new();
        for found in self.log.others(run.is_some()) {
            let folded = match &found.orphan {
                Some(_) => self.commit_entries(&found.entries),
                None => Err(StoreError::Closed),
            };
            match (folded, found.orphan) {
                (Ok(()), Some(file)) => steplog::retire(&found.path, file, found.damaged),
                (Err(_), _) | (_, None) => live.extend(
                    found
                        .entries
                        .into_iter()
                        .filter(|e| Some(e.run.as_str()) == run),
                ),
            }
        }
        live
    }

    /// Commits `entries` alone, waiting for the connection and the lock.
    fn commit_entries(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        if let Some(e) = self.corrupt.get() {
            return Err(e.clone());
        }
        self.holding(|mut conn| {
            blocking(|| {
                let tx = begin(&mut conn, busy())?;
                let logged: Vec<Logged> = entries.iter().cloned().map(Logged::new).collect();
                insert_entries(&tx, unrecorded(&tx, &logged)?)?;
                tx.commit()
            })
        })
        .map_err(|e| classify(&self.path, &e, true))
    }

    /// Stops all writes to this journal, here and (through the marker) in
    /// every later process.
    pub(super) fn poison(&self, e: StoreError) {
        if self.corrupt.set(e.clone()).is_ok() {
            // The cause only: `open` puts it back inside its own error.
            let why = match &e {
                StoreError::Corrupt { message, .. } => message.clone(),
                other => other.to_string(),
            };
            let _ = std::fs::write(damage_marker(&self.path), format!("{why}\n"));
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

/// Runs a batch of writes in the transaction `tx`, after the step log's
/// `logged` entries, and acknowledges each. Err when the transaction did
/// not commit (then nothing of it is in the database); a write that
/// failed alone leaves nothing of itself, is told so through its own
/// acknowledgement, and comes back as `Ok(Some(_))` when it found the
/// file corrupt.
fn commit_batch(
    tx: Transaction<'_>,
    logged: &[Logged],
    batch: Vec<Req>,
    path: &Path,
) -> Result<Option<StoreError>, StoreError> {
    if let Err(e) = insert_entries(&tx, logged) {
        return fail_batch(batch, &e, path);
    }
    let mut acks = Vec::with_capacity(batch.len());
    let mut batch = batch.into_iter();
    while let Some(Req { job, ack }) = batch.next() {
        let r = alone(&tx, job);
        if let Err(e) = &r
            && tx.is_autocommit()
        {
            // SQLite rolled the whole transaction back (a full disk, an
            // I/O error): the writes before this one are gone too, and a
            // write run now would commit on its own, outside the batch.
            let undone = acks.into_iter().map(|(ack, _)| ack).chain([ack]);
            return fail_all(undone.chain(batch.map(|r| r.ack)), e, path);
        }
        acks.push((ack, r.map_err(|e| classify(path, &e, true))));
    }
    match tx.commit() {
        Ok(()) => {
            let mut corrupt = None;
            for (ack, r) in acks {
                if let Err(e @ StoreError::Corrupt { .. }) = &r {
                    corrupt = Some(e.clone());
                }
                let _ = ack.send(r);
            }
            Ok(corrupt)
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

/// Runs `job` in a savepoint, so a write that fails partway (a `prune` of
/// many runs, a batch of event pages) leaves nothing of itself behind
/// for the others' commit to keep.
fn alone(tx: &Transaction, job: Job) -> rusqlite::Result<()> {
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    match job(tx) {
        Ok(()) => tx.prepare_cached("RELEASE job")?.execute([]).map(drop),
        Err(e) => {
            if !tx.is_autocommit() {
                let undo = tx
                    .prepare_cached("ROLLBACK TO job")
                    .and_then(|mut s| s.execute([]))
                    .and_then(|_| tx.prepare_cached("RELEASE job")?.execute([]));
                if let Err(undo) = undo {
                    tracing::error!(%undo, "undoing a failed journal write failed");
                }
            }
            Err(e)
        }
    }
}

/// Fails every write of a batch whose transaction could not begin.
fn fail_batch<T>(batch: Vec<Req>, e: &rusqlite::Error, path: &Path) -> Result<T, StoreError> {
    fail_all(batch.into_iter().map(|r| r.ack), e, path)
}

/// Fails every write of a transaction that did not commit.
fn fail_all<T>(
    acks: impl Iterator<Item = Ack>,
    e: &rusqlite::Error,
    path: &Path,
) -> Result<T, StoreError> {
    let err = classify(path, e, true);
    tracing::error!(%err, "journal commit failed");
    for ack in acks {
        let _ = ack.send(Err(err.clone()));
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};

    fn writes(name: &str) -> Arc<Writes> {
        let dir = std::env::temp_dir().join(format!("swarm-commit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("swarm.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);")
            .unwrap();
        Arc::new(Writes::new(&path, conn))
    }

    fn insert(x: i64) -> Job {
        Box::new(move |tx| tx.execute("INSERT INTO t VALUES (?1)", [x]).map(|_| ()))
    }

    /// A commit that finds the connection held (a journal being read, a
    /// dead process's step log adopted) is left to the holder, who must
    /// commit it on letting go: no one else may ever write again.
    #[test]
    fn a_write_queued_while_the_connection_is_held_commits_when_it_is_let_go() {
        let w = writes("held");
        let mut cx = Context::from_waker(Waker::noop());
        let mut commit = None;
        w.quiet(|| {
            let mut c = w.submit(insert(1));
            // It steps aside once, then finds the connection taken: pending.
            assert!(c.as_mut().poll(&mut cx).is_pending());
            assert!(c.as_mut().poll(&mut cx).is_pending());
            commit = Some(c);
        });
        let mut c = commit.unwrap();
        assert!(matches!(c.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        let n: i64 = w
            .holding(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 1);
    }

    /// Polls a commit to its end (every commit here is led at once).
    fn settle(mut c: Commit) -> Result<(), StoreError> {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            if let Poll::Ready(r) = c.as_mut().poll(&mut cx) {
                return r;
            }
        }
        panic!("the commit never settled");
    }

    fn rows(w: &Writes) -> Vec<i64> {
        w.holding(|conn| {
            let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
    }

    /// Writes that share a transaction stay apart: one that fails partway
    /// leaves nothing of itself, and the others commit.
    #[test]
    fn a_write_that_fails_partway_leaves_nothing_of_itself() {
        let w = writes("partway");
        let (a, c) = (w.submit(insert(1)), w.submit(insert(3)));
        let b = w.submit(Box::new(|tx| {
            tx.execute("INSERT INTO t VALUES (2)", [])?;
            tx.execute("INSERT INTO missing VALUES (2)", []).map(drop)
        }));
        assert!(settle(a).is_ok());
        assert!(settle(b).is_err());
        assert!(settle(c).is_ok());
        assert_eq!(rows(&w), [1, 3]);
    }

    /// When SQLite rolls the whole transaction back under a write (a full
    /// disk, an I/O error), every write of the batch is told it failed,
    /// and none runs after it outside the transaction, committed alone
    /// while its commit reports failure (a retry would write it twice).
    #[test]
    fn a_transaction_rolled_back_under_a_write_fails_the_whole_batch() {
        let w = writes("rolled-back");
        let a = w.submit(insert(1));
        let b = w.submit(Box::new(|tx| {
            tx.execute("INSERT INTO t VALUES (2)", [])?;
            tx.execute_batch("ROLLBACK")?;
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            ))
        }));
        let c = w.submit(insert(3));
        for commit in [a, b, c] {
            assert!(settle(commit).is_err());
        }
        assert_eq!(rows(&w), Vec::<i64>::new());
        assert!(settle(w.submit(insert(4))).is_ok(), "the store goes on");
        assert_eq!(rows(&w), [4]);
    }
}
