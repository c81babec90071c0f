//! The Lua library under `lua/`, compiled into the binary, and `require`.
//!
//! `require` resolves only the `swarm` modules and the embedded files listed
//! here; there is no search path and no C loader.
//!
//! Embedded chunks are compiled once per process and loaded into each new VM
//! as bytecode by the host (Lua code itself can never load bytecode): parsing
//! is the largest part of building a VM otherwise.

use super::error::caller_location;
use super::sandbox::freeze;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, StdLib, Table, Value};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

pub const INIT: (&str, &str) = ("swarm/init.lua", include_str!("../../lua/swarm/init.lua"));
pub const GUARDS: (&str, &str) = (
    "swarm/guards.lua",
    include_str!("../../lua/swarm/guards.lua"),
);
pub const ERROR_MT: (&str, &str) = ("swarm/error.lua", include_str!("../../lua/swarm/error.lua"));

/// Bytecode of each embedded chunk, compiled on first use.
fn bytecode(name: &'static str, src: &'static str) -> mlua::Result<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return Ok(b.clone());
    }
    // A bare state used only to compile trusted, embedded source.
    let compiler = Lua::new_with(StdLib::NONE, mlua::LuaOptions::default())?;
    let f = compiler
        .load(src)
        .set_name(format!("@{name}"))
        .set_mode(ChunkMode::Text)
        .into_function()?;
    let code = f.dump(false);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name, code.clone());
    Ok(code)
}

/// An embedded chunk as a function of `lua`, with `lua`'s globals as its
/// environment.
pub fn chunk(lua: &Lua, (name, src): (&'static str, &'static str)) -> mlua::Result<Function> {
    lua.load(bytecode(name, src)?)
        .set_name(format!("@{name}"))
        .set_mode(ChunkMode::Binary)
        .into_function()
}

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
