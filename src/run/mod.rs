//! Running a blueprint's flow to the end.
//!
//! A run is one root task (agent `flow:<name>`) whose worker is the flow
//! itself, running in the run's flow VM as operator: every step is a child
//! task of the root, so cancelling the root (Ctrl-C) cancels the whole run,
//! and the root's settled status is the run's status. A "senior desk" beside
//! the run answers senior questions from `--answer KEY=VALUE`, or on the
//! terminal, or ends the run with a clear error when it cannot.

mod agents;
pub mod blueprint;
pub mod check;
mod desk;
mod durable;
mod ending;
mod follow;
mod fork;
mod import_check;
mod input;
pub mod kinds;
mod llm;
mod mobs;
pub mod position;
mod render;
mod replay;
mod runs;
pub mod service;
mod transfer;
mod upgrade;

pub use agents::{Build, RustAgents};
pub use blueprint::{Blueprint, BlueprintError, Problem};
pub use desk::parse_answer;
pub use durable::{EventSink, valid_run_id};
pub use follow::{Follow, Followed};
pub use fork::{ForkRequest, default_at};
pub use import_check::MAX_IMPORT_BYTES;
pub use kinds::AgentKinds;
pub use llm::{JournalUsage, StepUsage, journal_usage};
pub use mobs::MobShown;
pub use render::error_chain;
pub use replay::Verdict;
pub use runs::{Handle, Runs};
pub use transfer::{EXPORT_FORMAT, Exported};
pub use upgrade::Upgraded;

use crate::auth::{CapToken, Role};
use crate::engine::{AttachOptions, Caller, Engine, EngineError, TaskId, TaskSpec, TaskStatus};
use crate::engine::{Outcome, SpawnCtx, SpawnError, Spawner, Worker};
use crate::lua::{Agents, Host, PrintSink, Vm, VmOptions, input_to_lua, returned_to_json};
use crate::spawn::LayerEnv;
use crate::store::{Journal, RunRecord, Store, StoreError};
use mlua::{Function, Table, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Answers to senior questions by key (`--answer KEY=VALUE`).
    pub answers: BTreeMap<String, serde_json::Value>,
    /// Ask unanswered senior questions on the terminal.
    pub interactive: bool,
    /// Without a terminal, wait for `swarm answer` from another process
    /// instead of stopping the run (durable runs only).
    pub wait_for_answers: bool,
    /// Limits of the flow's VM (default: 1 GiB, room for 100,000 branches).
    pub flow_vm: VmOptions,
    /// Limits of each Lua agent's VM (default: 64 MiB).
    pub vm: VmOptions,
    pub rust: RustAgents,
    /// Where Lua `print` goes (default: the log).
    pub print: Option<PrintSink>,
    /// The journal; `None` runs in memory only.
    pub store: Option<Arc<dyn Store>>,
    /// The id of a new durable run (default: `<blueprint>-<8 hex>`).
    pub run_id: Option<String>,
    /// Wall-clock time the run may take (`--deadline`). The blueprint's
    /// `limits.deadline` applies too: the shorter one wins.
    pub deadline: Option<std::time::Duration>,
    /// Slots for Lua-agent VMs (default: the process-wide ones).
    pub vm_slots: Option<crate::lua::VmSlots>,
    /// The layers blueprints may name (default: the built-in ones; an
    /// embedder registers its own on a `LayerRegistry::builtin()`).
    pub layers: Arc<crate::spawn::LayerRegistry>,
    /// The agent kinds blueprints may declare (default: the built-in ones;
    /// an embedder registers its own on an `AgentKinds::builtin()`).
    pub kinds: Arc<AgentKinds>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            answers: BTreeMap::new(),
            interactive: false,
            wait_for_answers: false,
            flow_vm: VmOptions {
                memory_limit: 1 << 30,
                ..VmOptions::default()
            },
            vm: VmOptions::default(),
            rust: RustAgents::builtin(),
            layers: crate::spawn::LayerRegistry::shared_builtin(),
            kinds: AgentKinds::shared_builtin(),
            print: None,
            store: None,
            run_id: None,
            deadline: None,
            vm_slots: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Blueprint(#[from] BlueprintError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request the run layer cannot serve (resuming without a journal,
    /// running a blueprint that is not live).
    #[error("{0}")]
    Refused(String),
    #[error("no run `{0}`")]
    UnknownRun(String),
    /// A run id a caller chose that is not [`valid_run_id`].
    #[error(
        "run id `{0}` must be 1-128 characters of A-Z, a-z, 0-9, '-', '_' or '.', not starting with '.'"
    )]
    BadRunId(String),
    /// A caller bound to one run asked to start another.
    #[error("this caller is bound to run `{0}` and may not start runs")]
    Bound(String),
    /// `hint`: a suggestion among the live names, or "".
    #[error("no live blueprint named `{name}`{hint}")]
    UnknownBlueprint { name: String, hint: String },
    /// An input that does not match the blueprint's declared `input`.
    #[error("{0}")]
    Input(String),
    /// Answering a question the run does not have open.
    #[error("run `{run}` has no open question `{name}` (open: {open})")]
    UnknownQuestion {
        run: String,
        name: String,
        open: String,
    },
    /// The host is shutting down: it starts and resumes no runs.
    #[error("this host is draining (shutting down): it starts and resumes no runs")]
    Draining,
    /// A message sent to a run that has finished.
    #[error("run `{run}` already finished ({status}); it receives no more messages")]
    Finished {
        run: String,
        status: crate::store::RunStatus,
    },
    #[error("no mob `{0}`")]
    UnknownMob(String),
    /// A message the run service refuses (its topic, id, value or size).
    #[error("{0}")]
    BadMessage(String),
    /// The caller's role may not do this to a run.
    #[error("role `{role}` may not {action} runs")]
    Forbidden {
        role: crate::auth::Role,
        action: &'static str,
    },
    /// A fork that cannot be made as asked (a bad position, a `--set` of
    /// an entry that is not there).
    #[error("{0}")]
    Fork(String),
    /// A `swarm import` document that is refused (what and where).
    #[error("{0}")]
    Import(String),
}

impl RunError {
    /// A stable code for callers that answer in codes (the HTTP API).
    pub fn code(&self) -> &'static str {
        match self {
            RunError::Blueprint(e) => e.code(),
            RunError::Engine(e) => e.code(),
            RunError::Spawn(e) => e.code(),
            RunError::Store(e) => e.code(),
            RunError::Refused(_) => "refused",
            RunError::UnknownRun(_) => "unknown_run",
            RunError::BadRunId(_) => "bad_run_id",
            RunError::UnknownBlueprint { .. } => "unknown_blueprint",
            RunError::Input(_) => "input_invalid",
            RunError::UnknownQuestion { .. } => "unknown_question",
            RunError::Draining => "draining",
            RunError::Fork(_) => "fork_invalid",
            RunError::Finished { .. } => "run_finished",
            RunError::BadMessage(_) => "bad_message",
            RunError::UnknownMob(_) => "unknown_mob",
            RunError::Import(_) => "import_invalid",
            RunError::Forbidden { .. } | RunError::Bound(_) => "forbidden",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub root: TaskId,
    /// The journal's id for the run, when it has one.
    pub run_id: Option<String>,
    pub status: TaskStatus,
    pub result: serde_json::Value,
    /// Model tokens this execution's LLM turns spent (replayed ones too).
    pub usage: crate::llm::Tally,
}

/// A loaded blueprint, ready to run.
pub struct Prepared {
    engine: Engine,
    pub blueprint: Blueprint,
    vm: Arc<Vm>,
    flow: Function,
    token: CapToken,
    // Kept alive for the run: VMs only hold a weak reference.
    _agents: Agents,
    opts: RunOptions,
    journal: llm::JournalSlot,
    stop: llm::RunStop,
    meter: Arc<crate::llm::Meter>,
    /// The flow's own token, bound to the run's root task.
    flow_token: std::sync::Mutex<Option<CapToken>>,
    /// Who executes this run in the journal (one owner at a time).
    owner: crate::store::Owner,
    lease_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set by [`Prepared::interrupt`]: the run ends resumable.
    interrupted: std::sync::atomic::AtomicBool,
    /// Set by [`Prepared::drain`]: its server shuts down.
    drained: std::sync::atomic::AtomicBool,
}

/// Loads and validates the blueprint at `path` and builds its agents.
pub fn prepare(engine: &Engine, path: &Path, opts: RunOptions) -> Result<Prepared, RunError> {
    let source = blueprint::read(path)?;
    prepare_source(engine, path, &source, opts)
}

/// Like [`prepare`], with the source already read.
pub fn prepare_source(
    engine: &Engine,
    path: &Path,
    source: &str,
    opts: RunOptions,
) -> Result<Prepared, RunError> {
    let agents = Agents::default();
    let mut host = Host::new(engine.clone(), &agents);
    host.dir = Some(blueprint::dir_of(path));
    if let Some(slots) = &opts.vm_slots {
        host.vm_slots = slots.clone();
    }
    if let Some(p) = &opts.print {
        host.print = p.clone();
    }
    host.layers = opts.layers.clone();
    host.kinds = opts.kinds.infos();
    let vm = Vm::new(host.clone(), opts.flow_vm.clone()).map_err(BlueprintError::Lua)?;
    let (bp, table) = blueprint::load(&vm, &opts.kinds, path, source)?;
    vm.set_run_limits(bp.budgets);
    // The blueprint's own session: it lasts as long as the `Prepared`
    // (an embedder may run it again hours later), which releases it.
    let mut attach = AttachOptions::new(format!("run:{}", bp.name), Role::Operator);
    attach.gate = bp.gate;
    attach.heartbeat = false;
    attach.ttl = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    let token = engine.attach(Caller::Host, attach)?;
    let journal = llm::JournalSlot::default();
    let stop = llm::RunStop::default();
    let meter = Arc::new(crate::llm::Meter::new(bp.tokens));
    let on_trip = stop.clone();
    meter.on_trip(move || on_trip.fire());
    let build = agents::Build {
        blueprint: &bp,
        table: &table,
        flow_vm: &vm,
        host,
        env: LayerEnv {
            engine: engine.clone(),
            token: token.clone(),
        },
        rust: &opts.rust,
        vm: opts.vm.clone(),
        journal: journal.clone(),
        stop: stop.clone(),
        meter: meter.clone(),
        catalogs: Default::default(),
    };
    agents::build_agents(&build, &agents)?;
    let flow: Function = table
        .get::<Table>("spec")
        .and_then(|s| s.get("flow"))
        .map_err(|e| BlueprintError::Lua(vm.classify(e)))?;
    Ok(Prepared {
        engine: engine.clone(),
        blueprint: bp,
        vm: Arc::new(vm),
        flow,
        token,
        _agents: agents,
        opts,
        journal,
        stop,
        meter,
        flow_token: Default::default(),
        owner: crate::store::Owner::new(),
        lease_task: Default::default(),
        interrupted: Default::default(),
        drained: Default::default(),
    })
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.drop_lease();
        self.engine.release(&self.token);
    }
}

impl Prepared {
    /// Starts the run's root task and returns its id (so a caller can
    /// cancel it), then [`Prepared::finish`] runs it.
    /// With a store, the run is recorded in the journal first.
    /// An input that does not match the blueprint's declared `input` is
    /// refused first (`input_invalid`): nothing runs, nothing is recorded.
    pub async fn start(&self, input: serde_json::Value) -> Result<TaskId, RunError> {
        self.blueprint.check_input(&input)?;
        self.begin_durable(&input).await?;
        self.root(input)
    }

    /// Starts the root task of a recorded run again: journaled calls
    /// replay, the first call past the journal runs live.
    pub async fn resume(&self, record: &RunRecord) -> Result<TaskId, RunError> {
        self.resume_durable(record).await?;
        self.root(record.input.clone())
    }

    /// Starts the root task and gives the flow VM its token: an operator
    /// token bound to the root, so the flow (and its Lua layers) can reach
    /// only this run's tasks, events and questions, even on a shared engine.
    fn root(&self, input: serde_json::Value) -> Result<TaskId, RunError> {
        let spec = TaskSpec::new(&format!("flow:{}", self.blueprint.name), input);
        let root = self.engine.start_task(&self.token, spec)?;
        self.stop.arm(&self.engine, &self.token, root);
        let mut attach = AttachOptions::new(format!("run:{}", self.blueprint.name), Role::Operator);
        attach.gate = self.blueprint.gate;
        attach.task = Some(root);
        let bound = self.engine.attach(Caller::Host, attach)?;
        self.vm.set_token(Some(bound.clone()));
        self.vm.set_parent(Some(root));
        *self.flow_token.lock().unwrap_or_else(|e| e.into_inner()) = Some(bound);
        Ok(root)
    }

    fn flow_token(&self) -> Option<CapToken> {
        self.flow_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Files the blueprint `require`d from its directory while loading.
    pub fn required_files(&self) -> Vec<std::path::PathBuf> {
        self.vm.required_files()
    }

    /// The journal id of the run in progress.
    pub fn run_id(&self) -> Option<String> {
        self.journal().map(|j| j.run().to_string())
    }

    /// Runs the flow of the started root task to the end.
    pub async fn finish(&self, root: TaskId) -> Result<RunReport, RunError> {
        let journal = self.journal();
        let sink = match (&journal, &self.opts.store) {
            (Some(j), Some(store)) => {
                let epoch = j.fence().map_or(0, |f| f.epoch);
                durable::EventSink::start(&self.engine, store.clone(), j.run(), epoch, root)
            }
            _ => None,
        };
        let desk =
            match desk::Desk::open(&self.engine, &self.token, root, &self.opts, journal.clone()) {
                Ok(desk) => desk,
                Err(e) => return Err(self.stopped_by(journal.as_deref(), e).await),
            };
        let flow = FlowSpawner {
            vm: self.vm.clone(),
            flow: self.flow.clone(),
        };
        let alive = self.keep_alive(&desk);
        let (view, overran) = self.dispatch_root(root, &flow).await;
        alive.abort();
        if let Some(tok) = self.flow_token() {
            let _ = self.engine.detach(&tok);
        }
        let unanswered = desk.close();
        if let Some(sink) = sink
            && let Some(lost) = sink.finish().await
            && let Some(print) = &self.opts.print
        {
            print(&lost);
        }
        let view = match view {
            Ok(view) => view,
            Err(e) => return Err(self.stopped_by(journal.as_deref(), e.into()).await),
        };
        let (status, mut result) = self.ending(&view, unanswered, overran, journal.as_deref());
        let lost = journal
            .as_ref()
            .and_then(|j| j.halted())
            .is_some_and(|(why, _)| why == crate::store::Halt::Lost);
        // A lost run reports no result as its own: another owner has it.
        let mut unrecorded = lost;
        self.drop_lease();
        if let (Some(j), Some(store), false) = (&journal, &self.opts.store, lost) {
            let written = store
                .set_status(j.run(), status, Some(result.clone()), j.fence())
                .await;
            if let Err(e) = written {
                unrecorded = true;
                result = ending::unrecorded_end(j, &e, status);
            }
        }
        // The budget stopped the run by cancelling it: it failed, it was
        // not cancelled.
        let tripped = self.meter.tripped().is_some() && result["code"] == "token_budget";
        Ok(RunReport {
            root,
            run_id: journal.map(|j| j.run().to_string()),
            status: if tripped || unrecorded {
                TaskStatus::Blocked
            } else {
                view.status
            },
            result,
            usage: self.meter.tally(),
        })
    }

    /// The run could not be executed at all (`e`): it stops holding its
    /// lease and, when journaled, is recorded `interrupted` with `e` as its
    /// cause (resumable), never left `running` with a lease renewed for
    /// nobody.
    async fn stopped_by(&self, journal: Option<&Journal>, e: RunError) -> RunError {
        self.drop_lease();
        if let (Some(j), Some(store)) = (journal, &self.opts.store) {
            let cause = serde_json::json!({ "code": e.code(), "error": e.to_string() });
            let status = crate::store::RunStatus::Interrupted;
            if let Err(w) = store
                .set_status(j.run(), status, Some(cause), j.fence())
                .await
            {
                tracing::warn!(run = j.run(), "recording why the run stopped failed: {w}");
            }
        }
        e
    }

    /// The run's deadline: the shorter of `--deadline` and the blueprint's.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        match (self.opts.deadline, self.blueprint.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the root task to the end, or until the deadline passes: then
    /// the run is cancelled (every step under it stops) and the second
    /// value says which deadline it overran.
    async fn dispatch_root(
        &self,
        root: TaskId,
        flow: &FlowSpawner,
    ) -> (
        Result<crate::engine::TaskView, EngineError>,
        Option<std::time::Duration>,
    ) {
        let run = self.engine.dispatch_attempt(&self.token, root, flow);
        let Some(limit) = self.deadline() else {
            return (run.await, None);
        };
        tokio::pin!(run);
        tokio::select! {
            view = &mut run => (view, None),
            _ = tokio::time::sleep(limit) => {
                let _ = self.engine.cancel_task(&self.token, root);
                let view = run.await.map(|mut v| {
                    v.status = TaskStatus::Blocked;
                    v
                });
                (view, Some(limit))
            }
        }
    }

    /// Heart-beats the run's sessions while it runs, so a long run is never
    /// swept as a silent session.
    fn keep_alive(&self, desk: &desk::Desk) -> tokio::task::JoinHandle<()> {
        let engine = self.engine.clone();
        let mut tokens = vec![self.token.clone(), desk.token().clone()];
        tokens.extend(self.flow_token());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                for t in &tokens {
                    let _ = engine.heartbeat(t);
                }
            }
        })
    }

    /// Starts and finishes in one call.
    pub async fn run(&self, input: serde_json::Value) -> Result<RunReport, RunError> {
        let root = self.start(input).await?;
        self.finish(root).await
    }

    /// Cancels the run (the root task and every step under it).
    pub fn cancel(&self, root: TaskId) -> Result<(), RunError> {
        self.engine.cancel_task(&self.token, root)?;
        Ok(())
    }

    /// Stops a durable run so it can be resumed (Ctrl-C, SIGTERM, SIGHUP):
    /// its steps are cancelled (process agents killed), nothing journaled
    /// is lost, and the run ends `interrupted`, not `cancelled`. Without a
    /// journal there is nothing to resume: the same as [`Prepared::cancel`].
    pub fn interrupt(&self, root: TaskId) -> Result<(), RunError> {
        if self.journal().is_some() {
            self.interrupted
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.cancel(root)
    }

    /// [`Prepared::interrupt`], because its server drains: the run ends
    /// `interrupted` with the code `drained`, and another server serving
    /// its blueprint on the same store takes it over at its next sweep.
    pub fn drain(&self, root: TaskId) -> Result<(), RunError> {
        self.drained
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.interrupt(root)
    }
}

/// The root task's worker: the flow function in the flow VM.
struct FlowSpawner {
    vm: Arc<Vm>,
    flow: Function,
}

impl Spawner for FlowSpawner {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        let (vm, flow) = (self.vm.clone(), self.flow.clone());
        Box::pin(async move {
            vm.arm(Some(ctx.cancel.clone()));
            let input =
                input_to_lua(vm.lua(), &ctx.input).map_err(|e| SpawnError::Input(e.to_string()))?;
            Ok(match vm.call(&flow, input).await {
                Ok(values) => {
                    let first = values.into_iter().next().unwrap_or(Value::Nil);
                    match returned_to_json(vm.lua(), first, "the flow's return value") {
                        Ok(v) => Outcome::Pass(v),
                        Err(e) => Outcome::Blocked(
                            serde_json::json!({ "error": e.to_string(), "code": e.code }),
                        ),
                    }
                }
                Err(e) if ctx.cancel.is_cancelled() => {
                    let _ = e;
                    Outcome::Cancelled
                }
                Err(e) => Outcome::Blocked(e.to_result()),
            })
        })
    }
}
