//! Host errors as Lua sees them, built in exactly one place.
//!
//! Host functions return `(true, value)` or `(false, err)`; the embedded
//! wrappers in `lua/swarm/init.lua` raise `err` for verbs (misuse and refusals
//! raise). `err` is a table `{ code = "forbidden", message = "...", where =
//! "flow.lua:12" }` whose `__tostring` reads `flow.lua:12: message [code]`.
//! `where` is the first Lua frame outside the embedded library, so users see
//! their own file and line.

use super::ctx::{ERROR_MT, RAISED_MT};
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

/// An error a host function hands to Lua (a misuse such as a bad argument
/// or an unknown agent, or an engine refusal), with its stable code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub code: &'static str,
    pub message: String,
}

impl HostError {
    pub fn new(code: &'static str, message: impl Into<String>) -> HostError {
        HostError {
            code,
            message: message.into(),
        }
    }
}

impl From<EngineError> for HostError {
    fn from(e: EngineError) -> HostError {
        HostError::new(e.code(), e.to_string())
    }
}

/// A Lua value that could not be built or converted.
impl From<mlua::Error> for HostError {
    fn from(e: mlua::Error) -> HostError {
        HostError::new("convert", e.to_string())
    }
}

impl Coded for HostError {
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
    let first = match m
        .find(TB)
        .and_then(|i| m[i + 1..].find(TB).map(|j| i + 1 + j))
    {
        Some(second) => &m[..second],
        None => m,
    };
    user_frames(first)
}

/// The traceback of `m` with the host's own frames left out (the embedded
/// library, the protected-call plumbing, mlua's async trampoline), so the
/// frames shown are the user's; without any, no traceback header.
pub fn user_frames(m: &str) -> String {
    const TB: &str = "\nstack traceback:";
    let Some(at) = m.find(TB) else {
        return m.to_string();
    };
    // C frames are the host's and the Lua library's (`error`, the wrappers
    // that keep the caller's frame); the user's code is Lua.
    let internal = |line: &str| {
        let l = line.trim_start();
        l.starts_with("swarm/")
            || l.starts_with("[C]:")
            || l.starts_with("(...tail calls...)")
            || l.contains("__mlua_async_poll")
    };
    let frames: Vec<&str> = m[at + TB.len()..]
        .lines()
        .filter(|l| !l.trim().is_empty() && !internal(l))
        .collect();
    if frames.is_empty() {
        return m[..at].to_string();
    }
    format!("{}{TB}\n{}", &m[..at], frames.join("\n"))
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

/// An error table (the one shape: `code`, `message`, `where`, and what
/// else its raiser added, e.g. a step error's `agent`, `task`, `result`)
/// that Lua code raised and nothing caught. It reaches the host as data,
/// not as text, so a run's result keeps the chain of causes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct Raised {
    pub code: String,
    /// `where: message [code]`.
    pub text: String,
    /// The table as JSON (its fields that are JSON-shaped).
    pub value: serde_json::Value,
}

/// The error a protected call ended with, from the error value itself:
/// an error table stays data ([`Raised`]); a host error (a tripped limit)
/// stays typed; a string is a runtime error.
pub(crate) fn from_error_value(lua: &Lua, v: Value) -> mlua::Error {
    match v {
        Value::Error(e) => *e,
        Value::Table(t) if is_error_table(lua, &t) => {
            let get = |k: &str| t.raw_get::<Option<String>>(k).ok().flatten();
            let code = get("code").unwrap_or_else(|| "lua_error".into());
            // As the error table's `__tostring` reads (`swarm/error.lua`).
            let text = format!(
                "{}: {} [{code}]",
                get("where").unwrap_or_else(|| "?".into()),
                get("message").unwrap_or_default()
            );
            let value = super::json::lua_to_json(lua, Value::Table(t))
                .unwrap_or_else(|_| serde_json::json!({ "code": code, "message": text }));
            mlua::Error::external(Raised { code, text, value })
        }
        Value::Table(t) if has_metatable(lua, &t, RAISED_MT) => {
            let value = t.raw_get("value").unwrap_or(Value::Nil);
            let traceback: String = t.raw_get("traceback").unwrap_or_default();
            match value {
                // Typed errors keep their type (and limits their own place).
                Value::Error(e) if typed(&e) => *e,
                // A host function's refusal (a bad argument mlua could not
                // convert, say): its text, where the user called it.
                Value::Error(e) => {
                    mlua::Error::RuntimeError(located(&root_message(&e), &traceback))
                }
                v => mlua::Error::RuntimeError(located(&describe(lua, v), &traceback)),
            }
        }
        Value::String(s) => mlua::Error::RuntimeError(s.to_string_lossy()),
        other => mlua::Error::RuntimeError(
            other
                .to_string()
                .unwrap_or_else(|_| format!("(error object is a {} value)", other.type_name())),
        ),
    }
}

fn is_error_table(lua: &Lua, t: &Table) -> bool {
    has_metatable(lua, t, ERROR_MT)
}

fn has_metatable(lua: &Lua, t: &Table, slot: &str) -> bool {
    match (t.metatable(), lua.named_registry_value::<Table>(slot)) {
        (Some(mt), Ok(shared)) => mt == shared,
        _ => false,
    }
}

/// An error the host tells apart by its type, not its text.
fn typed(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            typed(cause)
        }
        mlua::Error::MemoryError(_) | mlua::Error::SyntaxError { .. } => true,
        mlua::Error::ExternalError(x) => x.is::<super::limits::LimitError>() || x.is::<Raised>(),
        _ => false,
    }
}

/// A raised value that is not a string, as text: its `__tostring`, a
/// plain table as JSON, anything else by its type (as `lua.c` says it).
fn describe(lua: &Lua, v: Value) -> String {
    let plain = matches!(&v, Value::Table(t) if t.metatable().is_none());
    if plain && let Ok(json) = super::json::lua_to_json(lua, v.clone()) {
        return json.to_string();
    }
    match v {
        Value::Integer(_) | Value::Number(_) | Value::Boolean(_) | Value::Table(_) => v
            .to_string()
            .unwrap_or_else(|_| format!("(error object is a {} value)", v.type_name())),
        other => format!("(error object is a {} value)", other.type_name()),
    }
}

/// `what` headed by the user's file:line where it was raised (the first of
/// the user's frames in `traceback`), followed by those frames.
fn located(what: &str, traceback: &str) -> String {
    let frames = user_frames(&format!("{what}\n{traceback}"));
    // `what` may span lines (a `__tostring`): the first frame follows the
    // traceback header.
    let at = frames
        .split_once("\nstack traceback:\n")
        .and_then(|(_, tb)| tb.lines().next())
        .and_then(|f| f.trim().split_once(": in "))
        .map(|(at, _)| at.to_string());
    match at {
        Some(at) if !what.starts_with(&format!("{at}:")) => format!("{at}: {frames}"),
        _ => frames,
    }
}

/// The [`Raised`] error inside `err`, if any.
pub(crate) fn find_raised(err: &mlua::Error) -> Option<Raised> {
    match err {
        mlua::Error::ExternalError(e) => e.downcast_ref::<Raised>().cloned(),
        mlua::Error::CallbackError { cause, .. } => find_raised(cause),
        mlua::Error::WithContext { cause, .. } => find_raised(cause),
        _ => None,
    }
}
