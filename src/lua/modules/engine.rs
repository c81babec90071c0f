//! `swarm.engine`: the engine verbs, called with the VM's own token.
//!
//! Non-waiting verbs are plain host functions. Verbs that wait
//! (`poll_task`, `dispatch`, `await_resume`, `events` with a hold) go
//! through the one async host function `wait` (see `modules/mod.rs`): the
//! Lua coroutine yields to tokio while it waits.

use super::{caller, to_json, to_lua, verb, view_to_lua};
use crate::engine::{EngineError, TaskId, TaskSpec, TaskView};
use crate::lua::ctx::VmCtx;
use crate::lua::error::HostError;
use mlua::{FromLua, Lua, Table, Value};
use std::sync::Arc;
use std::time::Duration;

fn arg<T: FromLua>(lua: &Lua, v: Value, what: &str) -> Result<T, HostError> {
    T::from_lua(v, lua).map_err(|e| HostError::new("bad_argument", format!("{what}: {e}")))
}

fn view(lua: &Lua, r: Result<TaskView, EngineError>) -> Result<Value, HostError> {
    view_to_lua(lua, &r.map_err(HostError::from)?).map_err(HostError::from)
}

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    verb(lua, &t, "start_task", |lua, spec: Value| {
        let Value::Table(spec) = spec else {
            return Err(HostError::new(
                "bad_argument",
                format!(
                    "start_task expects a table {{ agent = name, input = value[, parent = id] }}, \
                     got a {} (e.g. swarm.engine.start_task {{ agent = \"greeter\", input = {{}} }})",
                    spec.type_name()
                ),
            ));
        };
        let (engine, tok) = caller(lua)?;
        let agent: String = spec
            .get("agent")
            .map_err(|_| HostError::new("bad_argument", "start_task: `agent` must be a string"))?;
        let input = to_json(
            lua,
            spec.get("input").unwrap_or(Value::Nil),
            "start_task input",
        )?;
        let parent: Option<u64> = spec.get("parent").unwrap_or(None);
        let mut task = TaskSpec::new(&agent, input);
        task.parent = parent
            .map(TaskId)
            .or_else(|| lua.app_data_ref::<VmCtx>().and_then(|ctx| ctx.parent()));
        let id = engine.start_task(&tok, task).map_err(HostError::from)?;
        Ok(Value::Integer(id.0 as i64))
    })?;
    verb(lua, &t, "read_task", |lua, id: u64| {
        let (engine, tok) = caller(lua)?;
        view(lua, engine.read_task(&tok, TaskId(id)))
    })?;
    verb(lua, &t, "cancel_task", |lua, id: u64| {
        let (engine, tok) = caller(lua)?;
        view(lua, engine.cancel_task(&tok, TaskId(id)))
    })?;
    verb(
        lua,
        &t,
        "query_senior",
        |lua, (id, question): (u64, Value)| {
            let (engine, tok) = caller(lua)?;
            let q = to_json(lua, question, "query_senior question")?;
            let key = engine
                .query_senior(&tok, TaskId(id), q)
                .map_err(HostError::from)?;
            Ok(Value::String(
                lua.create_string(&key).map_err(HostError::from)?,
            ))
        },
    )?;
    verb(lua, &t, "resume", |lua, (key, answer): (String, Value)| {
        let (engine, tok) = caller(lua)?;
        let a = to_json(lua, answer, "resume answer")?;
        engine.resume(&tok, &key, a).map_err(HostError::from)?;
        Ok(Value::Boolean(true))
    })?;
    verb(lua, &t, "heartbeat", |lua, ()| {
        let (engine, tok) = caller(lua)?;
        engine.heartbeat(&tok).map_err(HostError::from)?;
        Ok(Value::Boolean(true))
    })?;
    verb(lua, &t, "detach", |lua, ()| {
        let (engine, tok) = caller(lua)?;
        engine.detach(&tok).map_err(HostError::from)?;
        Ok(Value::Boolean(true))
    })?;
    verb(lua, &t, "last_cursor", |lua, ()| {
        let (engine, tok) = caller(lua)?;
        let cursor = engine.last_cursor_for(&tok).map_err(HostError::from)?;
        Ok(Value::Integer(cursor as i64))
    })?;
    Ok(t)
}

/// The waiting verbs, reached through the async host function `wait`.
pub async fn wait(lua: &Lua, op: &str, a: Value, b: Value) -> Result<Value, HostError> {
    let ms = |v: Value, default: u64| -> Result<Duration, HostError> {
        let n: Option<u64> = arg(lua, v, op)?;
        Ok(Duration::from_millis(n.unwrap_or(default)))
    };
    match op {
        "poll_task" => {
            let (engine, tok) = caller(lua)?;
            let id: u64 = arg(lua, a, "poll_task id")?;
            let hold = ms(b, 0)?;
            view(lua, engine.poll_task(&tok, TaskId(id), hold).await)
        }
        "dispatch" => {
            let id: u64 = arg(lua, a, "dispatch id")?;
            let v = dispatch(lua, TaskId(id)).await?;
            view_to_lua(lua, &v).map_err(HostError::from)
        }
        "await_resume" => {
            let (engine, tok) = caller(lua)?;
            let key: String = arg(lua, a, "await_resume key")?;
            let timeout = ms(b, 24 * 3600 * 1000)?;
            let answer = engine
                .await_resume(&tok, &key, timeout)
                .await
                .map_err(HostError::from)?;
            to_lua(lua, &*answer).map_err(HostError::from)
        }
        "events" => {
            let after: Option<u64> = arg(lua, a, "events cursor")?;
            let opts: Option<Table> = arg(lua, b, "events options")?;
            let max: usize = opts
                .as_ref()
                .and_then(|o| o.get("max").ok())
                .unwrap_or(1000);
            let hold: Option<u64> = opts.as_ref().and_then(|o| o.get("hold_ms").ok());
            events(
                lua,
                after.unwrap_or(0),
                max,
                Duration::from_millis(hold.unwrap_or(0)),
            )
            .await
        }
        other => Err(HostError::new(
            "bad_argument",
            format!("unknown wait `{other}`"),
        )),
    }
}

/// Runs one attempt of `id` through the spawner registered for its agent.
async fn dispatch(lua: &Lua, id: TaskId) -> Result<TaskView, HostError> {
    let (engine, tok) = caller(lua)?;
    let agents = {
        let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
        ctx.host.agents.clone()
    };
    let agent = engine.task_agent(&tok, id)?;
    let spawner = agents
        .get(&agent)
        .ok_or_else(|| HostError::new("unknown_agent", format!("no agent named `{agent}`")))?;
    super::journal::hold_run(lua).await?;
    engine
        .dispatch_attempt(&tok, id, spawner.as_ref())
        .await
        .map_err(HostError::from)
}

async fn events(lua: &Lua, after: u64, max: usize, hold: Duration) -> Result<Value, HostError> {
    let (engine, tok) = caller(lua)?;
    let mut sub = engine.subscribe(&tok, after).map_err(HostError::from)?;
    let mut out = Vec::new();
    while out.len() < max {
        match sub.try_next().map_err(HostError::from)? {
            Some(ev) => out.push(ev),
            None => break,
        }
    }
    if out.is_empty()
        && !hold.is_zero()
        && let Ok(ev) = tokio::time::timeout(hold, sub.next()).await
    {
        out.push(ev.map_err(HostError::from)?);
    }
    let list: Vec<Arc<crate::engine::Event>> = out.into_iter().map(Arc::new).collect();
    to_lua(lua, &list).map_err(HostError::from)
}
