//! The `remote` backend: a step done by a `swarm worker` elsewhere.
//!
//! The attempt is offered on its run's work queue (the journal's, shared
//! by every server on it: see `store::work`; the engine's board for a run
//! without one) and waits until a worker, through any of those servers,
//! claims it and posts a result. While it waits it reads the step's state
//! (woken by changes in this process, else every `POLL`) and lapses a
//! claim whose lease the store judges run out: the step goes back on its
//! queue. A step whose claims lapsed [`MAX_EXPIRIES`] times blocks
//! `lease_expired` (a `retry` layer may try it again). Cancelling the step
//! withdraws it, ending its claim, and the worker kills its command on its
//! next heartbeat.

use crate::engine::Outcome;
use crate::engine::board::Board;
use crate::engine::{OutputKind, SpawnCtx, SpawnError, Spawner, Worker};
use crate::store::Store;
use crate::store::work::{POLL, Posted, WorkItem, WorkQueue, WorkState};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Claims of one step that may lapse before it gives up.
pub const MAX_EXPIRIES: u32 = 3;

/// What a blueprint's `swarm.agent.remote { ... }` says.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    pub queue: Arc<str>,
    /// The whole step, waiting for a worker included.
    pub timeout: Option<Duration>,
    /// The agent's profile, passed to the worker's command on stdin.
    pub profile: Value,
}

/// The journal id and store of the run a step belongs to, when it has one:
/// its steps go on that store's queue (shared by every server on it), and
/// workers bound to the run claim only its steps.
pub type RunOf = Arc<dyn Fn() -> Option<(String, Arc<dyn Store>)> + Send + Sync>;

#[derive(Clone)]
pub struct RemoteAgent {
    spec: Arc<RemoteSpec>,
    run: RunOf,
}

impl RemoteAgent {
    pub fn new(spec: RemoteSpec, run: RunOf) -> RemoteAgent {
        RemoteAgent {
            spec: Arc::new(spec),
            run,
        }
    }
}

impl Spawner for RemoteAgent {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        Box::pin(wait(self.spec.clone(), (self.run)(), ctx))
    }
}

fn blocked(code: &str, error: String) -> Outcome {
    Outcome::Blocked(json!({ "code": code, "error": error }))
}

/// The queue of a run journaled in `store`, else the engine's board.
pub fn queue_of<'a>(store: Option<&'a Arc<dyn Store>>, board: &'a Board) -> &'a dyn WorkQueue {
    store.and_then(|s| s.work()).unwrap_or(board)
}

/// Takes the step off its queue however its future ends (settled,
/// cancelled, dropped); its attempt token goes with it.
struct Offered {
    id: u64,
    store: Option<Arc<dyn Store>>,
    board: Arc<Board>,
}

impl Drop for Offered {
    fn drop(&mut self) {
        let gone = queue_of(self.store.as_ref(), &self.board).withdraw(self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = gone.await {
                    tracing::warn!("taking a remote step off its queue failed: {e}");
                }
            });
        }
    }
}

async fn wait(
    spec: Arc<RemoteSpec>,
    run: Option<(String, Arc<dyn Store>)>,
    ctx: SpawnCtx,
) -> Result<Outcome, SpawnError> {
    let board = ctx.engine.board().clone();
    if !board.is_open() {
        return Ok(blocked(
            "no_server",
            format!(
                "agent `{}` is remote: its steps are done by `swarm worker --queue {}` \
                 through `swarm serve`, and this host is not a server",
                ctx.agent, spec.queue
            ),
        ));
    }
    let (run, store) = run.unzip();
    let item = WorkItem {
        queue: spec.queue.to_string(),
        run,
        task: ctx.task,
        attempt: ctx.attempt,
        agent: ctx.agent.to_string(),
        input: (*ctx.input).clone(),
        profile: spec.profile.clone(),
    };
    let queue = || queue_of(store.as_ref(), &board);
    let failed = |e: crate::store::StoreError| SpawnError::Input(format!("the work queue: {e}"));
    let id = queue()
        .offer(item, Some(ctx.token.clone()))
        .await
        .map_err(failed)?;
    let _offered = Offered {
        id,
        store: store.clone(),
        board: board.clone(),
    };
    let note = |data: Value| {
        let _ = ctx.engine.emit(&ctx.token, OutputKind::Progress, data);
    };
    note(json!({ "remote": "queued", "queue": &*spec.queue }));
    let limit = tokio::time::sleep(spec.timeout.unwrap_or(Duration::MAX));
    tokio::pin!(limit);
    loop {
        let changed = queue().changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match queue().state(id).await.map_err(failed)? {
            WorkState::Done(Posted { value, ok: true }) => return Ok(Outcome::Pass(value)),
            WorkState::Done(Posted { value, ok: false }) => return Ok(Outcome::Blocked(value)),
            WorkState::Gone => return Ok(Outcome::Cancelled),
            WorkState::Claimed { lapsed: true } => {
                if let Some(n) = queue().lapse(id).await.map_err(failed)? {
                    if n >= MAX_EXPIRIES {
                        return Ok(blocked(
                            "lease_expired",
                            format!(
                                "{n} workers claimed this step and stopped renewing their lease"
                            ),
                        ));
                    }
                    note(
                        json!({ "remote": "lease_expired", "queue": &*spec.queue, "expiries": n }),
                    );
                }
                continue;
            }
            WorkState::Queued | WorkState::Claimed { lapsed: false } => {}
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = ctx.cancel.cancelled() => return Ok(Outcome::Cancelled),
            _ = &mut limit => return Ok(Outcome::Timeout),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
