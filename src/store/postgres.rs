//! [`PostgresStore`]: the journal in a Postgres database that many
//! `swarm` nodes share (`--store postgres://user@host:port/db`).
//!
//! The same contract as SQLite, proven by the same conformance suite.
//! What differs is where decisions are made: a lease lapses by the
//! database's clock (`clock_timestamp()`, in ms), never a node's; a
//! claim or a fenced write is one conditional statement, so it is atomic
//! whichever node makes it; remote-step claims come from the work queue
//! with `FOR UPDATE SKIP LOCKED`. Journal entries and events are group
//! committed (`postgres/batch.rs`): whatever many runs append while one
//! transaction commits goes into the next, a page per run.
//!
//! All database I/O runs on one small runtime of this process
//! ([`runtime`]), where the pool's connections live: a store operation
//! is a task there, so it may be awaited from any runtime, or from none
//! (`store::wait`), and a connection never outlives the runtime that
//! drives it.

use super::{
    Commit, EventRecord, EventRow, EventStore, Fence, JournalEntry, JournalStore, Owner, Ownership,
    Prune, QuestionRecord, QuestionStore, RunRecord, RunStatus, RunStore, Store, StoreError,
    StoreFut,
};
use deadpool_postgres::Pool;
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

mod batch;
pub(super) mod config;
mod messages;
mod mobs;
mod ownership;
mod reads;
mod runs;
mod schema;
mod wake;
mod work;

pub use config::redacted;

/// The database's clock now, in ms since the epoch: every lease is
/// stamped and judged with it.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::int8";

/// The runtime where every Postgres connection of this process lives.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("swarm-pg")
            .enable_all()
            .build()
            .expect("starting the Postgres store's runtime")
    })
}

pub struct PostgresStore {
    inner: Arc<Inner>,
    batch: batch::Batcher,
    /// Wakes this process's waiters on the work queue (told by any node:
    /// `wake.rs`).
    changed: Arc<tokio::sync::Notify>,
    /// This process's runs waiting for an answer, a cancel, a message.
    wakes: Arc<wake::Wakes>,
    /// Attempt tokens of the remote steps this process offered, by id.
    tokens: Arc<Mutex<std::collections::HashMap<u64, crate::auth::CapToken>>>,
}

/// What every operation task holds.
pub(crate) struct Inner {
    pool: Pool,
    /// The database as messages name it (no password).
    name: String,
    /// This machine (host and pid namespace): an owner here whose process
    /// is gone has provably stopped.
    machine: String,
}

impl PostgresStore {
    /// Connects to the database `url` names and migrates it (once among
    /// all nodes). Waits for the connection: call it at start-up.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let config = config::parse(url)?;
        let name = config::redacted(&config);
        let listener = config.clone();
        let pool = {
            let _enter = runtime().enter();
            config::pool(config)?
        };
        let inner = Arc::new(Inner {
            pool,
            name,
            machine: Owner::new().machine,
        });
        let ready = inner.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime().spawn(async move {
            let _ = tx.send(ready.migrate().await);
        });
        rx.recv().map_err(|_| StoreError::Closed)??;
        let (changed, wakes) = (Arc::default(), Arc::default());
        wake::listen(listener, Arc::clone(&wakes), Arc::clone(&changed));
        Ok(PostgresStore {
            batch: batch::Batcher::start(inner.clone()),
            inner,
            changed,
            wakes,
            tokens: Arc::default(),
        })
    }

    /// Runs `op` on the store's runtime.
    fn op<T, F>(&self, op: impl FnOnce(Arc<Inner>) -> F) -> StoreFut<'static, T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        spawn(op(self.inner.clone()))
    }

    /// How many group commits the journal writer has made.
    pub fn transactions(&self) -> u64 {
        self.batch.transactions()
    }
}

/// `f` as a task on the store's runtime.
fn spawn<T: Send + 'static>(
    f: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> StoreFut<'static, T> {
    let task = runtime().spawn(f);
    Box::pin(async move { task.await.map_err(|_| StoreError::Closed)? })
}

impl Inner {
    /// Tells every node's listener that `what` (a run id, or
    /// [`wake::WORK`]) changed. Best effort: a lost notification costs a
    /// waiter one safety interval, never a wrong answer.
    async fn notify(&self, c: &tokio_postgres::Client, what: &str) {
        let sent = c
            .execute("SELECT pg_notify($1, $2)", &[&wake::CHANNEL, &what])
            .await;
        if let Err(e) = sent {
            tracing::debug!("NOTIFY {what} failed: {e}");
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        schema::migrate(&mut client).await.map_err(|e| match e {
            schema::MigrateError::Sql(e) => self.open_error(&e),
            schema::MigrateError::Newer(v) => StoreError::Open {
                path: self.name.clone(),
                message: format!(
                    "the database has schema version {v}, newer than this swarm ({}); \
                     upgrade swarm on this node",
                    schema::VERSION
                ),
            },
        })
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Open {
            path: self.name.clone(),
            message: match e {
                deadpool_postgres::PoolError::Backend(e) => describe(&e),
                e => e.to_string(),
            },
        })
    }

    fn open_error(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Open {
            path: self.name.clone(),
            message: describe(e),
        }
    }

    /// A failed write, typed: a duplicate is [`StoreError::Exists`].
    fn write_error(&self, e: tokio_postgres::Error) -> StoreError {
        let path = self.name.clone();
        match e.code() {
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => StoreError::Exists {
                path,
                message: describe(&e),
            },
            _ => StoreError::Write {
                path,
                message: describe(&e),
            },
        }
    }

    fn read_error(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Read {
            path: self.name.clone(),
            message: describe(&e),
        }
    }

    /// A column of JSON text that does not parse: not what swarm wrote.
    fn not_ours(&self, column: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.name.clone(),
            message: format!("column `{column}`: {e}"),
        }
    }
}

/// The server's own words when it gave any (`db error: ERROR: …` says less).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// JSON text read back; `None` for NULL.
fn json(inner: &Inner, column: &str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| inner.not_ours(column, e)))
        .transpose()
}

impl RunStore for PostgresStore {
    fn create_run(&self, run: &RunRecord, owner: &Owner) -> StoreFut<'static, Fence> {
        let (r, o) = (run.clone(), owner.clone());
        self.op(move |s| async move { s.create_run(r, o).await })
    }

    fn set_status(
        &self,
        run: &str,
        status: RunStatus,
        result: Option<Value>,
        fence: Option<&Fence>,
    ) -> Commit {
        let (run, fence) = (run.to_string(), fence.cloned());
        self.op(move |s| async move { s.set_status(run, status, result, fence).await })
    }

    fn set_version(&self, run: &str, version: &crate::store::Version, fence: &Fence) -> Commit {
        let (run, version, fence) = (run.to_string(), version.clone(), fence.clone());
        self.op(move |s| async move { s.set_version(run, version, fence).await })
    }

    fn run(&self, id: &str) -> StoreFut<'static, Option<RunRecord>> {
        let id = id.to_string();
        self.op(move |s| async move { s.load_run(&id).await })
    }

    fn runs(&self, status: Option<RunStatus>) -> StoreFut<'static, Vec<RunRecord>> {
        self.op(move |s| async move { s.load_runs(status).await })
    }

    fn prune(&self, filter: &Prune) -> StoreFut<'static, Vec<String>> {
        let filter = filter.clone();
        self.op(move |s| async move { s.prune(filter).await })
    }

    fn request_cancel(&self, run: &str) -> Commit {
        let run = run.to_string();
        self.op(move |s| async move { s.request_cancel(run).await })
    }

    fn cancel_requested(&self, run: &str) -> StoreFut<'static, bool> {
        let run = run.to_string();
        self.op(move |s| async move { s.cancel_requested(&run).await })
    }
}

impl Ownership for PostgresStore {
    fn claim(&self, run: &str, owner: &Owner) -> StoreFut<'static, Fence> {
        let (run, owner) = (run.to_string(), owner.clone());
        self.op(move |s| async move { s.claim(run, owner).await })
    }

    fn renew(&self, run: &str, fence: &Fence) -> StoreFut<'static, bool> {
        let (run, fence) = (run.to_string(), fence.clone());
        self.op(move |s| async move { s.renew(run, fence).await })
    }

    fn mark_interrupted(&self) -> StoreFut<'static, Vec<String>> {
        self.op(move |s| async move { s.sweep().await })
    }

    fn lapsed(&self, run: &str) -> StoreFut<'static, bool> {
        let run = run.to_string();
        self.op(move |s| async move { s.lapsed(&run).await })
    }
}

impl JournalStore for PostgresStore {
    fn journal(&self, run: &str) -> StoreFut<'static, Vec<JournalEntry>> {
        let run = run.to_string();
        self.op(move |s| async move { s.load_journal(&run).await })
    }

    fn append(&self, entry: JournalEntry) -> Commit {
        self.batch.append(entry)
    }
}

impl EventStore for PostgresStore {
    fn append_events(&self, events: Vec<EventRow>) -> Commit {
        self.batch.append_events(events)
    }

    fn events(&self, run: &str, after: i64, limit: usize) -> StoreFut<'static, Vec<EventRecord>> {
        let run = run.to_string();
        self.op(move |s| async move { s.load_events(&run, after, None, limit).await })
    }

    fn events_of_kind(
        &self,
        run: &str,
        kind: &str,
        limit: usize,
    ) -> StoreFut<'static, Vec<EventRecord>> {
        let (run, kind) = (run.to_string(), kind.to_string());
        self.op(move |s| async move { s.load_events(&run, 0, Some(&kind), limit).await })
    }

    fn event_tail(&self, run: &str, n: usize) -> StoreFut<'static, (u64, i64)> {
        let run = run.to_string();
        self.op(move |s| async move { s.event_tail(&run, n).await })
    }
}

impl QuestionStore for PostgresStore {
    fn ask(&self, q: QuestionRecord, fence: Option<&Fence>) -> Commit {
        let fence = fence.cloned();
        self.op(move |s| async move { s.ask(q, fence).await })
    }

    fn answer(&self, run: &str, name: &str, answer: Value) -> StoreFut<'static, bool> {
        let (run, name) = (run.to_string(), name.to_string());
        self.op(move |s| async move { s.answer(run, name, answer).await })
    }

    fn questions(&self, run: &str) -> StoreFut<'static, Vec<QuestionRecord>> {
        let run = run.to_string();
        self.op(move |s| async move { s.load_questions(&run).await })
    }
}

impl Store for PostgresStore {
    fn work(&self) -> Option<&dyn super::work::WorkQueue> {
        Some(self)
    }

    fn woken(&self, run: &str) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.wakes.waiter(run))
    }
}
