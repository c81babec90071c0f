//! Read-only tables: the frozen views of the library tables and of the
//! metatables the host shares between objects. A leaf of the Lua layer.

use super::ctx::{FREEZE, FROZEN_SENTINEL};
use super::location::caller_location;
use mlua::{Function, Lua, Table, Value};

/// A read-only view of `t`: reads fall through, writes raise, the metatable
/// is hidden, `pairs` walks the original. Nested tables of the `swarm`
/// library are frozen too. (The walk is `lua/swarm/frozen.lua`.)
pub(crate) fn freeze(lua: &Lua, name: &str, t: Table) -> mlua::Result<Table> {
    let freeze: Function = lua.named_registry_value(FREEZE)?;
    freeze.call((name, t, name.starts_with("swarm")))
}

/// The metamethods every frozen table shares, created once per VM.
pub(crate) fn install_frozen_metamethods(lua: &Lua) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    shared.raw_set(
        "__newindex",
        lua.create_function(|lua, (t, k): (Table, Value)| {
            let label: String = t
                .metatable()
                .and_then(|mt| mt.raw_get("__label").ok())
                .unwrap_or_default();
            Err::<(), _>(mlua::Error::RuntimeError(format!(
                "{}: attempt to modify read-only table '{label}' (field '{}')",
                caller_location(lua, 0),
                k.to_string().unwrap_or_default()
            )))
        })?,
    )?;
    // `pairs(frozen)` walks the backing table through a host iterator that
    // takes the proxy, never the backing table: Lua code only ever holds
    // the proxy, so it cannot write to what the proxy protects.
    let next: Function = lua.globals().raw_get("next")?;
    let frozen_next = lua.create_function(move |lua, (proxy, key): (Table, Value)| {
        let backing: Table = match proxy.metatable() {
            Some(mt) if is_frozen(lua, &proxy) => mt.raw_get("__index")?,
            _ => return Err(mlua::Error::RuntimeError("not a read-only table".into())),
        };
        next.call::<mlua::MultiValue>((backing, key))
    })?;
    // A backing table whose fields are built on first read (the `swarm`
    // table, see modules/parts.rs) says how to build them all: `__fill`.
    shared.raw_set(
        "__pairs",
        lua.create_function(move |_, t: Table| {
            let backing = t.metatable().map(|mt| mt.raw_get::<Table>("__index"));
            if let Some(backing) = backing.transpose()?
                && let Some(fill) = backing.metatable()
                && let Some(fill) = fill.raw_get::<Option<Function>>("__fill")?
            {
                fill.call::<()>(backing)?;
            }
            Ok((frozen_next.clone(), t, Value::Nil))
        })?,
    )?;
    shared.raw_set("__metatable", "locked")?;
    let sentinel = lua.create_table()?;
    lua.set_named_registry_value(FROZEN_SENTINEL, &sentinel)?;
    shared.raw_set("__frozen", sentinel)?;
    // The stock functions, taken before the sandbox replaces any.
    let g = lua.globals();
    let freeze: Function = super::embedded::chunk(lua, super::embedded::FROZEN)?.call((
        &shared,
        g.raw_get::<Function>("setmetatable")?,
        g.raw_get::<Function>("rawset")?,
        g.raw_get::<Function>("getmetatable")?,
        g.raw_get::<Function>("next")?,
        g.raw_get::<Function>("type")?,
        // SAFETY: a plain C function that only wraps the value it is given.
        unsafe { lua.create_c_function(super::location::keep_caller)? },
    ))?;
    lua.set_named_registry_value(FREEZE, freeze)
}

/// Whether `t` is one of the host's read-only tables: its metatable's
/// `__frozen` is the registry-held sentinel, which no script can reach.
pub(crate) fn is_frozen(lua: &Lua, t: &Table) -> bool {
    let Some(mt) = t.metatable() else {
        return false;
    };
    let Ok(Value::Table(mark)) = mt.raw_get::<Value>("__frozen") else {
        return false;
    };
    lua.named_registry_value::<Table>(FROZEN_SENTINEL)
        .is_ok_and(|sentinel| sentinel == mark)
}

/// Makes a metatable the host shares between objects (error tables, JSON
/// arrays) read-only to Lua: `getmetatable(obj)` returns a frozen view of
/// it, so reads work and `getmetatable(a) == getmetatable(b)` holds, but
/// nothing one task writes there can reach the next.
pub(crate) fn lock_metatable(lua: &Lua, name: &str, mt: &Table) -> mlua::Result<()> {
    let view = freeze(lua, name, mt.clone())?;
    mt.raw_set("__metatable", view)
}
