//! `swarm.json`: encode and decode with explicit null and empty arrays.
//!
//! `swarm.json.null` stands for JSON null in both directions; decoded arrays
//! carry the array metatable (see `swarm.json.array`) so `{}` that was `[]`
//! encodes back as `[]`. `decode` of bad text is an expected failure and
//! returns `nil, err`; `encode` of a function or userdata raises.

use crate::lua::ctx::VmCtx;
use crate::lua::limits::{LimitError, Tripped};
use crate::lua::location::caller_location;
use mlua::{Lua, LuaSerdeExt, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("null", lua.null())?;
    t.raw_set(
        "encode",
        lua.create_function(|lua, (v, opts): (Value, Option<Table>)| {
            let pretty = opts
                .and_then(|o| o.get::<bool>("pretty").ok())
                .unwrap_or(false);
            let json = crate::lua::json::lua_to_json(lua, v).map_err(|e| {
                mlua::Error::RuntimeError(format!(
                    "{}: swarm.json.encode: {e}",
                    caller_location(lua, 0)
                ))
            })?;
            // The text becomes a Lua string: refuse before encoding when it
            // could not fit in what is left of the VM's memory (a string of
            // NUL bytes encodes six times longer than it is).
            let (limits, room) = {
                let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
                let room = ctx.memory_limit.saturating_sub(lua.used_memory());
                (ctx.limits.clone(), if pretty { room / 2 } else { room })
            };
            let bytes = crate::engine::size::measure(&json, room).json;
            if bytes > room {
                limits.trip(Tripped::Memory);
                return Err(mlua::Error::external(LimitError {
                    kind: Tripped::Memory,
                    what: format!(
                        "swarm.json.encode would build {bytes} bytes, more than the VM's memory has left"
                    ),
                    location: caller_location(lua, 0),
                }));
            }
            let s = if pretty {
                serde_json::to_string_pretty(&json)
            } else {
                serde_json::to_string(&json)
            };
            s.map_err(mlua::Error::external)
        })?,
    )?;
    t.raw_set(
        "decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            match crate::lua::json::json_to_lua(lua, &s.as_bytes())? {
                Ok(v) => Ok((v, Value::Nil)),
                Err(e) => Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!("swarm.json.decode: {e}"))?),
                )),
            }
        })?,
    )?;
    t.raw_set(
        "array",
        lua.create_function(|lua, t: Option<Table>| {
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    t.raw_set(
        "is_null",
        lua.create_function(|lua, v: Value| Ok(v == lua.null()))?,
    )?;
    Ok(t)
}
