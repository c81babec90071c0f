//! The Lua layer: sandboxed VMs, the `swarm` modules, and Lua agents.
//!
//! Every VM is built by [`Vm::new`] (in `sandbox.rs`) and holds exactly one
//! capability token; Lua sees the engine only through the `swarm` modules.

// Bottom-up: leaves first; each file imports only files listed above it.
mod agent;
mod budget;
mod ctx;
mod embedded;
pub mod error;
mod frozen;
mod json;
mod layer;
mod limits;
mod location;
mod meter;
mod modules;
pub mod pattern;
mod reuse;
mod sandbox;
mod stdlib;

pub use error::HostError;
pub use location::caller_location;

pub use agent::LuaAgent;
pub use budget::{
    JOURNAL_BYTES, JOURNAL_ENTRIES, RUN_INSTRUCTIONS, RUN_MEMORY, RunLimits, RunMeter, RunMeters,
};
pub use layer::lua_layer;
pub use limits::{LimitError, Tripped};
pub use modules::{input_to_lua, returned_to_json, to_json, to_lua};
pub use sandbox::{Vm, VmOptions};

use crate::engine::{Engine, Spawner};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

type AgentMap = RwLock<HashMap<String, Arc<dyn Spawner>>>;

/// Agents by name, as `swarm.engine.dispatch` finds them. The owner (a
/// blueprint, a test) keeps this alive; VMs hold only a weak reference, so
/// an agent that holds VMs does not keep itself alive.
#[derive(Clone, Default)]
pub struct Agents(Arc<AgentMap>);

impl Agents {
    pub fn insert(&self, name: &str, spawner: Arc<dyn Spawner>) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), spawner);
    }

    /// The agent `name`; for `fs.read_file`, when no agent has that name,
    /// the family `fs.*` (an MCP server's tools, one stack for all).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Spawner>> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = map.get(name) {
            return Some(found.clone());
        }
        let (family, _) = name.split_once('.')?;
        map.get(&format!("{family}.*")).cloned()
    }

    pub fn downgrade(&self) -> AgentsRef {
        AgentsRef(Arc::downgrade(&self.0))
    }
}

/// A weak handle on [`Agents`].
#[derive(Clone, Default)]
pub struct AgentsRef(Weak<AgentMap>);

impl AgentsRef {
    pub fn get(&self, name: &str) -> Option<Arc<dyn Spawner>> {
        Agents(self.0.upgrade()?).get(name)
    }

    /// Agent names, sorted.
    pub fn names(&self) -> Vec<String> {
        let Some(map) = self.0.upgrade() else {
            return Vec::new();
        };
        let mut names: Vec<String> = map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// Where `print` goes.
pub type PrintSink = Arc<dyn Fn(&str) + Send + Sync>;

/// How many Lua-agent VMs may run tasks at once, per spawn depth.
///
/// A task waits in a FIFO queue for a slot at its own depth. Depths have
/// separate slots because a Lua agent may dispatch children and wait for
/// them while it holds its slot: with one shared pool, N agents waiting on
/// N children would deadlock. So at most `per_depth × (max_depth + 1)`
/// agent VMs run at once, each within its own memory limit.
#[derive(Clone)]
pub struct VmSlots(Arc<[tokio::sync::Semaphore]>);

impl VmSlots {
    /// Default slots per depth (`SWARM_MAX_LUA_VMS` overrides).
    pub const DEFAULT: usize = 256;

    pub fn new(per_depth: usize) -> VmSlots {
        let depths = 8;
        VmSlots(
            (0..depths)
                .map(|_| tokio::sync::Semaphore::new(per_depth.max(1)))
                .collect(),
        )
    }

    /// The process-wide slots every [`Host`] shares unless given its own.
    pub fn shared() -> VmSlots {
        static SHARED: std::sync::OnceLock<VmSlots> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let n = std::env::var("SWARM_MAX_LUA_VMS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(Self::DEFAULT);
                VmSlots::new(n)
            })
            .clone()
    }

    /// Waits for a slot at `depth`.
    pub async fn acquire(&self, depth: u32) -> tokio::sync::SemaphorePermit<'_> {
        let i = (depth as usize).min(self.0.len() - 1);
        self.0[i].acquire().await.expect("never closed")
    }

    /// Slots free at `depth`.
    pub fn available(&self, depth: u32) -> usize {
        self.0[(depth as usize).min(self.0.len() - 1)].available_permits()
    }
}

/// What a VM is connected to.
#[derive(Clone)]
pub struct Host {
    pub engine: Engine,
    pub agents: AgentsRef,
    pub print: PrintSink,
    /// The blueprint's directory: `require "x"` may load `x.lua` from it.
    pub dir: Option<std::path::PathBuf>,
    /// Slots for Lua-agent VMs running tasks.
    pub vm_slots: VmSlots,
    /// The layers blueprints may name (validation asks it).
    pub layers: Arc<crate::spawn::LayerRegistry>,
    /// The agent kinds blueprints may declare: `swarm.agent.<kind>`
    /// constructors and validation come from it. A run sets it from its
    /// kind registry (`run::AgentKinds`); a bare host has none.
    pub kinds: Arc<[crate::spawn::kinds::AgentKind]>,
    /// The run-wide budgets of the runs this host serves (`budget.rs`).
    pub runs: RunMeters,
}

impl Host {
    /// A host whose `print` logs at info level under target `lua`.
    pub fn new(engine: Engine, agents: &Agents) -> Host {
        Host {
            engine,
            agents: agents.downgrade(),
            print: Arc::new(
                |line| tracing::info!(target: "lua", "{}", crate::text::for_terminal(line)),
            ),
            dir: None,
            vm_slots: VmSlots::shared(),
            layers: crate::spawn::LayerRegistry::shared_builtin(),
            kinds: Arc::from([]),
            runs: RunMeters::default(),
        }
    }
}

/// Typed errors from running Lua. Messages carry `file:line`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LuaError {
    /// `incomplete`: the chunk ended early (an unclosed block or string),
    /// so more input may complete it (the REPL's continuation lines).
    #[error("syntax error: {message}")]
    Syntax { message: String, incomplete: bool },
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Limit(LimitError),
    /// An error table raised by Lua code and not caught.
    #[error(transparent)]
    Raised(Box<error::Raised>),
    #[error("could not build the Lua VM: {0}")]
    Setup(String),
}

impl LuaError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LuaError::Syntax { .. } => "lua_syntax",
            LuaError::Runtime(_) => "lua_error",
            LuaError::Limit(l) => l.kind.code(),
            LuaError::Raised(_) => "lua_error",
            LuaError::Setup(_) => "vm_setup",
        }
    }
}

impl LuaError {
    /// What a task that ended with this error keeps as its result:
    /// `{ code, error }`, and for a raised error table its own code, where
    /// it was raised and its fields (a failed step's `agent`, `task` and
    /// `result`, the cause), so the chain of causes stays data.
    pub fn to_result(&self) -> serde_json::Value {
        match self {
            LuaError::Raised(r) => {
                let mut v = match &r.value {
                    serde_json::Value::Object(m) => m.clone(),
                    _ => serde_json::Map::new(),
                };
                v.insert("code".into(), r.code.clone().into());
                v.insert("error".into(), r.text.clone().into());
                serde_json::Value::Object(v)
            }
            other => serde_json::json!({ "error": other.to_string(), "code": other.code() }),
        }
    }
}
