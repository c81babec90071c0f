//! [`SqliteStore`]: the journal in SQLite (WAL), with group commit, and
//! journal entries made durable by the step log (`sqlite/steplog.rs`).
//!
//! Group commit without a writer thread: a write is queued, and whoever
//! finds the write connection free becomes the leader, commits everything
//! queued (and the step log's pending entries) in one transaction and
//! acknowledges each; writes queued meanwhile ride the leader's next
//! transaction. Alone, a write pays one commit on its own thread (no
//! hand-off latency; no fsync per commit with WAL +
//! `synchronous = NORMAL`); under load many share one commit. The
//! leader takes SQLite's write lock without waiting and commits on its own
//! thread; only when another process holds that lock does it wait, inside
//! `block_in_place`, so a tokio worker never sleeps in SQLite's busy
//! handler (`sqlite/commit.rs`). Reads use a second connection.

use super::{
    Commit, EventRecord, EventRow, EventStore, Fence, JournalEntry, JournalStore, Owner, Ownership,
    Prune, QuestionRecord, QuestionStore, RunRecord, RunStatus, RunStore, Store, StoreError,
    StoreFut,
};
use crate::engine::now_ms;
use rusqlite::{Connection, ErrorCode, params};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod commit;
mod entries;
mod errors;
mod health;
mod messages;
mod mobs;
mod ownership;
mod pages;
mod reads;
mod schema;
mod steplog;
mod work;
use commit::{Job, Writes};
use errors::{classify, dir_error};
pub use health::damage_marker;
// Events by the page, as the Postgres store writes them too.
use ownership::lease_end;
pub(super) use pages::{encode as encode_event_page, paged as event_pages};
pub use steplog::damaged_logs;

/// How long to wait for another process's lock: `SWARM_DB_BUSY_MS`, else 5 s.
fn busy() -> Duration {
    std::env::var("SWARM_DB_BUSY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

pub struct SqliteStore {
    path: PathBuf,
    // Declared (so dropped) before the writer: the last connection to close
    // checkpoints the file, and the writer's has synced the write-ahead
    // log's directory already; the reader's would sync it once more.
    reader: Mutex<Connection>,
    writes: Arc<Writes>,
    /// The latest epoch of each run this process created or claimed: an
    /// append under an older one is refused without asking the database.
    epochs: Arc<Mutex<std::collections::HashMap<String, u64>>>,
    /// Wakes this process's waiters on the work queue (`sqlite/work.rs`).
    changed: Arc<tokio::sync::Notify>,
    /// Attempt tokens of the remote steps this process offered, by id.
    tokens: Arc<Mutex<std::collections::HashMap<u64, crate::auth::CapToken>>>,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    conn.busy_timeout(busy())
        .map_err(|e| classify(path, &e, false))?;
    Ok(conn)
}

/// Switches to WAL. Several processes opening a new database at once can
/// get "busy" here without the busy handler being consulted, so retry.
fn wal(conn: &Connection, path: &Path) -> Result<String, StoreError> {
    let give_up = std::time::Instant::now() + busy();
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => return Ok(mode),
            Err(e)
                if std::time::Instant::now() < give_up
                    && matches!(
                        e.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(classify(path, &e, true)),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the journal at `path` and migrates it.
    /// A journal marked damaged is refused.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Ok(why) = std::fs::read_to_string(damage_marker(path)) {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "{} (marked in {}; run `swarm doctor`)",
                    why.trim(),
                    damage_marker(path).display()
                ),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: dir_error(dir, &e),
            })?;
        }
        let mut conn = connect(path)?;
        let mode = wal(&conn, path)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "journal is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| classify(path, &e, true))?;
        schema::migrate(&mut conn).map_err(|e| match e {
            schema::MigrateError::Sql(e) => classify(path, &e, true),
            schema::MigrateError::Newer(v) => StoreError::Open {
                path: path.display().to_string(),
                message: format!(
                    "the database has schema version {v}, newer than this swarm ({})",
                    schema::VERSION
                ),
            },
        })?;
        let reader = connect(path)?;
        let store = SqliteStore::new(path, conn, reader);
        store.writes.adopt(None);
        Ok(store)
    }

    fn new(path: &Path, writer: Connection, reader: Connection) -> SqliteStore {
        SqliteStore {
            path: path.to_path_buf(),
            writes: Arc::new(Writes::new(path, writer)),
            reader: Mutex::new(reader),
            epochs: Arc::default(),
            changed: Arc::default(),
            tokens: Arc::default(),
        }
    }

    /// Remembers that `run` is at `epoch` or later.
    fn known_epoch(&self, run: &str, epoch: u64) {
        let mut known = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        let e = known.entry(run.to_string()).or_default();
        *e = (*e).max(epoch);
    }

    /// The refusal of a write under `epoch` when a later ownership of
    /// `run` is known here (0: an unfenced write).
    fn stale(&self, run: &str, epoch: u64) -> Option<StoreError> {
        let known = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        (epoch > 0 && known.get(run).is_some_and(|k| *k > epoch)).then(|| StoreError::Fenced {
            run: run.to_string(),
            epoch,
        })
    }

    /// A write that counts rows: with a fence, none written means the
    /// fence no longer holds ([`StoreError::Fenced`]).
    fn fenced_write(
        &self,
        run: &str,
        fence: Option<&Fence>,
        write: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<usize> + Send + 'static,
    ) -> Commit {
        let rows = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = rows.clone();
        let commit = self.submit(Box::new(move |tx| {
            counted.store(write(tx)?, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }));
        let refused = fence.map(|f| StoreError::Fenced {
            run: run.to_string(),
            epoch: f.epoch,
        });
        Box::pin(async move {
            commit.await?;
            match refused {
                Some(e) if rows.load(std::sync::atomic::Ordering::Relaxed) == 0 => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn submit(&self, job: Job) -> Commit {
        self.writes.submit(job)
    }

    /// A write whose transaction also computes a value for the caller.
    pub(super) fn write_with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFut<'static, T> {
        let out: Arc<Mutex<Option<T>>> = Arc::default();
        let slot = out.clone();
        let commit = self.submit(Box::new(move |tx| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(f(tx)?);
            Ok(())
        }));
        Box::pin(async move {
            commit.await?;
            let v = out.lock().unwrap_or_else(|e| e.into_inner()).take();
            v.ok_or(StoreError::Closed)
        })
    }

    /// How many write transactions this store has begun: with the rows
    /// written, how well commits are shared (benches and tests read it).
    pub fn transactions(&self) -> u64 {
        self.writes
            .transactions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn poison(&self, e: StoreError) {
        self.writes.poison(e);
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        blocking(|| f(&conn)).map_err(|e| {
            let e = classify(&self.path, &e, false);
            if matches!(e, StoreError::Corrupt { .. }) {
                self.poison(e.clone());
            }
            e
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Pending step-log entries go into the database; if they cannot,
        // the log file stays for the next process to fold in.
        self.writes.flush();
    }
}

/// Runs blocking SQLite I/O, telling a multi-thread runtime so its other
/// tasks move to another worker meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// An operation SQLite has already answered, as a store future.
fn done<T: Send + 'static>(r: Result<T, StoreError>) -> StoreFut<'static, T> {
    Box::pin(std::future::ready(r))
}

/// A JSON column: NULL is `None`. Text that does not parse is a row swarm
/// never wrote (a hand edit, a damaged page): an error [`classify`] calls
/// corruption, never a value quietly read as null.
fn json(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<Value>> {
    let Some(text) = r.get::<_, Option<String>>(i)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| not_ours(r, i, e))
}

/// Column `i` of `r` holds text swarm does not write. The error names
/// the column: an operator reading it knows where the damage is.
fn not_ours(r: &rusqlite::Row, i: usize, e: impl std::fmt::Display) -> rusqlite::Error {
    let column = r.as_ref().column_name(i).unwrap_or("?");
    let why = format!("column `{column}`: {e}");
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, why.into())
}

fn run_row(r: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        blueprint: r.get(1)?,
        path: r.get(2)?,
        hash: r.get(3)?,
        input: json(r, 4)?.unwrap_or(Value::Null),
        status: r
            .get::<_, String>(5)?
            .parse()
            .map_err(|e: String| not_ours(r, 5, e))?,
        result: json(r, 6)?,
        pid: r.get(7)?,
        created_ms: r.get::<_, i64>(8)? as u64,
        updated_ms: r.get::<_, i64>(9)? as u64,
        steps: r.get::<_, i64>(10)? as u64,
        owner: r.get(11)?,
        owner_host: r.get(12)?,
        owned_since_ms: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        lease_until_ms: r.get::<_, Option<i64>>(14)?.map(|v| v as u64),
        helpers: match json(r, 15)? {
            Some(v) => serde_json::from_value(v).map_err(|e| not_ours(r, 15, e))?,
            None => Default::default(),
        },
        tokens: r.get::<_, i64>(16)? as u64,
        epoch: r.get::<_, i64>(17)? as u64,
        fork: match json(r, 18)? {
            Some(v) => serde_json::from_value(v).map_err(|e| not_ours(r, 18, e))?,
            None => None,
        },
    })
}

const RUN_COLUMNS: &str = "id, blueprint, path, hash, input, status, result, pid, created_ms, updated_ms, \
     (SELECT coalesce(sum(j.steps), 0) FROM journal_pages j WHERE j.run = runs.id), owner, owner_host, owned_since_ms, \
     lease_until_ms, helpers, tokens, epoch, fork";

const INSERT_RUN: &str = "INSERT INTO runs (id, blueprint, path, hash, input, status, result, pid,
       created_ms, updated_ms, owner, owner_host, owned_since_ms, lease_until_ms, owner_machine, helpers,
       epoch, lease_boot, lease_until_boot, fork)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?8, ?9, ?10, ?8, ?11, ?12, ?13, 1, ?14, ?15, ?16)";

/// Every write's statement is a cached one: parsing an `UPDATE runs`
/// anew cost more than running it.
impl RunStore for SqliteStore {
    fn create_run(&self, run: &RunRecord, owner: &Owner) -> StoreFut<'static, Fence> {
        let (r, o) = (run.clone(), owner.clone());
        let fence = Fence {
            owner: owner.id.clone(),
            epoch: 1,
        };
        self.known_epoch(&run.id, 1);
        let (boot, until) = ownership::boot_lease();
        let commit = self.submit(Box::new(move |tx| {
            tx.prepare_cached(INSERT_RUN)?.execute(params![
                r.id,
                r.blueprint,
                r.path,
                r.hash,
                r.input.to_string(),
                r.status.as_str(),
                o.pid,
                r.created_ms as i64,
                o.id,
                o.host,
                lease_end(),
                o.machine,
                serde_json::to_string(&r.helpers).unwrap_or_default(),
                boot,
                until,
                r.fork.as_ref().map(|f| serde_json::json!(f).to_string())
            ])?;
            Ok(())
        }));
        Box::pin(async move {
            commit.await?;
            Ok(fence)
        })
    }

    fn set_status(
        &self,
        run: &str,
        status: RunStatus,
        result: Option<Value>,
        fence: Option<&Fence>,
    ) -> Commit {
        let (id, status) = (run.to_string(), status.as_str());
        let owner = fence.map(|f| (f.owner.clone(), f.epoch as i64));
        let (o, e) = owner.clone().unzip();
        self.fenced_write(run, fence, move |tx| {
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, result = coalesce(?3, result), updated_ms = ?4,
                   cancel_requested = CASE WHEN ?2 = 'running' THEN cancel_requested ELSE 0 END,
                   owner = CASE WHEN ?2 = 'running' THEN owner ELSE NULL END,
                   lease_until_ms = CASE WHEN ?2 = 'running' THEN lease_until_ms ELSE NULL END,
                   lease_until_boot = CASE WHEN ?2 = 'running' THEN lease_until_boot ELSE NULL END,
                   epoch = CASE WHEN ?5 IS NULL THEN epoch + 1 ELSE epoch END
                 WHERE id = ?1 AND (?5 IS NULL OR (owner = ?5 AND epoch = ?6))",
            )?
            .execute(params![
                id,
                status,
                result.map(|v| v.to_string()),
                now_ms() as i64,
                o,
                e
            ])
        })
    }

    fn set_version(&self, run: &str, version: &crate::store::Version, fence: &Fence) -> Commit {
        let id = run.to_string();
        let hash = version.hash.clone();
        let helpers = serde_json::to_string(&version.helpers).unwrap_or_default();
        let (owner, epoch) = (fence.owner.clone(), fence.epoch as i64);
        self.fenced_write(run, Some(fence), move |tx| {
            tx.prepare_cached(
                "UPDATE runs SET hash = ?2, helpers = ?3, updated_ms = ?4
                 WHERE id = ?1 AND owner = ?5 AND epoch = ?6",
            )?
            .execute(params![id, hash, helpers, now_ms() as i64, owner, epoch])
        })
    }

    fn run(&self, id: &str) -> StoreFut<'static, Option<RunRecord>> {
        done(self.load_run(id))
    }

    fn runs(&self, status: Option<RunStatus>) -> StoreFut<'static, Vec<RunRecord>> {
        done(self.load_runs(status))
    }

    fn prune(&self, filter: &Prune) -> StoreFut<'static, Vec<String>> {
        done(self.prune_runs(filter))
    }

    fn request_cancel(&self, run: &str) -> Commit {
        let run = run.to_string();
        self.submit(Box::new(move |tx| {
            tx.prepare_cached("UPDATE runs SET cancel_requested = 1 WHERE id = ?1")?
                .execute([run])?;
            Ok(())
        }))
    }

    fn cancel_requested(&self, run: &str) -> StoreFut<'static, bool> {
        done(self.load_cancel_requested(run))
    }
}

impl Ownership for SqliteStore {
    fn claim(&self, run: &str, owner: &Owner) -> StoreFut<'static, Fence> {
        self.claim_run(run, owner)
    }

    fn renew(&self, run: &str, fence: &Fence) -> StoreFut<'static, bool> {
        self.renew_lease(run, fence)
    }

    fn mark_interrupted(&self) -> StoreFut<'static, Vec<String>> {
        self.sweep_expired()
    }

    fn lapsed(&self, run: &str) -> StoreFut<'static, bool> {
        done(self.lease_lapsed(run))
    }
}

impl JournalStore for SqliteStore {
    fn journal(&self, run: &str) -> StoreFut<'static, Vec<JournalEntry>> {
        done(self.load_journal(run))
    }

    fn append(&self, e: JournalEntry) -> Commit {
        if let Some(e) = self.writes.corrupt.get() {
            return done(Err(e.clone()));
        }
        if let Some(refused) = self.stale(&e.run, e.epoch) {
            return done(Err(refused));
        }
        let r = self.writes.log.append(e).map(|due| {
            if due {
                self.writes.lead();
            }
        });
        done(r)
    }
}

impl EventStore for SqliteStore {
    fn append_events(&self, events: Vec<EventRow>) -> Commit {
        self.submit(Box::new(move |tx| pages::insert_events(tx, &events)))
    }

    fn events(&self, run: &str, after: i64, limit: usize) -> StoreFut<'static, Vec<EventRecord>> {
        done(self.load_events(run, after, limit))
    }

    fn events_of_kind(
        &self,
        run: &str,
        kind: &str,
        limit: usize,
    ) -> StoreFut<'static, Vec<EventRecord>> {
        done(self.load_events_of_kind(run, kind, limit))
    }

    fn event_tail(&self, run: &str, n: usize) -> StoreFut<'static, (u64, i64)> {
        done(self.load_event_tail(run, n))
    }
}

impl QuestionStore for SqliteStore {
    fn ask(&self, q: QuestionRecord, fence: Option<&Fence>) -> Commit {
        let run = q.run.clone();
        let epoch = fence.map(|f| f.epoch as i64);
        // An open question asked again is not a second question: the row
        // counts as written when it is there and the fence holds.
        self.fenced_write(&run, fence, move |tx| {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO questions (run, pos, name, question, answer, asked_ms)
                 SELECT ?1, ?2, ?3, ?4, NULL, ?5
                 WHERE ?6 IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND epoch = ?6)",
            )?
            .execute(params![
                q.run,
                q.pos,
                q.name,
                q.question.to_string(),
                now_ms() as i64,
                epoch
            ])?;
            tx.prepare_cached(
                "SELECT count(*) FROM questions WHERE run = ?1 AND pos = ?2
                   AND (?3 IS NULL OR EXISTS (SELECT 1 FROM runs WHERE id = ?1 AND epoch = ?3))",
            )?
            .query_row(params![q.run, q.pos, epoch], |r| {
                r.get::<_, i64>(0).map(|n| n as usize)
            })
        })
    }

    fn answer(&self, run: &str, name: &str, answer: Value) -> StoreFut<'static, bool> {
        let (run, name) = (run.to_string(), name.to_string());
        let changed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = changed.clone();
        let commit = self.submit(Box::new(move |tx| {
            let n = tx.prepare_cached("UPDATE questions SET answer = ?3, answered_ms = ?4
                 WHERE run = ?1 AND pos = (SELECT pos FROM questions WHERE run = ?1 AND answer IS NULL
                                           AND (name = ?2 OR pos = ?2) ORDER BY asked_ms LIMIT 1)")?.execute(
                params![run, name, answer.to_string(), now_ms() as i64],
            )?;
            flag.store(n > 0, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }));
        Box::pin(async move {
            commit.await?;
            Ok(changed.load(std::sync::atomic::Ordering::Relaxed))
        })
    }

    fn questions(&self, run: &str) -> StoreFut<'static, Vec<QuestionRecord>> {
        done(self.load_questions(run))
    }
}

impl Store for SqliteStore {
    fn work(&self) -> Option<&dyn super::work::WorkQueue> {
        Some(self)
    }
}

/// Waits for a store operation from synchronous code (CLI commands,
/// startup). One already answered (every SQLite read) returns at once;
/// otherwise it waits on a helper thread, so this works inside and
/// outside any tokio runtime.
pub fn block_on<T: Send>(mut op: StoreFut<'_, T>) -> Result<T, StoreError> {
    use futures_util::FutureExt;
    // Twice: a commit steps aside once before it leads (see `submit`).
    for _ in 0..2 {
        if let Some(r) = (&mut op).now_or_never() {
            return r;
        }
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|_| StoreError::Closed)?;
            rt.block_on(op)
        })
        .join()
        .unwrap_or(Err(StoreError::Closed))
    })
}
