//! Per-VM limits: instruction budget, wall-clock deadline, cancellation.
//!
//! One [`Limits`] value per VM, shared with the instruction hook. The hook is
//! installed with `set_global_hook`, so it reaches the main thread, every
//! coroutine Lua creates (they inherit the hook) and every thread mlua
//! creates for async calls. Once a limit trips the VM stays tripped: the hook
//! fails again at every check and `pcall`/`coroutine.resume` re-raise, so a
//! script cannot catch its way past a limit. A pooled agent VM that tripped
//! is never reused; `arm` starts a new run untripped.

use mlua::{HookTriggers, Lua, VmState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Instructions between two hook calls.
pub const HOOK_EVERY: u32 = 1000;

/// Which limit stopped a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    Budget = 1,
    Deadline = 2,
    Cancelled = 3,
    Memory = 4,
}

impl Tripped {
    pub fn code(self) -> &'static str {
        match self {
            Tripped::Budget => "instruction_budget",
            Tripped::Deadline => "deadline",
            Tripped::Cancelled => "cancelled",
            Tripped::Memory => "memory_limit",
        }
    }

    fn from_u8(v: u8) -> Option<Tripped> {
        match v {
            1 => Some(Tripped::Budget),
            2 => Some(Tripped::Deadline),
            3 => Some(Tripped::Cancelled),
            4 => Some(Tripped::Memory),
            _ => None,
        }
    }
}

/// A limit hit inside Lua, raised as a typed error with the Lua location.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {what}")]
pub struct LimitError {
    pub kind: Tripped,
    pub what: String,
    pub location: String,
}

/// Limits for one VM, reset between the runs a pooled VM serves.
pub struct Limits {
    budget: AtomicU64,
    used: AtomicU64,
    /// Nanoseconds after `epoch`; 0 = no deadline.
    deadline_ns: AtomicU64,
    epoch: Instant,
    tripped: AtomicU8,
    cancel: Mutex<Option<CancellationToken>>,
}

impl Limits {
    pub fn new(budget: u64) -> Limits {
        Limits {
            budget: AtomicU64::new(budget),
            used: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            tripped: AtomicU8::new(0),
            cancel: Mutex::new(None),
        }
    }

    /// Starts a new run: fresh budget, deadline and cancellation.
    pub fn arm(&self, budget: u64, timeout: Option<Duration>, cancel: Option<CancellationToken>) {
        self.budget.store(budget, Ordering::Relaxed);
        self.used.store(0, Ordering::Relaxed);
        let deadline = timeout.map_or(0, |t| {
            (self.epoch.elapsed() + t).as_nanos().min(u64::MAX as u128) as u64
        });
        self.deadline_ns.store(deadline, Ordering::Relaxed);
        // A new run starts untripped (the REPL reuses its VM after Ctrl-C).
        self.tripped.store(0, Ordering::Relaxed);
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = cancel;
    }

    pub fn tripped(&self) -> Option<Tripped> {
        Tripped::from_u8(self.tripped.load(Ordering::Relaxed))
    }

    pub fn trip(&self, why: Tripped) {
        let _ = self
            .tripped
            .compare_exchange(0, why as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Instructions used since the last `arm`.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `n` instructions and checks every limit.
    pub fn charge(&self, n: u64) -> Result<(), Tripped> {
        if let Some(t) = self.tripped() {
            return Err(t);
        }
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        let why = if used > self.budget.load(Ordering::Relaxed) {
            Some(Tripped::Budget)
        } else if self.past_deadline() {
            Some(Tripped::Deadline)
        } else if self.is_cancelled() {
            Some(Tripped::Cancelled)
        } else {
            None
        };
        match why {
            Some(t) => {
                self.trip(t);
                Err(t)
            }
            None => Ok(()),
        }
    }

    fn past_deadline(&self) -> bool {
        let d = self.deadline_ns.load(Ordering::Relaxed);
        d != 0 && self.epoch.elapsed().as_nanos() as u64 >= d
    }

    fn is_cancelled(&self) -> bool {
        self.cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Human text for a tripped limit.
    pub fn describe(&self, t: Tripped) -> String {
        match t {
            Tripped::Budget => format!(
                "instruction budget of {} exhausted",
                self.budget.load(Ordering::Relaxed)
            ),
            Tripped::Deadline => "deadline exceeded".to_string(),
            Tripped::Cancelled => "run cancelled".to_string(),
            Tripped::Memory => "memory limit exceeded".to_string(),
        }
    }

    /// The typed error for a tripped limit at the current Lua location.
    pub fn error(&self, lua: &Lua, t: Tripped) -> mlua::Error {
        mlua::Error::external(LimitError {
            kind: t,
            what: self.describe(t),
            location: super::error::caller_location(lua, 0),
        })
    }
}

/// Installs the hook that enforces `limits` on every thread of `lua`.
///
/// Besides the budget, deadline and cancellation, the hook trips the memory
/// limit softly at `memory_soft` bytes, so a growing table is stopped with the
/// exact file:line; the allocator's hard limit is the backstop.
pub fn install(lua: &Lua, limits: std::sync::Arc<Limits>, memory_soft: usize) -> mlua::Result<()> {
    let triggers = HookTriggers::new().every_nth_instruction(HOOK_EVERY);
    lua.set_global_hook(triggers, move |lua, _debug| {
        if lua.used_memory() > memory_soft {
            limits.trip(Tripped::Memory);
        }
        match limits.charge(HOOK_EVERY as u64) {
            Ok(()) => Ok(VmState::Continue),
            Err(t) => Err(limits.error(lua, t)),
        }
    })
}
