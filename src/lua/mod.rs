//! The Lua layer: sandboxed VMs, the `swarm` modules, and Lua agents.
//!
//! Every VM is built by [`Vm::new`] (in `sandbox.rs`) and holds exactly one
//! capability token; Lua sees the engine only through the `swarm` modules.

mod agent;
mod embedded;
pub mod error;
mod layer;
pub use error::LuaUsage;
mod limits;
mod modules;
pub mod pattern;
mod sandbox;
mod stdlib;

pub use agent::LuaAgent;
pub use layer::lua_layer;
pub use limits::{LimitError, Tripped};
pub use modules::{VALIDATE, input_to_lua, to_json, to_lua};
pub use sandbox::{Vm, VmOptions};

use crate::engine::Engine;
use crate::spawn::Spawner;
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

    pub fn get(&self, name: &str) -> Option<Arc<dyn Spawner>> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
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

/// What a VM is connected to.
#[derive(Clone)]
pub struct Host {
    pub engine: Engine,
    pub agents: AgentsRef,
    pub print: PrintSink,
    /// The blueprint's directory: `require "x"` may load `x.lua` from it.
    pub dir: Option<std::path::PathBuf>,
}

impl Host {
    /// A host whose `print` logs at info level under target `lua`.
    pub fn new(engine: Engine, agents: &Agents) -> Host {
        Host {
            engine,
            agents: agents.downgrade(),
            print: Arc::new(|line| tracing::info!(target: "lua", "{line}")),
            dir: None,
        }
    }
}

/// Typed errors from running Lua. Messages carry `file:line`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LuaError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Limit(LimitError),
    #[error("could not build the Lua VM: {0}")]
    Setup(String),
}

impl LuaError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LuaError::Syntax(_) => "lua_syntax",
            LuaError::Runtime(_) => "lua_error",
            LuaError::Limit(l) => l.kind.code(),
            LuaError::Setup(_) => "vm_setup",
        }
    }
}
