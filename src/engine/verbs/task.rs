//! Task verbs: start, read, cancel, poll.
//!
//! Cancelling marks the task and its descendants cancelled, fires their
//! cancellation tokens (an in-flight worker must honour it; dispatch also
//! stops awaiting it) and wakes every `poll_task` waiter.

use crate::auth::{CapToken, Verb};
use crate::engine::events::EventKind;
use crate::engine::state::{Access, Task, TaskStatus, TaskView};
use crate::engine::{Engine, EngineError, TaskId};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What task to start.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub agent: Arc<str>,
    pub input: Arc<Value>,
    /// The parent task; a worker's tasks default to children of its own task.
    pub parent: Option<TaskId>,
    /// The step's position in its run's journal, for backends that journal
    /// inside a step (an LLM agent's turns).
    pub journal_pos: Option<Arc<str>>,
    /// A mob member's turn: whose turn it is and whom it may message
    /// (`{member, peers}`). Set only by the host's mob library, never from
    /// a script's or a worker's input, so no step can act as a member.
    pub member: Option<Arc<Value>>,
}

impl TaskSpec {
    pub fn new(agent: &str, input: Value) -> TaskSpec {
        TaskSpec {
            agent: Arc::from(agent),
            input: Arc::new(input),
            parent: None,
            journal_pos: None,
            member: None,
        }
    }
}

impl Engine {
    /// Creates a pending task.
    pub fn start_task(&self, tok: &CapToken, spec: TaskSpec) -> Result<TaskId, EngineError> {
        self.with_state("start_task", |s| {
            let parent = spec.parent.or(tok.claims.task.map(TaskId));
            // Ownership first: a foreign parent is refused before anything
            // about it (even whether it exists) is revealed.
            s.authorize(
                tok,
                Access {
                    verb: Verb::StartTask,
                    task: parent,
                    spawn_depth: None,
                },
            )?;
            let id = TaskId(s.next_task);
            let (depth, cancel, root) = match parent {
                Some(p) => {
                    let pt = s.task(p)?;
                    (pt.depth + 1, pt.cancel.child_token(), pt.root)
                }
                None => (0, CancellationToken::new(), id),
            };
            s.check_depth(depth)?;
            let limit = s.config.max_payload_bytes;
            let input_bytes = s.admit("the step input", &spec.input, limit)?;
            s.hold_live(input_bytes)?;
            s.next_task += 1;
            s.tasks.insert(
                id,
                Box::new(Task {
                    agent: spec.agent.clone(),
                    input: spec.input,
                    parent,
                    root,
                    journal_pos: spec.journal_pos.clone(),
                    member: spec.member,
                    depth,
                    status: TaskStatus::Pending,
                    attempt: 0,
                    result: None,
                    posted: None,
                    cancel,
                    waiters: None,
                    children: Vec::new(),
                    worker_nonce: None,
                    resume_keys: Vec::new(),
                    input_bytes,
                    result_bytes: 0,
                    held: input_bytes,
                    retired: false,
                }),
            );
            if let Some(p) = parent
                && let Some(pt) = s.tasks.get_mut(&p)
            {
                pt.children.push(id);
            }
            s.emit(
                Some(id),
                EventKind::TaskCreated {
                    agent: spec.agent,
                    parent,
                    pos: spec.journal_pos,
                },
            );
            Ok(id)
        })
    }

    /// The agent `tok` would dispatch task `id` to, so the caller can pick
    /// the spawner before `dispatch_attempt`. Checks the token may dispatch
    /// that task first, so a foreign task's agent is never revealed.
    pub fn task_agent(&self, tok: &CapToken, id: TaskId) -> Result<Arc<str>, EngineError> {
        self.with_state("task_agent", |s| {
            s.check(tok, Verb::Dispatch, Some(id))?;
            Ok(s.task(id)?.agent.clone())
        })
    }

    /// A snapshot of the task.
    pub fn read_task(&self, tok: &CapToken, id: TaskId) -> Result<TaskView, EngineError> {
        self.with_state("read_task", |s| {
            s.authorize(tok, Access::on(Verb::ReadTask, id))?;
            Ok(s.task(id)?.view(id))
        })
    }

    /// Cancels the task and its descendants. Cancelling a settled task is a
    /// no-op that returns its view.
    pub fn cancel_task(&self, tok: &CapToken, id: TaskId) -> Result<TaskView, EngineError> {
        self.with_state("cancel_task", |s| {
            s.authorize(tok, Access::on(Verb::CancelTask, id))?;
            let mut stack = vec![id];
            while let Some(t) = stack.pop() {
                let Some(task) = s.tasks.get_mut(&t) else {
                    continue;
                };
                stack.extend(task.children.iter().copied());
                if task.status.is_settled() {
                    continue;
                }
                task.status = TaskStatus::Cancelled;
                task.cancel.cancel();
                task.wake();
                s.emit(Some(t), EventKind::TaskCancelled);
                if s.tasks[&t].worker_nonce.is_none() {
                    s.retire(t);
                }
            }
            Ok(s.task(id)?.view(id))
        })
    }

    /// Returns at once if the task is settled or suspended, otherwise waits up
    /// to `hold` for that to happen and returns the view either way.
    pub async fn poll_task(
        &self,
        tok: &CapToken,
        id: TaskId,
        hold: Duration,
    ) -> Result<TaskView, EngineError> {
        let first = self.with_state("poll_task", |s| {
            s.authorize(tok, Access::on(Verb::PollTask, id))?;
            Ok::<_, EngineError>(s.task(id)?.view(id))
        })?;
        if done(first.status) || hold.is_zero() {
            return Ok(first);
        }
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            let notify = self.with_state("poll_task", |s| {
                let t = s.task_mut(id)?;
                Ok::<_, EngineError>(t.waiters.get_or_insert_with(Default::default).clone())
            })?;
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let view =
                self.with_state("poll_task", |s| Ok::<_, EngineError>(s.task(id)?.view(id)))?;
            if done(view.status) {
                return Ok(view);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(view);
            }
        }
    }
}

fn done(status: TaskStatus) -> bool {
    status.is_settled() || status == TaskStatus::Suspended
}
