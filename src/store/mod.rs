//! The durable journal: runs, their step results, events and senior
//! questions, behind one contract.
//!
//! [`Store`] is the small surface the rest of the host uses, so a server
//! database could stand behind it later; [`SqliteStore`] is the durable
//! implementation and [`MemoryStore`] the in-process one, both held to
//! one conformance suite (`conformance.rs`, feature `testing`); [`open`]
//! picks one by URL (`url.rs`). In SQLite, a journal entry is durable
//! once appended to the step log (`sqlite/steplog.rs`): one `write`,
//! folded into SQLite by the next transaction, so **a step result the
//! flow has seen is on disk**. Other writes are grouped: concurrent ones
//! share one transaction (group commit), and each resolves once its
//! transaction is committed. WAL mode with `synchronous = NORMAL`: a
//! recorded step survives the death of the `swarm` process; after a
//! power cut the last few may be lost, never half-read.

pub mod clock;
#[cfg(feature = "testing")]
pub mod conformance;
mod inbox;
mod journal;
mod lease;
mod lineage;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
mod url;
pub mod work;

pub use inbox::Inbox;
pub use journal::{Halt, Journal, input_hash};

/// The store contract's traits, for code that calls a store's methods on
/// a concrete type (`use lua_swarm::store::prelude::*`).
pub mod prelude {
    pub use super::work::WorkQueue;
    pub use super::{
        EventStore, JournalStore, MessageStore, MobStore, Ownership, QuestionStore, RunStore, Store,
    };
}
pub use lease::{Lease, Lost, RenewError, clock_text};
pub use lineage::{ForkOf, Origin, Taken};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, block_on as wait, damage_marker, damaged_logs};
pub use url::{Checkup, Location, SCHEMES, checkup, open, sqlite_path_of};

use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// Why the store could not do something. Each names the database file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the journal at {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "the journal at {path} is not a usable SQLite database ({message}); move it aside to start a new one"
    )]
    Corrupt { path: String, message: String },
    #[error("the journal at {path} is locked by another process (gave up after {ms} ms)")]
    Locked { path: String, ms: u64 },
    #[error("journal write failed at {path}: {message}")]
    Write { path: String, message: String },
    /// A write that would duplicate what exists (a run id taken).
    #[error("journal write refused at {path}: it exists already ({message})")]
    Exists { path: String, message: String },
    #[error("journal read failed at {path}: {message}")]
    Read { path: String, message: String },
    #[error("the journal writer has stopped")]
    Closed,
    /// Another owner holds the run's lease.
    #[error("{0}")]
    Owned(String),
    /// A write by an owner that no longer holds the run (another took it
    /// over, or it was cancelled or interrupted meanwhile): refused whole.
    #[error("run {run} is no longer held by this owner (epoch {epoch}); the write was refused")]
    Fenced { run: String, epoch: u64 },
    /// A store URL that names no store this build has.
    #[error("cannot open the store `{url}`: {message}; swarm opens {}", SCHEMES)]
    Unsupported { url: String, message: String },
}

impl StoreError {
    /// A stable code, the same whatever database stands behind the store.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Open { .. } => "store_open",
            StoreError::Corrupt { .. } => "store_corrupt",
            StoreError::Locked { .. } => "store_locked",
            StoreError::Write { .. } => "store_write",
            StoreError::Exists { .. } => "store_exists",
            StoreError::Read { .. } => "store_read",
            StoreError::Closed => "store_closed",
            StoreError::Owned(_) => "run_owned",
            StoreError::Fenced { .. } => "run_fenced",
            StoreError::Unsupported { .. } => "store_unsupported",
        }
    }
}

/// Who executes a run: one owner at a time, holding a lease it renews.
#[derive(Debug, Clone)]
pub struct Owner {
    /// 64 random bits, hex: unique per execution of a run.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Host name and pid namespace: where `pid` means this process. On the
    /// same machine a dead pid frees the run at once; anywhere else only
    /// the lease's expiry does (a container's pid 1 is not ours).
    pub machine: String,
}

impl Owner {
    /// A new owner id for this process.
    pub fn new() -> Owner {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `len` bytes into `buf`.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let host = ok
            .then(|| {
                let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
                String::from_utf8_lossy(&buf[..end]).into_owned()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Owner {
            id: format!("{:016x}", rand::random::<u64>()),
            machine: format!("{host}/{ns}"),
            host,
            pid: std::process::id(),
        }
    }
}

impl Default for Owner {
    fn default() -> Self {
        Owner::new()
    }
}

/// What an owner's writes carry: who it is and which ownership of the run
/// it holds. `epoch` grows by one on every takeover (and on every status
/// write made from outside, such as a cancel), and the store refuses a
/// write whose epoch is not the run's current one: a stale owner's
/// writes never land, whatever its clock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: u64,
}

/// How long a run's lease lasts without renewal (`SWARM_LEASE_MS`, default
/// 30 s). The owner renews it every third of that while the run executes;
/// another process may take the run over only once it has expired.
pub fn lease() -> std::time::Duration {
    let ms = std::env::var("SWARM_LEASE_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms >= 100)
        .unwrap_or(30_000);
    std::time::Duration::from_millis(ms)
}

/// Where a run stands. Stored as its lowercase name; callers match on the
/// enum, never on strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Executing (an owner holds its lease).
    Running,
    /// Stopped for a senior's answer; resumable.
    Waiting,
    /// Stopped by a signal, a journal fault or a lost owner; resumable.
    Interrupted,
    /// Stopped because the flow diverged from its journal; resumable once
    /// the code is fixed or reverted.
    Diverged,
    Pass,
    Blocked,
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Interrupted,
        RunStatus::Diverged,
        RunStatus::Pass,
        RunStatus::Blocked,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Diverged => "diverged",
            RunStatus::Pass => "pass",
            RunStatus::Blocked => "blocked",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Pass, blocked or cancelled: nothing more will happen to it.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Pass | RunStatus::Blocked | RunStatus::Cancelled
        )
    }

    /// Waiting, interrupted or diverged: `swarm resume` continues it.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            RunStatus::Waiting | RunStatus::Interrupted | RunStatus::Diverged
        )
    }

    /// How a run whose root task settled as `task` ended.
    pub fn of_task(task: crate::engine::TaskStatus) -> RunStatus {
        use crate::engine::TaskStatus as T;
        match task {
            T::Pass => RunStatus::Pass,
            T::Cancelled => RunStatus::Cancelled,
            T::Pending | T::Running | T::Suspended | T::Blocked => RunStatus::Blocked,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<RunStatus, String> {
        RunStatus::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown run status `{s}`"))
    }
}

/// A run as the journal knows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub blueprint: String,
    pub path: String,
    pub hash: String,
    pub input: Value,
    pub status: RunStatus,
    pub result: Option<Value>,
    pub pid: Option<u32>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Completed journal entries.
    pub steps: u64,
    /// Model tokens its LLM turns spent.
    pub tokens: u64,
    /// The owner executing it (while `running`).
    pub owner: Option<String>,
    pub owner_host: Option<String>,
    pub owned_since_ms: Option<u64>,
    pub lease_until_ms: Option<u64>,
    /// The run's ownership epoch (see [`Fence`]): 1 once created, one
    /// more at every takeover.
    pub epoch: u64,
    /// SHA-256 of each helper file the blueprint `require`d, by path: a
    /// changed helper is refused on resume like a changed blueprint.
    #[serde(default)]
    pub helpers: std::collections::BTreeMap<String, String>,
    /// The run it was forked from (`swarm fork`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<ForkOf>,
}

/// One journaled call of a flow: a step, an answer, a sleep, a clock or
/// random read. `pos` is its position in the flow (see `lua/swarm/flow.lua`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    pub run: String,
    pub pos: String,
    pub kind: String,
    pub key: String,
    pub input_hash: String,
    pub ok: bool,
    pub value: Value,
    pub attempts: u32,
    pub at_ms: u64,
    /// Model tokens this call spent (LLM turns); added to the run's total.
    pub tokens: u64,
    /// The ownership epoch it was recorded under: where two executions
    /// recorded one position, the later ownership's entry is the one kept.
    #[serde(default)]
    pub epoch: u64,
    /// Where it came from when this run did not record it live (a fork's
    /// copied, edited or reused entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Box<Origin>>,
}

/// A persisted engine event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub run: String,
    pub kind: String,
    pub payload: Value,
}

/// An event to persist: its run, its kind and its JSON text, encoded once
/// when it is read off the ledger (cheap to keep and retry while the disk
/// is full or locked).
#[derive(Debug, Clone)]
pub struct EventRow {
    pub run: std::sync::Arc<str>,
    pub kind: &'static str,
    pub payload: std::sync::Arc<str>,
    /// The writing owner's epoch; rows of a stale one are not stored.
    /// 0: not written by an owner (tools, imports).
    pub epoch: u64,
}

/// A senior question asked by a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuestionRecord {
    pub run: String,
    pub pos: String,
    pub name: String,
    pub question: Value,
    pub answer: Option<Value>,
}

impl QuestionRecord {
    /// The name `--answer NAME=VALUE` uses for a question: the string
    /// itself, or a table's `key` (a number key too), else `question`. The
    /// one copy of this rule: the flow library asks it through the host, so
    /// a question is named the same when asked, answered and replayed.
    pub fn name_of(q: &Value) -> String {
        match q {
            Value::String(s) => s.clone(),
            Value::Object(m) => match m.get("key") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "question".into(),
            },
            other => other.to_string(),
        }
    }
}

/// A message sent into a run from outside (`swarm send`, `POST
/// /v1/runs/{id}/messages`), for the flow's `swarm.recv(topic)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MessageRecord {
    pub run: String,
    /// Its number in the run: 1, 2, 3, ... in the order the store took
    /// the run's messages (all topics together), with no gaps.
    pub seq: u64,
    pub topic: String,
    pub value: Value,
    /// The sender's own id for it, which makes a retried send a no-op.
    pub id: Option<String>,
    pub sent_ms: u64,
}

/// What [`MessageStore::send_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Posted {
    /// The message's number in its run.
    pub seq: u64,
    /// True when the run already had a message with the sender's id: no
    /// new message was added, `seq` is the earlier one's.
    pub duplicate: bool,
}

/// Which finished runs `swarm prune` deletes.
#[derive(Debug, Clone)]
pub struct Prune {
    /// Only runs last updated before this time (epoch ms).
    pub before_ms: u64,
    /// Only runs in these statuses (finished ones only).
    pub statuses: Vec<RunStatus>,
    /// Keep this many of the newest matching runs.
    pub keep_last: usize,
}

/// A store operation in flight. Every operation of [`Store`] is one, so a
/// server database can stand behind the trait; SQLite answers reads at
/// once (already-resolved futures) and commits writes in groups.
pub type StoreFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Resolves when a write is committed.
pub type Commit = StoreFut<'static, ()>;

// The contract, split by what callers need: each consumer can take only
// the part it reads (`Arc<dyn EventStore>` from an `Arc<dyn Store>` by
// upcasting). Uniformly async; errors are [`StoreError`]s, whose codes do
// not depend on the backend. `conformance/` is its definition: every store
// passes it.
//
// Ownership: a run has one owner at a time, holding a lease. Whether a
// lease has lapsed is decided by the store on one clock (see
// `store/clock.rs` for SQLite), never by comparing two processes' wall
// clocks. Every owner write carries its [`Fence`]; a stale one is refused.

/// The runs themselves: recorded, read, listed, settled, cancelled, pruned.
pub trait RunStore: Send + Sync {
    /// Records a new run, owned by `owner` with a fresh lease, at epoch 1.
    fn create_run(&self, run: &RunRecord, owner: &Owner) -> StoreFut<'static, Fence>;
    /// Sets status (and result, when settled) of a run. With a fence, the
    /// write applies only while that ownership holds the run (else
    /// [`StoreError::Fenced`]) and, unless the status is `running`,
    /// releases it. Without one (a cancel, an operator's repair), the epoch
    /// grows: whoever executed the run can write nothing more to it.
    fn set_status(
        &self,
        run: &str,
        status: RunStatus,
        result: Option<Value>,
        fence: Option<&Fence>,
    ) -> Commit;
    fn run(&self, id: &str) -> StoreFut<'static, Option<RunRecord>>;
    fn runs(&self, status: Option<RunStatus>) -> StoreFut<'static, Vec<RunRecord>>;
    /// Deletes finished runs matching `filter` with their journal, events
    /// and questions, then reclaims the space; returns the deleted ids.
    fn prune(&self, filter: &Prune) -> StoreFut<'static, Vec<String>>;
    fn request_cancel(&self, run: &str) -> Commit;
    fn cancel_requested(&self, run: &str) -> StoreFut<'static, bool>;
    /// Moves a run to another version of its code (`swarm upgrade`): its
    /// blueprint hash and its helpers' hashes. Only while the ownership
    /// `fence` holds the run ([`StoreError::Fenced`] otherwise).
    fn set_version(&self, run: &str, version: &Version, fence: &Fence) -> Commit;
}

/// A version of a run's code: the blueprint's hash and each `require`d
/// helper's, by path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Version {
    pub hash: String,
    pub helpers: std::collections::BTreeMap<String, String>,
}

/// Who executes a run: claims, renewals and lapses, decided on the store's one clock.
pub trait Ownership: Send + Sync {
    /// Takes a recorded, unfinished run for `owner`: atomically, and only
    /// when no other owner holds an unexpired lease on it (or its owner is
    /// provably dead). The epoch grows by one. Refused with
    /// [`StoreError::Owned`] naming the holder otherwise.
    fn claim(&self, run: &str, owner: &Owner) -> StoreFut<'static, Fence>;
    /// Extends the lease of the owner holding `fence`; false when it no
    /// longer holds the run.
    fn renew(&self, run: &str, fence: &Fence) -> StoreFut<'static, bool>;
    /// Marks runs left `running` whose owner's lease has lapsed (or whose
    /// owner is provably dead) as `interrupted`, fencing that owner out
    /// (never a finished run); returns their ids.
    fn mark_interrupted(&self) -> StoreFut<'static, Vec<String>>;
    /// Whether the lease on `run` has lapsed by the store's clock (or its
    /// owner is provably dead): a run `running` with such a lease has no
    /// one executing it.
    fn lapsed(&self, run: &str) -> StoreFut<'static, bool>;
}

/// A run's journal: its recorded calls, by position.
pub trait JournalStore: Send + Sync {
    /// A run's journal, a position once: where two ownerships recorded the
    /// same position, the later epoch's entry.
    fn journal(&self, run: &str) -> StoreFut<'static, Vec<JournalEntry>>;
    /// Appends one journal entry, recorded under `entry.epoch`; resolves
    /// once it is on disk. Refused ([`StoreError::Fenced`]) when the store
    /// knows a later ownership of the run.
    fn append(&self, entry: JournalEntry) -> Commit;
}

/// A run's events, gapless per run, paged by cursor.
pub trait EventStore: Send + Sync {
    /// Appends events, in order (no acknowledgement needed by callers).
    /// Rows whose epoch is stale are not stored.
    fn append_events(&self, events: Vec<EventRow>) -> Commit;
    fn events(&self, run: &str, after: i64, limit: usize) -> StoreFut<'static, Vec<EventRecord>>;
    /// Up to `limit` events of `run` of one kind, oldest first.
    fn events_of_kind(
        &self,
        run: &str,
        kind: &str,
        limit: usize,
    ) -> StoreFut<'static, Vec<EventRecord>>;
    /// How many events `run` has, and the id just before its last `n`
    /// (so `events(run, that, n)` pages the tail).
    fn event_tail(&self, run: &str, n: usize) -> StoreFut<'static, (u64, i64)>;
}

/// Senior questions a run asks, answered once.
pub trait QuestionStore: Send + Sync {
    /// Records a question a run asks; with a fence, only while that
    /// ownership holds the run (else [`StoreError::Fenced`]).
    fn ask(&self, q: QuestionRecord, fence: Option<&Fence>) -> Commit;
    /// Answers the first open question of `run` named `name` (or at `name`
    /// as a position). False when there is none.
    fn answer(&self, run: &str, name: &str, answer: Value) -> StoreFut<'static, bool>;
    fn questions(&self, run: &str) -> StoreFut<'static, Vec<QuestionRecord>>;
}

/// Messages sent into a run, kept in the order they were taken.
pub trait MessageStore: Send + Sync {
    /// Appends a message on `topic` to run `run`'s messages, numbered one
    /// after the run's last. With a sender's `id` that one of the run's
    /// messages already carries, nothing is added: the answer is that
    /// message's number, marked `duplicate` (retries are safe). Whether
    /// the run exists is the caller's to check.
    fn send_message(
        &self,
        run: &str,
        topic: &str,
        value: Value,
        id: Option<&str>,
    ) -> StoreFut<'static, Posted>;
    /// Up to `limit` messages of `run` on `topic` numbered after `after`,
    /// in order.
    fn messages(
        &self,
        run: &str,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> StoreFut<'static, Vec<MessageRecord>>;
}

/// A mob as stored: its roster document and that document's version.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MobRecord {
    pub name: String,
    /// 1 once written, one more at every write.
    pub version: u64,
    /// The roster (the `mob` layer's `Roster`), as JSON.
    pub doc: Value,
    pub updated_ms: u64,
}

/// Mobs: named rosters of long-lived members, shared by every run that
/// names them (`swarm.mob(name)`), and each member's conversation.
pub trait MobStore: Send + Sync {
    fn mob(&self, name: &str) -> StoreFut<'static, Option<MobRecord>>;
    /// Writes mob `name`'s roster when its version is still `version` (0:
    /// the mob does not exist yet); false, writing nothing, when another
    /// writer got there first (read again and retry).
    fn put_mob(&self, name: &str, version: u64, doc: Value) -> StoreFut<'static, bool>;
    /// Every mob, by name.
    fn mobs(&self) -> StoreFut<'static, Vec<MobRecord>>;
    /// The turns of conversation `convo` of mob `mob`, in order.
    fn turns(&self, mob: &str, convo: &str) -> StoreFut<'static, Vec<Value>>;
    /// Appends `turns` to conversation `convo` when it holds exactly `at`
    /// turns; false, appending nothing, otherwise.
    fn append_turns(
        &self,
        mob: &str,
        convo: &str,
        at: u64,
        turns: Vec<Value>,
    ) -> StoreFut<'static, bool>;
}

/// The whole contract, as the host holds a store: every part above,
/// and the work queue.
pub trait Store:
    RunStore + Ownership + JournalStore + EventStore + QuestionStore + MessageStore + MobStore
{
    /// The remote-step work queue every server on this journal shares
    /// (`store/work.rs`); `None` for a journal without one, whose runs use
    /// the engine's in-memory board.
    fn work(&self) -> Option<&dyn work::WorkQueue> {
        None
    }

    /// Resolves when something addressed to `run` (an answer, a cancel
    /// request) may have arrived, so that its owner looks. A store that
    /// can tell (Postgres: `LISTEN`/`NOTIFY`) resolves at the write,
    /// whichever node made it; by default, after a short poll interval
    /// (another process may have written the file).
    fn woken(&self, run: &str) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let _ = run;
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(250)))
    }
}
