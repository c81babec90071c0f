//! The sandbox's standard library: what replaces or wraps the stock one.
//!
//! Frozen (read-only) tables, `print` to the log, `collectgarbage("count")`,
//! a `rawset` that refuses frozen tables, `require` of the embedded library
//! and the blueprint's own files, text-only `load` defaulting to the run's
//! environment, budgeted string patterns, a size-checked `string.rep`, a
//! reduced `os`, and the `pcall`/`xpcall`/`coroutine.resume` guards. Used
//! only by `sandbox::build`.

use super::ctx::VmCtx;
use super::ctx::{CURRENT, ERROR_MT, RAISED_MT, RAW_SETMETATABLE};
use super::embedded;
use super::error::root_message;
use super::frozen::is_frozen;
use super::limits::{Limits, Tripped};
use super::location::caller_location;
use super::meter;
use super::pattern;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, Table, Value, Variadic};
use std::sync::Arc;
use std::time::Instant;

fn ctx_limits(lua: &Lua) -> Arc<Limits> {
    lua.app_data_ref::<VmCtx>().expect("VmCtx").limits.clone()
}

pub(crate) fn replace_base(lua: &Lua, g: &Table) -> mlua::Result<()> {
    g.raw_set(
        "print",
        lua.create_function(|lua, args: Variadic<Value>| {
            let line = meter::line(lua, &args, "\t")?;
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            (ctx.host.print)(&line);
            Ok(())
        })?,
    )?;
    g.raw_set(
        "collectgarbage",
        lua.create_function(|lua, opt: Option<String>| match opt.as_deref() {
            None | Some("count") => Ok(lua.used_memory() as f64 / 1024.0),
            Some(other) => Err(mlua::Error::RuntimeError(format!(
                "{}: collectgarbage(\"{other}\") is not available in the sandbox (only \"count\")",
                caller_location(lua, 0)
            ))),
        })?,
    )?;
    g.raw_set(
        "rawset",
        lua.create_function(|lua, (t, k, v): (Table, Value, Value)| {
            if is_frozen(lua, &t) {
                return Err(mlua::Error::RuntimeError(format!(
                    "{}: attempt to modify a read-only table with rawset",
                    caller_location(lua, 0)
                )));
            }
            t.raw_set(k, v)?;
            Ok(t)
        })?,
    )?;
    g.raw_set(
        "setmetatable",
        no_finalizers(lua, {
            let raw: Function = g.raw_get("setmetatable")?;
            lua.set_named_registry_value(RAW_SETMETATABLE, &raw)?;
            raw
        })?,
    )?;
    g.raw_set("load", sandboxed_load(lua)?)?;
    let current = lua.create_table()?;
    current.raw_set("loaded", lua.create_table()?)?;
    lua.set_named_registry_value(CURRENT, &current)?;
    // `require "swarm"` opens nearly every task of a Lua agent: answered
    // from the VM's own `swarm` table without a lookup by name.
    g.raw_set(
        "require",
        lua.create_function(move |lua, name: String| {
            if name == "swarm" {
                // Set when the VM is built, before any user code runs.
                let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
                return Ok(ctx.swarm.get().cloned().map_or(Value::Nil, Value::Table));
            }
            let loaded: Table = current.raw_get("loaded")?;
            if let Some(v) = loaded.raw_get::<Option<Value>>(name.as_str())? {
                return Ok(v);
            }
            let v = embedded::require(lua, &name)?;
            loaded.raw_set(name.as_str(), v.clone())?;
            Ok(v)
        })?,
    )?;
    Ok(())
}

/// `setmetatable` that refuses a metatable with a `__gc` field. Lua 5.4 runs
/// finalizers with hooks off, so a finalizer could never be held to an
/// instruction budget, deadline or cancellation, and it would run whenever
/// the collector gets to it, even during a later task. As in Luau, user
/// tables get no finalizers. (Lua marks an object for finalization only if
/// its metatable has `__gc` when it is set, so adding one later is inert.)
fn no_finalizers(lua: &Lua, raw: Function) -> mlua::Result<Function> {
    lua.create_function(move |lua, (t, mt): (Value, Value)| {
        if let Value::Table(m) = &mt
            && !m.raw_get::<Value>("__gc")?.is_nil()
        {
            return Err(mlua::Error::RuntimeError(format!(
                "{}: setmetatable: finalizers (__gc) are not available in the sandbox",
                caller_location(lua, 0)
            )));
        }
        raw.call::<Value>((t, mt))
    })
}

/// `load`: text chunks only; the default environment is the current run's.
fn sandboxed_load(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(
        move |lua, (chunk, name, mode, e): (Value, Option<String>, Option<String>, Option<Table>)| {
            let Value::String(src) = chunk else {
                return Err(mlua::Error::RuntimeError(format!(
                    "{}: load: only string chunks are allowed in the sandbox",
                    caller_location(lua, 0)
                )));
            };
            let bytes = src.as_bytes();
            // Compiling is host work in proportion to the source.
            meter::charge(lua, bytes.len() as u64 / 8)?;
            if mode.as_deref().is_some_and(|m| !m.contains('t')) || bytes.first() == Some(&0x1b) {
                return Ok((Value::Nil, Value::String(lua.create_string(
                    "attempt to load a binary chunk (binary chunks are not allowed in the sandbox)",
                )?)));
            }
            let f = lua
                .load(&bytes[..])
                .set_name(name.unwrap_or_else(|| "=(load)".into()))
                .set_mode(ChunkMode::Text)
                .set_environment(match e {
                    Some(e) => e,
                    None => lua.named_registry_value::<Table>(CURRENT)?.raw_get("env")?,
                })
                .into_function();
            match f {
                Ok(f) => Ok((Value::Function(f), Value::Nil)),
                Err(err) => Ok((Value::Nil, Value::String(lua.create_string(root_message(&err))?))),
            }
        },
    )
}

pub(crate) fn replace_string(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let s: Table = g.raw_get("string")?;
    s.raw_set("dump", Value::Nil)?;
    fn charge(lua: &Lua) -> impl Fn(u64) -> mlua::Result<()> + '_ {
        let limits = ctx_limits(lua);
        move |n: u64| {
            limits
                .charge(n)
                .map_err(|t| limits.error(t, caller_location(lua, 0)))
        }
    }
    s.raw_set(
        "find",
        lua.create_function(move |lua, args| {
            let c = charge(lua);
            pattern::find(lua, args, true, &c)
        })?,
    )?;
    s.raw_set(
        "match",
        lua.create_function(
            move |lua, (a, b, c): (mlua::LuaString, mlua::LuaString, Option<i64>)| {
                let ch = charge(lua);
                pattern::find(lua, (a, b, c, None), false, &ch)
            },
        )?,
    )?;
    s.raw_set(
        "gsub",
        lua.create_function(move |lua, args| {
            let c = charge(lua);
            pattern::gsub(lua, args, &c)
        })?,
    )?;
    s.raw_set(
        "gmatch",
        lua.create_function(
            move |lua, (src, pat, init): (mlua::LuaString, mlua::LuaString, Option<i64>)| {
                let mut pos = pattern::gmatch_start(init, src.as_bytes().len());
                let mut last = None;
                lua.create_function_mut(move |lua, ()| {
                    let c = charge(lua);
                    pattern::gmatch_next(
                        lua,
                        &src.as_bytes(),
                        &pat.as_bytes(),
                        &mut pos,
                        &mut last,
                        &c,
                    )
                })
            },
        )?,
    )?;
    s.raw_set(
        "rep",
        lua.create_function(
            |lua, (s, n, sep): (mlua::LuaString, i64, Option<mlua::LuaString>)| {
                let (s, sep) = (s.as_bytes(), sep.as_ref().map(|x| x.as_bytes()));
                let sep_len = sep.as_ref().map_or(0, |x| x.len());
                // Nothing to repeat is nothing to do, however large `n` is.
                if n <= 0 || s.len() + sep_len == 0 {
                    return lua.create_string("");
                }
                let total = (s.len() as u128 + sep_len as u128) * n as u128;
                meter::reserve(
                    lua,
                    "string.rep's result",
                    total.min(usize::MAX as u128) as usize,
                )?;
                let mut out = Vec::with_capacity(total as usize);
                for i in 0..n {
                    if i > 0
                        && let Some(sep) = &sep
                    {
                        out.extend_from_slice(sep);
                    }
                    out.extend_from_slice(&s);
                }
                lua.create_string(&out)
            },
        )?,
    )?;
    Ok(())
}

/// `table.insert`, `remove`, `move`, `concat`, `unpack` and `sort` whose
/// loops the limits reach (see `lua/swarm/tablelib.lua`).
pub(crate) fn replace_table(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let t: Table = g.raw_get("table")?;
    let math: Table = g.raw_get("math")?;
    let charge = lua.create_function(|lua, n: i64| meter::charge(lua, n.max(0) as u64))?;
    let lib: Table = embedded::chunk(lua, embedded::TABLELIB)?.call((
        t.raw_get::<Function>("concat")?,
        t.raw_get::<Function>("unpack")?,
        t.raw_get::<Function>("sort")?,
        charge,
        math.raw_get::<Function>("tointeger")?,
        math.raw_get::<Function>("ult")?,
        g.raw_get::<Function>("getmetatable")?,
    ))?;
    for name in ["insert", "remove", "move", "concat", "unpack", "sort"] {
        t.raw_set(name, lib.raw_get::<Function>(name)?)?;
    }
    Ok(())
}

pub(crate) fn reduced_os(lua: &Lua) -> mlua::Result<Table> {
    let os = lua.create_table()?;
    os.raw_set(
        "time",
        lua.create_function(|lua, t: Option<Value>| {
            if t.is_some() {
                return Err(mlua::Error::RuntimeError(format!(
                    "{}: os.time(table) is not available in the sandbox",
                    caller_location(lua, 0)
                )));
            }
            Ok(crate::engine::now_ms() / 1000)
        })?,
    )?;
    let start = Instant::now();
    os.raw_set(
        "clock",
        lua.create_function(move |_, ()| Ok(start.elapsed().as_secs_f64()))?,
    )?;
    Ok(os)
}

/// A message handler: a string error gets the Lua traceback of where it
/// happened appended (as `luaL_traceback` writes it); other values pass
/// through. Plain C, so it is safe where Lua code must not run (inside the
/// limit hook) and never allocates a Lua frame.
unsafe extern "C-unwind" fn traceback(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    unsafe {
        if ffi::lua_type(state, 1) == ffi::LUA_TSTRING {
            let msg = ffi::lua_tostring(state, 1);
            ffi::luaL_traceback(state, state, msg, 1);
        } else {
            ffi::lua_settop(state, 1);
        }
    }
    1
}

/// The message handler of the host's entry points (flows, agents, layers):
/// as [`traceback`] for strings; any other value that is not an error
/// table (a plain table, a number, nil, a host function's error) is
/// wrapped as
/// `{ value = v, traceback = "stack traceback: ..." }` marked with the
/// [`RAISED_MT`] metatable, so the host can say where it was raised (Lua
/// gives such values no position). Only the host ever sees the wrapper:
/// the script's own `pcall`s and coroutines keep [`traceback`].
unsafe extern "C-unwind" fn host_traceback(state: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    unsafe {
        let passes = match ffi::lua_type(state, 1) {
            ffi::LUA_TSTRING => return traceback(state),
            ffi::LUA_TTABLE if ffi::lua_getmetatable(state, 1) != 0 => {
                ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, c"swarm.error_mt".as_ptr());
                ffi::lua_rawequal(state, -1, -2) != 0
            }
            _ => false,
        };
        ffi::lua_settop(state, 1);
        if passes {
            return 1;
        }
        ffi::lua_createtable(state, 0, 2);
        ffi::lua_pushvalue(state, 1);
        ffi::lua_setfield(state, 2, c"value".as_ptr());
        ffi::luaL_traceback(state, state, std::ptr::null(), 1);
        ffi::lua_setfield(state, 2, c"traceback".as_ptr());
        ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, c"swarm.raised_mt".as_ptr());
        ffi::lua_setmetatable(state, 2);
    }
    1
}

/// Instructions charged per `coroutine.resume`: a resume/yield round trip
/// costs about as much host CPU as this many plain instructions.
const RESUME_COST: u64 = 200;

/// Registry slot of the thread the limit hook last paused at the end of
/// its time slice (`limits.rs` names it as a literal).
const SLICED: &str = "swarm.sliced";

/// `pcall`, `xpcall`, `coroutine.resume` and `coroutine.wrap` that respect
/// the limits (see `lua/swarm/guards.lua`).
pub(crate) fn install_guards(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let tripped = lua.create_function(|lua, err: Value| {
        let limits = ctx_limits(lua);
        if let Value::String(s) = &err
            && s.as_bytes().as_ref() == b"not enough memory"
        {
            limits.trip(Tripped::Memory);
        }
        Ok(limits.tripped().is_some())
    })?;
    let charge = lua.create_function(|lua, ()| {
        let limits = ctx_limits(lua);
        limits
            .charge(RESUME_COST)
            .map_err(|t| limits.error(t, caller_location(lua, 0)))
    })?;
    let co: Table = g.raw_get("coroutine")?;
    let guards: Table = embedded::chunk(lua, embedded::GUARDS)?.call((
        g.raw_get::<Function>("pcall")?,
        g.raw_get::<Function>("xpcall")?,
        co.raw_get::<Function>("resume")?,
        co.raw_get::<Function>("create")?,
        co.raw_get::<Function>("close")?,
        co.raw_get::<Function>("status")?,
        co.raw_get::<Function>("yield")?,
        Value::LightUserData(Lua::poll_pending()),
        lua.create_function(|lua, ()| lua.gc_collect())?,
        tripped,
        charge,
        unsafe { lua.create_c_function(traceback)? },
        unsafe { lua.create_c_function(host_traceback)? },
        lua.create_function(|lua, co: Value| {
            let marked: Value = lua.named_registry_value(SLICED)?;
            let ours = matches!((&marked, &co), (Value::Thread(a), Value::Thread(b)) if a == b);
            if ours {
                lua.set_named_registry_value(SLICED, Value::Nil)?;
            }
            Ok(ours)
        })?,
        lua.create_function(|lua, ()| lua.set_named_registry_value(SLICED, lua.current_thread()))?,
        co.raw_get::<Function>("isyieldable")?,
    ))?;
    // The C handler names these slots as literals.
    debug_assert_eq!((ERROR_MT, RAISED_MT), ("swarm.error_mt", "swarm.raised_mt"));
    lua.set_named_registry_value(RAISED_MT, lua.create_table()?)?;
    g.raw_set("pcall", guards.raw_get::<Function>("pcall")?)?;
    g.raw_set("xpcall", guards.raw_get::<Function>("xpcall")?)?;
    co.raw_set("wrap", guards.raw_get::<Function>("wrap")?)?;
    co.raw_set("create", guards.raw_get::<Function>("create")?)?;
    if let Some(ctx) = lua.app_data_ref::<super::ctx::VmCtx>() {
        let _ = ctx.protect.set(guards.raw_get::<Function>("protect")?);
    }
    co.raw_set("resume", guards.raw_get::<Function>("resume")?)?;
    co.raw_set("close", guards.raw_get::<Function>("close")?)?;
    co.raw_set("yield", guards.raw_get::<Function>("yield")?)?;
    Ok(())
}
