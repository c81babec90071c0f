//! What a VM knows about itself: its host data ([`VmCtx`], the VM's app
//! data) and the names of the registry slots the host keeps in it. A leaf
//! of the Lua layer: every other file may import it; it imports only the
//! host handle and the limits.

use super::Host;
use super::limits::Limits;
use crate::auth::CapToken;
use mlua::Function;
use std::sync::{Arc, Mutex};

/// Registry slot of the shared metatable of error tables (`swarm/error.lua`).
pub(crate) const ERROR_MT: &str = "swarm.error_mt";
/// Registry slot of the metatable that marks a non-string error value
/// wrapped with where it was raised (`host_traceback` in `stdlib.rs`).
pub(crate) const RAISED_MT: &str = "swarm.raised_mt";
/// Registry slot of `freeze(name, t, nested)` (`lua/swarm/frozen.lua`).
pub(crate) const FREEZE: &str = "swarm.freeze";
/// Registry slot of the sentinel that marks the host's read-only tables:
/// the value of their metatable's `__frozen` field. A table no script can
/// reach (those metatables are locked), so a script that sets `__frozen`
/// on its own metatable makes nothing read-only in the host's eyes
/// (`frozen.rs`, `reuse.rs`). The C side names it as a literal.
pub(crate) const FROZEN_SENTINEL: &str = "swarm.frozen";
/// Registry slot of the stock `setmetatable`, for host chunks that set
/// metatables they built themselves (no `__gc`), on the hot path.
pub(crate) const RAW_SETMETATABLE: &str = "swarm.raw_setmetatable";
/// Registry slot of the run in progress: `{ env = <its environment>,
/// loaded = <its require cache> }`, both fresh per run, so modules' state
/// never crosses runs in a pooled VM. Lua agents' per-task entry sets both
/// fields itself (no host call per task).
pub(crate) const CURRENT: &str = "swarm.current";
/// Registry slot of the host helpers the flow and blueprint libraries
/// take (`modules/host.rs`, `modules/parts.rs`).
pub(crate) const HOST: &str = "swarm.host";
/// Registry slot of the table behind the frozen `swarm`, which the parts
/// built on first read join (`modules/parts.rs`).
pub(crate) const LIBRARY: &str = "swarm.library";
/// Registry slot of the makers of the host modules (`swarm.engine`, ...),
/// by name, each called on the first read of its name (`modules/parts.rs`).
pub(crate) const MAKERS: &str = "swarm.makers";

/// Per-VM host data, stored with `set_app_data`.
pub(crate) struct VmCtx {
    pub host: Host,
    pub token: Mutex<Option<CapToken>>,
    /// The default parent of tasks this VM starts (a run's root task).
    pub parent: Mutex<Option<crate::engine::TaskId>>,
    /// The running entry function (flow, agent body), for error locations.
    pub entry: Mutex<Option<Function>>,
    /// Files `require`d from the blueprint's directory (hot reload watches them).
    pub required: Mutex<Vec<std::path::PathBuf>>,
    /// The run's journal, for flow VMs of durable runs.
    pub journal: Mutex<Option<Arc<crate::store::Journal>>>,
    /// Entries and bytes this execution of the run has journaled (see
    /// `modules/journal.rs`), reset when a journal is attached.
    pub journal_used: Mutex<(u64, u64)>,
    /// The blueprint's run-wide budgets (see `budget.rs`), for the run
    /// meter this VM makes as a flow VM and its journal.
    pub run_limits: Mutex<super::budget::RunLimits>,
    pub limits: Arc<Limits>,
    pub memory_limit: usize,
    /// The VM's (frozen) `swarm` table, once built: what `require "swarm"`
    /// returns.
    pub swarm: std::sync::OnceLock<mlua::Table>,
    /// `protect(f, ...)`: calls `f` under a pcall at the base of its thread
    /// and raises its error again (see `lua/swarm/guards.lua`). Kept here,
    /// not under a registry name: finding a named slot makes a Lua string,
    /// a thousand instructions on every call into Lua.
    pub protect: std::sync::OnceLock<Function>,
    /// The stock `math.randomseed`: each run and each task starts from a
    /// fresh seed of the host's CSPRNG, so no task can set up or predict
    /// the next one's random numbers.
    pub randomseed: std::sync::OnceLock<Function>,
}

impl VmCtx {
    pub fn token(&self) -> Option<CapToken> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn parent(&self) -> Option<crate::engine::TaskId> {
        *self.parent.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn journal(&self) -> Option<Arc<crate::store::Journal>> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The attached journal's number (see `Journal::id`), without cloning it.
    pub fn journal_id(&self) -> Option<u64> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|j| j.id())
    }

    /// Reseeds the VM's PRNG from the host's CSPRNG.
    pub fn reseed(&self) -> mlua::Result<()> {
        match self.randomseed.get() {
            Some(f) => f.call((rand::random::<i64>(), rand::random::<i64>())),
            None => Ok(()),
        }
    }

    /// The running entry function (flow, agent body), if any.
    pub fn entry(&self) -> Option<Function> {
        self.entry.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
