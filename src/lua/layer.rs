//! Middleware layers written in Lua (`swarm.layer { before, after }`).
//!
//! The functions live in the run's flow VM and are called there, on a new
//! coroutine, around each attempt:
//! - `before(ctx, input)` returns a new input (or nothing to keep it);
//!   `return nil, reason` rejects the attempt, which ends blocked with
//!   `{ code = "rejected", error = reason }`.
//! - `after(ctx, result)` gets `{ ok, value, status }` and may return a new
//!   `{ ok, value }` (or nothing to keep it).
//!
//! `ctx` is `{ task, attempt, agent }`. A layer that raises ends the attempt
//! blocked with `{ code = "layer_error", error = "file:line: ..." }`.

use super::error::root_message;
use super::modules::{returned_by, to_lua};
use super::sandbox::call_protected;
use crate::engine::{Outcome, SpawnCtx};
use crate::spawn::{Layer, layer_fn};
use mlua::{Function, Lua, MultiValue, Value};
use serde_json::json;
use std::sync::Arc;

/// Builds the layer `name` from its Lua functions.
pub fn lua_layer(
    lua: &Lua,
    name: &str,
    before: Option<Function>,
    after: Option<Function>,
) -> Arc<dyn Layer> {
    let lua = lua.clone();
    let name: Arc<str> = Arc::from(name);
    layer_fn(move |inner, ctx| {
        let (lua, name, inner) = (lua.clone(), name.clone(), inner.clone());
        let (before, after) = (before.clone(), after.clone());
        Box::pin(async move {
            let ctx = match &before {
                Some(f) => match call_before(&lua, f, ctx).await {
                    Ok(ctx) => ctx,
                    Err(out) => return Ok(out.with_layer(&name)),
                },
                None => ctx,
            };
            let task = ctx_table(&lua, &ctx);
            let out = inner.spawn(ctx).await?;
            match &after {
                Some(f) => Ok(call_after(&lua, f, task, out).await.with_layer(&name)),
                None => Ok(out),
            }
        })
    })
}

trait WithLayer {
    fn with_layer(self, name: &str) -> Self;
}

impl WithLayer for Outcome {
    /// Names the layer in a blocked result this layer produced.
    fn with_layer(self, name: &str) -> Outcome {
        match self {
            Outcome::Blocked(mut v)
                if v.get("code")
                    .is_some_and(|c| c == "rejected" || c == "layer_error") =>
            {
                v["layer"] = json!(name);
                Outcome::Blocked(v)
            }
            other => other,
        }
    }
}

fn ctx_table(lua: &Lua, ctx: &SpawnCtx) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    t.raw_set("task", ctx.task.0)?;
    t.raw_set("attempt", ctx.attempt)?;
    t.raw_set("agent", &*ctx.agent)?;
    Ok(t)
}

fn layer_error(e: impl std::fmt::Display) -> Outcome {
    Outcome::Blocked(json!({ "code": "layer_error", "error": e.to_string() }))
}

async fn call_before(lua: &Lua, f: &Function, mut ctx: SpawnCtx) -> Result<SpawnCtx, Outcome> {
    let args = (|| Ok::<_, mlua::Error>((ctx_table(lua, &ctx)?, to_lua(lua, &*ctx.input)?)))()
        .map_err(layer_error)?;
    let out: MultiValue = call_protected(lua, f, args)
        .await
        .map_err(|e| layer_error(root_message(&e)))?;
    let mut it = out.into_iter();
    match (
        it.next().unwrap_or(Value::Nil),
        it.next().unwrap_or(Value::Nil),
    ) {
        (Value::Nil, Value::Nil) => Ok(ctx),
        (Value::Nil, reason) => {
            let reason =
                returned_by(lua, reason, "the layer's rejection", Some(f)).map_err(layer_error)?;
            Err(Outcome::Blocked(
                json!({ "code": "rejected", "error": reason }),
            ))
        }
        (input, _) => {
            let input = returned_by(lua, input, "the layer's input", Some(f));
            ctx.input = Arc::new(input.map_err(layer_error)?);
            Ok(ctx)
        }
    }
}

async fn call_after(
    lua: &Lua,
    f: &Function,
    task: mlua::Result<mlua::Table>,
    out: Outcome,
) -> Outcome {
    let (ok, value) = match &out {
        Outcome::Pass(v) => (true, v.clone()),
        Outcome::Blocked(v) => (false, v.clone()),
        _ => return out,
    };
    let result = (|| {
        let r = lua.create_table()?;
        r.raw_set("ok", ok)?;
        r.raw_set("value", to_lua(lua, &value)?)?;
        r.raw_set("status", out.name())?;
        Ok::<_, mlua::Error>(r)
    })();
    let args = match (task, result) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) | (_, Err(e)) => return layer_error(e),
    };
    let first = call_protected(lua, f, args)
        .await
        .map(|v| v.into_iter().next().unwrap_or(Value::Nil));
    match first {
        Ok(Value::Nil) => out,
        Ok(Value::Table(t)) => {
            let ok = t.get::<Option<bool>>("ok").ok().flatten().unwrap_or(ok);
            let v = t.get::<Value>("value").unwrap_or(Value::Nil);
            match returned_by(lua, v, "the layer's result", Some(f)) {
                Ok(v) if ok => Outcome::Pass(v),
                Ok(v) => Outcome::Blocked(v),
                Err(e) => layer_error(e),
            }
        }
        Ok(other) => layer_error(format!(
            "after() must return nil or {{ ok, value }}, got {}",
            other.type_name()
        )),
        Err(e) => layer_error(root_message(&e)),
    }
}
