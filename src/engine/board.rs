//! The board: the remote-step work queue kept in memory, and what this
//! process knows of the remote steps it executes.
//!
//! A remote step is *offered* on a named queue; a worker *claims* it and
//! gets a claim id, its only handle on that one task. A claim is a lease:
//! the worker renews it by heartbeat, and one not renewed in time
//! *lapses* — the step goes back on its queue for another worker, and
//! anything later sent on the old claim is refused (fenced). Withdrawing
//! the step (it was cancelled, or settled) ends its claim, which a worker
//! learns on its next heartbeat.
//!
//! The contract is the store's (`store::work::WorkQueue`): a journal's
//! queue is shared by every server on it; this one serves runs journaled
//! in memory. The board holds no timers: the step's own future reads its
//! state and lapses an overdue claim. Its lock is never held across an
//! await. It also keeps the server's settings (open to workers, the lease
//! length) and the attempt token of each remote step executing here, so a
//! worker's events reach the engine as that task's.

use crate::auth::CapToken;
use crate::engine::TaskId;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Claims that ended, remembered so a late worker learns why (bounded).
const ENDED_KEPT: usize = 4096;

/// A step offered to workers.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    pub queue: String,
    /// The journal id of the step's run, when it has one (a worker bound
    /// to a run claims only its steps).
    pub run: Option<String>,
    pub task: TaskId,
    pub attempt: u32,
    pub agent: String,
    pub input: Value,
    pub profile: Value,
}

/// What a worker gets when it claims a step.
#[derive(Debug, Clone)]
pub struct WorkClaim {
    pub claim: String,
    /// The offer's id.
    pub id: u64,
    pub item: WorkItem,
    pub lease: Duration,
}

/// Where an offered step stands.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkState {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it; `lapsed` once its lease ran out unrenewed.
    Claimed { lapsed: bool },
    /// Its worker posted this result.
    Done(Posted),
    /// Withdrawn, or never offered.
    Gone,
}

/// How a claimed step ended, as its worker posted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub value: Value,
    pub ok: bool,
}

/// Why a worker's call on a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("no claim `{0}`")]
    Unknown(String),
    #[error(
        "claim `{0}` expired: its lease was not renewed in time, and the step went back on its queue"
    )]
    Expired(String),
    #[error("claim `{0}` was cancelled: the step is no longer wanted; stop its command")]
    Cancelled(String),
    #[error("claim `{0}` already has its result")]
    Done(String),
    #[error("claim `{claim}` is for task {bound}, not task {asked}")]
    OtherTask {
        claim: String,
        bound: TaskId,
        asked: TaskId,
    },
}

impl ClaimError {
    pub fn code(&self) -> &'static str {
        match self {
            ClaimError::Unknown(_) => "unknown_claim",
            ClaimError::Expired(_) => "claim_expired",
            ClaimError::Cancelled(_) => "claim_cancelled",
            ClaimError::Done(_) => "claim_done",
            ClaimError::OtherTask { .. } => "forbidden",
        }
    }
}

/// A fresh claim id: 128 random bits, unguessable (the id is the
/// worker's only handle on its step). Every queue makes its ids here.
pub fn new_claim_id() -> String {
    format!("c{:032x}", crate::auth::nonce())
}

/// One offered step.
struct Job {
    item: WorkItem,
    /// The live claim and when its lease lapses.
    claim: Option<(String, Instant)>,
    posted: Option<Posted>,
    expiries: u32,
}

#[derive(Default)]
struct State {
    next: u64,
    jobs: HashMap<u64, Job>,
    queues: HashMap<String, VecDeque<u64>>,
    claims: HashMap<String, u64>,
    ended: HashMap<String, ClaimError>,
    ended_order: VecDeque<String>,
    /// Attempt tokens of the remote steps executing here, by offer id.
    tokens: HashMap<u64, CapToken>,
}

/// The engine's board (see the module doc).
pub struct Board {
    state: Mutex<State>,
    /// Woken whenever the queue changes in this process.
    pub changed: Notify,
    lease_ms: AtomicU64,
    open: AtomicBool,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            state: Mutex::default(),
            changed: Notify::new(),
            lease_ms: AtomicU64::new(30_000),
            open: AtomicBool::new(false),
        }
    }
}

impl State {
    fn remember(&mut self, claim: String, why: ClaimError) {
        if self.ended_order.len() >= ENDED_KEPT
            && let Some(old) = self.ended_order.pop_front()
        {
            self.ended.remove(&old);
        }
        self.ended_order.push_back(claim.clone());
        self.ended.insert(claim, why);
    }

    /// The job behind live claim `claim` on `task`, or why there is none.
    fn live(&mut self, claim: &str, task: TaskId) -> Result<(u64, &mut Job), ClaimError> {
        let Some(key) = self.claims.get(claim).copied() else {
            return Err(self
                .ended
                .get(claim)
                .cloned()
                .unwrap_or_else(|| ClaimError::Unknown(claim.to_string())));
        };
        let job = self
            .jobs
            .get_mut(&key)
            .ok_or_else(|| ClaimError::Unknown(claim.to_string()))?;
        if job.item.task != task {
            return Err(ClaimError::OtherTask {
                claim: claim.to_string(),
                bound: job.item.task,
                asked: task,
            });
        }
        Ok((key, job))
    }
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the board to workers (a server does, with its lease length).
    pub fn open(&self, lease: Duration) {
        self.lease_ms
            .store(lease.as_millis().max(1) as u64, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }

    /// Whether a worker can reach this host (only through a server).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// The lease a claim gets.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(Ordering::SeqCst))
    }

    /// The attempt token of the remote step offered as `id`, when it
    /// executes in this process.
    pub fn token(&self, id: u64) -> Option<CapToken> {
        self.lock().tokens.get(&id).cloned()
    }

    fn touched(&self) {
        self.changed.notify_waiters();
    }

    pub fn offer(&self, item: WorkItem, token: Option<CapToken>) -> u64 {
        let mut s = self.lock();
        s.next += 1;
        let key = s.next;
        if let Some(token) = token {
            s.tokens.insert(key, token);
        }
        s.queues
            .entry(item.queue.clone())
            .or_default()
            .push_back(key);
        let job = Job {
            item,
            claim: None,
            posted: None,
            expiries: 0,
        };
        s.jobs.insert(key, job);
        drop(s);
        self.touched();
        key
    }

    pub fn claim(&self, queue: &str, run: Option<&str>, lease: Duration) -> Option<WorkClaim> {
        let mut s = self.lock();
        let s = &mut *s;
        let waiting = s.queues.get_mut(queue)?;
        let at = waiting.iter().position(|key| {
            s.jobs
                .get(key)
                .is_some_and(|j| run.is_none() || j.item.run.as_deref() == run)
        })?;
        let key = waiting.remove(at)?;
        let job = s.jobs.get_mut(&key)?;
        let id = new_claim_id();
        job.claim = Some((id.clone(), Instant::now() + lease));
        s.claims.insert(id.clone(), key);
        let claimed = WorkClaim {
            claim: id,
            id: key,
            item: job.item.clone(),
            lease,
        };
        self.touched();
        Some(claimed)
    }

    /// The task live claim `claim` is on, or why it is not live.
    fn task_of(&self, s: &mut State, claim: &str) -> Result<TaskId, ClaimError> {
        match s.claims.get(claim).and_then(|k| s.jobs.get(k)) {
            Some(j) => Ok(j.item.task),
            None => s.live(claim, TaskId(0)).map(|_| TaskId(0)),
        }
    }

    /// The run of live claim `claim`, or why it is not live.
    pub fn check(&self, claim: &str) -> Result<Option<String>, ClaimError> {
        let mut s = self.lock();
        let task = self.task_of(&mut s, claim)?;
        let (_, job) = s.live(claim, task)?;
        Ok(job.item.run.clone())
    }

    pub fn renew(&self, claim: &str, lease: Duration) -> Result<(), ClaimError> {
        let mut s = self.lock();
        let task = self.task_of(&mut s, claim)?;
        let (_, job) = s.live(claim, task)?;
        if let Some((_, until)) = job.claim.as_mut() {
            *until = Instant::now() + lease;
        }
        Ok(())
    }

    pub fn claimed(&self, claim: &str, task: TaskId) -> Result<(u64, WorkItem), ClaimError> {
        let mut s = self.lock();
        let (key, job) = s.live(claim, task)?;
        Ok((key, job.item.clone()))
    }

    pub fn post(&self, claim: &str, task: TaskId, posted: Posted) -> Result<(), ClaimError> {
        let mut s = self.lock();
        let (_, job) = s.live(claim, task)?;
        job.claim = None;
        job.posted = Some(posted);
        s.claims.remove(claim);
        s.remember(claim.to_string(), ClaimError::Done(claim.to_string()));
        drop(s);
        self.touched();
        Ok(())
    }

    pub fn state(&self, key: u64) -> WorkState {
        let s = self.lock();
        match s.jobs.get(&key) {
            None => WorkState::Gone,
            Some(Job {
                posted: Some(p), ..
            }) => WorkState::Done(p.clone()),
            Some(Job {
                claim: Some((_, until)),
                ..
            }) => WorkState::Claimed {
                lapsed: *until <= Instant::now(),
            },
            Some(_) => WorkState::Queued,
        }
    }

    pub fn lapse(&self, key: u64) -> Option<u32> {
        let mut s = self.lock();
        let job = s.jobs.get_mut(&key)?;
        let (claim, _) = job.claim.take_if(|(_, until)| *until <= Instant::now())?;
        job.expiries += 1;
        let (n, queue) = (job.expiries, job.item.queue.clone());
        s.claims.remove(&claim);
        s.remember(claim.clone(), ClaimError::Expired(claim));
        s.queues.entry(queue).or_default().push_back(key);
        drop(s);
        self.touched();
        Some(n)
    }

    pub fn withdraw(&self, key: u64) {
        let mut s = self.lock();
        s.tokens.remove(&key);
        let Some(job) = s.jobs.remove(&key) else {
            return;
        };
        if let Some(q) = s.queues.get_mut(&job.item.queue) {
            q.retain(|k| *k != key);
        }
        if let Some((claim, _)) = job.claim {
            s.claims.remove(&claim);
            s.remember(claim.clone(), ClaimError::Cancelled(claim));
        }
        drop(s);
        self.touched();
    }

    /// Steps waiting on each queue (unclaimed).
    pub fn waiting(&self) -> Vec<(String, usize)> {
        let s = self.lock();
        let mut v: Vec<_> = s
            .queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, q)| (k.to_string(), q.len()))
            .collect();
        v.sort();
        v
    }
}
