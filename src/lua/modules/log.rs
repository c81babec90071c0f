//! `swarm.log`: Lua logging into `tracing`, tagged with the caller's
//! file:line.

use crate::lua::location::caller_location;
use mlua::{Lua, Table, Value, Variadic};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for level in ["trace", "debug", "info", "warn", "error"] {
        t.raw_set(
            level,
            lua.create_function(move |lua, args: Variadic<Value>| {
                let msg = crate::lua::meter::line(lua, &args, " ")?;
                let at = caller_location(lua, 0);
                match level {
                    "trace" => tracing::trace!(target: "lua", %at, "{msg}"),
                    "debug" => tracing::debug!(target: "lua", %at, "{msg}"),
                    "info" => tracing::info!(target: "lua", %at, "{msg}"),
                    "warn" => tracing::warn!(target: "lua", %at, "{msg}"),
                    _ => tracing::error!(target: "lua", %at, "{msg}"),
                }
                Ok(())
            })?,
        )?;
    }
    Ok(t)
}
