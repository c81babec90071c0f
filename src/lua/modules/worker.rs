//! `swarm.worker`: inside a Lua agent, the task and the ways to answer it.
//! Called from a VM whose token is not a worker's, each function raises
//! with the engine's refusal (`forbidden` or `no_bound_task`).

use super::{caller, to_json, to_lua};
use crate::engine::OutputKind;
use crate::lua::error::{LuaUsage, reply};
use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "task",
        lua.create_function(|lua, ()| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let p = engine
                    .fetch_prompt(&tok)
                    .map_err(|e| LuaUsage::new(e.code(), e.to_string()))?;
                to_lua(lua, &p).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "input",
        lua.create_function(|lua, ()| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let p = engine
                    .fetch_prompt(&tok)
                    .map_err(|e| LuaUsage::new(e.code(), e.to_string()))?;
                to_lua(lua, &*p.input).map_err(|e| LuaUsage::new("convert", e.to_string()))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "emit",
        lua.create_function(|lua, (kind, data): (String, Value)| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let kind: OutputKind =
                    kind.parse().map_err(|m| LuaUsage::new("bad_argument", m))?;
                let data = to_json(lua, data, "emit data")?;
                engine
                    .emit(&tok, kind, data)
                    .map_err(|e| LuaUsage::new(e.code(), e.to_string()))?;
                Ok(Value::Boolean(true))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "result",
        lua.create_function(|lua, (value, ok): (Value, Option<bool>)| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let v = to_json(lua, value, "result value")?;
                engine
                    .post_result(&tok, v, ok.unwrap_or(true))
                    .map_err(|e| LuaUsage::new(e.code(), e.to_string()))?;
                Ok(Value::Boolean(true))
            });
            reply(lua, r)
        })?,
    )?;
    Ok(t)
}
