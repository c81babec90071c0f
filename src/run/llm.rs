//! What an LLM agent needs from its run: the blueprint's other agents as
//! tools (each call a child task through the tool's own stack, so its
//! layers, the gate and the depth limit apply) and the run's journal, so
//! finished turns and tool results replay instead of running again.

use super::blueprint::AgentSpec;
use crate::auth::CapToken;
use crate::engine::SpawnCtx;
use crate::engine::{Engine, TaskId, TaskSpec, TaskStatus};
use crate::llm::{Tally, ToolCatalog, ToolInfo, Tools, TurnLog, Usage};
use crate::lua::AgentsRef;
use crate::store::{Halt, Journal, JournalEntry, input_hash};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The run's journal, once attached (durable runs only).
pub type JournalSlot = Arc<Mutex<Option<Arc<Journal>>>>;

/// The run's tool families by agent (MCP agents), filled as their
/// agents are built.
pub type Catalogs = Arc<Mutex<BTreeMap<String, Arc<dyn ToolCatalog>>>>;

/// The blueprint's agents, offered as tools.
pub struct RunTools {
    agents: AgentsRef,
    info: BTreeMap<String, ToolInfo>,
    catalogs: Catalogs,
}

impl RunTools {
    pub fn new(agents: AgentsRef, specs: &[AgentSpec], catalogs: Catalogs) -> RunTools {
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
        RunTools {
            agents,
            info,
            catalogs,
        }
    }

    fn catalog(&self, agent: &str) -> Option<Arc<dyn ToolCatalog>> {
        let c = self.catalogs.lock().unwrap_or_else(|e| e.into_inner());
        c.get(agent).cloned()
    }
}

/// `name` as a plain agent, `agent.*` (every tool of a family), or
/// `agent.tool` (one of them).
async fn select_one(
    info: Option<ToolInfo>,
    family: Option<(Arc<dyn ToolCatalog>, String)>,
    name: String,
) -> Result<Vec<(String, ToolInfo)>, String> {
    if let Some(info) = info {
        return Ok(vec![(name, info)]);
    }
    let Some((catalog, tool)) = family else {
        return Err(format!("tool `{name}` is not an agent of this blueprint"));
    };
    let all = catalog.tools().await.map_err(|e| match &e["error"] {
        Value::String(s) => s.clone(),
        _ => e.to_string(),
    })?;
    if tool == "*" {
        return Ok(all);
    }
    match all.iter().find(|(n, _)| *n == name) {
        Some(found) => Ok(vec![found.clone()]),
        None => {
            let known: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            Err(format!(
                "tool `{name}` is not offered (tools: {})",
                known.join(", ")
            ))
        }
    }
}

impl Tools for RunTools {
    fn describe(&self, name: &str) -> Option<ToolInfo> {
        self.info.get(name).cloned()
    }

    fn select(
        &self,
        names: &[String],
    ) -> BoxFuture<'static, Result<Vec<(String, ToolInfo)>, String>> {
        let picks: Vec<_> = names
            .iter()
            .map(|n| {
                let family = n
                    .split_once('.')
                    .and_then(|(agent, tool)| Some((self.catalog(agent)?, tool.to_string())));
                select_one(self.describe(n), family, n.clone())
            })
            .collect();
        Box::pin(async move {
            let lists = futures_util::future::try_join_all(picks).await?;
            Ok(lists.into_iter().flatten().collect())
        })
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

/// A mob member's `send_message` calls, delivered into the run's store.
pub struct RunMail {
    pub journal: JournalSlot,
}

impl crate::llm::mail::PeerMail for RunMail {
    fn send(
        &self,
        member: &Value,
        to: &str,
        text: &str,
        origin: Option<&str>,
    ) -> BoxFuture<'static, Result<Value, Value>> {
        let journal = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let handle = serde_json::from_value::<crate::mob::Handle>(member.clone());
        let (to, text) = (to.to_string(), text.to_string());
        let origin = origin.map_or_else(
            || format!("unjournaled-{:016x}", rand::random::<u64>()),
            str::to_string,
        );
        Box::pin(async move {
            let j = journal.ok_or_else(|| json!("send_message needs a journaled run"))?;
            let h = handle.map_err(|e| json!(format!("not a member's turn: {e}")))?;
            let origin = format!("{}/{origin}", j.run());
            let store: &dyn crate::store::MobStore = &**j.store();
            crate::mob::Mob::new(store, &h.mob)
                .tell(&h, &to, &text, &origin)
                .await
                .map(|r| json!(r))
                .map_err(|e| json!(format!("{e} [{}]", e.code())))
        })
    }
}

/// Stops the run once its root task exists (a budget tripped, the
/// journal halted): cancels the root, so every step under it stops.
#[derive(Clone, Default)]
pub struct RunStop(Arc<Mutex<Option<(Engine, CapToken, TaskId)>>>);

impl RunStop {
    pub fn arm(&self, engine: &Engine, token: &CapToken, root: TaskId) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((engine.clone(), token.clone(), root));
    }

    pub fn fire(&self) {
        if let Some((engine, token, root)) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = engine.cancel_task(token, *root);
        }
    }
}

/// The run's journal, as an LLM agent reads and writes it.
pub struct RunLog {
    pub journal: JournalSlot,
    pub stop: RunStop,
}

impl RunLog {
    fn journal(&self) -> Option<Arc<Journal>> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl TurnLog for RunLog {
    fn replay(&self, pos: &str, request: &Value) -> Result<Option<Value>, String> {
        let Some(j) = self.journal() else {
            return Ok(None);
        };
        let Some(e) = j.take(pos).filter(|e| e.ok) else {
            return Ok(None);
        };
        let hash = input_hash(request);
        if e.input_hash != hash {
            let msg = format!(
                "an LLM step is not deterministic: the journal has {} (request hash {}) at \
                 position {pos}, the step sent request hash {hash}; fix or revert the \
                 blueprint, then `swarm resume {}`",
                e.kind,
                e.input_hash,
                j.run()
            );
            j.halt(Halt::Diverged, msg.clone());
            self.stop.fire();
            return Err(msg);
        }
        j.spent(pos, e.tokens);
        Ok(Some(e.value))
    }

    fn record(
        &self,
        pos: &str,
        kind: &str,
        request: &Value,
        value: Value,
        tokens: u64,
    ) -> BoxFuture<'static, Result<(), String>> {
        let Some(j) = self.journal() else {
            return Box::pin(async { Ok(()) });
        };
        let mut entry = j.entry(pos, kind, "llm", input_hash(request), true, value);
        entry.tokens = tokens;
        j.spent(pos, tokens);
        let stop = self.stop.clone();
        Box::pin(async move {
            j.write(entry).await.map_err(|e| {
                let msg = format!("the journal could not record an LLM turn: {e}");
                j.halt(Halt::Fault, msg.clone());
                stop.fire();
                msg
            })
        })
    }

    fn reuse(
        &self,
        pos: &str,
        kind: &str,
        request: &Value,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        let taken = self
            .journal()
            .and_then(|j| Some((j.reuse(pos, kind, "llm", &input_hash(request))?, j)));
        let Some((entry, j)) = taken else {
            return Box::pin(async { Ok(None) });
        };
        let stop = self.stop.clone();
        Box::pin(async move {
            let value = entry.value.clone();
            j.write(entry).await.map_err(|e| {
                let msg = format!("the journal could not record a reused LLM turn: {e}");
                j.halt(Halt::Fault, msg.clone());
                stop.fire();
                msg
            })?;
            Ok(Some(value))
        })
    }
}

/// A durable run's token usage, read back from its journal: in total, by
/// model and by step (the step's position and agent), live turns only. A
/// fork's turns taken from its source are counted apart: what reuse past
/// the fork point saved, and what the copied prefix had spent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JournalUsage {
    #[serde(flatten)]
    pub tally: Tally,
    pub by_step: BTreeMap<String, StepUsage>,
    #[serde(skip_serializing_if = "no_turns")]
    pub reused: Tally,
    #[serde(skip_serializing_if = "no_turns")]
    pub copied: Tally,
}

fn no_turns(t: &Tally) -> bool {
    t.total.turns == 0
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepUsage {
    pub agent: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// Sums the `llm_turn` entries of `journal` (recorded at `STEP~tN`).
pub fn journal_usage(journal: &[JournalEntry]) -> JournalUsage {
    let agents: BTreeMap<&str, &str> = journal
        .iter()
        .map(|e| (e.pos.as_str(), e.key.as_str()))
        .collect();
    let mut out = JournalUsage::default();
    for e in journal.iter().filter(|e| e.kind == "llm_turn") {
        let spent = Usage::of_turn(e.value.get("usage"));
        let model = e.value["model"].as_str().unwrap_or("?");
        match e.from.as_ref().map(|o| o.how) {
            Some(crate::store::Taken::Reused) => {
                out.reused.add(model, spent);
                continue;
            }
            Some(_) => {
                out.copied.add(model, spent);
                continue;
            }
            None => out.tally.add(model, spent),
        }
        let step = e.pos.rsplit_once("~t").map_or(e.pos.as_str(), |(s, _)| s);
        let entry = out.by_step.entry(step.to_string()).or_default();
        entry.agent = agents.get(step).unwrap_or(&"?").to_string();
        entry.usage.add(spent);
    }
    out
}
