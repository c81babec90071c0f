//! Host errors as Lua sees them, built in exactly one place.
//!
//! Host functions return `(true, value)` or `(false, err)`; the embedded
//! wrappers in `lua/swarm/init.lua` raise `err` for verbs (misuse and refusals
//! raise). `err` is a table `{ code = "forbidden", message = "...", where =
//! "flow.lua:12" }` whose `__tostring` reads `flow.lua:12: message [code]`.
//! `where` is the first Lua frame outside the embedded library, so users see
//! their own file and line.

use crate::engine::EngineError;
use crate::spawn::SpawnError;
use mlua::{Lua, Table, Value};

const ERROR_MT: &str = "swarm.error_mt";

/// Anything with a stable code and a message.
pub trait Coded: std::fmt::Display {
    fn code(&self) -> &'static str;
}

impl Coded for EngineError {
    fn code(&self) -> &'static str {
        EngineError::code(self)
    }
}

impl Coded for SpawnError {
    fn code(&self) -> &'static str {
        SpawnError::code(self)
    }
}

/// A misuse detected by the Lua layer itself (bad argument, unknown agent).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LuaUsage {
    pub code: &'static str,
    pub message: String,
}

impl LuaUsage {
    pub fn new(code: &'static str, message: impl Into<String>) -> LuaUsage {
        LuaUsage {
            code,
            message: message.into(),
        }
    }
}

impl From<EngineError> for LuaUsage {
    fn from(e: EngineError) -> LuaUsage {
        LuaUsage::new(e.code(), e.to_string())
    }
}

/// A Lua value that could not be built or converted.
impl From<mlua::Error> for LuaUsage {
    fn from(e: mlua::Error) -> LuaUsage {
        LuaUsage::new("convert", e.to_string())
    }
}

impl Coded for LuaUsage {
    fn code(&self) -> &'static str {
        self.code
    }
}

/// `file:line` of the innermost Lua frame at or above `level` that is not
/// in the embedded library. When a tail call (`return swarm.step(...)`)
/// removed the caller's frame, it falls back to where the run's entry
/// function was defined, marked as such; `?` when nothing is known.
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
    lua.app_data_ref::<super::sandbox::VmCtx>()
        .and_then(|ctx| ctx.entry_location())
        .map(|at| format!("{at} (in a tail call)"))
        .unwrap_or_else(|| "?".to_string())
}

/// `file:line` where `f` was defined.
pub fn defined_at(f: &mlua::Function) -> Option<String> {
    let info = f.info();
    // A main chunk reports line 0; its first line is the better guess.
    Some(format!("{}:{}", info.short_src?, info.line_defined?.max(1)))
}

/// The shared metatable of error tables (created once per VM).
pub fn install_error_metatable(lua: &Lua) -> mlua::Result<()> {
    let mt: Table = super::embedded::chunk(lua, super::embedded::ERROR_MT)?.call(())?;
    lua.set_named_registry_value(ERROR_MT, mt)
}

/// The shared metatable of error tables.
pub(crate) fn error_metatable(lua: &Lua) -> mlua::Result<Table> {
    lua.named_registry_value(ERROR_MT)
}

/// Builds an error table for `code` and `message` at the caller's location.
pub fn error_table(lua: &Lua, code: &str, message: &str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("code", code)?;
    t.raw_set("message", message)?;
    t.raw_set("where", caller_location(lua, 0))?;
    let mt: Table = lua.named_registry_value(ERROR_MT)?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}

/// `(true, value)` or `(false, error table)`.
pub fn reply<E: Coded>(lua: &Lua, r: Result<Value, E>) -> mlua::Result<(bool, Value)> {
    match r {
        Ok(v) => Ok((true, v)),
        Err(e) => Ok((
            false,
            Value::Table(error_table(lua, e.code(), &e.to_string())?),
        )),
    }
}
