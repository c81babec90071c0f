//! Per-VM limits: instruction budget, wall-clock deadline, cancellation.
//!
//! One [`Limits`] value per VM, shared with the instruction hook. The hook is
//! installed with `set_global_hook`, so it reaches the main thread, every
//! coroutine Lua creates (they inherit the hook) and every thread mlua
//! creates for async calls. Once a limit trips the VM stays tripped: the hook
//! fails again at every check and `pcall`/`coroutine.resume` re-raise, so a
//! script cannot catch its way past a limit. A pooled agent VM that tripped
//! is never reused; `arm` starts a new run untripped.
//!
//! A VM working for a run also charges the run's meter (`budget.rs`), and
//! the hook hands the thread back to the async runtime after each time
//! slice, so a spinning script cannot starve the host's control path
//! (signals, deadlines, the HTTP face): see [`SLICE`].

use super::budget::RunMeter;
use mlua::{Lua, ffi};
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Instructions between two hook calls.
pub const HOOK_EVERY: u32 = 1000;

/// How long Lua runs on an async thread before the hook yields it back to
/// the runtime (which polls it again at once, after its other work: timers,
/// signals, sockets). Short enough that even a runtime whose every worker
/// runs spinning scripts serves its control path within tens of ms.
pub const SLICE: Duration = Duration::from_micros(500);

/// Which limit stopped a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    Budget = 1,
    Deadline = 2,
    Cancelled = 3,
    Memory = 4,
    /// The run's instruction budget, shared by all its VMs.
    RunBudget = 5,
    /// The run's memory budget, shared by all its VMs.
    RunMemory = 6,
}

impl Tripped {
    pub fn code(self) -> &'static str {
        match self {
            Tripped::Budget => "instruction_budget",
            Tripped::Deadline => "deadline",
            Tripped::Cancelled => "cancelled",
            Tripped::Memory => "memory_limit",
            Tripped::RunBudget => "instruction_budget",
            Tripped::RunMemory => "memory_limit",
        }
    }

    fn from_u8(v: u8) -> Option<Tripped> {
        match v {
            1 => Some(Tripped::Budget),
            2 => Some(Tripped::Deadline),
            3 => Some(Tripped::Cancelled),
            4 => Some(Tripped::Memory),
            5 => Some(Tripped::RunBudget),
            6 => Some(Tripped::RunMemory),
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
    /// Where the hook stopped the VM, for the typed error.
    tripped_at: Mutex<Option<String>>,
    memory_soft: AtomicU64,
    armed: Mutex<Armed>,
    /// Bytes this VM last reported to its run's meter.
    reported: AtomicU64,
    /// When the current time slice began (ns after `epoch`).
    slice_at: AtomicU64,
}

/// What a run arms a VM with besides numbers.
#[derive(Default)]
struct Armed {
    cancel: Option<CancellationToken>,
    run: Option<Arc<RunMeter>>,
}

impl Limits {
    pub fn new(budget: u64) -> Limits {
        Limits {
            budget: AtomicU64::new(budget),
            used: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            tripped: AtomicU8::new(0),
            tripped_at: Mutex::new(None),
            memory_soft: AtomicU64::new(u64::MAX),
            armed: Mutex::new(Armed::default()),
            reported: AtomicU64::new(0),
            slice_at: AtomicU64::new(0),
        }
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Armed> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes this VM charge `run`'s meter (or none), handing the memory it
    /// reported to the previous run back.
    pub fn join_run(&self, run: Option<Arc<RunMeter>>) {
        let mut armed = self.armed();
        let reported = self.reported.swap(0, Ordering::Relaxed);
        if let Some(old) = &armed.run {
            old.resize(reported, 0);
        }
        armed.run = run;
    }

    /// What a host call that waits must also wait for: this run's
    /// deadline and cancellation (the hook cannot see them while no Lua
    /// runs).
    pub fn watch(&self) -> (Option<Instant>, Option<CancellationToken>) {
        let d = self.deadline_ns.load(Ordering::Relaxed);
        let deadline = (d != 0).then(|| self.epoch + Duration::from_nanos(d));
        (deadline, self.armed().cancel.clone())
    }

    /// The run this VM charges, if any.
    pub fn run(&self) -> Option<Arc<RunMeter>> {
        self.armed().run.clone()
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
        *self.tripped_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.armed().cancel = cancel;
    }

    fn note_location(&self, at: String) {
        let mut slot = self.tripped_at.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(at);
    }

    /// Where the hook stopped the VM (`?` when it was not the hook).
    pub fn tripped_at(&self) -> String {
        self.tripped_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "?".into())
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
        } else {
            let armed = self.armed();
            if armed.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                Some(Tripped::Cancelled)
            } else if armed.run.as_ref().is_some_and(|r| !r.charge(n)) {
                Some(Tripped::RunBudget)
            } else {
                None
            }
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

    /// Reports this VM's memory, `bytes`, to its run's meter; false once
    /// the run's VMs together hold more than its memory budget.
    fn report_memory(&self, bytes: u64) -> bool {
        let armed = self.armed();
        let Some(run) = &armed.run else { return true };
        let before = self.reported.swap(bytes, Ordering::Relaxed);
        run.resize(before, bytes)
    }

    /// Whether this VM's time slice is over.
    fn slice_due(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        now.saturating_sub(self.slice_at.load(Ordering::Relaxed)) >= SLICE.as_nanos() as u64
    }

    /// Begins a new time slice.
    fn slice_restart(&self) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.slice_at.store(now, Ordering::Relaxed);
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
            Tripped::RunBudget => format!(
                "the run's instruction budget of {} (all its Lua VMs together) exhausted",
                self.run().map_or(0, |r| r.budget())
            ),
            Tripped::RunMemory => format!(
                "the run's memory budget of {} bytes (all its Lua VMs together) exceeded",
                self.run().map_or(0, |r| r.memory_limit())
            ),
        }
    }

    /// The typed error for a tripped limit at `location` (the user's
    /// file:line, see `location.rs`).
    pub fn error(&self, t: Tripped, location: String) -> mlua::Error {
        mlua::Error::external(LimitError {
            kind: t,
            what: self.describe(t),
            location,
        })
    }
}

/// Installs the hook that enforces `limits` on every thread of `lua`.
///
/// Besides the budget, deadline and cancellation, the hook trips the memory
/// limit softly at `memory_soft` bytes, so a growing table is stopped with the
/// exact file:line; the allocator's hard limit is the backstop.
///
/// The hook is a plain C hook set on the main thread, which every thread
/// inherits when it is created (Lua copies the hook into `lua_newthread`'s
/// result; mlua makes its async threads that way). It is not mlua's hook
/// callback because that one trims the hooked function's stack before it
/// raises, after which Lua runs pending `__close` handlers with no hook at
/// all: a `while true do end` there would never stop.
pub fn install(lua: &Lua, limits: std::sync::Arc<Limits>, memory_soft: usize) -> mlua::Result<()> {
    limits
        .memory_soft
        .store(memory_soft as u64, Ordering::Relaxed);
    // The pointer stays valid for the state's whole life: the VM's app data
    // holds an `Arc` of the same limits and is dropped only after
    // `lua_close`.
    let ptr = std::sync::Arc::as_ptr(&limits) as *mut c_void;
    unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::lua_pushlightuserdata(state, ptr);
            ffi::lua_rawsetp(state, ffi::LUA_REGISTRYINDEX, hook_key());
            ffi::lua_sethook(
                state,
                Some(limit_hook),
                ffi::LUA_MASKCOUNT,
                HOOK_EVERY as c_int,
            );
        })
    }
}

fn hook_key() -> *const c_void {
    static KEY: u8 = 0;
    &KEY as *const u8 as *const c_void
}

unsafe extern "C-unwind" fn limit_hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    unsafe {
        ffi::lua_rawgetp(state, ffi::LUA_REGISTRYINDEX, hook_key());
        let ptr = ffi::lua_touserdata(state, -1) as *const Limits;
        ffi::lua_settop(state, -2);
        let Some(limits) = ptr.as_ref() else { return };
        let used = ffi::lua_gc(state, ffi::LUA_GCCOUNT) as u64 * 1024
            + ffi::lua_gc(state, ffi::LUA_GCCOUNTB) as u64;
        if used > limits.memory_soft.load(Ordering::Relaxed) {
            limits.trip(Tripped::Memory);
        }
        if !limits.report_memory(used) {
            limits.trip(Tripped::RunMemory);
        }
        if let Err(t) = limits.charge(HOOK_EVERY as u64) {
            let location = raw_location(state);
            let message = format!("{location}: {}", limits.describe(t));
            limits.note_location(location);
            ffi::lua_pushlstring(state, message.as_ptr() as *const c_char, message.len());
            drop(message);
            ffi::lua_error(state);
        }
        // The slice is over: hand the thread back to whoever resumed it
        // (the runtime's poller, or a guarded `coroutine.resume`, which
        // passes the pause on up; see `lua/swarm/guards.lua`), marked so
        // the resumer can tell it from the script's own yield.
        if ffi::lua_isyieldable(state) != 0 && limits.slice_due() && !in_host_code(state) {
            limits.slice_restart();
            ffi::lua_pushthread(state);
            ffi::lua_setfield(state, ffi::LUA_REGISTRYINDEX, c"swarm.sliced".as_ptr());
            ffi::lua_yield(state, 0);
        }
    }
}

/// Whether the running function is the host's (the embedded library, or
/// mlua's wrapper of async host calls) rather than the script's. Only the
/// script's code is paused at the end of a slice: a thread paused between
/// polling a host call's future and yielding for it (inside the wrapper,
/// or the guards passing a wait up) would lose the call's wake-up, since
/// the poll that resumes it after the pause does not poll the future.
unsafe fn in_host_code(state: *mut ffi::lua_State) -> bool {
    unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(state, 0, &mut ar) == 0 {
            return true;
        }
        ffi::lua_getinfo(state, c"S".as_ptr(), &mut ar);
        if ar.source.is_null() {
            return true;
        }
        let source = std::ffi::CStr::from_ptr(ar.source).to_bytes();
        source.starts_with(b"@swarm/") || source == b"=__mlua_async_poll"
    }
}

/// `file:line` of the innermost Lua frame outside the embedded library,
/// read with the C debug API (the hook cannot call back into mlua).
unsafe fn raw_location(state: *mut ffi::lua_State) -> String {
    unsafe {
        for level in 0..24 {
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            if ffi::lua_getstack(state, level, &mut ar) == 0 {
                break;
            }
            ffi::lua_getinfo(state, c"Sl".as_ptr(), &mut ar);
            let what = std::ffi::CStr::from_ptr(ar.what).to_bytes();
            let source = std::ffi::CStr::from_ptr(ar.source).to_bytes();
            if what == b"C" || source.starts_with(b"@swarm/") {
                continue;
            }
            let short = std::ffi::CStr::from_ptr(ar.short_src.as_ptr()).to_string_lossy();
            return if ar.currentline > 0 {
                format!("{short}:{}", ar.currentline)
            } else {
                short.into_owned()
            };
        }
        "?".to_string()
    }
}
