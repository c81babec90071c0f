//! Host errors as Lua sees them, built in exactly one place.
//!
//! Host functions return `(true, value)` or `(false, err)`; the embedded
//! wrappers in `lua/swarm/init.lua` raise `err` for verbs (misuse and refusals
//! raise). `err` is a table `{ code = "forbidden", message = "...", where =
//! "flow.lua:12" }` whose `__tostring` reads `flow.lua:12: message [code]`.
//! `where` is the first Lua frame outside the embedded library, so users see
//! their own file and line.

use super::ctx::ERROR_MT;
use super::location::caller_location;
use crate::engine::EngineError;
use crate::engine::SpawnError;
use mlua::{Lua, Table, Value};

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

/// `m` with one traceback: the one taken where the error happened (see
/// `protect`); the one mlua appends where it was raised again shows only
/// the host's plumbing.
fn without_traceback(m: &str) -> String {
    const TB: &str = "\nstack traceback:";
    match m
        .find(TB)
        .and_then(|i| m[i + 1..].find(TB).map(|j| i + 1 + j))
    {
        Some(second) => m[..second].to_string(),
        None => m.to_string(),
    }
}

/// The innermost message, without mlua's traceback decoration.
pub(crate) fn root_message(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => root_message(cause),
        mlua::Error::WithContext { cause, .. } => root_message(cause),
        mlua::Error::RuntimeError(m) => without_traceback(m),
        other => without_traceback(&other.to_string()),
    }
}
