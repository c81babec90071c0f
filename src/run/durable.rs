//! What makes a run durable: its record in the journal, replay of its
//! journaled calls on resume, and its events persisted in order.

use super::{Prepared, RunError};
use crate::auth::Role;
use crate::engine::{AttachOptions, Caller, Engine, now_ms};
use crate::store::{
    EventRow, EventStore, Fence, Journal, Lease, RenewError, RunRecord, Store, clock,
};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// `<blueprint>-<8 hex>`: short enough to type, random enough not to
/// clash, and always [`valid_run_id`] (a blueprint's name is free text:
/// other characters become `_`, and it is cut at 100).
pub fn new_run_id(blueprint: &str) -> String {
    let n: u32 = rand::random();
    let name: String = blueprint
        .chars()
        .take(100)
        .enumerate()
        .map(|(i, c)| {
            if id_char(c) && !(i == 0 && c == '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}-{n:08x}")
}

/// A run id a caller may choose: short, and safe in a URL, a file name
/// and a shell command (ids are printed in `swarm resume ID` hints); not
/// led by a `.`.
pub fn valid_run_id(id: &str) -> bool {
    // Not `.`-led: `.`, `..` and hidden names (`.swarm`) mean something
    // else as a path segment.
    !id.is_empty() && id.len() <= 128 && !id.starts_with('.') && id.chars().all(id_char)
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl Prepared {
    /// Records a new run in the journal and attaches its (empty) journal.
    pub(super) async fn begin_durable(&self, input: &serde_json::Value) -> Result<(), RunError> {
        let Some(store) = self.opts.store.clone() else {
            return Ok(());
        };
        let record = self.new_record(input)?;
        let taken_at = clock::local_ms();
        let fence = store.create_run(&record, &self.owner).await?;
        self.own(store, &record.id, fence, taken_at, Vec::new(), None);
        Ok(())
    }

    /// The record of a new run of this blueprint with `input`: its id is
    /// the one asked for (checked) or a new one.
    pub(super) fn new_record(&self, input: &serde_json::Value) -> Result<RunRecord, RunError> {
        let id = match &self.opts.run_id {
            Some(id) if !valid_run_id(id) => return Err(RunError::BadRunId(id.clone())),
            Some(id) => id.clone(),
            None => new_run_id(&self.blueprint.name),
        };
        let path = std::fs::canonicalize(&self.blueprint.path)
            .unwrap_or_else(|_| self.blueprint.path.clone());
        Ok(RunRecord {
            id,
            blueprint: self.blueprint.name.clone(),
            path: path.display().to_string(),
            hash: self.blueprint.hash.clone(),
            input: input.clone(),
            status: crate::store::RunStatus::Running,
            result: None,
            pid: Some(std::process::id()),
            created_ms: now_ms(),
            updated_ms: now_ms(),
            steps: 0,
            tokens: 0,
            owner: None,
            owner_host: None,
            owned_since_ms: None,
            lease_until_ms: None,
            epoch: 0,
            helpers: self.helper_hashes(),
            fork: None,
        })
    }

    /// Re-opens a recorded run: its journal is replayed from the top.
    pub(super) async fn resume_durable(&self, record: &RunRecord) -> Result<(), RunError> {
        let Some(store) = self.opts.store.clone() else {
            return Err(RunError::Refused("resuming needs a journal".into()));
        };
        // Take the run first: a second resumer is refused here, before it
        // has replayed or run anything.
        let taken_at = clock::local_ms();
        let fence = store.claim(&record.id, &self.owner).await?;
        let entries = store.journal(&record.id).await?;
        // A fork goes on reusing what its source recorded past its point.
        let reuse = super::fork::reusable_again(&*store, record).await?;
        self.own(store, &record.id, fence, taken_at, entries, reuse);
        Ok(())
    }

    /// Attaches the journal of run `id`, owned under `fence`, and keeps
    /// its lease. `reuse`: a fork's source and the entries of it that it
    /// may reuse.
    pub(super) fn own(
        &self,
        store: Arc<dyn Store>,
        id: &str,
        fence: Fence,
        taken_at: u64,
        entries: Vec<crate::store::JournalEntry>,
        reuse: Option<(String, Vec<crate::store::JournalEntry>)>,
    ) {
        let lease = Arc::new(Lease::new(store.clone(), id, fence, taken_at));
        let waits = self.opts.interactive || self.opts.wait_for_answers;
        let mut journal = Journal::new(store, id, entries).owned(lease.clone());
        if let Some((from, entries)) = reuse {
            journal = journal.reusing(&from, entries);
        }
        self.attach_journal(journal.waiting_for_messages(waits));
        self.keep_lease(lease);
    }

    /// Renews the run's lease every third of its length while it executes.
    /// An owner that learns it lost the run (a refused renewal, or one it
    /// could not make before its lease ran out) stops the run at once:
    /// every step under it is cancelled and nothing more is recorded.
    fn keep_lease(&self, lease: Arc<Lease>) {
        let every = lease.length() / 3;
        let stop = self.stop.clone();
        let journal = self.journal();
        let task = tokio::spawn(async move {
            let lost = loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = lease.lost_signal.notified() => {}
                }
                match lease.renew(true).await {
                    Ok(()) => {}
                    Err(RenewError::Lost(lost)) => break lost,
                    Err(RenewError::Store(e)) if lease.lapsed_here() => {
                        break lease.lose(format!(
                            "could not renew the lease on run {} ({e}) before it ran out; stopped",
                            lease.run()
                        ));
                    }
                    Err(RenewError::Store(e)) => {
                        tracing::warn!(run = lease.run(), "renewing the lease failed: {e}")
                    }
                }
            };
            tracing::error!(run = lease.run(), "{}", lost.message);
            if let Some(j) = &journal {
                j.halt(crate::store::Halt::Lost, lost.message);
            }
            stop.fire();
        });
        if let Some(old) = self
            .lease_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task)
        {
            old.abort();
        }
    }

    /// Stops renewing the lease (the run has ended).
    pub(super) fn drop_lease(&self) {
        if let Some(t) = self
            .lease_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }

    /// SHA-256 of each helper file the blueprint `require`d, by its path
    /// relative to the blueprint's directory: the same helper has the same
    /// key however the blueprint was named (`bp/x.lua`, `./x.lua`, an
    /// absolute path) and from whichever directory it is resumed.
    pub fn helper_hashes(&self) -> std::collections::BTreeMap<String, String> {
        let root = self.helper_root();
        self.required_files()
            .into_iter()
            .map(|p| {
                let hash = std::fs::read_to_string(&p)
                    .map(|s| super::blueprint::hash(&s))
                    .unwrap_or_else(|_| "missing".into());
                (helper_key(&root, &p), hash)
            })
            .collect()
    }

    /// The blueprint's directory, resolved.
    fn helper_root(&self) -> std::path::PathBuf {
        let dir = super::blueprint::dir_of(&self.blueprint.path);
        std::fs::canonicalize(&dir).unwrap_or(dir)
    }

    /// The helper files whose content differs from `recorded`, as
    /// `path (was H1, now H2)`. Keys recorded as absolute paths (by older
    /// versions) are compared relative to the blueprint's directory too.
    pub fn changed_helpers(
        &self,
        recorded: &std::collections::BTreeMap<String, String>,
    ) -> Vec<String> {
        let root = self.helper_root();
        let recorded: std::collections::BTreeMap<String, String> = recorded
            .iter()
            .map(|(k, v)| (helper_key(&root, std::path::Path::new(k)), v.clone()))
            .collect();
        let now = self.helper_hashes();
        let short =
            |h: Option<&String>| h.map_or("none".to_string(), |h| h.chars().take(12).collect());
        recorded
            .keys()
            .chain(now.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| recorded.get(*k) != now.get(*k))
            .map(|k| {
                format!(
                    "{k} (was {}, now {})",
                    short(recorded.get(k)),
                    short(now.get(k))
                )
            })
            .collect()
    }

    pub(super) fn attach_journal(&self, journal: Journal) {
        let journal = Arc::new(journal);
        self.vm.set_journal(Some(journal.clone()));
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = Some(journal);
    }

    pub(super) fn journal(&self) -> Option<Arc<Journal>> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A helper's key: its path relative to `root` (the blueprint's resolved
/// directory) when it lies inside it, else its resolved path. A relative
/// `path` that does not exist from here is taken as relative to `root`.
fn helper_key(root: &std::path::Path, path: &std::path::Path) -> String {
    let resolved = std::fs::canonicalize(path)
        .or_else(|_| std::fs::canonicalize(root.join(path)))
        .unwrap_or_else(|_| path.to_path_buf());
    match resolved.strip_prefix(root) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => resolved.display().to_string(),
    }
}

/// Events kept in memory while the journal refuses writes (a lock, a full
/// disk); past this many the oldest batch is given up, with an error.
const UNWRITTEN_MAX: usize = 100_000;

/// How long the event sink gathers events before committing them. Short
/// enough that a run's events are written while its flow runs (on another
/// core when there is one) rather than all at its end, and that another
/// process following the journal sees them within milliseconds; long
/// enough that a busy run's events share a commit by the hundred.
const EVENT_BATCH: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes a run's events to the journal, in ledger order, in batches. It
/// subscribes with a token bound to the run's root task, so on an engine
/// shared by several runs each journals only its own events.
pub struct EventSink {
    handle: JoinHandle<Option<String>>,
    stop: Arc<Notify>,
}

/// The run has ended: a few more tries for events still unwritten (a
/// lock may be released, space freed), then a warning naming how many
/// were lost and why.
async fn last_tries(store: &dyn EventStore, run: &str, unwritten: Vec<EventRow>) -> Option<String> {
    if unwritten.is_empty() {
        return None;
    }
    let mut why = String::new();
    for _ in 0..3 {
        match store.append_events(unwritten.clone()).await {
            Ok(()) => return None,
            Err(e) => why = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let lost = format!(
        "warning: {} events of run {run} could not be journaled ({why}); its journal \
         entries and status are not affected",
        unwritten.len()
    );
    tracing::error!("{lost}");
    Some(lost)
}

impl EventSink {
    pub fn start(
        engine: &Engine,
        store: Arc<dyn EventStore>,
        run: &str,
        epoch: u64,
        root: crate::engine::TaskId,
    ) -> Option<EventSink> {
        let mut attach = AttachOptions::new("journal", Role::Observer);
        attach.task = Some(root);
        let tok = engine.attach(Caller::Host, attach).ok()?;
        let mut sub = engine.subscribe(&tok, engine.last_cursor()).ok()?;
        let stop = Arc::new(Notify::new());
        let (stopped, run) = (stop.clone(), run.to_string());
        let run_id: Arc<str> = Arc::from(run.as_str());
        let handle = tokio::spawn(async move {
            // Rows that could not be written yet (a lock, a full disk): kept
            // and written first next time, never dropped while there is room.
            let mut unwritten: Vec<EventRow> = Vec::new();
            loop {
                let mut batch = Vec::new();
                let stopping = tokio::select! {
                    ev = sub.next() => match ev {
                        Ok(ev) => {
                            batch.push(ev);
                            false
                        }
                        Err(_) => true,
                    },
                    _ = stopped.notified() => true,
                };
                // Events are not waited for by anyone: gather a few ms
                // worth into one commit instead of one commit per event.
                if !stopping {
                    tokio::select! {
                        _ = tokio::time::sleep(EVENT_BATCH) => {}
                        _ = stopped.notified() => stopped.notify_one(),
                    }
                }
                while let Ok(Some(ev)) = sub.try_next() {
                    batch.push(ev);
                }
                unwritten.extend(batch.into_iter().map(|ev| {
                    EventRow {
                        run: run_id.clone(),
                        kind: ev.kind.name(),
                        payload: serde_json::to_string(&ev)
                            .unwrap_or_else(|_| "null".into())
                            .into(),
                        epoch,
                    }
                }));
                if !unwritten.is_empty() {
                    match store.append_events(unwritten.clone()).await {
                        Ok(()) => unwritten.clear(),
                        Err(e) if unwritten.len() <= UNWRITTEN_MAX => {
                            tracing::warn!(%e, kept = unwritten.len(), "events not persisted yet; retrying");
                        }
                        Err(e) => {
                            tracing::error!(%e, dropped = unwritten.len(), "persisting events failed");
                            unwritten.clear();
                        }
                    }
                }
                if stopping {
                    return last_tries(&*store, &run, unwritten).await;
                }
            }
        });
        Some(EventSink { handle, stop })
    }

    /// Writes what is left and stops. Events that could not be written
    /// come back as a warning to show the user: never dropped silently.
    pub async fn finish(self) -> Option<String> {
        self.stop.notify_one();
        self.handle.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_whatever_the_blueprint_is_called() {
        for name in [
            "hello",
            "a b/c;rm",
            "ünï",
            "",
            ".hidden",
            "..",
            &"x".repeat(300),
        ] {
            let id = new_run_id(name);
            assert!(valid_run_id(&id), "{name:?} gave {id:?}");
        }
        assert!(new_run_id("a b/c;rm").starts_with("a_b_c_rm-"));
        for bad in [
            "",
            "../x",
            "a/b",
            "a b",
            "..",
            ".",
            ".swarm",
            &"x".repeat(129),
        ] {
            assert!(!valid_run_id(bad), "{bad:?}");
        }
    }
}
