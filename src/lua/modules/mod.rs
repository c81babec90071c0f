//! The `swarm.*` modules, registered in one ordered list.
//!
//! Each module has one `register(lua) -> Table` of host functions; the
//! embedded `swarm/init.lua` turns them into the user-facing `swarm` table.

mod engine;
mod gate;
mod json;
mod log;
mod time;
mod worker;

use super::embedded;
use super::error::{LuaUsage, caller_location};
use super::sandbox::VmCtx;
use crate::auth::CapToken;
use crate::engine::Engine;
use mlua::chunk::ChunkMode;
use mlua::{Lua, LuaSerdeExt, Table, Value};

/// Builds the `swarm` table for a new VM.
pub fn compose(lua: &Lua) -> mlua::Result<Table> {
    let raw = lua.create_table()?;
    raw.raw_set("engine", engine::register(lua)?)?;
    raw.raw_set("gate", gate::register(lua)?)?;
    raw.raw_set("worker", worker::register(lua)?)?;
    raw.raw_set("json", json::register(lua)?)?;
    raw.raw_set("log", log::register(lua)?)?;
    raw.raw_set("time", time::register(lua)?)?;
    lua.load(embedded::INIT)
        .set_name("@swarm/init.lua")
        .set_mode(ChunkMode::Text)
        .call(raw)
}

/// The VM's engine and its one token, or a `no_token` usage error.
pub(crate) fn caller(lua: &Lua) -> Result<(Engine, CapToken), LuaUsage> {
    let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
    match ctx.token() {
        Some(tok) => Ok((ctx.host.engine.clone(), tok)),
        None => Err(LuaUsage::new("no_token", "this VM holds no engine token")),
    }
}

/// Serialize options for values handed to Lua: absent → nil, JSON null →
/// `swarm.json.null`, arrays keep their array-ness (even when empty).
pub(crate) fn ser_opts() -> mlua::serde::SerializeOptions {
    mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(true)
        .set_array_metatable(true)
}

pub(crate) fn to_lua<T: serde::Serialize + ?Sized>(lua: &Lua, v: &T) -> mlua::Result<Value> {
    lua.to_value_with(v, ser_opts())
}

/// A Lua value as JSON, or a usage error naming what could not convert.
pub(crate) fn to_json(lua: &Lua, v: Value, what: &str) -> Result<serde_json::Value, LuaUsage> {
    lua.from_value::<serde_json::Value>(v).map_err(|e| {
        LuaUsage::new(
            "bad_value",
            format!(
                "{what} is not JSON-shaped ({e}) at {}",
                caller_location(lua, 0)
            ),
        )
    })
}
