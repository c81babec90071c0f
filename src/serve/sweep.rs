//! The orphan sweep: while it serves, the server looks at the journal
//! every third of a lease for runs left `running` by an owner that is gone
//! (a process killed, a host lost, a journal write that failed so the end
//! of a run was never recorded). Each is marked `interrupted` with its
//! cause (`GET /v1/runs/{id}` shows it: the store records an owner lost
//! as it marks the run; a journal fault seen here replaces that, and a
//! run marked without a cause gets one), and the runs of the blueprints
//! served here are resumed as soon as their cause is gone, without
//! waiting for a restart: at once for a lost owner, once the journal takes
//! writes again for a fault, and at once for a run whose server drained
//! (code `drained`: another server on the same store takes it over).
//! Runs stopped on purpose (a signal: code `interrupted`) are left for
//! `swarm resume` or the next start.

use super::Server;
use crate::store::{Owner, RunRecord, RunStatus, StoreError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Causes an interrupted run's result records; any other result on an
/// interrupted run means it was marked by a store that records no cause.
const RECORDED: [&str; 4] = ["interrupted", "drained", "journal_fault", OWNER_LOST];

/// The cause recorded for a run whose owner is gone (the store's sweep
/// records it as it marks the run).
const OWNER_LOST: &str = "owner_lost";

/// What the sweep remembers between passes.
#[derive(Default)]
pub(super) struct Memory {
    /// Who the sweep is when it takes a run to record its cause.
    owner: Owner,
    /// Journal faults of runs that ended here, by run: the cause to record
    /// if their end could not be written (they stay `running` until their
    /// lease lapses). Dropped once the run is no longer running.
    faults: Mutex<HashMap<String, Value>>,
    /// The last refusal to resume each run, so it is reported once.
    refused: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    /// Run `id` ended here with `result`: a journal fault is kept.
    pub fn ended(&self, id: &str, result: &Value) {
        if result["code"] == "journal_fault" {
            let cause = json!({ "code": "journal_fault", "error": result["error"] });
            lock(&self.faults).insert(id.to_string(), cause);
        }
    }
}

/// The code of the cause `r` records, if it records one.
fn recorded(r: &RunRecord) -> Option<&str> {
    let code = r.result.as_ref()?.get("code")?.as_str()?;
    RECORDED.contains(&code).then_some(code)
}

impl Memory {
    /// Whether `r` lacks the cause it should show: none recorded, or an
    /// owner lost where that owner was this server, whose journal fault
    /// kept it from recording the run's end.
    fn needs_cause(&self, r: &RunRecord) -> bool {
        match recorded(r) {
            None => true,
            Some(code) => code == OWNER_LOST && lock(&self.faults).contains_key(&r.id),
        }
    }
}

/// Why the owner of `r` is taken to be gone, for its record.
fn owner_lost(r: &RunRecord) -> Value {
    let host = r.owner_host.as_deref().unwrap_or("an unknown host");
    let pid = r.pid.map_or("?".to_string(), |p| p.to_string());
    let error = format!(
        "its owner (pid {pid} on {host}) is gone: it died, or stopped renewing its lease \
         for longer than {} ms",
        crate::store::lease().as_millis()
    );
    json!({ "code": OWNER_LOST, "error": error })
}

impl Server {
    /// Starts the sweep; it ends when the server drains or is dropped.
    pub fn start_sweep(self: &Arc<Self>) {
        let every = (crate::store::lease() / 3).max(Duration::from_millis(100));
        tokio::spawn(sweep(Arc::downgrade(self), every));
    }

    /// One pass: marks and records orphans, then resumes what it may
    /// here.
    async fn sweep_once(self: &Arc<Self>) {
        let resumable = self.orphans().await;
        for r in resumable {
            if self.draining() {
                return;
            }
            let cause = r.result.clone().unwrap_or_default();
            match self.resume(&r).await {
                Ok(_) => {
                    lock(&self.sweep.refused).remove(&r.id);
                    eprintln!(
                        "resumed run {} (it stopped: {}: {})",
                        r.id,
                        cause["code"].as_str().unwrap_or("?"),
                        cause["error"].as_str().unwrap_or("")
                    );
                }
                Err(e) => {
                    let why = e.to_string();
                    let mut refused = lock(&self.sweep.refused);
                    if refused.get(&r.id) != Some(&why) {
                        eprintln!("run {} not resumed (the sweep tries again): {why}", r.id);
                        refused.insert(r.id.clone(), why);
                    }
                }
            }
        }
    }

    /// Marks runs whose owner is gone (the store records that cause),
    /// records the cause of every interrupted run that lacks one, and
    /// returns the interrupted runs this server may resume now.
    async fn orphans(&self) -> Vec<RunRecord> {
        match self.store.mark_interrupted().await {
            Ok(ids) => ids
                .iter()
                .for_each(|id| eprintln!("run {id}: its owner is gone; marked interrupted")),
            Err(e) => tracing::warn!("the sweep could not mark orphaned runs: {e}"),
        }
        let runs = match self.store.runs(Some(RunStatus::Interrupted)).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!("the sweep could not list interrupted runs: {e}");
                return Vec::new();
            }
        };
        let served = self.served();
        let mut resumable = Vec::new();
        for mut r in runs.into_iter().filter(|r| !self.is_active(&r.id)) {
            if self.sweep.needs_cause(&r) {
                match self.record_cause(&r).await {
                    Ok(cause) => r.result = Some(cause),
                    Err(e) => {
                        tracing::debug!("run {}: cause not recorded yet: {e}", r.id);
                        continue;
                    }
                }
            }
            if served.contains(&r.path) && recorded(&r) != Some("interrupted") {
                resumable.push(r);
            }
        }
        self.forget_settled(&resumable).await;
        resumable
    }

    /// Records why `r` was interrupted: taken first, so a resumer that
    /// took it meanwhile is never overwritten, then released with the
    /// cause by a write fenced on that ownership.
    async fn record_cause(&self, r: &RunRecord) -> Result<Value, StoreError> {
        let fault = lock(&self.sweep.faults).get(&r.id).cloned();
        let cause = fault.unwrap_or_else(|| owner_lost(r));
        let fence = self.store.claim(&r.id, &self.sweep.owner).await?;
        let status = RunStatus::Interrupted;
        self.store
            .set_status(&r.id, status, Some(cause.clone()), Some(&fence))
            .await?;
        lock(&self.sweep.faults).remove(&r.id);
        Ok(cause)
    }

    /// Keeps the sweep's memory to runs it may still act on: faults of
    /// runs still running, refusals of runs still waiting to be resumed.
    async fn forget_settled(&self, resumable: &[RunRecord]) {
        lock(&self.sweep.refused).retain(|id, _| resumable.iter().any(|r| &r.id == id));
        let faults: Vec<String> = lock(&self.sweep.faults).keys().cloned().collect();
        for id in faults {
            let running = self
                .store
                .run(&id)
                .await
                .map(|r| r.is_some_and(|r| r.status == RunStatus::Running))
                .unwrap_or(true);
            if !running {
                lock(&self.sweep.faults).remove(&id);
            }
        }
    }
}

async fn sweep(server: Weak<Server>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(server) = server.upgrade() else {
            return;
        };
        if server.draining() {
            return;
        }
        server.sweep_once().await;
    }
}
