//! The `swarm.*` modules, registered in one ordered list.
//!
//! Each module has one `register(lua) -> Table` of host functions; the
//! embedded `swarm/init.lua` turns them into the user-facing `swarm` table,
//! which the flow library and the blueprint DSL join on first read
//! (`parts.rs`).

mod engine;
mod gate;
mod gather;
mod host;
mod journal;
pub(crate) use journal::ENTRY_OVERHEAD;
mod json;
mod log;
mod mob;
mod parts;
mod recv;
mod step;
mod time;
mod worker;

use super::ctx::VmCtx;
use super::embedded;
use super::error::{HostError, reply};
use super::location::caller_location;
use crate::auth::CapToken;
use crate::engine::Engine;
use mlua::{FromLua, Lua, LuaSerdeExt, Table, Value};
use std::future::Future;
use std::pin::Pin;

pub use parts::{load_all, skip_locations, validator};

/// A host module's builder: its table of host functions.
type Register = fn(&Lua) -> mlua::Result<Table>;

/// The host modules, each built on the first read of `swarm.<name>`
/// (`swarm/init.lua` wraps them; `parts.rs` freezes and keeps them): a Lua
/// agent that reads none of them builds none of them.
const MODULES: [(&str, Register); 6] = [
    ("engine", engine::register),
    ("gate", gate::register),
    ("worker", worker::register),
    ("json", json::register),
    ("log", log::register),
    ("time", time::register),
];

/// Builds the `swarm` table for a new VM.
pub fn compose(lua: &Lua) -> mlua::Result<Table> {
    let raw = lua.create_table()?;
    raw.raw_set(
        "module",
        lua.create_function(|lua, name: mlua::LuaString| {
            let name = name.to_str()?;
            match MODULES.iter().find(|(n, _)| *n == &*name) {
                Some((_, register)) => register(lua),
                None => Err(mlua::Error::RuntimeError(format!(
                    "no host module '{name}'"
                ))),
            }
        })?,
    )?;
    // One async host function for every verb that waits, built on the
    // first wait (`swarm/init.lua`): mlua compiles a Lua trampoline per
    // async function per VM, a tenth of building one, which a Lua agent
    // that never waits need not pay.
    raw.raw_set("wait", lua.create_function(|lua, ()| waiting(lua))?)?;
    raw.raw_set("journal_active", journal::active(lua)?)?;
    raw.raw_set("step_replayed", step::replayed_fn(lua)?)?;
    raw.raw_set("flow", lua.create_function(|lua, ()| parts::flow(lua))?)?;
    let (swarm, host, makers): (Table, Table, Table) =
        embedded::chunk(lua, embedded::INIT)?.call(raw)?;
    parts::defer(lua, &swarm, host, makers)?;
    Ok(swarm)
}

/// The async host function behind every verb that waits. It returns two
/// values, `ok, value_or_error` (mlua hands three or more back through a
/// table made per call); a step says `"failed"` instead of `true` when it
/// ran and did not pass.
fn waiting(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_async_function(
        |lua, (op, a, b, c): (String, Value, Value, Value)| async move {
            // Each verb's future is boxed on its own, so a waiting call
            // holds only its own verb's state, not the largest verb's:
            // a `map` keeps 100,000 steps waiting at once.
            type Waiting<'a> = Pin<Box<dyn Future<Output = Result<Value, HostError>> + Send + 'a>>;
            let r: Waiting<'_> = match op.as_str() {
                "step" => {
                    return match within_limits(&lua, Box::pin(step::step(&lua, a, b, c))).await? {
                        Ok((true, v)) => Ok((Value::Boolean(true), v)),
                        Ok((false, v)) => Ok((Value::String(lua.create_string("failed")?), v)),
                        Err(e) => reply(&lua, Err(e)).map(|(ok, v)| (Value::Boolean(ok), v)),
                    };
                }
                "sleep" => Box::pin(async {
                    // A replay check waits for nothing: the time a sleep
                    // had left is no part of the journal.
                    if journal::journal(&lua).is_some_and(|j| j.is_check()) {
                        return Ok(Value::Boolean(true));
                    }
                    match f64::from_lua(a, &lua) {
                        Ok(ms) => time::sleep(ms).await.map(|()| Value::Boolean(true)),
                        Err(e) => Err(HostError::new("bad_argument", format!("sleep: {e}"))),
                    }
                }),
                "gather" => Box::pin(gather::gather(&lua, a, b)),
                "journal_put" => Box::pin(journal::put(&lua, a, b)),
                "journal_question" => Box::pin(journal::question(&lua, a, b)),
                "recv" => Box::pin(recv::recv(&lua, a, b)),
                "mob" => Box::pin(mob::op(&lua, a, b, c)),
                "mob_ask" => Box::pin(mob::ask(&lua, a, b, c)),
                _ => Box::pin(engine::wait(&lua, &op, a, b)),
            };
            let r = within_limits(&lua, r).await?;
            reply(&lua, r).map(|(ok, v)| (Value::Boolean(ok), v))
        },
    )
}

/// Waits for `fut` within the VM's deadline and cancellation: while a
/// host call waits no Lua runs, so the hook cannot see either; past one,
/// the call is dropped (cancelling what it started) and the limit raised.
async fn within_limits<T>(lua: &Lua, fut: impl Future<Output = T>) -> mlua::Result<T> {
    let limits = lua.app_data_ref::<VmCtx>().map(|ctx| ctx.limits.clone());
    let Some(limits) = limits else {
        return Ok(fut.await);
    };
    let (deadline, cancel) = limits.watch();
    if deadline.is_none() && cancel.is_none() {
        return Ok(fut.await);
    }
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    let cancelled = async {
        match &cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let why = tokio::select! {
        biased;
        out = fut => return Ok(out),
        () = expired => crate::lua::Tripped::Deadline,
        () = cancelled => crate::lua::Tripped::Cancelled,
    };
    limits.trip(why);
    Err(limits.error(why, caller_location(lua, 0)))
}

/// Registers host function `name`, whose body returns
/// `Result<Value, HostError>`, with the `(ok, value_or_err)` convention.
pub(crate) fn verb<A, F>(lua: &Lua, t: &Table, name: &str, f: F) -> mlua::Result<()>
where
    A: mlua::FromLuaMulti,
    F: Fn(&Lua, A) -> Result<Value, HostError> + Send + 'static,
{
    t.raw_set(
        name,
        lua.create_function(move |lua, args: A| reply(lua, f(lua, args)))?,
    )
}

/// The VM's engine and its one token, or a `no_token` usage error.
pub(crate) fn caller(lua: &Lua) -> Result<(Engine, CapToken), HostError> {
    let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
    match ctx.token() {
        Some(tok) => Ok((ctx.host.engine.clone(), tok)),
        None => Err(no_token()),
    }
}

/// The usage error of a host verb called in a VM that holds no token.
pub(crate) fn no_token() -> HostError {
    HostError::new("no_token", "this VM holds no engine token")
}

/// Serialize options for values handed to Lua: absent → nil, JSON null →
/// `swarm.json.null`, arrays keep their array-ness (even when empty).
pub(crate) fn ser_opts() -> mlua::serde::SerializeOptions {
    mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(true)
        .set_array_metatable(true)
}

pub fn to_lua<T: serde::Serialize + ?Sized>(lua: &Lua, v: &T) -> mlua::Result<Value> {
    lua.to_value_with(v, ser_opts())
}

/// A task or flow input: JSON null at the top level becomes `nil`, so
/// `input and input.x` works as Lua programmers expect.
pub fn input_to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    match v {
        serde_json::Value::Null => Ok(Value::Nil),
        v => to_lua(lua, v),
    }
}

/// A task view as a Lua table, built field by field (no serde round trip
/// for the fixed fields).
pub(crate) fn view_to_lua(lua: &Lua, v: &crate::engine::TaskView) -> mlua::Result<Value> {
    let t = lua.create_table_with_capacity(0, 8)?;
    t.raw_set("id", v.id.0)?;
    t.raw_set("agent", &*v.agent)?;
    t.raw_set("status", v.status.as_str())?;
    t.raw_set("attempt", v.attempt)?;
    t.raw_set("depth", v.depth)?;
    if let Some(p) = v.parent {
        t.raw_set("parent", p.0)?;
    }
    t.raw_set("input", to_lua(lua, &*v.input)?)?;
    if let Some(r) = &v.result {
        t.raw_set("result", to_lua(lua, &**r)?)?;
    }
    Ok(Value::Table(t))
}

/// A value the run's entry function (the flow, an agent's body) returned,
/// as JSON. No frame of the function is left to name a line, so a usage
/// error names where the function is defined.
pub fn returned_to_json(lua: &Lua, v: Value, what: &str) -> Result<serde_json::Value, HostError> {
    let entry = lua.app_data_ref::<VmCtx>().and_then(|ctx| ctx.entry());
    returned_by(lua, v, what, entry.as_ref())
}

/// A value function `f` returned, as JSON; a usage error names where `f`
/// is defined.
pub(crate) fn returned_by(
    lua: &Lua,
    v: Value,
    what: &str,
    f: Option<&mlua::Function>,
) -> Result<serde_json::Value, HostError> {
    crate::lua::json::lua_to_json(lua, v).map_err(|e| {
        let at = f
            .and_then(crate::lua::location::defined_at)
            .unwrap_or_else(|| "?".into());
        HostError::new(
            conversion_code(lua),
            format!("{at}: {what} is not JSON-shaped ({e}); the function defined here returned it"),
        )
    })
}

/// Why a value did not convert: it would not fit in the VM's memory
/// (`memory_limit`, the walk tripped the VM), or it is not JSON-shaped.
fn conversion_code(lua: &Lua) -> &'static str {
    let memory = lua
        .app_data_ref::<VmCtx>()
        .is_some_and(|ctx| ctx.limits.tripped() == Some(crate::lua::Tripped::Memory));
    if memory { "memory_limit" } else { "bad_value" }
}

/// A Lua value as JSON, or a usage error naming what could not convert.
pub fn to_json(lua: &Lua, v: Value, what: &str) -> Result<serde_json::Value, HostError> {
    crate::lua::json::lua_to_json(lua, v).map_err(|e| {
        HostError::new(
            conversion_code(lua),
            format!(
                "{what} is not JSON-shaped ({e}) at {}",
                caller_location(lua, 0)
            ),
        )
    })
}
