//! `swarm.worker`: inside a Lua agent, the task and the ways to answer it.
//! Called from a VM whose token is not a worker's, each function raises
//! with the engine's refusal (`forbidden` or `no_bound_task`).

use super::{caller, to_json, to_lua, verb};
use crate::engine::OutputKind;
use crate::lua::error::HostError;
use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    verb(lua, &t, "task", |lua, ()| {
        let (engine, tok) = caller(lua)?;
        Ok(to_lua(lua, &engine.fetch_prompt(&tok)?)?)
    })?;
    verb(lua, &t, "input", |lua, ()| {
        let (engine, tok) = caller(lua)?;
        Ok(to_lua(lua, &*engine.fetch_prompt(&tok)?.input)?)
    })?;
    verb(lua, &t, "emit", |lua, (kind, data): (String, Value)| {
        let (engine, tok) = caller(lua)?;
        let kind: OutputKind = kind
            .parse()
            .map_err(|m| HostError::new("bad_argument", m))?;
        engine.emit(&tok, kind, to_json(lua, data, "emit data")?)?;
        Ok(Value::Boolean(true))
    })?;
    verb(
        lua,
        &t,
        "result",
        |lua, (value, ok): (Value, Option<bool>)| {
            let (engine, tok) = caller(lua)?;
            let v = to_json(lua, value, "result value")?;
            engine.post_result(&tok, v, ok.unwrap_or(true))?;
            Ok(Value::Boolean(true))
        },
    )?;
    Ok(t)
}
