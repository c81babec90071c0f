//! `swarm.time`: the clock and a sleep that yields to tokio.

use crate::lua::error::{LuaUsage, reply};
use mlua::{Lua, Table, Value};
use std::time::Duration;

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "now",
        lua.create_function(|_, ()| Ok((true, crate::engine::now_ms())))?,
    )?;
    t.raw_set(
        "sleep",
        lua.create_async_function(|lua, ms: f64| async move {
            if !(0.0..=86_400_000.0).contains(&ms) {
                let e: Result<Value, _> = Err(LuaUsage::new(
                    "bad_argument",
                    format!("sleep: {ms} ms is out of range"),
                ));
                return reply(&lua, e);
            }
            tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
            reply::<LuaUsage>(&lua, Ok(Value::Boolean(true)))
        })?,
    )?;
    Ok(t)
}
