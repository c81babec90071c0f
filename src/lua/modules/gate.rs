//! `swarm.gate`: who this VM is and what it may call.

use super::{caller, to_lua};
use crate::auth::Verb;
use crate::lua::error::{LuaUsage, reply};
use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "whoami",
        lua.create_function(|lua, ()| {
            let r = caller(lua).and_then(|(_, tok)| {
                let me = lua.create_table().map_err(conv)?;
                me.raw_set("role", tok.claims.role.as_str()).map_err(conv)?;
                me.raw_set("subject", &*tok.claims.subject).map_err(conv)?;
                me.raw_set("task", tok.claims.task).map_err(conv)?;
                Ok(Value::Table(me))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "can",
        lua.create_function(|lua, verb: String| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let verb: Verb = verb.parse().map_err(|m| LuaUsage::new("bad_argument", m))?;
                let gate = engine
                    .gate_of(&tok)
                    .map_err(|e| LuaUsage::new(e.code(), e.to_string()))?;
                Ok(Value::Boolean(gate.allows(tok.claims.role, verb)))
            });
            reply(lua, r)
        })?,
    )?;
    t.raw_set(
        "table",
        lua.create_function(|lua, ()| {
            let r = caller(lua).and_then(|(engine, tok)| {
                let gate = engine
                    .gate_of(&tok)
                    .map_err(|e| LuaUsage::new(e.code(), e.to_string()))?;
                to_lua(lua, &gate.table()).map_err(conv)
            });
            reply(lua, r)
        })?,
    )?;
    Ok(t)
}

fn conv(e: mlua::Error) -> LuaUsage {
    LuaUsage::new("convert", e.to_string())
}
