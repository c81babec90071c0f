//! When a Lua agent's body may serve the next task without evaluating its
//! chunk again. A leaf of the Lua layer: two C functions for
//! `lua/swarm/entry.lua`, never reachable from user code.
//!
//! Each task gets a fresh environment, and the chunk is evaluated afresh so
//! the body's upvalues (the chunk's locals) are fresh too. A body whose
//! upvalues are its `_ENV` (the task's environment) and values no task can
//! change inside (nil, booleans, numbers, strings, light userdata, the
//! host's read-only tables such as `swarm`) holds no state of its own once
//! each upvalue is set back to its first value: such a body is kept, and
//! each later task only resets its upvalues, `_ENV` to the new environment.
//! Functions and other tables may hold state (a closure's upvalues, a
//! `gmatch` iterator's position), so a body that captures one is built
//! afresh for every task. Evaluating the chunk was two fifths of a step.

use mlua::ffi;
use std::ffi::{CStr, c_int};

/// `reusable(f, env)`: the values of `f`'s upvalues by index when `f` is a
/// Lua function whose upvalues are all `_ENV` holding exactly `env`, or
/// values no task can change inside; `false` otherwise.
pub(crate) unsafe extern "C-unwind" fn reusable(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        if ffi::lua_type(state, 1) != ffi::LUA_TFUNCTION || ffi::lua_iscfunction(state, 1) != 0 {
            ffi::lua_pushboolean(state, 0);
            return 1;
        }
        ffi::lua_settop(state, 2);
        ffi::lua_createtable(state, 0, 0);
        for i in 1..=255 {
            let name = ffi::lua_getupvalue(state, 1, i);
            if name.is_null() {
                break;
            }
            let ok = if CStr::from_ptr(name) == c"_ENV" {
                ffi::lua_rawequal(state, -1, 2) != 0
            } else {
                unchanging(state, -1)
            };
            if !ok {
                ffi::lua_pushboolean(state, 0);
                return 1;
            }
            ffi::lua_rawseti(state, 3, i as ffi::lua_Integer);
        }
    }
    1
}

/// Whether no Lua code can change anything inside the value at `idx`.
unsafe fn unchanging(state: *mut ffi::lua_State, idx: c_int) -> bool {
    unsafe {
        let idx = ffi::lua_absindex(state, idx);
        match ffi::lua_type(state, idx) {
            ffi::LUA_TNIL
            | ffi::LUA_TBOOLEAN
            | ffi::LUA_TNUMBER
            | ffi::LUA_TSTRING
            | ffi::LUA_TLIGHTUSERDATA => true,
            // A read-only view the host made (see `frozen.rs`): its
            // metatable's `__frozen` is the registry-held sentinel, never
            // a value a script could have set.
            ffi::LUA_TTABLE if ffi::lua_getmetatable(state, idx) != 0 => {
                ffi::lua_pushstring(state, c"__frozen".as_ptr());
                ffi::lua_rawget(state, -2);
                ffi::lua_getfield(state, ffi::LUA_REGISTRYINDEX, c"swarm.frozen".as_ptr());
                let frozen = ffi::lua_type(state, -1) == ffi::LUA_TTABLE
                    && ffi::lua_rawequal(state, -1, -2) != 0;
                ffi::lua_pop(state, 3);
                frozen
            }
            _ => false,
        }
    }
}

/// `rebind(f, env, saved)`: sets every upvalue of a body [`reusable`]
/// accepted back to its saved value, and `_ENV` to `env`.
pub(crate) unsafe extern "C-unwind" fn rebind(state: *mut ffi::lua_State) -> c_int {
    unsafe {
        for i in 1..=255 {
            let name = ffi::lua_getupvalue(state, 1, i);
            if name.is_null() {
                break;
            }
            let env = CStr::from_ptr(name) == c"_ENV";
            ffi::lua_pop(state, 1);
            if env {
                ffi::lua_pushvalue(state, 2);
            } else {
                ffi::lua_rawgeti(state, 3, i as ffi::lua_Integer);
            }
            ffi::lua_setupvalue(state, 1, i);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use mlua::{Function, Lua, Table, Value};

    /// Which bodies are kept, and a kept body reads the environment it
    /// was last pointed at, its other upvalues set back.
    #[test]
    fn only_bodies_whose_upvalues_are_the_env_or_unchanging_are_kept() {
        let lua = Lua::new();
        let (reusable, rebind) = unsafe {
            (
                lua.create_c_function(super::reusable).unwrap(),
                lua.create_c_function(super::rebind).unwrap(),
            )
        };
        let env = |x: i64| {
            let t = lua.create_table().unwrap();
            t.raw_set("x", x).unwrap();
            t
        };
        let (one, two) = (env(1), env(2));
        let body = |src: &str, env: &Table| -> Function {
            lua.load(src).set_environment(env.clone()).call(()).unwrap()
        };
        let saved = |f: &Function, env: &Table| -> Value { reusable.call((f, env)).unwrap() };
        let kept = |f: &Function, env: &Table| saved(f, env).is_table();
        let reads_x = body("return function() return x end", &one);
        assert!(kept(&reads_x, &one));
        assert!(!kept(&reads_x, &two), "its _ENV is another table");
        assert!(kept(&body("return function() return 1 end", &one), &two));
        let counter = body(
            "local n = 0 return function() n = n + 1 return n + x end",
            &one,
        );
        assert!(kept(&counter, &one), "a number upvalue, set back each task");
        let table = body("local t = {} return function() return t end", &one);
        assert!(!kept(&table, &one), "a table that can change");
        let closure = body(
            "local function f() end return function() return f end",
            &one,
        );
        assert!(!kept(&closure, &one), "a function, which may hold state");
        let own_env = body(
            "local _ENV = { x = 3 } return function() return x end",
            &one,
        );
        assert!(!kept(&own_env, &one), "an _ENV of its own");
        let print: Function = lua.globals().get("print").unwrap();
        assert!(!kept(&print, &one), "a C function");
        let first = saved(&counter, &one);
        assert_eq!(counter.call::<i64>(()).unwrap(), 2);
        assert_eq!(counter.call::<i64>(()).unwrap(), 3);
        rebind.call::<()>((&counter, &two, first)).unwrap();
        assert_eq!(
            counter.call::<i64>(()).unwrap(),
            3,
            "n set back to 0, x from two"
        );
    }
}
