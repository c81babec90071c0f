//! `swarm.gate`: who this VM is and what it may call.

use super::{caller, to_lua, verb};
use crate::auth::Verb;
use crate::lua::error::HostError;
use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    verb(lua, &t, "whoami", |lua, ()| {
        let (_, tok) = caller(lua)?;
        let me = lua.create_table()?;
        me.raw_set("role", tok.claims.role.as_str())?;
        me.raw_set("subject", &*tok.claims.subject)?;
        me.raw_set("task", tok.claims.task)?;
        Ok(Value::Table(me))
    })?;
    verb(lua, &t, "can", |lua, name: String| {
        let (engine, tok) = caller(lua)?;
        let v: Verb = name
            .parse()
            .map_err(|m| HostError::new("bad_argument", m))?;
        Ok(Value::Boolean(
            engine.gate_of(&tok)?.allows(tok.claims.role, v),
        ))
    })?;
    verb(lua, &t, "table", |lua, ()| {
        let (engine, tok) = caller(lua)?;
        Ok(to_lua(lua, &engine.gate_of(&tok)?.table())?)
    })?;
    Ok(t)
}
