//! Run-wide budgets: one meter per run that every Lua VM working for the
//! run (its flow VM, each Lua agent's VM while it serves one of the run's
//! tasks) charges besides its own limits, so eight spinning agents share
//! one instruction budget and one memory budget instead of having eight.
//! A leaf of the Lua layer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Instructions all of a run's Lua VMs may execute together (default).
pub const RUN_INSTRUCTIONS: u64 = 10_000_000_000;
/// Bytes all of a run's Lua VMs may hold at once (default).
pub const RUN_MEMORY: usize = 1 << 30;

/// Entries one execution of a run may journal (default).
pub const JOURNAL_ENTRIES: u64 = 100_000;
/// Bytes (values as JSON, plus each entry's names) one execution may
/// journal (default).
pub const JOURNAL_BYTES: u64 = 256 << 20;

/// A blueprint's run-wide budgets (`limits = { instructions = ..,
/// memory = .., journal_entries = .., journal_bytes = .. }`); unset ones
/// keep their defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunLimits {
    pub instructions: Option<u64>,
    pub memory: Option<usize>,
    pub journal_entries: Option<u64>,
    pub journal_bytes: Option<u64>,
    /// `limits.tokens`: what mob members' budgets are reserved from.
    pub tokens: Option<u64>,
}

/// A run's budgets and what its VMs have used of them.
pub struct RunMeter {
    used: AtomicU64,
    budget: u64,
    memory: AtomicU64,
    memory_limit: u64,
}

impl RunMeter {
    pub fn new(instructions: u64, memory: usize) -> RunMeter {
        RunMeter {
            used: AtomicU64::new(0),
            budget: instructions,
            memory: AtomicU64::new(0),
            memory_limit: memory as u64,
        }
    }

    /// Charges `n` instructions; false once the run's budget is spent.
    pub fn charge(&self, n: u64) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed) + n <= self.budget
    }

    /// A VM's memory grew from `from` to `to` bytes; false once the run's
    /// VMs together hold more than its memory budget.
    pub fn resize(&self, from: u64, to: u64) -> bool {
        let now = if to >= from {
            self.memory.fetch_add(to - from, Ordering::Relaxed) + (to - from)
        } else {
            self.memory.fetch_sub(from - to, Ordering::Relaxed) - (from - to)
        };
        now <= self.memory_limit
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// Instructions the run's VMs executed so far.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes the run's VMs hold now (as last reported by their hooks).
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }
}

/// The meters of the runs a host serves, by root task id: a flow VM
/// registers its run's meter, a Lua agent serving one of the run's tasks
/// finds it there. Weak: a meter lives as long as its flow VM holds it.
#[derive(Clone, Default)]
pub struct RunMeters(Arc<Mutex<HashMap<u64, Weak<RunMeter>>>>);

impl RunMeters {
    pub fn insert(&self, root: u64, meter: &Arc<RunMeter>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, m| m.strong_count() > 0);
        map.insert(root, Arc::downgrade(meter));
    }

    pub fn get(&self, root: u64) -> Option<Arc<RunMeter>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&root).and_then(Weak::upgrade)
    }
}
