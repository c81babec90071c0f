//! What the engine holds, and how a host lets go of a run it has finished
//! with. The engine keeps settled tasks and its event ledger up to their
//! retention bounds, for callers that read them back (`poll_task`, a
//! subscriber catching up). A host that keeps runs elsewhere (`swarm
//! serve`, whose journal has every step and event) would otherwise hold
//! each finished run's tasks, sessions and events until those bounds: a
//! long-lived server's memory grew with its history. Host code only: no
//! token, no verb, Lua cannot reach these.

use super::state::EngineState;
use super::{Engine, TaskId};
use rustc_hash::FxHashSet;
use serde::Serialize;

/// What the engine holds in memory right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Tasks, settled or not.
    pub tasks: usize,
    /// Open sessions (each with its token).
    pub sessions: usize,
    /// Events in the ledger.
    pub events: usize,
}

impl Engine {
    pub fn held(&self) -> Held {
        self.with_state("held", |s| Held {
            tasks: s.tasks.len(),
            sessions: s.sessions.len(),
            events: s.ledger.len(),
        })
    }

    /// Lets go of run `root` once its root task has settled: every task
    /// of its tree (a step still running under it is cancelled), the
    /// questions they asked, and the sessions bound to it (its desk, its
    /// event sink). False, and nothing done, while the root is unsettled.
    pub fn forget_run(&self, root: TaskId) -> bool {
        self.with_state("forget_run", |s| s.forget_run(root))
    }

    /// Drops the ledger's events up to and including `cursor`: for a host
    /// that knows every subscriber still reading is past it.
    pub fn forget_events(&self, cursor: u64) {
        self.with_state("forget_events", |s| s.ledger.forget_through(cursor));
    }
}

impl EngineState {
    fn forget_run(&mut self, root: TaskId) -> bool {
        if !self
            .tasks
            .get(&root)
            .is_some_and(|t| t.status.is_settled() && t.root == root)
        {
            return false;
        }
        let mut gone = FxHashSet::default();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let Some(mut t) = self.tasks.remove(&id) else {
                continue;
            };
            stack.extend(t.children.iter().copied());
            if t.retired {
                self.retained_bytes -= t.held;
            } else {
                // Never settled: a step its flow left behind. Its worker, if
                // any, settles into nothing (see `dispatch`).
                self.live_bytes -= t.held;
                t.cancel.cancel();
            }
            t.wake();
            for k in std::mem::take(&mut t.resume_keys) {
                self.resumes.remove(&k);
                self.open_questions.remove(&k);
            }
            gone.insert(id);
        }
        self.finished.retain(|id| !gone.contains(id));
        let bound: Vec<u128> = self
            .tokens
            .iter()
            .filter(|(_, r)| r.token.claims.task == Some(root.0))
            .map(|(nonce, _)| *nonce)
            .collect();
        for nonce in bound {
            self.end_session(nonce, "run_forgotten");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, Signer};
    use crate::engine::{AttachOptions, Caller, EngineConfig, Outcome, SpawnCtx, Spawner};
    use crate::engine::{TaskSpec, Worker};
    use serde_json::json;

    struct Passes;

    impl Spawner for Passes {
        fn spawn(&self, _: SpawnCtx) -> Worker {
            Box::pin(async { Ok(Outcome::Pass(json!("done"))) })
        }
    }

    #[tokio::test]
    async fn a_settled_run_is_let_go_of_whole_and_an_unsettled_one_is_kept() {
        let engine = Engine::new(EngineConfig::default(), Signer::random());
        let op = engine
            .attach(Caller::Host, AttachOptions::new("host", Role::Operator))
            .unwrap();
        let before = engine.held();
        let root = engine
            .start_task(&op, TaskSpec::new("flow", json!(1)))
            .unwrap();
        let mut desk = AttachOptions::new("desk", Role::Senior);
        desk.task = Some(root);
        engine.attach(Caller::Host, desk).unwrap();
        let mut step = TaskSpec::new("step", json!({ "big": "x".repeat(1000) }));
        step.parent = Some(root);
        // A step the flow started and never dispatched.
        engine.start_task(&op, step).unwrap();
        assert!(!engine.forget_run(root), "the root has not settled");
        assert_eq!(engine.held().tasks, 2);

        engine.dispatch_attempt(&op, root, &Passes).await.unwrap();
        assert!(engine.forget_run(root));
        let held = engine.held();
        assert_eq!((held.tasks, held.sessions), (0, before.sessions));
        assert_eq!(engine.held_bytes(), (0, 0));
        engine.forget_events(engine.last_cursor());
        assert_eq!(engine.held().events, 0);
        // The ledger goes on from where it was.
        let next = engine
            .start_task(&op, TaskSpec::new("flow", json!(2)))
            .unwrap();
        assert_eq!(engine.held().events, 1);
        assert!(next.0 > root.0);
    }
}
