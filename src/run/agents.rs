//! Turning a blueprint's agents into spawner stacks.
//!
//! [`build_agents`] is the one place a stack is assembled from a blueprint:
//! the blueprint's `hints.layers` (outermost first), then the agent's own
//! `layers`, then the backend its kind built (`run::kinds`). A name in a
//! layer list is a built-in key or one of the blueprint's Lua `layers`.

use super::blueprint::{Blueprint, LayerUse};
use crate::engine::SpawnError;
use crate::lua::{Agents, Host, Vm, VmOptions, lua_layer};
use crate::spawn::{Layer, LayerEnv, LayerRegistry, RustAgent, build_stack};
use mlua::{Function, Table};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Rust functions a blueprint can name with `swarm.agent.rust { name = ... }`.
#[derive(Clone, Default)]
pub struct RustAgents(BTreeMap<String, RustAgent>);

impl RustAgents {
    /// The agents every `swarm` binary has: `echo` (returns its input),
    /// `upper` (upper-cases a string), `sleep` (waits `input.ms`, returns
    /// `input.value`), `fail` (blocks with its input).
    pub fn builtin() -> RustAgents {
        let mut r = RustAgents::default();
        r.insert(
            "echo",
            RustAgent::new(|ctx| async move { Ok((*ctx.input).clone()) }),
        );
        r.insert(
            "upper",
            RustAgent::new(|ctx| async move {
                match ctx.input.as_str() {
                    Some(s) => Ok(json!(s.to_uppercase())),
                    None => Err(json!({"error": "upper expects a string"})),
                }
            }),
        );
        r.insert(
            "sleep",
            RustAgent::new(|ctx| async move {
                let ms = ctx.input.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = ctx.cancel.cancelled() => return Err(json!("cancelled")),
                }
                Ok(ctx.input.get("value").cloned().unwrap_or(Value::Null))
            }),
        );
        r.insert(
            "fail",
            RustAgent::new(|ctx| async move { Err((*ctx.input).clone()) }),
        );
        r
    }

    pub fn insert(&mut self, name: &str, agent: RustAgent) {
        self.0.insert(name.to_string(), agent);
    }

    pub fn get(&self, name: &str) -> Option<&RustAgent> {
        self.0.get(name)
    }
}

/// Everything needed to build a run's agents (a kind's `Backend::build`
/// takes what it needs from here).
pub struct Build<'a> {
    pub blueprint: &'a Blueprint,
    /// The blueprint's table in the flow VM (for Lua layers).
    pub table: &'a Table,
    pub flow_vm: &'a Vm,
    pub host: Host,
    pub env: LayerEnv,
    pub rust: &'a RustAgents,
    pub vm: VmOptions,
    /// The run's journal, stop hook and token meter, for LLM agents.
    pub journal: super::llm::JournalSlot,
    pub stop: super::llm::RunStop,
    pub meter: Arc<crate::llm::Meter>,
    /// The run's tool families (MCP agents), for LLM agents' `tools`.
    pub catalogs: super::llm::Catalogs,
}

/// Builds every agent's stack into `agents`.
pub fn build_agents(b: &Build<'_>, agents: &Agents) -> Result<(), SpawnError> {
    let registry = b.host.layers.clone();
    for spec in &b.blueprint.agents {
        let backend = spec.backend.build(b, &spec.name)?;
        let mut layers = Vec::new();
        for use_ in b.blueprint.layers.iter().chain(&spec.layers) {
            layers.push(layer(b, &registry, use_)?);
        }
        let name = match spec.backend.family() {
            true => format!("{}.*", spec.name),
            false => spec.name.clone(),
        };
        agents.insert(&name, build_stack(backend, &layers));
    }
    Ok(())
}

fn layer(
    b: &Build<'_>,
    registry: &LayerRegistry,
    use_: &LayerUse,
) -> Result<Arc<dyn Layer>, SpawnError> {
    let lua_err = |e: mlua::Error| SpawnError::BadSpec(e.to_string());
    let spec: Table = b.table.get("spec").map_err(lua_err)?;
    let user: Option<Table> = spec
        .get::<Option<Table>>("layers")
        .map_err(lua_err)?
        .map(|l| l.get::<Option<Table>>(use_.key.as_str()))
        .transpose()
        .map_err(lua_err)?
        .flatten();
    match user {
        Some(l) => {
            let fns: Table = l.get("spec").map_err(lua_err)?;
            let before: Option<Function> = fns.get("before").map_err(lua_err)?;
            let after: Option<Function> = fns.get("after").map_err(lua_err)?;
            Ok(lua_layer(b.flow_vm.lua(), &use_.key, before, after))
        }
        None => registry.build(&use_.key, &use_.opts, &b.env),
    }
}
