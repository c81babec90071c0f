//! Helpers the embedded flow and blueprint libraries need from the host.
//! They are passed to those chunks only, not put in the `swarm` table.

use crate::auth::{Role, Verb};
use crate::lua::error::caller_location;
use crate::lua::sandbox::VmCtx;
use crate::spawn::LayerRegistry;
use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "where",
        lua.create_function(|lua, ()| Ok(caller_location(lua, 0)))?,
    )?;
    t.raw_set(
        "has_agent",
        lua.create_function(|lua, name: String| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            Ok(ctx.host.agents.get(&name).is_some())
        })?,
    )?;
    t.raw_set(
        "agent_names",
        lua.create_function(|lua, ()| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            let names = ctx.host.agents.names();
            Ok(if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            })
        })?,
    )?;
    t.raw_set(
        "current_task",
        lua.create_function(|lua, ()| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            let task = ctx
                .parent()
                .map(|t| t.0)
                .or_else(|| ctx.token().and_then(|t| t.claims.task));
            Ok(task.map_or(Value::Nil, |t| Value::Integer(t as i64)))
        })?,
    )?;
    t.raw_set(
        "is_layer",
        lua.create_function(|_, key: String| Ok(LayerRegistry::BUILTIN.contains(&key.as_str())))?,
    )?;
    t.raw_set(
        "layer_keys",
        lua.create_function(|_, ()| Ok(LayerRegistry::BUILTIN.join(", ")))?,
    )?;
    t.raw_set(
        "is_role",
        lua.create_function(|_, role: Value| {
            Ok(role.to_string().is_ok_and(|r| r.parse::<Role>().is_ok()))
        })?,
    )?;
    t.raw_set(
        "is_verb",
        lua.create_function(|_, verb: Value| {
            Ok(verb.to_string().is_ok_and(|v| v.parse::<Verb>().is_ok()))
        })?,
    )?;
    Ok(t)
}
