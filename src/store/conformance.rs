//! The store contract, checked: every [`Store`] must pass [`check`], and
//! SQLite and the memory store do (`tests/conformance.rs`); a store
//! added later passes the same function unchanged.
//!
//! Each check gets a fresh database from the [`Backend`], opened as
//! often as it likes: each handle stands for another process (a second
//! SQLite connection on the file; the memory store hands back itself),
//! so races between handles are races between processes.
//!
//! Deterministic, not timed. Ownership changes hands through an owner
//! that is provably dead (a pid of this machine that no longer exists)
//! rather than by waiting for a lease. The one check of a lapse by time
//! polls `lapsed()` under a hang guard. What holds only while a lease
//! runs ("a live owner's run is refused to another") is asserted only
//! when the attempt fitted well inside the lease by the boot clock, so a
//! stalled test machine makes a check say less, never fail wrongly.
//!
//! Compiled with the `testing` feature only: `cargo test` turns it on
//! (this crate's dev-dependency on itself); builds leave it out.

mod events;
mod lineage;
mod messages;
mod mobs;
mod ownership;
mod runs;
mod work;

use super::{
    EventRow, Fence, JournalEntry, Owner, QuestionRecord, RunRecord, RunStatus, Store, StoreError,
    clock,
};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Opens another handle on one database.
pub type Opener = Arc<dyn Fn() -> Arc<dyn Store> + Send + Sync>;

/// A store implementation under test.
pub struct Backend {
    pub name: String,
    /// Makes a new, empty database and says how to open it: each call of
    /// the opener is another handle on that database, as another process
    /// would open it (an in-process store returns itself).
    pub database: Box<dyn Fn() -> Opener + Send + Sync>,
    /// How long a lease lasts in the stores it opens: the lapse check
    /// waits about twice this long, so tests make it short.
    pub lease: Duration,
}

/// What a check found wrong, in words.
pub type Outcome = Result<(), String>;

type Run = fn(Db) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One promise of the contract, checked on a fresh database.
pub struct Check {
    pub name: &'static str,
    run: Run,
}

/// What a check is given: its database, and the lease length there.
#[derive(Clone)]
struct Db {
    opener: Opener,
    lease: Duration,
}

impl Db {
    fn open(&self) -> Arc<dyn Store> {
        (self.opener)()
    }
}

macro_rules! checks {
    ($($module:ident :: $name:ident),* $(,)?) => {
        &[$(Check {
            name: stringify!($name),
            run: |db| Box::pin($module::$name(db)),
        }),*]
    };
}

/// Every check, in the order [`check`] runs them.
pub const CHECKS: &[Check] = checks![
    runs::runs_are_recorded_as_given,
    runs::status_writes_are_fenced,
    runs::a_position_keeps_the_later_epochs_entry,
    runs::cancel_requests_hold_until_the_run_stops,
    runs::prune_never_touches_an_active_run,
    lineage::a_forks_lineage_reads_back_as_written,
    lineage::a_version_moves_only_under_its_fence,
    ownership::two_owners_race_and_exactly_one_wins,
    ownership::claims_are_never_handed_to_two_owners,
    ownership::a_stale_owners_writes_are_refused_after_a_takeover,
    ownership::a_lease_lapses_on_the_stores_clock,
    events::event_cursors_are_gapless_under_concurrent_writers,
    events::events_page_filter_and_tail,
    events::questions_are_answered_once,
    work::work_claims_are_never_handed_to_two_workers,
    messages::messages_are_numbered_once_in_order,
    mobs::mob_rosters_and_conversations_are_compare_and_set,
];

/// How long one check may take before it counts as hung.
const HANG: Duration = Duration::from_secs(90);

impl Check {
    /// Runs this check on a fresh database of `backend`.
    pub async fn run(&self, backend: &Backend) -> Outcome {
        let db = Db {
            opener: (backend.database)(),
            lease: backend.lease,
        };
        match tokio::time::timeout(HANG, (self.run)(db)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("did not finish within {} s (hung)", HANG.as_secs())),
        }
    }
}

/// Runs every check against `backend`, each on a fresh database, and
/// returns each one's name and outcome. Needs a multi-thread tokio
/// runtime (a store may block a worker while it waits for a lock).
pub async fn check(backend: &Backend) -> Vec<(&'static str, Outcome)> {
    let mut outcomes = Vec::new();
    for c in CHECKS {
        outcomes.push((c.name, c.run(backend).await));
    }
    outcomes
}

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)*) => {
        if !$cond {
            return Err(format!($($message)*));
        }
    };
}
use ensure;

/// A store error as a check's failure, saying what was being done.
trait Ctx<T> {
    fn ctx(self, doing: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for Result<T, StoreError> {
    fn ctx(self, doing: &str) -> Result<T, String> {
        self.map_err(|e| format!("{doing}: {e} ({})", e.code()))
    }
}

/// A new run's record as a run service would write it.
fn record(id: &str, created_ms: u64) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        blueprint: "conformance".into(),
        path: "blueprints/conformance.lua".into(),
        hash: "5eed".into(),
        input: json!({"n": 1, "text": "héllo"}),
        status: RunStatus::Running,
        result: None,
        pid: None,
        created_ms,
        updated_ms: created_ms,
        steps: 0,
        tokens: 0,
        owner: None,
        owner_host: None,
        owned_since_ms: None,
        lease_until_ms: None,
        epoch: 0,
        helpers: [("lib/util.lua".to_string(), "abc123".to_string())].into(),
        fork: None,
    }
}

fn entry(run: &str, pos: &str, value: Value, epoch: u64) -> JournalEntry {
    JournalEntry {
        run: run.to_string(),
        pos: pos.to_string(),
        kind: "step".into(),
        key: "agent".into(),
        input_hash: "h".into(),
        ok: true,
        value,
        attempts: 1,
        at_ms: crate::engine::now_ms(),
        tokens: 0,
        epoch,
        from: None,
    }
}

fn event(run: &str, kind: &'static str, payload: &Value, epoch: u64) -> EventRow {
    EventRow {
        run: Arc::from(run),
        kind,
        payload: Arc::from(payload.to_string()),
        epoch,
    }
}

fn question(run: &str, pos: &str, name: &str) -> QuestionRecord {
    QuestionRecord {
        run: run.to_string(),
        pos: pos.to_string(),
        name: name.to_string(),
        question: json!({"key": name, "text": format!("{name}?")}),
        answer: None,
    }
}

/// An owner whose process is gone: a pid of this machine that no longer
/// exists. Its run may be taken at once, without waiting for its lease.
fn dead_owner() -> Owner {
    let pid = std::process::Command::new("true")
        .spawn()
        .and_then(|mut child| child.wait().map(|_| child.id()))
        .expect("running `true` to get a pid that is gone");
    Owner {
        host: "gone-host".into(),
        pid,
        ..Owner::new()
    }
}

/// An owner on another machine: whether its process lives cannot be
/// known here, so only its lease's lapse frees its run.
fn remote_owner() -> Owner {
    Owner {
        host: "elsewhere".into(),
        machine: "elsewhere/pid:[4026531836]".into(),
        ..dead_owner()
    }
}

/// An owner in another live process of this machine (the one that
/// started this one): its run is not free while it lives.
fn neighbour_owner() -> Owner {
    Owner {
        host: "neighbour".into(),
        pid: std::os::unix::process::parent_id(),
        ..Owner::new()
    }
}

/// Which of `results` were granted.
fn granted(results: &[Result<Fence, StoreError>]) -> Vec<&Fence> {
    results.iter().filter_map(|r| r.as_ref().ok()).collect()
}

/// Whether everything since it opened fitted well inside one lease, by
/// the machine's boot clock: only then may a check insist that a live
/// lease still held.
struct Window {
    start: u64,
    lease: Duration,
}

impl Window {
    fn open(lease: Duration) -> Window {
        Window {
            start: clock::boot_ms(),
            lease,
        }
    }

    fn fits(&self) -> bool {
        let lease = self.lease.as_millis() as u64;
        clock::boot_ms().saturating_sub(self.start) < lease * 3 / 4
    }
}

/// Joins spawned store operations, in order.
async fn joined<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.map_err(|e| format!("a task panicked: {e}"))?);
    }
    Ok(out)
}
