//! [`MemoryStore`]: the whole store contract in this process's memory.
//!
//! What `--store memory:` (and `--no-journal`) runs on, and the second
//! implementation that keeps the contract honest: the conformance suite
//! (`conformance.rs`) holds it to everything it holds SQLite to.
//!
//! Every table sits behind one `std::sync::Mutex`, because nothing async
//! happens while holding it: each operation takes the lock once and does
//! its whole work under it (a fenced write's check and write, an
//! answer's find and set, a claim's compare and swap), so each is atomic
//! as a database transaction is, and returns an already-resolved future.
//! Leases are judged on the machine's boot clock (`clock.rs`), as
//! SQLite's are; nothing here outlives the process, so no boot is
//! recorded. Nothing is ever written to disk: [`Store::path`] is the
//! placeholder `memory:`.

use super::{
    Commit, EventRecord, EventRow, EventStore, Fence, JournalEntry, JournalStore, Owner, Ownership,
    Prune, QuestionRecord, QuestionStore, RunRecord, RunStatus, RunStore, Store, StoreError,
    StoreFut, clock, clock_text,
};
use crate::engine::now_ms;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// What a memory store's errors name where SQLite's name a file.
const PLACE: &str = "memory:";

/// Kinds of journal entry that are not steps of the flow (they belong to
/// an LLM step): not counted in [`RunRecord::steps`].
const NOT_STEPS: [&str; 2] = ["llm_turn", "llm_tool"];

mod messages;
mod mobs;

pub struct MemoryStore {
    state: Mutex<State>,
    /// The lease length; `None`: [`super::lease`] when a lease is taken.
    lease: Option<Duration>,
    /// Host and pid namespace of this process (see [`Owner::machine`]).
    machine: String,
    /// The remote-step work queue: the engine's in-memory board.
    work: crate::engine::board::Board,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, Run>,
    /// Kept by run id whether or not the run is recorded (tools and
    /// benches append to runs they did not create), as SQLite keeps them.
    journals: HashMap<String, HashMap<String, JournalEntry>>,
    events: HashMap<String, Vec<Event>>,
    questions: HashMap<String, Vec<QuestionRecord>>,
    /// Messages sent into runs, in order (`memory/messages.rs`).
    messages: HashMap<String, Vec<super::MessageRecord>>,
    /// Mobs by name, and their conversations by (mob, conversation).
    mobs: HashMap<String, super::MobRecord>,
    turns: HashMap<(String, String), Vec<Value>>,
}

/// A run's row: the record as readers see it (less the counts computed
/// from its journal), and what only the store reads.
struct Run {
    record: RunRecord,
    /// Where the owner's pid means a process (see [`Owner::machine`]).
    machine: String,
    /// The lease's end on the boot clock; `None` without an owner.
    lease_until_boot: Option<u64>,
    cancel_requested: bool,
}

/// An event as appended: its text is parsed only when read.
struct Event {
    kind: &'static str,
    payload: Arc<str>,
}

impl MemoryStore {
    /// An empty store whose leases last [`super::lease`].
    pub fn new() -> MemoryStore {
        MemoryStore {
            state: Mutex::default(),
            lease: None,
            machine: Owner::new().machine,
            work: Default::default(),
        }
    }

    /// An empty store whose leases last `length`, whatever
    /// `$SWARM_LEASE_MS` says: a test can let one lapse in milliseconds.
    pub fn with_lease(length: Duration) -> MemoryStore {
        MemoryStore {
            lease: Some(length),
            ..MemoryStore::new()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every write is whole before the lock is let go, so a panic
        // elsewhere leaves nothing half-done behind it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease_length(&self) -> Duration {
        self.lease.unwrap_or_else(super::lease)
    }

    /// Gives `run` to `owner` with a fresh lease (the caller has decided
    /// it may).
    fn take(&self, run: &mut Run, owner: &Owner) {
        let (wall, length) = (now_ms(), self.lease_length().as_millis() as u64);
        let r = &mut run.record;
        r.owner = Some(owner.id.clone());
        r.owner_host = Some(owner.host.clone());
        r.pid = Some(owner.pid);
        r.owned_since_ms = Some(wall);
        r.lease_until_ms = Some(wall + length);
        run.machine = owner.machine.clone();
        run.lease_until_boot = Some(clock::boot_ms() + length);
    }

    /// The owner of `run` when it provably is gone: it ran on this machine
    /// (same host, same pid namespace) and its process no longer exists.
    fn dead_owner<'a>(&self, run: &'a Run) -> Option<&'a str> {
        let pid = run.record.pid?;
        let gone = pid != std::process::id() && !alive(pid);
        (run.machine == self.machine && gone)
            .then_some(run.record.owner.as_deref())
            .flatten()
    }

    /// Whether nobody holds `run`: no owner, a lease run out on the boot
    /// clock, or an owner provably dead.
    fn lapsed_now(&self, run: &Run) -> bool {
        run.record.owner.is_none()
            || run
                .lease_until_boot
                .is_none_or(|end| end < clock::boot_ms())
            || self.dead_owner(run).is_some()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

/// Whether process `pid` exists. Only "no such process" says it does not:
/// one we may not signal is alive all the same.
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// An operation answered already, as a store future.
fn done<T: Send + 'static>(r: Result<T, StoreError>) -> StoreFut<'static, T> {
    Box::pin(std::future::ready(r))
}

fn fenced(run: &str, epoch: u64) -> StoreError {
    StoreError::Fenced {
        run: run.to_string(),
        epoch,
    }
}

/// "run r7 is being run by host-a (pid 4121) since 12:03:10; its lease
/// expires in 20 s", as SQLite says it.
fn owned_message(run: &Run) -> String {
    let r = &run.record;
    let left = run
        .lease_until_boot
        .map_or(0, |end| end.saturating_sub(clock::boot_ms()).max(1));
    format!(
        "run {} is being run by {} (pid {}) since {}; its lease expires in {} s \
         (a run has one owner at a time: wait for it, or `swarm cancel {}`)",
        r.id,
        r.owner_host.as_deref().unwrap_or("?"),
        r.pid.unwrap_or(0),
        r.owned_since_ms.map_or("?".to_string(), clock_text),
        left.div_ceil(1000),
        r.id,
    )
}

impl State {
    /// `id`'s record as readers see it: steps counted from its journal.
    fn record(&self, id: &str) -> Option<RunRecord> {
        let mut r = self.runs.get(id)?.record.clone();
        r.steps = self.journals.get(id).map_or(0, |j| {
            j.values()
                .filter(|e| !NOT_STEPS.contains(&e.kind.as_str()))
                .count() as u64
        });
        Some(r)
    }

    /// The events of `run` after id `after` that `keep` wants, at most
    /// `limit`, oldest first.
    fn events(
        &self,
        run: &str,
        after: i64,
        limit: usize,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let Some(all) = self.events.get(run) else {
            return Ok(Vec::new());
        };
        // Ids are 1.. in order, so the event with id `n` is at `n - 1`.
        let from = usize::try_from(after.max(0)).unwrap_or(usize::MAX);
        let ids = (from as i64 + 1..).zip(all.iter().skip(from));
        ids.filter(|(_, e)| keep(e))
            .take(limit)
            .map(|(id, e)| {
                let payload = serde_json::from_str(&e.payload).map_err(|err| StoreError::Read {
                    path: PLACE.into(),
                    message: format!("event {id} of run {run} is not JSON: {err}"),
                })?;
                Ok(EventRecord {
                    id,
                    run: run.to_string(),
                    kind: e.kind.to_string(),
                    payload,
                })
            })
            .collect()
    }
}

impl RunStore for MemoryStore {
    fn create_run(&self, run: &RunRecord, owner: &Owner) -> StoreFut<'static, Fence> {
        let mut st = self.lock();
        if st.runs.contains_key(&run.id) {
            return done(Err(StoreError::Exists {
                path: PLACE.into(),
                message: format!("run `{}` is recorded already", run.id),
            }));
        }
        let mut row = Run {
            record: RunRecord {
                result: None,
                updated_ms: run.created_ms,
                steps: 0,
                tokens: 0,
                epoch: 1,
                ..run.clone()
            },
            machine: String::new(),
            lease_until_boot: None,
            cancel_requested: false,
        };
        self.take(&mut row, owner);
        row.record.owned_since_ms = Some(run.created_ms);
        st.runs.insert(run.id.clone(), row);
        done(Ok(Fence {
            owner: owner.id.clone(),
            epoch: 1,
        }))
    }

    fn set_status(
        &self,
        run: &str,
        status: RunStatus,
        result: Option<Value>,
        fence: Option<&Fence>,
    ) -> Commit {
        let mut st = self.lock();
        let Some(row) = st.runs.get_mut(run) else {
            return done(match fence {
                Some(f) => Err(fenced(run, f.epoch)),
                None => Ok(()),
            });
        };
        let r = &mut row.record;
        if let Some(f) = fence
            && (r.owner.as_deref() != Some(f.owner.as_str()) || r.epoch != f.epoch)
        {
            return done(Err(fenced(run, f.epoch)));
        }
        r.status = status;
        if result.is_some() {
            r.result = result;
        }
        r.updated_ms = now_ms();
        if status != RunStatus::Running {
            row.cancel_requested = false;
            r.owner = None;
            r.lease_until_ms = None;
            row.lease_until_boot = None;
        }
        if fence.is_none() {
            // From outside: whoever executed the run is fenced out.
            r.epoch += 1;
        }
        done(Ok(()))
    }

    fn set_version(&self, run: &str, version: &crate::store::Version, fence: &Fence) -> Commit {
        let mut st = self.lock();
        let Some(row) = st.runs.get_mut(run) else {
            return done(Err(fenced(run, fence.epoch)));
        };
        let r = &mut row.record;
        if r.owner.as_deref() != Some(fence.owner.as_str()) || r.epoch != fence.epoch {
            return done(Err(fenced(run, fence.epoch)));
        }
        r.hash = version.hash.clone();
        r.helpers = version.helpers.clone();
        r.updated_ms = now_ms();
        done(Ok(()))
    }

    fn run(&self, id: &str) -> StoreFut<'static, Option<RunRecord>> {
        done(Ok(self.lock().record(id)))
    }

    fn runs(&self, status: Option<RunStatus>) -> StoreFut<'static, Vec<RunRecord>> {
        let st = self.lock();
        let mut runs: Vec<RunRecord> = st
            .runs
            .values()
            .filter(|r| status.is_none_or(|s| r.record.status == s))
            .filter_map(|r| st.record(&r.record.id))
            .collect();
        runs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        done(Ok(runs))
    }

    fn prune(&self, filter: &Prune) -> StoreFut<'static, Vec<String>> {
        let mut st = self.lock();
        let mut doomed: Vec<(u64, String)> = st
            .runs
            .values()
            .map(|r| &r.record)
            .filter(|r| r.updated_ms < filter.before_ms)
            .filter(|r| r.status.is_finished() && filter.statuses.contains(&r.status))
            .map(|r| (r.updated_ms, r.id.clone()))
            .collect();
        // Newest first, so `keep_last` keeps the newest.
        doomed.sort_by(|a, b| b.cmp(a));
        let ids: Vec<String> = doomed
            .into_iter()
            .skip(filter.keep_last)
            .map(|(_, id)| id)
            .collect();
        for id in &ids {
            st.runs.remove(id);
            st.journals.remove(id);
            st.events.remove(id);
            st.questions.remove(id);
            st.messages.remove(id);
        }
        done(Ok(ids))
    }

    fn request_cancel(&self, run: &str) -> Commit {
        if let Some(r) = self.lock().runs.get_mut(run) {
            r.cancel_requested = true;
        }
        done(Ok(()))
    }

    fn cancel_requested(&self, run: &str) -> StoreFut<'static, bool> {
        done(Ok(self
            .lock()
            .runs
            .get(run)
            .is_some_and(|r| r.cancel_requested)))
    }
}

impl Ownership for MemoryStore {
    fn claim(&self, run: &str, owner: &Owner) -> StoreFut<'static, Fence> {
        let mut st = self.lock();
        let Some(row) = st.runs.get_mut(run) else {
            return done(Err(StoreError::Owned(format!("no run `{run}`"))));
        };
        let status = row.record.status;
        if status.is_finished() {
            return done(Err(StoreError::Owned(format!(
                "run {run} already finished ({status})"
            ))));
        }
        let mine = row.record.owner.as_deref() == Some(owner.id.as_str());
        if !(mine || self.lapsed_now(row)) {
            return done(Err(StoreError::Owned(owned_message(row))));
        }
        self.take(row, owner);
        let r = &mut row.record;
        r.status = RunStatus::Running;
        r.updated_ms = now_ms();
        r.epoch += 1;
        done(Ok(Fence {
            owner: owner.id.clone(),
            epoch: r.epoch,
        }))
    }

    fn renew(&self, run: &str, fence: &Fence) -> StoreFut<'static, bool> {
        let mut st = self.lock();
        let Some(row) = st.runs.get_mut(run) else {
            return done(Ok(false));
        };
        let r = &row.record;
        let holds = r.owner.as_deref() == Some(fence.owner.as_str())
            && r.epoch == fence.epoch
            && r.status == RunStatus::Running;
        if holds {
            let length = self.lease_length().as_millis() as u64;
            row.record.lease_until_ms = Some(now_ms() + length);
            row.lease_until_boot = Some(clock::boot_ms() + length);
        }
        done(Ok(holds))
    }

    fn mark_interrupted(&self) -> StoreFut<'static, Vec<String>> {
        let mut st = self.lock();
        let mut marked = Vec::new();
        for row in st.runs.values_mut() {
            if row.record.status != RunStatus::Running || !self.lapsed_now(row) {
                continue;
            }
            let r = &mut row.record;
            r.status = RunStatus::Interrupted;
            r.owner = None;
            r.lease_until_ms = None;
            r.updated_ms = now_ms();
            r.epoch += 1;
            r.result = Some(serde_json::json!({
                "code": "owner_lost",
                "error": format!(
                    "its owner stopped renewing its lease (it died, or was paused or cut off); \
                     `swarm resume {}` continues it",
                    r.id
                ),
            }));
            row.lease_until_boot = None;
            marked.push(r.id.clone());
        }
        marked.sort();
        done(Ok(marked))
    }

    fn lapsed(&self, run: &str) -> StoreFut<'static, bool> {
        let st = self.lock();
        done(Ok(st.runs.get(run).is_some_and(|r| self.lapsed_now(r))))
    }
}

impl JournalStore for MemoryStore {
    fn journal(&self, run: &str) -> StoreFut<'static, Vec<JournalEntry>> {
        let st = self.lock();
        let mut entries: Vec<JournalEntry> = st
            .journals
            .get(run)
            .map(|j| j.values().cloned().collect())
            .unwrap_or_default();
        entries.sort_by(|a, b| (a.at_ms, &a.pos).cmp(&(b.at_ms, &b.pos)));
        done(Ok(entries))
    }

    fn append(&self, entry: JournalEntry) -> Commit {
        let mut st = self.lock();
        let current = st.runs.get(&entry.run).map(|r| r.record.epoch);
        // 0: not an owner's write (tools, imports).
        if entry.epoch > 0 && current.is_some_and(|c| c > entry.epoch) {
            return done(Err(fenced(&entry.run, entry.epoch)));
        }
        if let Some(row) = st.runs.get_mut(&entry.run) {
            row.record.tokens += entry.tokens;
        }
        let journal = st.journals.entry(entry.run.clone()).or_default();
        // A position once: an entry of a later ownership is never replaced.
        if journal
            .get(&entry.pos)
            .is_none_or(|had| had.epoch <= entry.epoch)
        {
            journal.insert(entry.pos.clone(), entry);
        }
        done(Ok(()))
    }
}

impl EventStore for MemoryStore {
    fn append_events(&self, events: Vec<EventRow>) -> Commit {
        let mut st = self.lock();
        for e in events {
            let current = st.runs.get(&*e.run).map(|r| r.record.epoch);
            // A stale owner's events are not stored (their run moved on).
            if e.epoch > 0 && current.is_some_and(|c| c != e.epoch) {
                continue;
            }
            st.events.entry(e.run.to_string()).or_default().push(Event {
                kind: e.kind,
                payload: e.payload,
            });
        }
        done(Ok(()))
    }

    fn events(&self, run: &str, after: i64, limit: usize) -> StoreFut<'static, Vec<EventRecord>> {
        done(self.lock().events(run, after, limit, |_| true))
    }

    fn events_of_kind(
        &self,
        run: &str,
        kind: &str,
        limit: usize,
    ) -> StoreFut<'static, Vec<EventRecord>> {
        done(self.lock().events(run, 0, limit, |e| e.kind == kind))
    }

    fn event_tail(&self, run: &str, n: usize) -> StoreFut<'static, (u64, i64)> {
        let count = self.lock().events.get(run).map_or(0, Vec::len);
        done(Ok((count as u64, count.saturating_sub(n) as i64)))
    }
}

impl QuestionStore for MemoryStore {
    fn ask(&self, q: QuestionRecord, fence: Option<&Fence>) -> Commit {
        let mut st = self.lock();
        if let Some(f) = fence
            && st
                .runs
                .get(&q.run)
                .is_none_or(|r| r.record.epoch != f.epoch)
        {
            return done(Err(fenced(&q.run, f.epoch)));
        }
        let asked = st.questions.entry(q.run.clone()).or_default();
        // An open question asked again is not a second question.
        if !asked.iter().any(|had| had.pos == q.pos) {
            asked.push(QuestionRecord { answer: None, ..q });
        }
        done(Ok(()))
    }

    fn answer(&self, run: &str, name: &str, answer: Value) -> StoreFut<'static, bool> {
        let mut st = self.lock();
        let open = st.questions.get_mut(run).and_then(|qs| {
            qs.iter_mut()
                .find(|q| q.answer.is_none() && (q.name == name || q.pos == name))
        });
        let found = open.is_some();
        if let Some(q) = open {
            q.answer = Some(answer);
        }
        done(Ok(found))
    }

    fn questions(&self, run: &str) -> StoreFut<'static, Vec<QuestionRecord>> {
        done(Ok(self
            .lock()
            .questions
            .get(run)
            .cloned()
            .unwrap_or_default()))
    }
}

impl Store for MemoryStore {
    fn work(&self) -> Option<&dyn super::work::WorkQueue> {
        Some(&self.work)
    }
}
