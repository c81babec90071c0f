//! The `remote` backend: a step done by a `swarm worker` elsewhere.
//!
//! The attempt is offered on the engine's board (see `engine::board`) under
//! its queue and parks until a worker claims it and posts a result. While
//! it waits, this future is the claim's clock: it sleeps until the lease's
//! deadline and expires the claim then, unless a heartbeat moved it. A
//! step whose claims expired [`MAX_EXPIRIES`] times blocks `lease_expired`
//! (a `retry` layer may try it again). Cancelling the step ends its claim,
//! and the worker kills its command on its next heartbeat.

use crate::engine::OutputKind;
use crate::engine::board::{Offer, Posted};
use crate::engine::{Outcome, SpawnCtx, SpawnError, Spawner, Worker};
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

/// The journal id of the run a step belongs to, when it has one (workers
/// bound to a run claim only its steps).
pub type RunOf = Arc<dyn Fn() -> Option<String> + Send + Sync>;

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

async fn wait(
    spec: Arc<RemoteSpec>,
    run: Option<String>,
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
    let mut ticket = board.offer(Offer {
        queue: spec.queue.clone(),
        task: ctx.task,
        attempt: ctx.attempt,
        agent: ctx.agent.clone(),
        input: ctx.input.clone(),
        profile: spec.profile.clone(),
        run,
        token: ctx.token.clone(),
    });
    let note = |data: Value| {
        let _ = ctx.engine.emit(&ctx.token, OutputKind::Progress, data);
    };
    note(json!({ "remote": "queued", "queue": &*spec.queue }));
    let limit = tokio::time::sleep(spec.timeout.unwrap_or(Duration::MAX));
    tokio::pin!(limit);
    loop {
        let (claimed, deadline) = (ticket.claimed.clone(), ticket.deadline());
        let lapse = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => claimed.notified().await,
            }
        };
        tokio::select! {
            posted = &mut ticket.posted => {
                return Ok(match posted {
                    Ok(Posted { value, ok: true }) => Outcome::Pass(value),
                    Ok(Posted { value, ok: false }) => Outcome::Blocked(value),
                    Err(_) => Outcome::Cancelled,
                });
            }
            _ = ctx.cancel.cancelled() => return Ok(Outcome::Cancelled),
            _ = &mut limit => return Ok(Outcome::Timeout),
            _ = lapse => {}
        }
        if let Some(n) = ticket.expire_if_due() {
            if n >= MAX_EXPIRIES {
                return Ok(blocked(
                    "lease_expired",
                    format!("{n} workers claimed this step and stopped renewing their lease"),
                ));
            }
            note(json!({ "remote": "lease_expired", "queue": &*spec.queue, "expiries": n }));
        }
    }
}
