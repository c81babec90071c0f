//! Where in the user's code something happened: `file:line` of the
//! innermost frame outside the embedded library, and the C wrapper that
//! keeps that frame on the stack when user code tail-calls the library.
//! A leaf of the Lua layer.

use super::ctx::VmCtx;
use mlua::{Lua, ffi};
use std::ffi::c_int;

/// `file:line` of the innermost Lua frame at or above `level` that is not
/// in the embedded library. When a tail call removed the caller's frame
/// (one the library's wrapper did not keep, see [`keep_caller`]), it falls
/// back to where the run's entry function was defined, marked as such;
/// `?` when nothing is known.
pub fn caller_location(lua: &Lua, level: usize) -> String {
    for lvl in level..level + 24 {
        let frame = lua.inspect_stack(lvl, |d| {
            let src = d.source();
            let short = src.short_src.as_deref().unwrap_or("?").to_string();
            // The embedded library and mlua's async trampoline are ours,
            // not the user's.
            let embedded = src
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("@swarm/") || s == "=__mlua_async_poll");
            (src.what, short, d.current_line(), embedded)
        });
        match frame {
            None => break,
            Some(("C", ..)) | Some((_, _, _, true)) => continue,
            Some((_, short, line, false)) => {
                return match line {
                    Some(l) => format!("{short}:{l}"),
                    None => short,
                };
            }
        }
    }
    lua.app_data_ref::<VmCtx>()
        .and_then(|ctx| defined_at(&ctx.entry()?))
        .map(|at| format!("{at} (in a tail call)"))
        .unwrap_or_else(|| "?".to_string())
}

/// Where the run's entry function is, for an error that left no frame to
/// name (an allocation past the memory limit unwinds without running any
/// handler): its file for a chunk, else `file:line (in the function
/// defined there)`.
pub fn entry_location(lua: &Lua) -> Option<String> {
    let entry = lua.app_data_ref::<VmCtx>()?.entry()?;
    let info = entry.info();
    if info.what == "main" {
        return info.short_src;
    }
    defined_at(&entry).map(|at| format!("{at} (in the function defined there)"))
}

/// `file:line` where `f` was defined.
pub fn defined_at(f: &mlua::Function) -> Option<String> {
    let info = f.info();
    // A main chunk reports line 0; its first line is the better guess.
    Some(format!("{}:{}", info.short_src?, info.line_defined?.max(1)))
}

/// `keep_caller(f)`: the library's Lua function `f` behind a C function
/// (other values as they are). A tail call to a Lua function replaces the
/// caller's frame; a tail call to a C function keeps it. So with every
/// function of the `swarm` library wrapped (`lua/swarm/frozen.lua`,
/// `modules/parts.rs`), `return swarm.step(...)` still leaves the user's
/// line on the stack, where errors and recorded locations find it.
///
/// # Safety
/// A Lua C function: call it only through Lua.
pub(crate) unsafe extern "C-unwind" fn keep_caller(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        ffi::lua_settop(state, 1);
        if ffi::lua_type(state, 1) == ffi::LUA_TFUNCTION && ffi::lua_iscfunction(state, 1) == 0 {
            ffi::lua_pushcclosure(state, call_kept, 1);
        }
        1
    }
}

/// The wrapper's body: calls its upvalue with every argument and returns
/// every result. The call may yield (a step waits): `results` finishes it.
unsafe extern "C-unwind" fn call_kept(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        let args = ffi::lua_gettop(state);
        // A C function starts with LUA_MINSTACK free slots: room for one.
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_insert(state, 1);
        ffi::lua_callk(state, args, ffi::LUA_MULTRET, 0, Some(results));
        results(state, ffi::LUA_OK, 0)
    }
}

/// Everything on the wrapper's stack once the call returned: its results.
unsafe extern "C-unwind" fn results(
    state: *mut ffi::lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    unsafe { ffi::lua_gettop(state) }
}
