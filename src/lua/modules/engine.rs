//! `swarm.engine`: the engine verbs, called with the VM's own token.
//! Verbs that wait (`poll_task`, `dispatch`, `await_resume`, `events` with a
//! hold) are async: the Lua coroutine yields to tokio while it waits.

use super::{caller, to_json, to_lua};
use crate::engine::{EngineError, TaskId, TaskSpec};
use crate::lua::error::{LuaUsage, reply};
use crate::lua::sandbox::VmCtx;
use mlua::{Lua, Table, Value};
use std::sync::Arc;
use std::time::Duration;

fn engine_err(e: EngineError) -> LuaUsage {
    LuaUsage::new(e.code(), e.to_string())
}

fn ms(v: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(v.unwrap_or(default))
}

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "start_task",
        lua.create_function(|lua, spec: Table| {
            let r = (|| -> Result<Value, LuaUsage> {
                let (engine, tok) = caller(lua)?;
                let agent: String = spec.get("agent").map_err(|_| {
                    LuaUsage::new("bad_argument", "start_task: `agent` must be a string")
                })?;
                let input = to_json(
                    lua,
                    spec.get("input").unwrap_or(Value::Nil),
                    "start_task input",
                )?;
                let parent: Option<u64> = spec.get("parent").unwrap_or(None);
                let mut task = TaskSpec::new(&agent, input);
                task.parent = parent.map(TaskId);
                let id = engine.start_task(&tok, task).map_err(engine_err)?;
                Ok(Value::Integer(id.0 as i64))
            })();
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "read_task",
        lua.create_function(|lua, id: u64| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let v = engine.read_task(&tok, TaskId(id)).map_err(engine_err)?;
                to_lua(lua, &v).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "cancel_task",
        lua.create_function(|lua, id: u64| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let v = engine.cancel_task(&tok, TaskId(id)).map_err(engine_err)?;
                to_lua(lua, &v).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "poll_task",
        lua.create_async_function(|lua, (id, hold): (u64, Option<u64>)| async move {
            let r = match caller(&lua) {
                Ok((engine, tok)) => engine
                    .poll_task(&tok, TaskId(id), ms(hold, 0))
                    .await
                    .map_err(engine_err),
                Err(e) => Err(e),
            };
            let r = r.and_then(|v| {
                to_lua(&lua, &v).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(&lua, r)
        })?,
    )?;
    t.raw_set(
        "dispatch",
        lua.create_async_function(|lua, id: u64| async move {
            let r = dispatch(&lua, TaskId(id)).await;
            let r = r.and_then(|v| {
                to_lua(&lua, &v).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(&lua, r)
        })?,
    )?;
    t.raw_set(
        "query_senior",
        lua.create_function(|lua, (id, question): (u64, Value)| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let q = to_json(lua, question, "query_senior question")?;
                let key = engine
                    .query_senior(&tok, TaskId(id), q)
                    .map_err(engine_err)?;
                Ok(Value::String(
                    lua.create_string(&key)
                        .map_err(|e| LuaUsage::new("convert", e.to_string()))?,
                ))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "resume",
        lua.create_function(|lua, (key, answer): (String, Value)| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let a = to_json(lua, answer, "resume answer")?;
                engine.resume(&tok, &key, a).map_err(engine_err)?;
                Ok(Value::Boolean(true))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "await_resume",
        lua.create_async_function(|lua, (key, timeout): (String, Option<u64>)| async move {
            let r = match caller(&lua) {
                Ok((engine, tok)) => engine
                    .await_resume(&tok, &key, ms(timeout, 24 * 3600 * 1000))
                    .await
                    .map_err(engine_err),
                Err(e) => Err(e),
            };
            let r = r.and_then(|v| {
                to_lua(&lua, &*v).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(&lua, r)
        })?,
    )?;
    t.raw_set(
        "events",
        lua.create_async_function(
            |lua, (after, opts): (Option<u64>, Option<Table>)| async move {
                let max: usize = opts
                    .as_ref()
                    .and_then(|o| o.get("max").ok())
                    .unwrap_or(1000);
                let hold: Option<u64> = opts.as_ref().and_then(|o| o.get("hold_ms").ok());
                let r = events(&lua, after.unwrap_or(0), max, ms(hold, 0)).await;
                reply(&lua, r)
            },
        )?,
    )?;
    t.raw_set(
        "heartbeat",
        lua.create_function(|lua, ()| {
            let r = caller(lua).and_then(|(engine, tok)| {
                engine.heartbeat(&tok).map_err(engine_err)?;
                Ok(Value::Boolean(true))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "detach",
        lua.create_function(|lua, ()| {
            let r = caller(lua).and_then(|(engine, tok)| {
                engine.detach(&tok).map_err(engine_err)?;
                Ok(Value::Boolean(true))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "last_cursor",
        lua.create_function(|lua, ()| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            Ok((true, ctx.host.engine.last_cursor()))
        })?,
    )?;
    Ok(t)
}

/// Runs one attempt of `id` through the spawner registered for its agent.
async fn dispatch(lua: &Lua, id: TaskId) -> Result<crate::engine::TaskView, LuaUsage> {
    let (engine, tok) = caller(lua)?;
    let agents = {
        let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
        ctx.host.agents.clone()
    };
    let agent = engine.read_task(&tok, id).map_err(engine_err)?.agent;
    let spawner = agents
        .get(&agent)
        .ok_or_else(|| LuaUsage::new("unknown_agent", format!("no agent named `{agent}`")))?;
    engine
        .dispatch_attempt(&tok, id, spawner.as_ref())
        .await
        .map_err(engine_err)
}

async fn events(lua: &Lua, after: u64, max: usize, hold: Duration) -> Result<Value, LuaUsage> {
    let (engine, tok) = caller(lua)?;
    let mut sub = engine.subscribe(&tok, after).map_err(engine_err)?;
    let mut out = Vec::new();
    while out.len() < max {
        match sub.try_next().map_err(engine_err)? {
            Some(ev) => out.push(ev),
            None => break,
        }
    }
    if out.is_empty()
        && !hold.is_zero()
        && let Ok(ev) = tokio::time::timeout(hold, sub.next()).await
    {
        out.push(ev.map_err(engine_err)?);
    }
    let list: Vec<Arc<crate::engine::Event>> = out.into_iter().map(Arc::new).collect();
    to_lua(lua, &list).map_err(|e| LuaUsage::new("convert", e.to_string()))
}
