//! The board: steps of remote agents waiting for a worker, and the claims
//! workers hold on them.
//!
//! A remote step is *offered* on a named queue; a worker *claims* it and
//! gets a claim id, which is the only handle it has on that one task. A
//! claim is a lease: the worker renews it by heartbeat, and one not renewed
//! in time *expires* — the step goes back on its queue for another worker,
//! and anything later sent on the old claim is refused (fenced). Cancelling
//! the step ends its claim, which a worker learns on its next heartbeat.
//!
//! The board holds no timers: the step's own future (the `remote` backend)
//! sleeps until the claim's deadline and asks the board to expire it then;
//! a heartbeat that came first has moved the deadline, so nothing expires.
//! The board has its own small lock, never held across an await.

use crate::auth::CapToken;
use crate::engine::TaskId;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

/// Claims that ended, remembered so a late worker learns why (bounded).
const ENDED_KEPT: usize = 4096;

/// A step offered to workers: what they are told, and the attempt's token
/// (the board uses it to emit the worker's events as that task).
#[derive(Clone)]
pub struct Offer {
    pub queue: Arc<str>,
    pub task: TaskId,
    pub attempt: u32,
    pub agent: Arc<str>,
    pub input: Arc<Value>,
    pub profile: Value,
    /// The journal id of the step's run, when it has one.
    pub run: Option<String>,
    pub token: CapToken,
}

/// What a worker gets when it claims a step.
#[derive(Clone)]
pub struct Claimed {
    pub claim: String,
    pub offer: Offer,
    pub lease: Duration,
}

/// How a claimed step ended, as its worker posted it.
#[derive(Debug, Clone)]
pub struct Posted {
    pub value: Value,
    pub ok: bool,
}

/// Why the board refused a worker's call.
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

#[derive(Debug, Clone, Copy)]
enum Ended {
    Expired,
    Cancelled,
    Done,
}

/// A worker's live claim on a step.
struct Claim {
    id: String,
    deadline: Instant,
    /// Fired when the claim ends, so a waiting heartbeat returns at once.
    ended: CancellationToken,
}

/// One offered step.
struct Job {
    offer: Offer,
    claim: Option<Claim>,
    settle: Option<oneshot::Sender<Posted>>,
    /// Woken when the job is claimed (its deadline now matters).
    claimed: Arc<Notify>,
    expiries: u32,
}

#[derive(Default)]
struct State {
    next: u64,
    jobs: HashMap<u64, Job>,
    queues: HashMap<Arc<str>, VecDeque<u64>>,
    claims: HashMap<String, u64>,
    ended: HashMap<String, Ended>,
    ended_order: VecDeque<String>,
}

/// The engine's board of remote steps (see the module doc).
pub struct Board {
    state: Mutex<State>,
    /// Woken when a step is offered (claimers of any queue look again).
    offered: Notify,
    lease_ms: AtomicU64,
    open: AtomicBool,
}

/// A step on the board, held by the future waiting for it; dropping it
/// takes the step off the board (ending any claim as cancelled).
pub struct Ticket {
    board: Arc<Board>,
    key: u64,
    pub posted: oneshot::Receiver<Posted>,
    pub claimed: Arc<Notify>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.board.withdraw(self.key);
    }
}

impl Ticket {
    /// When the live claim lapses, or `None` while the step is unclaimed.
    pub fn deadline(&self) -> Option<Instant> {
        let s = self.board.lock();
        s.jobs.get(&self.key)?.claim.as_ref().map(|c| c.deadline)
    }

    /// Expires the claim if its deadline has passed: the step goes back on
    /// its queue. Returns how many claims on it have expired so far, when
    /// this one did.
    pub fn expire_if_due(&self) -> Option<u32> {
        let mut s = self.board.lock();
        let job = s.jobs.get_mut(&self.key)?;
        let Claim { id, ended, .. } = job.claim.take_if(|c| c.deadline <= Instant::now())?;
        ended.cancel();
        job.expiries += 1;
        let (n, queue) = (job.expiries, job.offer.queue.clone());
        s.claims.remove(&id);
        s.remember(id, Ended::Expired);
        s.queues.entry(queue).or_default().push_back(self.key);
        drop(s);
        self.board.offered.notify_waiters();
        Some(n)
    }
}

impl State {
    fn remember(&mut self, claim: String, why: Ended) {
        if self.ended_order.len() >= ENDED_KEPT
            && let Some(old) = self.ended_order.pop_front()
        {
            self.ended.remove(&old);
        }
        self.ended_order.push_back(claim.clone());
        self.ended.insert(claim, why);
    }

    /// The job behind a live claim, or why there is none.
    fn live(&mut self, claim: &str) -> Result<&mut Job, ClaimError> {
        let ended = |why: Option<&Ended>| match why {
            Some(Ended::Expired) => ClaimError::Expired(claim.to_string()),
            Some(Ended::Cancelled) => ClaimError::Cancelled(claim.to_string()),
            Some(Ended::Done) => ClaimError::Done(claim.to_string()),
            None => ClaimError::Unknown(claim.to_string()),
        };
        match self.claims.get(claim) {
            Some(key) => self.jobs.get_mut(key).ok_or_else(|| ended(None)),
            None => Err(ended(self.ended.get(claim))),
        }
    }
}

impl Default for Board {
    fn default() -> Self {
        Board {
            state: Mutex::default(),
            offered: Notify::new(),
            lease_ms: AtomicU64::new(30_000),
            open: AtomicBool::new(false),
        }
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

    /// Whether a worker can reach this board (only through a server).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.load(Ordering::SeqCst))
    }

    /// Puts a step on its queue.
    pub fn offer(self: &Arc<Self>, offer: Offer) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let claimed = Arc::new(Notify::new());
        let mut s = self.lock();
        s.next += 1;
        let key = s.next;
        s.queues
            .entry(offer.queue.clone())
            .or_default()
            .push_back(key);
        s.jobs.insert(
            key,
            Job {
                offer,
                claim: None,
                settle: Some(tx),
                claimed: claimed.clone(),
                expiries: 0,
            },
        );
        drop(s);
        self.offered.notify_waiters();
        Ticket {
            board: self.clone(),
            key,
            posted: rx,
            claimed,
        }
    }

    /// Takes the oldest step of `queue` (of run `run` only, when given).
    pub fn claim(&self, queue: &str, run: Option<&str>) -> Option<Claimed> {
        let lease = self.lease();
        let mut s = self.lock();
        let s = &mut *s;
        let waiting = s.queues.get_mut(queue)?;
        let at = waiting.iter().position(|key| {
            s.jobs
                .get(key)
                .is_some_and(|j| run.is_none() || j.offer.run.as_deref() == run)
        })?;
        let key = waiting.remove(at)?;
        let job = s.jobs.get_mut(&key)?;
        let id = format!("c{:032x}", crate::auth::nonce());
        job.claim = Some(Claim {
            id: id.clone(),
            deadline: Instant::now() + lease,
            ended: CancellationToken::new(),
        });
        job.claimed.notify_one();
        s.claims.insert(id.clone(), key);
        Some(Claimed {
            claim: id,
            offer: job.offer.clone(),
            lease,
        })
    }

    /// Waits up to `wait` for a step of `queue` to claim.
    pub async fn claim_wait(
        &self,
        queue: &str,
        run: Option<&str>,
        wait: Duration,
    ) -> Option<Claimed> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let offered = self.offered.notified();
            if let Some(c) = self.claim(queue, run) {
                return Some(c);
            }
            if tokio::time::timeout_at(until, offered).await.is_err() {
                return None;
            }
        }
    }

    /// Renews a live claim's lease; returns the token fired when the claim
    /// ends, so a heartbeat can wait on it.
    pub fn renew(&self, claim: &str) -> Result<CancellationToken, ClaimError> {
        let lease = self.lease();
        let mut s = self.lock();
        let job = s.live(claim)?;
        let c = job
            .claim
            .as_mut()
            .ok_or(ClaimError::Unknown(claim.into()))?;
        c.deadline = Instant::now() + lease;
        Ok(c.ended.clone())
    }

    /// The attempt token behind a live claim on `task`.
    pub fn token(&self, claim: &str, task: TaskId) -> Result<CapToken, ClaimError> {
        let mut s = self.lock();
        let job = s.live(claim)?;
        bound(claim, job, task)?;
        Ok(job.offer.token.clone())
    }

    /// Hands the worker's result to the waiting step; the claim ends.
    pub fn post(&self, claim: &str, task: TaskId, posted: Posted) -> Result<(), ClaimError> {
        let mut s = self.lock();
        let job = s.live(claim)?;
        bound(claim, job, task)?;
        if let Some(c) = job.claim.take() {
            c.ended.cancel();
        }
        let settle = job.settle.take();
        s.claims.remove(claim);
        s.remember(claim.to_string(), Ended::Done);
        drop(s);
        if let Some(tx) = settle {
            let _ = tx.send(posted);
        }
        Ok(())
    }

    /// Takes a step off the board (its future ended or was dropped).
    fn withdraw(&self, key: u64) {
        let mut s = self.lock();
        let Some(job) = s.jobs.remove(&key) else {
            return;
        };
        if let Some(q) = s.queues.get_mut(&job.offer.queue) {
            q.retain(|k| *k != key);
        }
        if let Some(c) = job.claim {
            c.ended.cancel();
            s.claims.remove(&c.id);
            s.remember(c.id, Ended::Cancelled);
        }
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

fn bound(claim: &str, job: &Job, task: TaskId) -> Result<(), ClaimError> {
    if job.offer.task == task {
        Ok(())
    } else {
        Err(ClaimError::OtherTask {
            claim: claim.to_string(),
            bound: job.offer.task,
            asked: task,
        })
    }
}
