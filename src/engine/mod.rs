//! The engine: one state, reached through one lock, and the verbs over it.
//!
//! [`Engine`] is a cheap handle (`Arc` inside). All state lives in one
//! `EngineState` behind one `std::sync::Mutex`, touched only inside
//! [`Engine::with_state`] by short synchronous closures: nothing awaits while
//! holding it, so a waiter always gets the lock (no retry loop that can give
//! up under load), and a hold longer than `hold_warn` is logged.
//!
//! The verbs live one group per file under `verbs/`.

pub mod board;
mod error;
mod events;
mod memory;
pub mod size;
mod spawner;
mod state;
mod verbs;

pub use error::EngineError;
pub use events::{Event, EventKind, OutputKind};
pub use memory::Held;
pub use spawner::{Outcome, SpawnCtx, SpawnError, Spawner, Worker};
pub use state::{TaskStatus, TaskView};
pub use verbs::observe::Subscription;
pub use verbs::senior::PendingQuestion;
pub use verbs::session::{AttachOptions, Caller};
pub use verbs::task::TaskSpec;
pub use verbs::worker::Prompt;

use crate::auth::Signer;
use serde::Serialize;
use state::EngineState;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// A task's id. Displayed as `t42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Engine limits and timings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Deepest allowed spawn depth (a root task has depth 0).
    pub max_depth: u32,
    /// Settled tasks kept in memory before the oldest are evicted.
    pub task_retention: usize,
    /// Events kept in the in-memory ledger.
    pub ledger_retention: usize,
    /// Lifetime of a worker token (it is revoked earlier, when its attempt settles).
    pub worker_ttl: Duration,
    /// A session silent this long is marked detached by the sweep.
    pub heartbeat_timeout: Duration,
    /// How often the sweep runs.
    pub sweep_every: Duration,
    /// Lock holds longer than this are logged.
    pub hold_warn: Duration,
    /// Largest step input, result, senior question or answer, as JSON.
    pub max_payload_bytes: usize,
    /// Largest `emit` payload (one progress, partial or artifact event).
    pub max_emit_bytes: usize,
    /// Bytes of unsettled tasks' inputs the engine holds at once; beyond
    /// it, `start_task` is refused (`engine_full`).
    pub max_live_bytes: usize,
    /// Bytes of settled tasks kept; the oldest are evicted past it.
    pub task_retention_bytes: usize,
    /// Bytes of events kept in the ledger; the oldest are evicted past it.
    pub ledger_retention_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_depth: 4,
            task_retention: 100_000,
            ledger_retention: 100_000,
            worker_ttl: Duration::from_secs(24 * 3600),
            heartbeat_timeout: Duration::from_secs(30),
            sweep_every: Duration::from_secs(5),
            // Generous: a busy 2-core box can preempt a holder for ms.
            hold_warn: Duration::from_millis(50),
            max_payload_bytes: 16 << 20,
            max_emit_bytes: 1 << 20,
            max_live_bytes: 1 << 30,
            task_retention_bytes: 256 << 20,
            ledger_retention_bytes: 64 << 20,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<EngineState>,
    signer: Signer,
    ledger_notify: Notify,
    questions_notify: Notify,
    hold_warn: Duration,
    worker_ttl: Duration,
    board: Arc<board::Board>,
}

/// A reading of the kernel's coarse clock `id` (good to its tick, a few
/// ms, and several times cheaper than the precise one). Elsewhere than
/// Linux its callers fall back to the precise clocks.
#[cfg(target_os = "linux")]
fn coarse(id: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    (unsafe { libc::clock_gettime(id, &mut ts) } == 0)
        .then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// A monotonic reading good to a few milliseconds, for the lock's
/// hold-time warning: it is taken twice per verb, and the precise clock
/// cost more than some verbs (a `hold_warn` is tens of milliseconds).
fn coarse_now() -> Duration {
    #[cfg(target_os = "linux")]
    if let Some(d) = coarse(libc::CLOCK_MONOTONIC_COARSE) {
        return d;
    }
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// Milliseconds since the Unix epoch, good to the kernel's tick (a few
/// ms): for the engine's own stamps, several per step (events, token issue
/// and expiry), where the precise clock cost ~5 % of a step. What users
/// read or compare (`swarm.time.now`, the journal, run records) uses
/// [`now_ms`].
pub fn coarse_now_ms() -> u64 {
    #[cfg(target_os = "linux")]
    if let Some(d) = coarse(libc::CLOCK_REALTIME_COARSE) {
        return d.as_millis() as u64;
    }
    now_ms()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine {
    /// A new engine signing with `signer`. Inside a tokio runtime this also
    /// starts the session sweep, which stops when the last handle is dropped.
    pub fn new(config: EngineConfig, signer: Signer) -> Engine {
        let sweep_every = config.sweep_every;
        let engine = Engine {
            inner: Arc::new(Inner {
                hold_warn: config.hold_warn,
                worker_ttl: config.worker_ttl,
                state: Mutex::new(EngineState::new(config, signer.clone())),
                signer,
                ledger_notify: Notify::new(),
                questions_notify: Notify::new(),
                board: Arc::default(),
            }),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&engine.inner), sweep_every));
        }
        engine
    }

    /// Runs `f` on the state under the lock. `f` must be short and must not
    /// block; `op` names the caller in the hold-time warning.
    pub(crate) fn with_state<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut EngineState) -> R,
    ) -> R {
        let mut guard = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = coarse_now();
        let out = f(&mut guard);
        let appended = std::mem::take(&mut guard.ledger.appended);
        drop(guard);
        let held = coarse_now().saturating_sub(start);
        if held > self.inner.hold_warn {
            tracing::warn!(
                op,
                held_us = held.as_micros() as u64,
                "engine lock held long"
            );
        }
        if appended {
            self.inner.ledger_notify.notify_waiters();
        }
        out
    }

    pub(crate) fn questions_notify(&self) -> &Notify {
        &self.inner.questions_notify
    }

    pub(crate) fn ledger_notify(&self) -> &Notify {
        &self.inner.ledger_notify
    }

    pub(crate) fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    /// Steps of remote agents waiting for workers, and their claims.
    pub fn board(&self) -> &Arc<board::Board> {
        &self.inner.board
    }

    pub(crate) fn worker_ttl(&self) -> Duration {
        self.inner.worker_ttl
    }

    /// Number of tasks held in memory (settled ones are evicted past retention).
    pub fn tasks_in_memory(&self) -> usize {
        self.with_state("tasks_in_memory", |s| s.tasks.len())
    }

    /// Bytes of task data the engine holds: `(live inputs, settled tasks)`.
    pub fn held_bytes(&self) -> (usize, usize) {
        self.with_state("held_bytes", |s| (s.live_bytes, s.retained_bytes))
    }
}

/// Marks silent sessions detached and drops expired token records.
async fn sweep(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        Engine { inner }.sweep_once();
    }
}
