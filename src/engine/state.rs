//! The engine's one state value and the records it keeps.
//!
//! `EngineState` is only ever touched inside `Engine::with_state`, under one
//! mutex, by short synchronous code. Memory stays bounded: terminal tasks are
//! evicted past `task_retention`, the ledger past `ledger_retention`, and a
//! worker token's record is dropped when its attempt settles.

use super::events::{EventKind, Ledger};
use super::{EngineConfig, EngineError, TaskId};
use crate::auth::{AuthError, CapToken, Role, RoleVerbGate, Signer, Verb};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Running,
    Suspended,
    Pass,
    Blocked,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Suspended => "suspended",
            TaskStatus::Pass => "pass",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Pass, blocked or cancelled: no worker is running for it.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            TaskStatus::Pass | TaskStatus::Blocked | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of a task handed to callers. Cloning is a few `Arc` bumps.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: TaskId,
    pub agent: Arc<str>,
    pub status: TaskStatus,
    pub attempt: u32,
    pub parent: Option<TaskId>,
    pub depth: u32,
    pub input: Arc<Value>,
    pub result: Option<Arc<Value>>,
}

pub(crate) struct Task {
    pub agent: Arc<str>,
    pub input: Arc<Value>,
    pub parent: Option<TaskId>,
    /// The run it belongs to: the root of its task tree.
    pub root: TaskId,
    /// Its step's journal position (see `TaskSpec`).
    pub journal_pos: Option<Arc<str>>,
    /// A mob member's turn (see `TaskSpec`).
    pub member: Option<Arc<Value>>,
    pub depth: u32,
    pub status: TaskStatus,
    pub attempt: u32,
    pub result: Option<Arc<Value>>,
    /// What a worker sent through `post_result` during the current attempt.
    pub posted: Option<(Value, bool)>,
    pub cancel: CancellationToken,
    pub waiters: Option<Arc<Notify>>,
    pub children: Vec<TaskId>,
    pub worker_nonce: Option<u128>,
    pub resume_keys: Vec<String>,
    /// Heap bytes of `input`.
    pub input_bytes: usize,
    /// Heap bytes of `result` (measured once, when it settles).
    pub result_bytes: usize,
    /// Bytes this task is counted for (in `live_bytes` until it settles,
    /// then in `retained_bytes`).
    pub held: usize,
    pub retired: bool,
}

impl Task {
    pub fn view(&self, id: TaskId) -> TaskView {
        TaskView {
            id,
            agent: self.agent.clone(),
            status: self.status,
            attempt: self.attempt,
            parent: self.parent,
            depth: self.depth,
            input: self.input.clone(),
            result: self.result.clone(),
        }
    }

    /// Wakes everyone in `poll_task` for this task.
    pub fn wake(&mut self) {
        if let Some(n) = self.waiters.take() {
            n.notify_waiters();
        }
    }
}

/// The server-side half of a token: the token exactly as minted, so a
/// presented token that is byte-for-byte the minted one needs no HMAC.
pub(crate) struct TokenRecord {
    pub token: CapToken,
    pub uses_left: Option<u32>,
    pub gate: RoleVerbGate,
    pub handle: Option<String>,
}

impl TokenRecord {
    pub fn new(token: CapToken, gate: RoleVerbGate) -> TokenRecord {
        TokenRecord {
            uses_left: token.claims.max_uses,
            token,
            gate,
            handle: None,
        }
    }
}

/// Equal claims and equal signatures, the latter compared in constant time.
fn same_token(a: &CapToken, b: &CapToken) -> bool {
    let diff = a
        .signature
        .iter()
        .zip(b.signature.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0 && a.claims == b.claims
}

pub(crate) struct Session {
    pub subject: Arc<str>,
    pub role: Role,
    pub last_seen_ms: u64,
    /// Detached by the sweep when silent (see [`AttachOptions::heartbeat`]).
    ///
    /// [`AttachOptions::heartbeat`]: super::AttachOptions::heartbeat
    pub heartbeat: bool,
}

pub(crate) struct ResumeEntry {
    pub task: TaskId,
    pub question: Arc<Value>,
    pub answer: Option<Arc<Value>>,
    pub notify: Arc<Notify>,
    pub resumed_status: TaskStatus,
}

/// What a verb asks of the caller's token, checked in the documented order.
pub(crate) struct Access {
    pub verb: Verb,
    pub task: Option<TaskId>,
    pub spawn_depth: Option<u32>,
}

impl Access {
    pub fn verb(verb: Verb) -> Access {
        Access {
            verb,
            task: None,
            spawn_depth: None,
        }
    }
    pub fn on(verb: Verb, task: TaskId) -> Access {
        Access {
            verb,
            task: Some(task),
            spawn_depth: None,
        }
    }
}

pub(crate) struct EngineState {
    pub config: EngineConfig,
    pub signer: Signer,
    pub tasks: FxHashMap<TaskId, Box<Task>>,
    pub next_task: u64,
    pub finished: VecDeque<TaskId>,
    pub tokens: FxHashMap<u128, TokenRecord>,
    pub sessions: FxHashMap<u128, Session>,
    pub handles: HashMap<String, CapToken>,
    pub resumes: HashMap<String, ResumeEntry>,
    /// Keys of unanswered questions, so listing them is O(open questions).
    pub open_questions: std::collections::BTreeSet<String>,
    pub ledger: Ledger,
    /// Heap bytes of unsettled tasks' inputs.
    pub live_bytes: usize,
    /// Heap bytes of what settled tasks keep.
    pub retained_bytes: usize,
}

impl EngineState {
    pub fn new(config: EngineConfig, signer: Signer) -> EngineState {
        EngineState {
            signer,
            ledger: Ledger::new(config.ledger_retention, config.ledger_retention_bytes),
            live_bytes: 0,
            retained_bytes: 0,
            config,
            tasks: FxHashMap::default(),
            next_task: 1,
            finished: VecDeque::new(),
            tokens: FxHashMap::default(),
            sessions: FxHashMap::default(),
            handles: HashMap::new(),
            resumes: HashMap::new(),
            open_questions: Default::default(),
        }
    }

    /// Appends an event, stamped with the run (root task) of `task`.
    pub fn emit(&mut self, task: Option<TaskId>, kind: EventKind) {
        let run = task.and_then(|t| self.tasks.get(&t)).map(|t| t.root);
        self.ledger.push(task, run, kind);
    }

    pub fn task(&self, id: TaskId) -> Result<&Task, EngineError> {
        self.tasks
            .get(&id)
            .map(|t| &**t)
            .ok_or(EngineError::UnknownTask(id.0))
    }

    pub fn task_mut(&mut self, id: TaskId) -> Result<&mut Task, EngineError> {
        self.tasks
            .get_mut(&id)
            .map(|t| &mut **t)
            .ok_or(EngineError::UnknownTask(id.0))
    }

    /// Steps 1–3 of verification: signature, expiry, revoked. A token
    /// identical to the one minted skips the HMAC; any other is checked
    /// against its signature, so a forgery is `BadSignature` even when its
    /// nonce is known, and a genuine token without a record is `Revoked`.
    pub fn verify(&self, tok: &CapToken) -> Result<&TokenRecord, AuthError> {
        let rec = self.tokens.get(&tok.claims.nonce);
        let minted = rec.is_some_and(|r| same_token(&r.token, tok));
        if !minted {
            self.signer.verify(tok)?;
        }
        let now = super::coarse_now_ms();
        if now >= tok.claims.expires_at_ms {
            return Err(AuthError::Expired {
                expired_at_ms: tok.claims.expires_at_ms,
                now_ms: now,
            });
        }
        match rec {
            Some(r) if minted => Ok(r),
            _ => Err(AuthError::Revoked),
        }
    }

    /// All seven verification steps, in order: signature, expiry, revoked,
    /// role × verb, ownership, spawn depth, uses left.
    pub fn authorize(&mut self, tok: &CapToken, access: Access) -> Result<(), EngineError> {
        self.check(tok, access.verb, access.task)?;
        if let Some(depth) = access.spawn_depth {
            self.check_depth(depth)?;
        }
        let rec = self
            .tokens
            .get_mut(&tok.claims.nonce)
            .expect("checked above");
        if let Some(left) = rec.uses_left.as_mut() {
            if *left == 0 {
                return Err(AuthError::Exhausted.into());
            }
            *left -= 1;
        }
        Ok(())
    }

    /// Signature, expiry, revocation, role × verb and ownership, without
    /// spending a use.
    pub fn check(
        &self,
        tok: &CapToken,
        verb: Verb,
        task: Option<TaskId>,
    ) -> Result<(), EngineError> {
        let gate = self.verify(tok)?.gate;
        gate.check(tok.claims.role, verb)?;
        if let (Some(bound), Some(target)) = (tok.claims.task, task)
            && !self.descends_from(target, TaskId(bound))
        {
            return Err(AuthError::NotOwner {
                bound,
                target: target.0,
            }
            .into());
        }
        Ok(())
    }

    pub fn check_depth(&self, depth: u32) -> Result<(), EngineError> {
        if depth > self.config.max_depth {
            return Err(AuthError::DepthExceeded {
                depth,
                limit: self.config.max_depth,
            }
            .into());
        }
        Ok(())
    }

    /// Whether a holder of `tok` may see something about `task`: an
    /// unbound token sees everything; a bound one only its own tasks (and
    /// nothing that belongs to no task).
    pub fn visible(&self, tok: &CapToken, task: Option<TaskId>) -> bool {
        match (tok.claims.task, task) {
            (Some(bound), Some(_)) if Some(TaskId(bound)) == task => true,
            (None, _) => true,
            (Some(bound), Some(t)) => self.descends_from(t, TaskId(bound)),
            (Some(_), None) => false,
        }
    }

    /// Whether a holder of `tok` may see `ev`: as [`Self::visible`], and a
    /// token bound to a run sees all of that run's events, those of
    /// tasks already evicted included.
    pub fn sees_event(&self, tok: &CapToken, ev: &super::events::Event) -> bool {
        match (tok.claims.task, ev.run) {
            (Some(bound), Some(run)) if run.0 == bound => true,
            _ => self.visible(tok, ev.task),
        }
    }

    /// True when `task` is `ancestor` or one of its descendants. Bounded by
    /// the spawn depth limit, never by history.
    pub fn descends_from(&self, task: TaskId, ancestor: TaskId) -> bool {
        let mut cur = Some(task);
        for _ in 0..=self.config.max_depth + 1 {
            match cur {
                Some(t) if t == ancestor => return true,
                Some(t) => cur = self.tasks.get(&t).and_then(|t| t.parent),
                None => return false,
            }
        }
        false
    }

    /// Ends session `nonce`: its token is revoked and, if it was a session
    /// (not a worker's token), its detachment is announced.
    pub fn end_session(&mut self, nonce: u128, reason: &'static str) {
        self.revoke(nonce);
        if let Some(sess) = self.sessions.remove(&nonce) {
            self.emit(
                None,
                super::EventKind::SessionDetached {
                    subject: sess.subject,
                    reason,
                },
            );
        }
    }

    pub fn revoke(&mut self, nonce: u128) {
        if let Some(rec) = self.tokens.remove(&nonce)
            && let Some(h) = rec.handle
        {
            self.handles.remove(&h);
        }
    }

    /// Measures a payload entering the engine against `limit`.
    pub fn admit(&self, what: &'static str, v: &Value, limit: usize) -> Result<usize, EngineError> {
        let size = super::size::measure(v, limit);
        if size.json > limit {
            return Err(EngineError::TooLarge {
                what,
                bytes: size.json,
                limit,
            });
        }
        Ok(size.heap)
    }

    /// Makes room for a new unsettled task holding `bytes` of input.
    pub fn hold_live(&mut self, bytes: usize) -> Result<(), EngineError> {
        let limit = self.config.max_live_bytes;
        if self.live_bytes + bytes > limit {
            return Err(EngineError::Full {
                held: self.live_bytes,
                limit,
            });
        }
        self.live_bytes += bytes;
        Ok(())
    }

    /// A blocked task dispatched again counts as live again.
    pub fn revive(&mut self, id: TaskId) {
        if let Some(t) = self.tasks.get_mut(&id)
            && t.retired
        {
            t.retired = false;
            self.retained_bytes -= t.held;
            t.held = t.input_bytes;
            self.live_bytes += t.held;
        }
    }

    /// Records that `id` settled. A task that passed or was cancelled can
    /// never run again, so it keeps only its result (what `poll_task` and
    /// the flow read); a blocked one keeps its input for a retry. Evicts
    /// the oldest settled tasks past the retention bounds, in tasks and in
    /// bytes, so memory does not grow with history.
    pub fn retire(&mut self, id: TaskId) {
        let Some(t) = self.tasks.get_mut(&id) else {
            return;
        };
        if t.retired {
            return;
        }
        t.retired = true;
        self.live_bytes -= t.held;
        if t.status != TaskStatus::Blocked {
            t.input = NULL.with(Arc::clone);
            t.input_bytes = 0;
        }
        t.held = t.input_bytes + t.result_bytes;
        self.retained_bytes += t.held;
        self.finished.push_back(id);
        while self.finished.len() > self.config.task_retention
            || self.retained_bytes > self.config.task_retention_bytes
        {
            let Some(old) = self.finished.pop_front() else {
                break;
            };
            let settled = self.tasks.get(&old).is_some_and(|t| t.retired);
            if settled && let Some(t) = self.tasks.remove(&old) {
                self.retained_bytes -= t.held;
                for k in t.resume_keys {
                    self.resumes.remove(&k);
                    self.open_questions.remove(&k);
                }
            }
        }
    }
}

thread_local! {
    /// The input a settled task keeps: one shared `null`.
    static NULL: Arc<Value> = Arc::new(Value::Null);
}
