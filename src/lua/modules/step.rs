//! `swarm.step` as one host call: journal lookup → start the task →
//! dispatch it through its agent's stack → record the outcome → return.
//!
//! The input is converted from Lua once (and hashed once, for the journal);
//! the result is converted to Lua once. The flow library keeps only what
//! must be Lua: the per-coroutine journal position it passes in.

use super::journal::{hold, record, replay};
use super::{no_token, to_json, to_lua};
use crate::engine::{TaskId, TaskSpec, TaskStatus, TaskView};
use crate::lua::ctx::VmCtx;
use crate::lua::error::{HostError, error_metatable};
use crate::lua::location::caller_location;
use crate::store::input_hash;
use mlua::{Lua, Table, Value};
use serde_json::json;
use std::sync::Arc;

/// What a step needs across its awaits, gathered synchronously first: an
/// async function keeps every local of its body in its state, and a `map`
/// holds 100,000 steps' states at once. (Kept under glibc's 1 KiB small-
/// allocation size, a step's state also comes from the thread cache.)
struct Call {
    agent: String,
    journal: Option<(Arc<crate::store::Journal>, String, String)>,
    engine: crate::engine::Engine,
    tok: crate::auth::CapToken,
    id: TaskId,
    spawner: Arc<dyn crate::engine::Spawner>,
}

/// A step's outcome for Lua: `(true, result)` when it passed, `(false,
/// step error)` when it did not. Misuse (a non-string agent, an unknown
/// agent, input that is not JSON) is an `Err`, which the caller raises.
pub async fn step(
    lua: &Lua,
    agent: Value,
    input: Value,
    pos: Value,
) -> Result<(bool, Value), HostError> {
    let call = match begin(lua, agent, input, pos)? {
        Ok(call) => call,
        Err(Early::Replayed(ok, value)) => return Ok((ok, value)),
        // Boxed: only a fork's reused steps pay for its state.
        Err(Early::Reused(j, e)) => return Box::pin(reused(lua, j, *e)).await,
    };
    if let Some((j, ..)) = &call.journal {
        // A step is refused before it starts once the run's journal is
        // spent: its result, once it ran, is always recorded.
        super::journal::within_budget(lua, "a step", 0)?;
        hold(lua, j).await?;
    }
    let view = call
        .engine
        .dispatch_attempt(&call.tok, call.id, call.spawner.as_ref())
        .await?;
    let failure = Failure::of(&view);
    if let Some((j, pos, hash)) = call.journal {
        let at = (pos.as_str(), "step", call.agent.as_str());
        let recorded = match &failure {
            None => Some((true, view.result.as_deref().cloned().unwrap_or_default())),
            // A cancelled step is not journaled: on resume it runs again.
            Some(f) if f.code != "cancelled" => Some((false, f.recorded(view.result.as_deref()))),
            Some(_) => None,
        };
        if let Some((ok, value)) = recorded {
            // Boxed: only journaled steps pay for the record's state,
            // not every step in flight (a `map` holds 100,000 of them).
            Box::pin(record(lua, &j, at, hash, ok, value)).await?;
        }
    }
    let result = match &view.result {
        Some(r) => to_lua(lua, &**r)?,
        None => Value::Nil,
    };
    match failure {
        None => Ok((true, result)),
        // The calling coroutine's frames are on its stack again while it
        // is polled, so the caller's line is read only when it is needed.
        Some(f) => Ok((
            false,
            f.to_lua(lua, &call.agent, result, &caller_location(lua, 0))?,
        )),
    }
}

/// `swarm.step` at journal position `pos` when the journal recorded it:
/// replayed in a plain host call, without the async machinery a step that
/// runs needs (a replay check, and a resumed run catching up, are mostly
/// such calls). `nil` when nothing is recorded there (the step then goes
/// through [`step`]); else what `wait("step", ...)` answers: `true,
/// result`, `"failed", step error`, or `false, error` (a divergence).
pub fn replayed_fn(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, (agent, input, pos): (Value, Value, Value)| {
        match replayed(lua, agent, input, pos) {
            Ok(None) => Ok((Value::Nil, Value::Nil)),
            Ok(Some((true, v))) => Ok((Value::Boolean(true), v)),
            Ok(Some((false, v))) => Ok((Value::String(lua.create_string("failed")?), v)),
            Err(e) => crate::lua::error::reply(lua, Err(e)).map(|(ok, v)| (Value::Boolean(ok), v)),
        }
    })
}

/// The recorded outcome of the step at `pos`, if the journal has one
/// there; a different call recorded there halts the run (diverged).
fn replayed(
    lua: &Lua,
    agent: Value,
    input: Value,
    pos: Value,
) -> Result<Option<(bool, Value)>, HostError> {
    let (Value::String(agent), Value::String(pos)) = (&agent, &pos) else {
        return Ok(None);
    };
    let journal = lua.app_data_ref::<VmCtx>().expect("VmCtx").journal();
    let (agent, pos) = (agent.to_str()?, pos.to_str()?);
    let Some(j) = journal.filter(|j| j.has(&pos)) else {
        return Ok(None);
    };
    let input = to_json(lua, input, "the step input")?;
    let hash = input_hash(&input);
    let Some(e) = replay(lua, &j, &pos, "step", &agent, &hash)? else {
        return Ok(None);
    };
    if e.ok {
        return Ok(Some((true, to_lua(lua, &e.value)?)));
    }
    let at = caller_location(lua, 0);
    Ok(Some((false, replayed_error(lua, &agent, &e.value, &at)?)))
}

/// A step answered without dispatching it.
enum Early {
    /// The journal recorded it: its outcome.
    Replayed(bool, Value),
    /// A fork's source recorded the same call past the fork point: its
    /// entry, to record in this run's journal and return.
    Reused(Arc<crate::store::Journal>, Box<crate::store::JournalEntry>),
}

/// A step a fork reuses from its source: recorded in this run's journal
/// (charged like any entry), then its result returned as the source's.
async fn reused(
    lua: &Lua,
    j: Arc<crate::store::Journal>,
    e: crate::store::JournalEntry,
) -> Result<(bool, Value), HostError> {
    super::journal::within_budget(lua, "a step", 0)?;
    hold(lua, &j).await?;
    let value = to_lua(lua, &e.value)?;
    super::journal::record_taken(lua, &j, e).await?;
    Ok((true, value))
}

/// Everything before the dispatch: read the arguments, replay the step if
/// the journal recorded it (or reuse it, in a fork), else start its task.
fn begin(
    lua: &Lua,
    agent: Value,
    input: Value,
    pos: Value,
) -> Result<Result<Call, Early>, HostError> {
    let agent = match agent {
        Value::String(s) => s.to_str()?.to_string(),
        other => {
            return Err(HostError::new(
                "bad_argument",
                format!(
                    "swarm.step: agent name must be a string, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    let input = to_json(lua, input, "the step input")?;
    let pos = match pos {
        Value::String(s) => Some(s.to_str()?.to_string()),
        _ => None,
    };
    let journal_pos = pos.as_deref().map(Arc::from);
    let attached = match &pos {
        Some(_) => lua.app_data_ref::<VmCtx>().expect("VmCtx").journal(),
        None => None,
    };
    // A replayed step needs nothing more of the VM: the rest is read after.
    let journal = match (pos, attached) {
        (Some(pos), Some(j)) => {
            let hash = input_hash(&input);
            if let Some(e) = replay(lua, &j, &pos, "step", &agent, &hash)? {
                if e.ok {
                    return Ok(Err(Early::Replayed(true, to_lua(lua, &e.value)?)));
                }
                let at = caller_location(lua, 0);
                let error = replayed_error(lua, &agent, &e.value, &at)?;
                return Ok(Err(Early::Replayed(false, error)));
            }
            // Only for an agent the blueprint still has: one removed is
            // `unknown_agent`, as it would be live.
            let known = || {
                let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
                ctx.host.agents.get(&agent).is_some()
            };
            if known()
                && let Some(e) = j.reuse(&pos, "step", &agent, &hash)
            {
                return Ok(Err(Early::Reused(j, Box::new(e))));
            }
            Some((j, pos, hash))
        }
        _ => None,
    };
    // What a dispatched step needs of the VM, in one borrow of its host data.
    let (engine, tok, spawner, parent) = {
        let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
        (
            ctx.host.engine.clone(),
            ctx.token(),
            ctx.host.agents.get(&agent),
            ctx.parent(),
        )
    };
    let tok = tok.ok_or_else(no_token)?;
    let Some(spawner) = spawner else {
        return Err(unknown_agent(lua, &agent));
    };
    let mut task = TaskSpec::new(&agent, input);
    task.journal_pos = journal_pos;
    task.parent = parent;
    let id = engine.start_task(&tok, task)?;
    Ok(Ok(Call {
        agent,
        journal,
        engine,
        tok,
        id,
        spawner,
    }))
}

fn unknown_agent(lua: &Lua, agent: &str) -> HostError {
    let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
    let in_run = ctx.parent().is_some() || ctx.token().and_then(|t| t.claims.task).is_some();
    if !in_run {
        // Not inside a run (the REPL): there are no agents to step to here.
        return HostError::new(
            "unknown_agent",
            "swarm.step runs inside a flow, and there is none here: load a blueprint \
             (`swarm repl FILE`, or :load FILE) and call repl.run(name, input)",
        );
    }
    let names = ctx.host.agents.names();
    let known = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    let hint = crate::text::did_you_mean(agent, names.iter().map(String::as_str));
    HostError::new(
        "unknown_agent",
        format!("unknown agent `{agent}`{hint} (known: {known})"),
    )
}

/// Why a settled step did not pass.
struct Failure {
    code: &'static str,
    task: TaskId,
    message: String,
}

impl Failure {
    fn of(view: &TaskView) -> Option<Failure> {
        if view.status == TaskStatus::Pass {
            return None;
        }
        let result = view.result.as_deref();
        let timed_out = result.and_then(|r| r.get("error")) == Some(&json!("timeout"));
        let code = if timed_out {
            "timeout"
        } else {
            view.status.as_str()
        };
        let told = result.map_or_else(|| "nil".into(), summary);
        Some(Failure {
            code,
            task: view.id,
            message: format!("step `{}` (task {}) {code}: {told}", view.agent, view.id),
        })
    }

    /// What the journal keeps of a failed step (`result`: the step's).
    fn recorded(&self, result: Option<&serde_json::Value>) -> serde_json::Value {
        json!({ "code": self.code, "task": self.task.0, "result": result,
                "message": self.message })
    }

    fn to_lua(&self, lua: &Lua, agent: &str, result: Value, at: &str) -> mlua::Result<Value> {
        step_error(
            lua,
            agent,
            (self.code, &self.message),
            self.task.0,
            result,
            at,
        )
    }
}

/// A failure replayed from the journal, as the first run returned it.
fn replayed_error(
    lua: &Lua,
    agent: &str,
    recorded: &serde_json::Value,
    at: &str,
) -> mlua::Result<Value> {
    let text = |k: &str| recorded.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let task = recorded.get("task").and_then(|v| v.as_u64()).unwrap_or(0);
    let result = match recorded.get("result") {
        Some(r) => to_lua(lua, r)?,
        None => Value::Nil,
    };
    step_error(
        lua,
        agent,
        (text("code"), text("message")),
        task,
        result,
        at,
    )
}

/// A step error: the one error shape (`code`, `message`, `where`) plus the
/// step's `agent`, `task` and `result`.
fn step_error(
    lua: &Lua,
    agent: &str,
    (code, message): (&str, &str),
    task: u64,
    result: Value,
    at: &str,
) -> mlua::Result<Value> {
    let t: Table = lua.create_table_with_capacity(0, 6)?;
    t.raw_set("code", code)?;
    t.raw_set("message", message)?;
    t.raw_set("where", at)?;
    t.raw_set("agent", agent)?;
    t.raw_set("task", task)?;
    t.raw_set("result", result)?;
    t.set_metatable(Some(error_metatable(lua)?))?;
    Ok(Value::Table(t))
}

/// One line saying why a step failed, for its error's message: the root
/// cause (a step error's own `result`, followed down to the innermost),
/// as the first line of its `error` text (or of the result itself, a
/// string), else the result as JSON, cut short. The whole chain stays in
/// the error's `result` field.
fn summary(mut result: &serde_json::Value) -> String {
    while let Some(inner) = result
        .get("result")
        .filter(|r| r.get("error").is_some() || r.is_string())
    {
        result = inner;
    }
    let text = match result {
        serde_json::Value::String(s) => s.as_str(),
        r => match r.get("error").and_then(|e| e.as_str()) {
            Some(e) => e,
            None => return clip(&r.to_string()),
        },
    };
    clip(text.lines().next().unwrap_or(""))
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}
