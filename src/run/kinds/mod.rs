//! The agent-kind registry: one entry per `swarm.agent.<kind>`, holding
//! everything about the kind — its fields (which blueprint validation
//! checks), how a declaration is read into a [`Backend`], and how that
//! backend becomes the bottom of the agent's stack. A new kind is one
//! [`Kind`] registered here; the built-in ones are in `builtin.rs`.
//!
//! The registry travels with the run (`RunOptions::kinds`); the Lua side
//! sees only the fields, through `Host::kinds`.

mod builtin;
mod mcp;

use super::agents::Build;
use super::blueprint::{BlueprintError, Problem};
use crate::engine::{SpawnError, Spawner};
use crate::lua::Vm;
use crate::spawn::kinds::AgentKind;
use mlua::{FromLua, LuaSerdeExt, Table, Value};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A declared agent's backend: what its declaration said, ready to build.
pub trait Backend: fmt::Debug + Send + Sync {
    /// The spawner at the bottom of the agent's stack.
    fn build(&self, b: &Build<'_>, agent: &str) -> Result<Arc<dyn Spawner>, SpawnError>;

    /// What `swarm check` warns about for this agent on this machine (a
    /// program not on PATH, an API key not set). Nothing by default.
    fn preflight(&self, _agent: &str, _dir: &Path) -> Vec<String> {
        Vec::new()
    }

    /// True when the agent is a family of tool agents (`name.<tool>`, an
    /// MCP server's): its stack is registered under `name.*`.
    fn family(&self) -> bool {
        false
    }

    /// A family's tool names, for `swarm check` (which may start a server
    /// for it, with a short deadline). `None` for an agent that is not a
    /// family; `Some(Err)` when they cannot be listed here.
    fn tool_names(&self, _agent: &str) -> Option<Result<Vec<String>, String>> {
        None
    }
}

/// Reads a validated declaration into its backend.
pub type ReadFn = fn(&Decl<'_>) -> Result<Arc<dyn Backend>, BlueprintError>;

/// One agent kind: its fields and its factory.
#[derive(Clone, Copy)]
pub struct Kind {
    pub info: AgentKind,
    pub read: ReadFn,
}

/// The kinds a blueprint may declare.
#[derive(Clone)]
pub struct AgentKinds {
    kinds: Vec<Kind>,
    /// The fields of every kind, as the Lua side sees them.
    infos: Arc<[AgentKind]>,
}

impl AgentKinds {
    /// `lua`, `process`, `rust`, `llm` and `remote`.
    pub fn builtin() -> AgentKinds {
        let mut r = AgentKinds {
            kinds: Vec::new(),
            infos: Arc::from([]),
        };
        for kind in builtin::KINDS {
            r.register(*kind);
        }
        r
    }

    /// The built-in kinds, built once per process.
    pub fn shared_builtin() -> Arc<AgentKinds> {
        static SHARED: OnceLock<Arc<AgentKinds>> = OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(AgentKinds::builtin()))
            .clone()
    }

    /// Adds `kind`, or replaces the kind of the same name.
    pub fn register(&mut self, kind: Kind) {
        match self
            .kinds
            .iter_mut()
            .find(|k| k.info.name == kind.info.name)
        {
            Some(k) => *k = kind,
            None => self.kinds.push(kind),
        }
        self.infos = self.kinds.iter().map(|k| k.info).collect();
    }

    /// The kind of a declaration's marker (`agent.lua`) or name (`lua`).
    pub fn get(&self, name: &str) -> Option<&Kind> {
        let name = name.strip_prefix("agent.").unwrap_or(name);
        self.kinds.iter().find(|k| k.info.name == name)
    }

    /// Every kind's fields, for the Lua host.
    pub fn infos(&self) -> Arc<[AgentKind]> {
        self.infos.clone()
    }
}

/// One agent's declaration, as a kind's [`ReadFn`] sees it. Validation has
/// already checked each field's type and the kind's required field.
pub struct Decl<'a> {
    /// The agent's name in the blueprint.
    pub agent: &'a str,
    /// Where the constructor was called (`file:line`).
    pub at: &'a str,
    /// The blueprint's directory.
    pub dir: &'a Path,
    /// The profile fields every kind shares (`description`, `system`, ...).
    pub profile: &'a serde_json::Value,
    pub(super) spec: &'a Table,
    pub(super) vm: &'a Vm,
}

impl Decl<'_> {
    /// A field of the declaration.
    pub fn get<T: FromLua>(&self, field: &str) -> Result<T, BlueprintError> {
        self.spec.get(field).map_err(|e| self.lua_err(e))
    }

    /// The declaration as data, without `layers`. A value that is not
    /// data (a function) is an error.
    pub fn json(&self) -> Result<serde_json::Value, BlueprintError> {
        let mut json: serde_json::Value = self
            .vm
            .lua()
            .from_value(Value::Table(self.spec.clone()))
            .map_err(|e| self.problem("", e.to_string()))?;
        if let Some(o) = json.as_object_mut() {
            o.remove("layers");
        }
        Ok(json)
    }

    /// A `duration` field: milliseconds, or text like `"90s"`.
    pub fn duration(&self, field: &str) -> Result<Option<Duration>, BlueprintError> {
        let v: Value = self.get(field)?;
        Ok(super::blueprint::duration_ms(&v).map(|ms| Duration::from_secs_f64(ms / 1000.0)))
    }

    /// A problem with one of this agent's fields (`""`: with the
    /// declaration as a whole).
    pub fn problem(&self, field: &str, message: impl Into<String>) -> BlueprintError {
        let field = match field {
            "" => format!("agents.{}", self.agent),
            f => format!("agents.{}.{f}", self.agent),
        };
        BlueprintError::Invalid(vec![Problem {
            location: self.at.to_string(),
            field,
            message: message.into(),
        }])
    }

    fn lua_err(&self, e: mlua::Error) -> BlueprintError {
        BlueprintError::Lua(self.vm.classify(e))
    }
}

/// A preflight warning when `program` (an agent's command) is neither on
/// PATH nor a file relative to `dir` (the agent's `cwd`, else the
/// blueprint's directory); empty when it is found or there is none.
pub(super) fn program_missing(agent: &str, program: Option<&String>, dir: &Path) -> Vec<String> {
    let Some(program) = program else {
        return Vec::new();
    };
    let found = if program.contains('/') {
        dir.join(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    };
    if found {
        return Vec::new();
    }
    vec![format!(
        "agent `{agent}`: program `{program}` is not on PATH nor relative to {}",
        dir.display()
    )]
}
