//! Helpers the embedded flow and blueprint libraries need from the host.
//! They are passed to those chunks only, not put in the `swarm` table,
//! and built when the first of those chunks loads (see `parts.rs`).

use crate::auth::{Role, Verb};
use crate::lua::ctx::VmCtx;
use crate::lua::error::error_table;
use crate::lua::location::caller_location;
use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua, t: &Table) -> mlua::Result<()> {
    t.raw_set(
        "where",
        lua.create_function(|lua, ()| Ok(caller_location(lua, 0)))?,
    )?;
    // The flow library's errors: the one shape, at the user's line.
    t.raw_set(
        "error",
        lua.create_function(
            |lua, (code, message, fields): (String, String, Option<Table>)| {
                let e = error_table(lua, &code, &message)?;
                if let Some(fields) = fields {
                    for pair in fields.pairs::<Value, Value>() {
                        let (k, v) = pair?;
                        e.raw_set(k, v)?;
                    }
                }
                Ok(e)
            },
        )?,
    )?;
    t.raw_set(
        "current_task",
        lua.create_function(|lua, ()| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            let task = ctx
                .parent()
                .map(|t| t.0)
                .or_else(|| ctx.token().and_then(|t| t.claims.task));
            Ok(task.map_or(Value::Nil, |t| Value::Integer(t as i64)))
        })?,
    )?;
    t.raw_set(
        "is_layer",
        lua.create_function(|lua, key: String| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            Ok(ctx.host.layers.contains(&key))
        })?,
    )?;
    // What is wrong with a `{ "key", opt = … }` layer entry by its
    // layer's declared options: `{ needle, message }`, or nil.
    t.raw_set(
        "layer_problem",
        lua.create_function(|lua, entry: Table| {
            let key: String = entry.raw_get(1)?;
            let mut opts = serde_json::Map::new();
            for pair in entry.pairs::<Value, Value>() {
                let (k, v) = pair?;
                if let Value::String(k) = k {
                    let v: serde_json::Value =
                        mlua::LuaSerdeExt::from_value(lua, v).unwrap_or(serde_json::Value::Null);
                    opts.insert(k.to_str()?.to_string(), v);
                }
            }
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            let Some((needle, message)) = ctx
                .host
                .layers
                .option_problem(&key, &serde_json::Value::Object(opts))
            else {
                return Ok(Value::Nil);
            };
            let out = lua.create_table()?;
            out.raw_set("needle", needle)?;
            out.raw_set("message", message)?;
            Ok(Value::Table(out))
        })?,
    )?;
    t.raw_set(
        "did_you_mean",
        lua.create_function(|_, (name, known): (String, Vec<String>)| {
            Ok(crate::text::did_you_mean(
                &name,
                known.iter().map(String::as_str),
            ))
        })?,
    )?;
    t.raw_set(
        "layer_keys",
        lua.create_function(|lua, ()| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            Ok(ctx.host.layers.keys().join(", "))
        })?,
    )?;
    t.raw_set(
        "agent_kinds",
        lua.create_function(|lua, ()| agent_kinds(lua))?,
    )?;
    t.raw_set(
        "agent_kind_names",
        lua.create_function(|lua, ()| {
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            lua.create_sequence_from(ctx.host.kinds.iter().map(|k| k.name))
        })?,
    )?;
    t.raw_set(
        "duration_ms",
        lua.create_function(|_, s: String| Ok(crate::duration::parse_ms(&s).ok()))?,
    )?;
    t.raw_set(
        "is_role",
        lua.create_function(|_, role: Value| {
            Ok(role.to_string().is_ok_and(|r| r.parse::<Role>().is_ok()))
        })?,
    )?;
    t.raw_set(
        "is_verb",
        lua.create_function(|_, verb: Value| {
            Ok(verb.to_string().is_ok_and(|v| v.parse::<Verb>().is_ok()))
        })?,
    )
}

/// The host's agent kinds as Lua data for blueprint validation (built
/// when a blueprint is first validated): `{ [name] = { about, fields = {
/// [field] = type }, requires = { fields = {...}, message } } }`, plus
/// `profile` and `list` (the constructors, for messages).
fn agent_kinds(lua: &Lua) -> mlua::Result<Table> {
    use crate::spawn::kinds::{PROFILE, constructors};
    let kinds_of = lua
        .app_data_ref::<VmCtx>()
        .expect("VmCtx")
        .host
        .kinds
        .clone();
    let fields = |list: &[(&str, &str)]| -> mlua::Result<Table> {
        let t = lua.create_table()?;
        for (k, v) in list {
            t.raw_set(*k, *v)?;
        }
        Ok(t)
    };
    let kinds = lua.create_table()?;
    for k in kinds_of.iter() {
        let requires = lua.create_table()?;
        requires.raw_set(
            "fields",
            lua.create_sequence_from(k.requires.0.iter().copied())?,
        )?;
        requires.raw_set("message", k.requires.1)?;
        let entry = lua.create_table()?;
        entry.raw_set("about", k.about)?;
        entry.raw_set("fields", fields(k.fields)?)?;
        entry.raw_set("requires", requires)?;
        kinds.raw_set(k.name, entry)?;
    }
    let t = lua.create_table()?;
    t.raw_set("kinds", kinds)?;
    t.raw_set("profile", fields(PROFILE)?)?;
    t.raw_set("list", constructors(&kinds_of))?;
    Ok(t)
}
