//! The Lua library under `lua/`, compiled into the binary, and `require`.
//!
//! `require` resolves only the `swarm` modules and the embedded files listed
//! here; there is no search path and no C loader.

use super::error::caller_location;
use super::sandbox::freeze;
use mlua::chunk::ChunkMode;
use mlua::{Lua, Table, Value};

pub const INIT: &str = include_str!("../../lua/swarm/init.lua");
pub const GUARDS: &str = include_str!("../../lua/swarm/guards.lua");

/// Embedded modules a sandbox may `require`: (module name, chunk name, source).
const MODULES: &[(&str, &str, &str)] = &[];

/// Resolves `require(name)` inside a sandbox.
pub fn require(lua: &Lua, name: &str) -> mlua::Result<Value> {
    let swarm: Table = lua.globals().raw_get("swarm")?;
    if name == "swarm" {
        return Ok(Value::Table(swarm));
    }
    if let Some(sub) = name.strip_prefix("swarm.") {
        let v: Value = swarm.get(sub)?;
        if !v.is_nil() {
            return Ok(v);
        }
    }
    if let Some((_, chunk, src)) = MODULES.iter().find(|(n, ..)| *n == name) {
        let v: Value = lua
            .load(*src)
            .set_name(format!("@{chunk}"))
            .set_mode(ChunkMode::Text)
            .set_environment(lua.globals())
            .call(())?;
        return match v {
            Value::Table(t) => Ok(Value::Table(freeze(lua, name, t)?)),
            other => Ok(other),
        };
    }
    Err(mlua::Error::RuntimeError(format!(
        "{}: module '{name}' not found: the sandbox can require only the swarm library",
        caller_location(lua, 0)
    )))
}
