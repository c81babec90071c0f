//! [`Runs`]: the one owner of executing runs. Every face (`swarm run` and
//! `resume`, the REPL, `swarm dev`, `swarm serve`, later MCP) starts,
//! resumes, cancels, answers, lists, shows and drains runs through it,
//! passing the caller's [`Authority`], which is checked here, once. No
//! face keeps runs of its own: a face holds at most the [`Handle`] of a run
//! it started, to wait for its report.
//!
//! A run started here executes on a task of its own until it ends; while
//! it does it is *active*, and an active run's memory is released the
//! moment it ends (nothing is kept per finished run).

use super::service::{self, Action, Answered, Authority, Cancelled, Sent, Shown};
use super::{Prepared, RunError, RunOptions, RunReport};
use crate::engine::{Engine, TaskId};
use crate::store::{RunRecord, RunStatus, Store};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// The executing runs of one engine and one journal.
pub struct Runs {
    engine: Engine,
    store: Option<Arc<dyn Store>>,
    active: Mutex<HashMap<String, Active>>,
    draining: AtomicBool,
    /// Woken whenever an active run ends.
    idle: Notify,
    /// Whether the engine lets go of a run once it ends (a server: the
    /// journal keeps everything, and memory must not grow with history).
    release: bool,
    /// Told of every run that ends, with its report.
    on_end: std::sync::OnceLock<EndHook>,
    /// The journal pollers of the runs being followed (see `follow`).
    tails: super::follow::Tails,
}

/// What [`Runs::on_end`] calls: the run's id and how it ended.
pub type EndHook = Box<dyn Fn(&str, &RunReport) + Send + Sync>;

/// A run executing here.
struct Active {
    run: Arc<Prepared>,
    root: TaskId,
    /// The engine's newest event when it was launched: its event sink
    /// reads only what comes after, so older events may be let go.
    since: u64,
}

/// A run this face started or resumed: its key, and its report once it
/// ends. Dropping it does not stop the run.
pub struct Handle {
    /// The journal's id for the run (`None` without a journal).
    pub id: Option<String>,
    /// The key [`Runs::interrupt`] and [`Runs::cancel`] take: the run id,
    /// or `task:<root>` for a run without a journal.
    pub key: String,
    pub root: TaskId,
    report: oneshot::Receiver<Result<RunReport, RunError>>,
}

impl Handle {
    /// Waits for the run to end.
    pub async fn finished(self) -> Result<RunReport, RunError> {
        self.report
            .await
            .unwrap_or_else(|_| Err(RunError::Refused("the run's task ended abruptly".into())))
    }
}

impl Runs {
    /// Runs on `engine`, journaled in `store` (`None`: in memory only).
    pub fn new(engine: Engine, store: Option<Arc<dyn Store>>) -> Arc<Runs> {
        Self::build(engine, store, false)
    }

    /// Runs for a long-lived host (a server): once a run ends, the engine
    /// lets go of its tasks, sessions and the events no run executing here
    /// still needs; the journal keeps them. (Not for a host that follows
    /// the whole ledger itself, like `swarm run --events`.)
    pub fn releasing(engine: Engine, store: Option<Arc<dyn Store>>) -> Arc<Runs> {
        Self::build(engine, store, true)
    }

    fn build(engine: Engine, store: Option<Arc<dyn Store>>, release: bool) -> Arc<Runs> {
        Arc::new(Runs {
            engine,
            store,
            active: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            idle: Notify::new(),
            release,
            on_end: std::sync::OnceLock::new(),
            tails: Default::default(),
        })
    }

    /// Calls `hook` with each run that ends here (once; later calls are
    /// ignored).
    pub fn on_end(&self, hook: EndHook) {
        let _ = self.on_end.set(hook);
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    pub(super) fn journal(&self) -> Result<&Arc<dyn Store>, RunError> {
        self.store
            .as_ref()
            .ok_or_else(|| RunError::Refused("this needs a journal (not --no-journal)".into()))
    }

    pub(super) fn tails(&self) -> &super::follow::Tails {
        &self.tails
    }

    fn active(&self) -> MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs executing here now.
    pub fn active_count(&self) -> usize {
        self.active().len()
    }

    pub fn is_active(&self, key: &str) -> bool {
        self.active().contains_key(key)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `opts` with this journal in them.
    fn with_store(&self, mut opts: RunOptions) -> RunOptions {
        opts.store = self.store.clone();
        opts
    }

    pub(super) fn refuse_if_draining(&self) -> Result<(), RunError> {
        if self.draining() {
            return Err(RunError::Draining);
        }
        Ok(())
    }

    /// Starts a new run of the blueprint at `path`.
    pub async fn start(
        self: &Arc<Self>,
        who: &Authority,
        path: &Path,
        input: Value,
        opts: RunOptions,
    ) -> Result<Handle, RunError> {
        who.check(Action::Start, None)?;
        self.refuse_if_draining()?;
        let run = super::prepare(&self.engine, path, self.with_store(opts))?;
        self.start_prepared(who, run, input).await
    }

    /// Starts a run already prepared (the live version of a hot-reloaded
    /// blueprint). Its options must carry this journal (see
    /// [`Runs::options`]).
    pub async fn start_prepared(
        self: &Arc<Self>,
        who: &Authority,
        run: Prepared,
        input: Value,
    ) -> Result<Handle, RunError> {
        who.check(Action::Start, None)?;
        self.refuse_if_draining()?;
        let root = run.start(input).await?;
        Ok(self.launch(run, root))
    }

    /// Options for preparing a run outside [`Runs::start`] (a live
    /// blueprint): `opts` with this journal.
    pub fn options(&self, opts: RunOptions) -> RunOptions {
        self.with_store(opts)
    }

    /// Resumes recorded run `id`: refused when it finished, when its code
    /// changed (unless `force`), or when another owner holds it.
    pub async fn resume(
        self: &Arc<Self>,
        who: &Authority,
        id: &str,
        force: bool,
        opts: RunOptions,
    ) -> Result<Handle, RunError> {
        self.resume_as(who, id, force, true, opts).await
    }

    /// [`Runs::resume`] for the host itself (a sweep, a restart): a run
    /// whose code changed is refused without replay-checking its journal
    /// (that is for a user who asks, under a deadline).
    pub async fn resume_unasked(
        self: &Arc<Self>,
        who: &Authority,
        id: &str,
        opts: RunOptions,
    ) -> Result<Handle, RunError> {
        self.resume_as(who, id, false, false, opts).await
    }

    async fn resume_as(
        self: &Arc<Self>,
        who: &Authority,
        id: &str,
        force: bool,
        explain: bool,
        opts: RunOptions,
    ) -> Result<Handle, RunError> {
        who.check(Action::Resume, Some(id))?;
        self.refuse_if_draining()?;
        let record = self.record(who, id).await?;
        let opts = self.with_store(opts);
        let resumed = service::resume(who, &self.engine, &record, force, explain, opts).await?;
        Ok(self.launch(resumed.run, resumed.root))
    }

    /// Executes a started run to its end on a task of its own. One started
    /// as the drain began stops with the others.
    pub(super) fn launch(self: &Arc<Self>, run: Prepared, root: TaskId) -> Handle {
        let id = run.run_id();
        let key = id.clone().unwrap_or_else(|| format!("task:{root}"));
        let run = Arc::new(run);
        {
            let mut active = self.active();
            let since = self.engine.last_cursor();
            let (run, root) = (run.clone(), root);
            active.insert(key.clone(), Active { run, root, since });
        }
        if self.draining() {
            let _ = run.interrupt(root);
        }
        let (tx, rx) = oneshot::channel();
        let (runs, ended) = (self.clone(), key.clone());
        tokio::spawn(async move {
            let report = run.finish(root).await;
            if let Err(e) = &report {
                tracing::warn!("run {ended} ended with an error: {e}");
            }
            drop(run);
            runs.ended(&ended, root, report.as_ref().ok());
            let _ = tx.send(report);
        });
        Handle {
            id,
            key,
            root,
            report: rx,
        }
    }

    /// Lets go of a run that has ended (before its report is handed over:
    /// a face that waits for it finds the run no longer active): its place
    /// among the active runs and, when releasing, its tasks, sessions and
    /// the engine events no run executing here still needs.
    fn ended(&self, key: &str, root: TaskId, report: Option<&RunReport>) {
        // The run's own session ends with it (its VM too): not under a lock.
        drop(self.active().remove(key));
        if self.release {
            self.engine.forget_run(root);
            // Under the lock a launch takes to note where its events start.
            let active = self.active();
            let needed = active.values().map(|a| a.since).min();
            self.engine
                .forget_events(needed.unwrap_or_else(|| self.engine.last_cursor()));
        }
        if let (Some(hook), Some(report)) = (self.on_end.get(), report) {
            hook(key, report);
        }
        self.idle.notify_waiters();
    }

    /// Stops a run executing here so it can be resumed (a signal, a
    /// drain): its steps are cancelled, it ends `interrupted`.
    pub fn interrupt(&self, who: &Authority, key: &str) -> Result<(), RunError> {
        let active = self.active();
        let a = active
            .get(key)
            .ok_or_else(|| RunError::UnknownRun(key.to_string()))?;
        who.check(Action::Interrupt, a.run.run_id().as_deref())?;
        a.run.interrupt(a.root)
    }

    /// The record of run `id`, when `who` may see it.
    pub async fn record(&self, who: &Authority, id: &str) -> Result<RunRecord, RunError> {
        who.check(Action::Read, Some(id))?;
        let record = self
            .journal()?
            .run(id)
            .await?
            .ok_or_else(|| RunError::UnknownRun(id.to_string()))?;
        who.reaches(&record)?;
        Ok(record)
    }

    /// The runs `who` may see, oldest first, optionally of one status.
    pub async fn list(
        &self,
        who: &Authority,
        status: Option<RunStatus>,
    ) -> Result<Vec<RunRecord>, RunError> {
        who.check(Action::Read, None)?;
        let mut runs = self.journal()?.runs(status).await?;
        if let Some(mine) = &who.run {
            runs.retain(|r| &r.id == mine && who.reaches(r).is_ok());
        }
        Ok(runs)
    }

    /// Run `id` with its journal and questions.
    pub async fn show(&self, who: &Authority, id: &str) -> Result<Shown, RunError> {
        let run = self.record(who, id).await?;
        let store = self.journal()?;
        let journal = store.journal(id).await?;
        Ok(Shown {
            usage: super::journal_usage(&journal),
            journal,
            questions: store.questions(id).await?,
            run,
        })
    }

    /// Cancels run `id`: one executing here stops at once; one executing
    /// elsewhere is asked to stop; one nobody executes (not running, or
    /// its owner's lease lapsed) is cancelled at once, fencing its owner
    /// out. A finished run is refused.
    pub async fn cancel(&self, who: &Authority, id: &str) -> Result<Cancelled, RunError> {
        // Who may first: a caller that may not cancel learns nothing of
        // the run, not even whether it exists.
        who.check(Action::Cancel, Some(id))?;
        let record = self.record(who, id).await?;
        let done = service::cancel_record(who, self.journal()?, &record).await?;
        if let Some(a) = self.active().get(id) {
            let _ = a.run.cancel(a.root);
        }
        Ok(done)
    }

    /// Answers run `id`'s open question `name` (its key or text).
    pub async fn answer(
        &self,
        who: &Authority,
        id: &str,
        name: &str,
        value: Value,
    ) -> Result<Answered, RunError> {
        who.check(Action::Answer, Some(id))?;
        let record = self.record(who, id).await?;
        service::answer_record(who, self.journal()?, &record, name, value).await
    }

    /// Sends a message on `topic` into run `id` (`id`: the sender's own id
    /// for it, which makes a retry a no-op). A run executing here is woken
    /// at once; one executing elsewhere reads it from the store; a stopped
    /// one receives it once resumed.
    pub async fn send(
        &self,
        who: &Authority,
        id: &str,
        topic: &str,
        value: Value,
        client_id: Option<&str>,
    ) -> Result<Sent, RunError> {
        who.check(Action::Send, Some(id))?;
        let record = self.record(who, id).await?;
        let limit = self.engine.payload_limit();
        let message = (topic, value, client_id);
        let sent = service::send_record(who, self.journal()?, &record, message, limit).await?;
        let active = self.active().get(id).map(|a| a.run.clone());
        if let Some(j) = active.and_then(|run| run.journal()) {
            j.inbox().wake();
        }
        Ok(sent)
    }

    /// Resumes the interrupted runs `pick` chooses (a server: those of
    /// the blueprints it serves). Returns the ids resumed; a run another
    /// owner holds is left alone.
    pub async fn resume_interrupted(
        self: &Arc<Self>,
        pick: impl Fn(&RunRecord) -> bool,
        opts: RunOptions,
    ) -> Vec<String> {
        let who = Authority::local();
        let Ok(runs) = self.list(&who, Some(RunStatus::Interrupted)).await else {
            return Vec::new();
        };
        let mut resumed = Vec::new();
        for r in runs.into_iter().filter(|r| pick(r)) {
            match self.resume_unasked(&who, &r.id, opts.clone()).await {
                Ok(h) => resumed.extend(h.id),
                Err(e) => tracing::warn!("run {} not resumed: {e}", r.id),
            }
        }
        resumed
    }

    /// Stops taking runs and interrupts the executing ones (resumable),
    /// then waits until they have stopped (at most `limit`). Returns the
    /// keys of those still executing when it gave up.
    pub async fn drain(&self, limit: Duration) -> Vec<String> {
        self.draining.store(true, Ordering::SeqCst);
        for a in self.active().values() {
            let _ = a.run.drain(a.root);
        }
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.active().is_empty() {
                    return;
                }
                idle.await;
            }
        })
        .await;
        self.active().keys().cloned().collect()
    }
}
