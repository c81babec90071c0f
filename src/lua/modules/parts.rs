//! The parts of the `swarm` table built on first read: the host modules
//! (`swarm.engine`, `json`, `time`, ...), the flow library (`swarm.step`,
//! `parallel`, `map`, ...) and the blueprint DSL (`swarm.blueprint`,
//! `agent`, ...), with the host helpers they take; and blueprint
//! validation, which only the VMs that validate load.
//!
//! A VM that never reads them (a Lua agent written as a plain function)
//! never builds, runs or freezes them: they were half of building a VM.
//! Reading any of a part's names loads the whole part, once per VM; a
//! host module is built on the read of its own name; a walk of `swarm`
//! (`pairs`, REPL completion) loads everything first.

use super::{host, journal};
use crate::lua::ctx::{HOST, LIBRARY, MAKERS};
use crate::lua::embedded::{self, BLUEPRINT, FLOW, MOB, VALIDATE};
use crate::lua::frozen::freeze;
use crate::lua::location::keep_caller;
use mlua::{Function, Lua, Table, Value};

/// A part: its embedded chunk and the `swarm` fields it provides.
type Part = ((&'static str, &'static str), &'static [&'static str]);

const FLOW_PART: Part = (
    FLOW,
    &[
        "step",
        "pstep",
        "try",
        "parallel",
        "all_settled",
        "race",
        "any",
        "map",
        "ask",
        "sleep",
        "recv",
    ],
);
const BLUEPRINT_PART: Part = (BLUEPRINT, &["blueprint", "agent", "layer", "duration"]);
const MOB_PART: Part = (MOB, &["mob"]);
const PARTS: [Part; 3] = [FLOW_PART, BLUEPRINT_PART, MOB_PART];

/// Makes the parts of `swarm` (the table behind the frozen `swarm`) load
/// on first read. `host` holds what the parts take besides `swarm`; the
/// rest of the host helpers join it when the first part loads. `makers`
/// build the host modules, by name (`swarm/init.lua`).
pub fn defer(lua: &Lua, swarm: &Table, host: Table, makers: Table) -> mlua::Result<()> {
    lua.set_named_registry_value(HOST, host)?;
    lua.set_named_registry_value(LIBRARY, swarm)?;
    lua.set_named_registry_value(MAKERS, makers)?;
    let mt = lua.create_table()?;
    mt.raw_set(
        "__index",
        lua.create_function(|lua, (swarm, key): (Table, Value)| {
            let Some(key) = key.as_string().and_then(|k| k.to_str().ok()) else {
                return Ok(Value::Nil);
            };
            match PARTS.iter().find(|(_, names)| names.contains(&&*key)) {
                Some(part) => {
                    load(lua, &swarm, part)?;
                    swarm.raw_get(&*key)
                }
                None => module(lua, &swarm, &key),
            }
        })?,
    )?;
    // Called by the frozen tables' `__pairs` before it walks (frozen.rs).
    mt.raw_set(
        "__fill",
        lua.create_function(|lua, swarm: Table| load_all(lua, &swarm))?,
    )?;
    swarm.set_metatable(Some(mt))
}

/// Loads every part and module not loaded yet (the REPL, before it
/// completes names).
pub fn load_all(lua: &Lua, swarm: &Table) -> mlua::Result<()> {
    for part in &PARTS {
        load(lua, swarm, part)?;
    }
    let makers: Table = lua.named_registry_value(MAKERS)?;
    for name in makers.pairs::<mlua::LuaString, Value>() {
        let name = name?.0;
        if swarm.raw_get::<Value>(&name)?.is_nil() {
            module(lua, swarm, &name.to_str()?)?;
        }
    }
    Ok(())
}

/// Builds host module `name` into `swarm`, frozen; nil when there is no
/// such module.
fn module(lua: &Lua, swarm: &Table, name: &str) -> mlua::Result<Value> {
    let makers: Table = lua.named_registry_value(MAKERS)?;
    let Some(make) = makers.raw_get::<Option<Function>>(name)? else {
        return Ok(Value::Nil);
    };
    let t = freeze(lua, &format!("swarm.{name}"), make.call(())?)?;
    swarm.raw_set(name, &t)?;
    Ok(Value::Table(t))
}

/// The flow library's exports (its journaled reads, for `swarm/init.lua`).
pub fn flow(lua: &Lua) -> mlua::Result<Table> {
    let swarm: Table = lua.named_registry_value(LIBRARY)?;
    load(lua, &swarm, &FLOW_PART)
}

/// The blueprint validator (`lua/swarm/validate.lua`), loaded on first
/// use and kept in the registry under its chunk's name.
pub fn validator(lua: &Lua) -> mlua::Result<Function> {
    if let Some(validate) = lua.named_registry_value::<Option<Function>>(VALIDATE.0)? {
        return Ok(validate);
    }
    let swarm: Table = lua.named_registry_value(LIBRARY)?;
    let duration: Function = load(lua, &swarm, &BLUEPRINT_PART)?.raw_get("duration")?;
    let validate: Function =
        embedded::chunk(lua, VALIDATE)?.call((host_helpers(lua)?, duration))?;
    lua.set_named_registry_value(VALIDATE.0, &validate)?;
    Ok(validate)
}

/// Turns off recording where blueprint constructors were called (VMs that
/// evaluate blueprints already validated), loaded or not.
pub fn skip_locations(lua: &Lua) -> mlua::Result<()> {
    lua.named_registry_value::<Table>(HOST)?
        .raw_set("locating", false)
}

/// Loads `part` into `swarm` unless it is there; returns its exports.
/// Each part's exports are kept in the registry under its chunk's name.
fn load(lua: &Lua, swarm: &Table, (chunk, names): &Part) -> mlua::Result<Table> {
    if let Some(exports) = lua.named_registry_value::<Option<Table>>(chunk.0)? {
        return Ok(exports);
    }
    let host = host_helpers(lua)?;
    let exports: Table = embedded::chunk(lua, *chunk)?.call((swarm, host))?;
    // SAFETY: a plain C function that only wraps the value it is given.
    let keep_caller = unsafe { lua.create_c_function(keep_caller)? };
    for name in names.iter() {
        let value = match exports.raw_get::<Value>(*name)? {
            Value::Table(t) if t.metatable().is_none() => {
                Value::Table(freeze(lua, &format!("swarm.{name}"), t)?)
            }
            f @ Value::Function(_) => keep_caller.call(f)?,
            v => v,
        };
        swarm.raw_set(*name, value)?;
    }
    lua.set_named_registry_value(chunk.0, &exports)?;
    Ok(exports)
}

/// The host helpers the parts take (see `host.rs`), completed the first
/// time a part loads.
fn host_helpers(lua: &Lua) -> mlua::Result<Table> {
    let helpers: Table = lua.named_registry_value(HOST)?;
    if helpers.raw_get::<Value>("where")?.is_nil() {
        host::register(lua, &helpers)?;
        journal::register(lua, &helpers)?;
        // The mob library's: the flow library's exports, the run's tokens.
        helpers.raw_set("flow_exports", lua.create_function(|lua, ()| flow(lua))?)?;
        helpers.raw_set(
            "token_limit",
            lua.create_function(|lua, ()| {
                let ctx = lua.app_data_ref::<crate::lua::ctx::VmCtx>().expect("VmCtx");
                let limits = *ctx.run_limits.lock().unwrap_or_else(|e| e.into_inner());
                Ok(limits.tokens)
            })?,
        )?;
    }
    Ok(helpers)
}
