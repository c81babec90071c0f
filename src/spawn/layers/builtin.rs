//! Built-in layers, by hint key. Options are JSON objects; a missing or
//! wrong option is a `layer_options` error naming the layer and the option.
//!
//! - `audit`: notes attempt start and end (outcome, µs) in the ledger.
//! - `retry {max = 3, backoff_ms = 100, on = {"blocked", "timeout"}}`: runs
//!   the worker again (same attempt) after an exponential backoff.
//! - `timeout {ms}`: an attempt running longer ends as `timeout`.
//! - `long_hold {warn_ms}`: logs and notes an attempt running past `warn_ms`.
//! - `senior_escalation {timeout_ms}`: on blocked, asks the senior; the answer
//!   becomes `{ original, override }` (pass unless the answer has `ok = false`).
//! - `rate_limit {per_sec, burst}`: token bucket over attempt starts.
//! - `concurrency {max}`: at most `max` attempts in flight through this stack.

use super::{LayerEnv, LayerRegistry, layer_fn};
use crate::engine::{Outcome, SpawnError};
use crate::spawn::Layer;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

fn bad(layer: &str, message: impl Into<String>) -> SpawnError {
    SpawnError::LayerOptions {
        layer: layer.into(),
        message: message.into(),
    }
}

/// Option `key`: a non-negative number; for a `…ms` option also a
/// duration such as `"1s"`.
fn num(opts: &Value, layer: &str, key: &str, default: Option<f64>) -> Result<f64, SpawnError> {
    let is_ms = key == "ms" || key.ends_with("_ms");
    match opts.get(key) {
        Some(Value::String(s)) if is_ms => {
            crate::duration::parse_ms(s).map_err(|e| bad(layer, format!("`{key}`: {e}")))
        }
        Some(v) => v.as_f64().filter(|n| *n >= 0.0).ok_or_else(|| {
            let what = if is_ms {
                "a duration (milliseconds, or text such as \"500ms\" or \"2s\")"
            } else {
                "a non-negative number"
            };
            bad(layer, format!("`{key}` must be {what}"))
        }),
        None => default.ok_or_else(|| {
            let example = if is_ms { " = \"2s\"" } else { " = 1" };
            bad(
                layer,
                format!("needs `{key}`, e.g. {{ \"{layer}\", {key}{example} }}"),
            )
        }),
    }
}

/// Registers every built-in layer; each is one function below.
pub fn register_all(reg: &mut LayerRegistry) {
    reg.register_with("audit", &[], &[], audit);
    reg.register_with("timeout", &["ms"], &["ms"], timeout);
    reg.register_with("retry", &["max", "backoff_ms", "on"], &[], retry);
    reg.register_with("long_hold", &["warn_ms"], &["warn_ms"], long_hold);
    reg.register_with("senior_escalation", &["timeout_ms"], &[], senior_escalation);
    reg.register_with(
        "rate_limit",
        &["per_sec", "burst"],
        &["per_sec"],
        rate_limit,
    );
    reg.register_with("concurrency", &["max"], &["max"], concurrency);
}

/// Notes attempt start and end (outcome, µs) in the ledger.
fn audit(_opts: &Value, env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let engine = env.engine.clone();
    Ok(layer_fn(move |inner, ctx| {
        let (engine, inner) = (engine.clone(), inner.clone());
        Box::pin(async move {
            let started = Instant::now();
            engine.note(
                ctx.task,
                "audit",
                json!({"phase": "start", "attempt": ctx.attempt}),
            );
            let (task, attempt) = (ctx.task, ctx.attempt);
            let out = inner.spawn(ctx).await;
            let name = out.as_ref().map_or("error", Outcome::name);
            let us = started.elapsed().as_micros() as u64;
            engine.note(
                task,
                "audit",
                json!({"phase": "end", "attempt": attempt, "outcome": name, "us": us}),
            );
            out
        })
    }))
}

/// An attempt running longer than `ms` ends as `timeout`.
fn timeout(opts: &Value, _env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let limit = Duration::from_secs_f64(num(opts, "timeout", "ms", None)? / 1000.0);
    Ok(layer_fn(move |inner, ctx| {
        let worker = inner.spawn(ctx);
        Box::pin(async move {
            tokio::time::timeout(limit, worker)
                .await
                .unwrap_or(Ok(Outcome::Timeout))
        })
    }))
}

/// Runs the worker again (same attempt) after an exponential backoff.
fn retry(opts: &Value, env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let engine = env.engine.clone();
    let max = num(opts, "retry", "max", Some(3.0))?.max(1.0) as u32;
    let backoff = num(opts, "retry", "backoff_ms", Some(100.0))?;
    let on: Vec<String> = match opts.get("on") {
        None => vec!["blocked".into(), "timeout".into()],
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| bad("retry", "`on` must be a list of outcome names"))?,
    };
    Ok(layer_fn(move |inner, ctx| {
        let (inner, on, engine) = (inner.clone(), on.clone(), engine.clone());
        Box::pin(async move {
            let mut try_no = 1;
            loop {
                let mut this = ctx.clone();
                this.retry = try_no - 1;
                let out = inner.spawn(this).await;
                let name = out.as_ref().map_or("error", Outcome::name);
                if try_no >= max || !on.iter().any(|o| o == name) || ctx.cancel.is_cancelled() {
                    return out;
                }
                let wait = backoff * 2f64.powi(try_no as i32 - 1);
                // Each retry leaves a trace: which try failed, how, and why.
                let cause = match &out {
                    Ok(Outcome::Blocked(v)) => v.clone(),
                    Ok(other) => json!(other.name()),
                    Err(e) => json!({ "error": e.to_string(), "code": e.code() }),
                };
                engine.note(
                    ctx.task,
                    "retry",
                    json!({ "try": try_no, "outcome": name, "cause": cause,
                            "next_try": try_no + 1, "backoff_ms": wait }),
                );
                tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
                try_no += 1;
            }
        })
    }))
}

/// Logs and notes an attempt running past `warn_ms`.
fn long_hold(opts: &Value, env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let warn = Duration::from_secs_f64(num(opts, "long_hold", "warn_ms", None)? / 1000.0);
    let engine = env.engine.clone();
    Ok(layer_fn(move |inner, ctx| {
        let (task, engine) = (ctx.task, engine.clone());
        let mut worker = inner.spawn(ctx);
        Box::pin(async move {
            tokio::select! {
                out = &mut worker => return out,
                _ = tokio::time::sleep(warn) => {}
            }
            tracing::warn!(%task, warn_ms = warn.as_millis() as u64, "attempt is taking long");
            engine.note(
                task,
                "long_hold",
                json!({"warn_ms": warn.as_millis() as u64}),
            );
            worker.await
        })
    }))
}

/// On blocked, asks the senior; the answer overrides.
fn senior_escalation(opts: &Value, env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let wait = Duration::from_secs_f64(
        num(opts, "senior_escalation", "timeout_ms", Some(86_400_000.0))? / 1000.0,
    );
    let env = env.clone();
    Ok(layer_fn(move |inner, ctx| {
        let (inner, env) = (inner.clone(), env.clone());
        Box::pin(async move {
            let (task, agent) = (ctx.task, ctx.agent.clone());
            let out = inner.spawn(ctx).await?;
            let Outcome::Blocked(original) = out else {
                return Ok(out);
            };
            let question = json!({
                "key": format!("escalate:{agent}"),
                "text": format!("agent `{agent}` is blocked; answer to override"),
                "agent": &*agent, "task": task.0, "blocked": original,
            });
            let key = env.engine.query_senior(&env.token, task, question)?;
            let answer = env.engine.await_resume(&env.token, &key, wait).await?;
            let ok = answer.get("ok").and_then(Value::as_bool).unwrap_or(true);
            let value = json!({ "original": original, "override": *answer });
            Ok(if ok {
                Outcome::Pass(value)
            } else {
                Outcome::Blocked(value)
            })
        })
    }))
}

/// A token bucket over attempt starts.
fn rate_limit(opts: &Value, _env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let rate = num(opts, "rate_limit", "per_sec", None)?;
    if rate <= 0.0 {
        return Err(bad("rate_limit", "`per_sec` must be positive"));
    }
    let burst = num(opts, "rate_limit", "burst", Some(1.0))?.max(1.0);
    let bucket = Arc::new(Mutex::new((burst, Instant::now())));
    Ok(layer_fn(move |inner, ctx| {
        let (inner, bucket) = (inner.clone(), bucket.clone());
        Box::pin(async move {
            loop {
                let wait = {
                    let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(burst);
                    b.1 = now;
                    if b.0 >= 1.0 {
                        b.0 -= 1.0;
                        None
                    } else {
                        Some((1.0 - b.0) / rate)
                    }
                };
                match wait {
                    None => break,
                    Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
                }
            }
            inner.spawn(ctx).await
        })
    }))
}

/// At most `max` attempts in flight through this stack.
fn concurrency(opts: &Value, _env: &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> {
    let max = num(opts, "concurrency", "max", None)? as usize;
    if max == 0 {
        return Err(bad("concurrency", "`max` must be at least 1"));
    }
    let permits = Arc::new(Semaphore::new(max));
    Ok(layer_fn(move |inner, ctx| {
        let (inner, permits) = (inner.clone(), permits.clone());
        Box::pin(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .map_err(|_| SpawnError::Closed("the rate limit"))?;
            inner.spawn(ctx).await
        })
    }))
}
