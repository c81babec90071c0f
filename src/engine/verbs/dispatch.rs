//! `dispatch_attempt`: run one attempt of a task through a spawner.
//!
//! Increments the attempt, mints a worker token bound to the task, runs the
//! spawner, awaits the worker (or the task's cancellation), applies the
//! outcome, revokes the worker token and wakes waiters. The lock is taken
//! twice per attempt, each time for O(1) work, whatever the history.

use crate::auth::{CapToken, Role, TokenClaims, Verb, nonce};
use crate::engine::events::EventKind;
use crate::engine::state::{Access, EngineState, TaskStatus, TaskView, TokenRecord};
use crate::engine::{Engine, EngineError, TaskId};
use crate::engine::{Outcome, SpawnCtx, SpawnError, Spawner};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

impl Engine {
    /// Runs one attempt of `task` and returns the task as it settled.
    pub async fn dispatch_attempt(
        &self,
        tok: &CapToken,
        task: TaskId,
        spawner: &dyn Spawner,
    ) -> Result<TaskView, EngineError> {
        let now = crate::engine::coarse_now_ms();
        let worker = self.signer().sign(TokenClaims {
            subject: worker_subject(task),
            role: Role::Worker,
            scopes: Arc::from([]),
            issued_at_ms: now,
            expires_at_ms: now + self.worker_ttl().as_millis() as u64,
            max_uses: None,
            nonce: nonce(),
            task: Some(task.0),
        });
        let (attempt, agent, input, cancel, depth, root, journal_pos, member) =
            self.with_state("dispatch", |s| {
                s.authorize(tok, Access::on(Verb::Dispatch, task))?;
                let gate = s.verify(tok)?.gate;
                s.revive(task);
                let t = s.task_mut(task)?;
                if !matches!(t.status, TaskStatus::Pending | TaskStatus::Blocked) {
                    return Err(EngineError::InvalidState {
                        task: task.0,
                        status: t.status,
                        verb: "dispatch",
                        needs: "pending or blocked",
                    });
                }
                t.status = TaskStatus::Running;
                t.attempt += 1;
                t.posted = None;
                t.worker_nonce = Some(worker.claims.nonce);
                let out = (
                    t.attempt,
                    t.agent.clone(),
                    t.input.clone(),
                    t.cancel.clone(),
                    t.depth,
                    t.root,
                    t.journal_pos.clone(),
                    t.member.clone(),
                );
                s.tokens
                    .insert(worker.claims.nonce, TokenRecord::new(worker.clone(), gate));
                s.emit(Some(task), EventKind::AttemptStarted { attempt: out.0 });
                Ok(out)
            })?;
        let ctx = SpawnCtx {
            engine: self.clone(),
            task,
            attempt,
            agent,
            input,
            token: worker,
            cancel: cancel.clone(),
            retry: 0,
            depth,
            root,
            journal_pos,
            member,
        };
        let mut guard = SettleOnDrop {
            engine: self.clone(),
            task,
            attempt,
            nonce: ctx.token.claims.nonce,
            started: Instant::now(),
            armed: true,
        };
        let worker = spawner.spawn(ctx);
        let outcome = tokio::select! {
            biased;
            out = worker => out,
            _ = cancel.cancelled() => Ok(Outcome::Cancelled),
        };
        guard.armed = false;
        Ok(guard.settle(outcome))
    }
}

/// Settles the attempt as cancelled if the dispatching future is dropped
/// before the worker ends (a lost race, Ctrl-C), so no task is left running
/// and no worker token outlives its attempt.
struct SettleOnDrop {
    engine: Engine,
    task: TaskId,
    attempt: u32,
    nonce: u128,
    started: Instant,
    armed: bool,
}

impl SettleOnDrop {
    fn settle(&self, outcome: Result<Outcome, SpawnError>) -> TaskView {
        let us = self.started.elapsed().as_micros() as u64;
        let (task, attempt, nonce) = (self.task, self.attempt, self.nonce);
        self.engine.with_state("dispatch.settle", |s| {
            settle(s, task, attempt, nonce, outcome, us)
        })
    }
}

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.settle(Ok(Outcome::Cancelled));
        }
    }
}

/// Applies an attempt's outcome. A task cancelled meanwhile stays cancelled.
fn settle(
    s: &mut EngineState,
    id: TaskId,
    attempt: u32,
    worker_nonce: u128,
    outcome: Result<Outcome, SpawnError>,
    us: u64,
) -> TaskView {
    s.revoke(worker_nonce);
    let limit = s.config.max_payload_bytes;
    let Some(t) = s.tasks.get_mut(&id) else {
        return TaskView {
            id,
            agent: Arc::from(""),
            status: TaskStatus::Cancelled,
            attempt,
            parent: None,
            depth: 0,
            input: Arc::new(Value::Null),
            result: None,
        };
    };
    t.worker_nonce = None;
    let posted = t.posted.take();
    let (status, result) = if t.status == TaskStatus::Cancelled {
        (TaskStatus::Cancelled, None)
    } else {
        match outcome {
            Ok(Outcome::Pass(v)) => (TaskStatus::Pass, Some(v)),
            Ok(Outcome::Blocked(v)) => (TaskStatus::Blocked, Some(v)),
            Ok(Outcome::Cancelled) => (TaskStatus::Cancelled, None),
            Ok(Outcome::Timeout) => (TaskStatus::Blocked, Some(json!({"error": "timeout"}))),
            Ok(Outcome::Exited) => match posted {
                Some((v, true)) => (TaskStatus::Pass, Some(v)),
                Some((v, false)) => (TaskStatus::Blocked, Some(v)),
                None => (
                    TaskStatus::Blocked,
                    Some(json!({"error": "worker exited without a result"})),
                ),
            },
            Err(e) => (
                TaskStatus::Blocked,
                Some(json!({"error": e.to_string(), "code": e.code()})),
            ),
        }
    };
    // Every result, however it came, is measured once: over the limit it
    // becomes a typed error; its heap size is what the task keeps.
    let (status, result) = match result.map(|v| (crate::engine::size::measure(&v, limit), v)) {
        Some((size, _)) if size.json > limit => {
            let e = EngineError::TooLarge {
                what: "the result",
                bytes: size.json,
                limit,
            };
            let v = json!({ "error": e.to_string(), "code": e.code() });
            (
                TaskStatus::Blocked,
                Some((crate::engine::size::measure(&v, limit), v)),
            )
        }
        other => (status, other),
    };
    t.status = status;
    if let Some((size, v)) = result {
        t.result_bytes = size.heap;
        t.result = Some(Arc::new(v));
    }
    if status == TaskStatus::Cancelled {
        t.cancel.cancel();
    }
    t.wake();
    let view = t.view(id);
    s.emit(
        Some(id),
        EventKind::AttemptCompleted {
            attempt,
            status: status.as_str(),
            us,
        },
    );
    s.retire(id);
    view
}

/// `worker:t<id>`, the subject of a task's worker token (as `TaskId`
/// displays), built without `format!`.
fn worker_subject(task: TaskId) -> Arc<str> {
    let mut digits = itoa::Buffer::new();
    let mut s = String::with_capacity(32);
    s.push_str("worker:t");
    s.push_str(digits.format(task.0));
    Arc::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_subject_names_the_task_as_it_displays() {
        for id in [0, 7, 42, u64::MAX] {
            assert_eq!(
                &*worker_subject(TaskId(id)),
                format!("worker:{}", TaskId(id))
            );
        }
    }
}
