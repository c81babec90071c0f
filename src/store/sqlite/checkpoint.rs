//! Checkpoints off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that makes the WAL
//! cross its threshold: that step copies the log back into the database
//! and waits for two fsyncs while its flow waits. Here the writer's WAL
//! hook only notes that the log is long; a thread of the store's own, with
//! its own connection, checkpoints (PASSIVE: it never blocks a writer or
//! a reader) while steps go on committing. The thread starts on the first
//! checkpoint due, so a short run never starts it; the last connection to
//! close still checkpoints as SQLite always does, so the database file is
//! whole once the process is gone.

use super::connect;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// WAL length, in pages, past which a checkpoint is due: SQLite's default
/// for its automatic checkpoint (~4 MB of log).
const DUE_PAGES: i32 = 1000;

#[derive(Default)]
struct State {
    due: bool,
    stop: bool,
    thread: Option<JoinHandle<()>>,
    /// Checkpoints that copied the whole log back (tests wait on it).
    complete: u64,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    /// The WAL's length in pages after the writer's last commit.
    log: AtomicI32,
}

/// The store's checkpoint thread: started when first needed, stopped and
/// joined when the store is dropped.
pub(super) struct Checkpointer(Arc<Shared>);

impl Checkpointer {
    pub(super) fn new(path: &Path) -> Checkpointer {
        Checkpointer(Arc::new(Shared {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            log: AtomicI32::new(0),
        }))
    }

    /// Makes `writer`'s commits ask this checkpointer for checkpoints
    /// instead of running SQLite's automatic one themselves (a WAL hook
    /// replaces the automatic checkpoint).
    pub(super) fn watch(&self, writer: &mut Connection) -> rusqlite::Result<()> {
        let shared = self.0.clone();
        writer.wal_hook(Some(move |_: &mut _, pages: i32| {
            shared.log.store(pages, Ordering::Relaxed);
            if pages >= DUE_PAGES {
                shared.request();
            }
            Ok(())
        }))
    }

    /// Waits (a hang guard of a minute) until `n` checkpoints have copied
    /// the whole log back.
    #[cfg(test)]
    fn wait_complete(&self, n: u64) {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.0.lock().complete < n {
            assert!(std::time::Instant::now() < give_up, "no checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let thread = {
            let mut state = self.0.lock();
            state.stop = true;
            state.thread.take()
        };
        self.0.wake.notify_one();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called from the writer's commit: marks a checkpoint due and wakes
    /// (or starts) the thread. Never waits for the checkpoint.
    fn request(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.stop {
            return;
        }
        state.due = true;
        if state.thread.is_none() {
            let shared = self.clone();
            let spawned = std::thread::Builder::new()
                .name("swarm-checkpoint".into())
                .spawn(move || shared.serve());
            match spawned {
                Ok(t) => state.thread = Some(t),
                // No thread to be had: checkpoint here, as SQLite would.
                Err(e) => {
                    tracing::warn!(%e, "no checkpoint thread; checkpointing inline");
                    state.due = false;
                    drop(state);
                    self.checkpoint(&mut None);
                    return;
                }
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    fn serve(&self) {
        let mut conn = None;
        loop {
            {
                let mut state = self.lock();
                while !state.due && !state.stop {
                    state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                if state.stop {
                    return;
                }
                state.due = false;
            }
            self.checkpoint(&mut conn);
        }
    }

    /// One PASSIVE checkpoint on the checkpoint connection (opened on
    /// first use). A failure is logged: the WAL only grows until the next
    /// checkpoint succeeds, and the writer's own errors are reported where
    /// they happen.
    fn checkpoint(&self, conn: &mut Option<Connection>) {
        if conn.is_none() {
            // A connection finds the WAL on its first read; until then a
            // checkpoint on it is a no-op.
            let opened = connect(&self.path).and_then(|c| {
                c.query_row("PRAGMA schema_version", [], |_| Ok(()))
                    .map_err(|e| super::classify(&self.path, &e, false))?;
                Ok(c)
            });
            match opened {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    tracing::warn!(%e, "checkpoint connection");
                    return;
                }
            }
        }
        let Some(c) = conn.as_ref() else { return };
        let done = c.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), Default::default());
        match done {
            Ok((log, backfilled)) => {
                tracing::debug!(log, backfilled, "checkpoint");
                if log >= 0 && log == backfilled {
                    self.lock().complete += 1;
                }
            }
            Err(e) => tracing::warn!(%e, "checkpoint failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Commits past the threshold start the thread; once it has copied
    /// the log back, the writer's next commit starts the log over, so the
    /// log stays bounded without any commit checkpointing; rows stay.
    #[test]
    fn a_long_log_is_checkpointed_by_the_thread_not_the_commit() {
        let dir = std::env::temp_dir().join(format!("swarm-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j.db");
        let mut conn = connect(&path).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB)").unwrap();
        let ckpt = Checkpointer::new(&path);
        ckpt.watch(&mut conn).unwrap();
        let log = || ckpt.0.log.load(Ordering::Relaxed);
        let mut rows = 0;
        for round in 1..=3 {
            while log() < DUE_PAGES {
                conn.execute("INSERT INTO t VALUES (zeroblob(2000))", [])
                    .unwrap();
                rows += 1;
            }
            ckpt.wait_complete(round);
            conn.execute("INSERT INTO t VALUES (zeroblob(2000))", [])
                .unwrap();
            rows += 1;
            assert!(log() < 10, "the log did not start over: {} pages", log());
        }
        drop(ckpt);
        assert_eq!(count(&conn, "SELECT count(*) FROM t"), rows);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
