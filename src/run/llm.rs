//! What an LLM agent needs from its run: the blueprint's other agents as
//! tools (each call a child task through the tool's own stack, so its
//! layers, the gate and the depth limit apply) and the run's journal, so
//! finished turns and tool results replay instead of running again.

use super::blueprint::AgentSpec;
use crate::engine::{TaskSpec, TaskStatus};
use crate::llm::{ToolInfo, Tools, TurnLog};
use crate::lua::AgentsRef;
use crate::spawn::SpawnCtx;
use crate::store::{Halt, Journal};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The run's journal, once attached (durable runs only).
pub type JournalSlot = Arc<Mutex<Option<Arc<Journal>>>>;

/// The blueprint's agents, offered as tools.
pub struct RunTools {
    agents: AgentsRef,
    info: BTreeMap<String, ToolInfo>,
}

impl RunTools {
    pub fn new(agents: AgentsRef, specs: &[AgentSpec]) -> RunTools {
        let info = specs
            .iter()
            .map(|s| {
                let p = &s.profile;
                let description = p["description"].as_str().map(str::to_string);
                let description = description.unwrap_or_else(|| format!("The `{}` agent.", s.name));
                let params = match p.get("params") {
                    Some(v) if v.is_object() => v.clone(),
                    // An agent without `params` takes any object.
                    _ => json!({ "type": "object" }),
                };
                (
                    s.name.clone(),
                    ToolInfo {
                        description,
                        params,
                    },
                )
            })
            .collect();
        RunTools { agents, info }
    }
}

impl Tools for RunTools {
    fn describe(&self, name: &str) -> Option<ToolInfo> {
        self.info.get(name).cloned()
    }

    fn call(
        &self,
        ctx: &SpawnCtx,
        name: &str,
        args: Value,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let (ctx, name) = (ctx.clone(), name.to_string());
        let spawner = self.agents.get(&name);
        Box::pin(async move {
            let spawner = spawner.ok_or_else(|| json!(format!("no agent named `{name}`")))?;
            let mut spec = TaskSpec::new(&name, args);
            spec.parent = Some(ctx.task);
            let id = ctx
                .engine
                .start_task(&ctx.token, spec)
                .map_err(|e| json!(e.to_string()))?;
            let view = ctx
                .engine
                .dispatch_attempt(&ctx.token, id, spawner.as_ref())
                .await
                .map_err(|e| json!(e.to_string()))?;
            let result = view.result.map(|r| (*r).clone()).unwrap_or(Value::Null);
            match view.status {
                TaskStatus::Pass => Ok(result),
                status => Err(json!({ "status": status.as_str(), "result": result })),
            }
        })
    }
}

/// The run's journal, as an LLM agent reads and writes it.
pub struct RunLog(pub JournalSlot);

impl RunLog {
    fn journal(&self) -> Option<Arc<Journal>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl TurnLog for RunLog {
    fn replay(&self, pos: &str) -> Option<Value> {
        self.journal()?.take(pos).filter(|e| e.ok).map(|e| e.value)
    }

    fn record(
        &self,
        pos: &str,
        kind: &str,
        value: Value,
    ) -> BoxFuture<'static, Result<(), String>> {
        let (journal, pos, kind) = (self.journal(), pos.to_string(), kind.to_string());
        Box::pin(async move {
            let Some(j) = journal else { return Ok(()) };
            match j
                .record(&pos, &kind, "llm", String::new(), true, value)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => {
                    let msg = format!("the journal could not record an LLM turn: {e}");
                    j.halt(Halt::Fault, msg.clone());
                    Err(msg)
                }
            }
        })
    }
}
