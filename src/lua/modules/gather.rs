//! `gather`: runs Lua functions as concurrent coroutines of one run.
//!
//! The flow library's `parallel`, `all_settled`, `race`, `any` and `map` all
//! come here. Each function becomes an mlua async thread, taken from the
//! VM's pool of finished ones (reset: its stack cleared, its `<close>`
//! variables closed, so nothing of one branch reaches the next); they are
//! polled together inside the caller's own future (no tokio task, no OS
//! thread per branch), at most `concurrency` at a time. Every branch
//! function returns `ok, value` (the flow library wraps user functions in
//! `pcall`), so errors stay Lua values. Branches that lose a race or follow
//! a failure are dropped, which cancels their in-flight steps.

use crate::lua::error::HostError;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mlua::{Function, Lua, MultiValue, Value};
use std::task::Poll;

/// How many branches start before those already done are taken.
const START_BATCH: usize = 64;

/// Branches in flight at once, whatever `concurrency` asks: each holds a
/// Lua thread and one of mlua's reference slots, whose stack ends at a
/// million. Branches past it start as earlier ones end.
const MAX_IN_FLIGHT: usize = 250_000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    All { fail_fast: bool },
    Race,
    Any,
}

fn usage(e: mlua::Error) -> HostError {
    match e {
        mlua::Error::MemoryError(m) => HostError::new(
            "memory_limit",
            format!("gather: {m} (raise the flow VM's memory limit for this many branches)"),
        ),
        e => HostError::new("bad_argument", format!("gather: {e}")),
    }
}

pub async fn gather(lua: &Lua, fns: Value, opts: Value) -> Result<Value, HostError> {
    let Value::Table(fns) = fns else {
        return Err(HostError::new(
            "bad_argument",
            "gather: expects a list of functions",
        ));
    };
    let opts = match opts {
        Value::Table(t) => Some(t),
        _ => None,
    };
    let get = |k: &str| opts.as_ref().and_then(|o| o.get::<Value>(k).ok());
    let mode = match get("mode").and_then(|v| v.to_string().ok()).as_deref() {
        Some("race") => Mode::Race,
        Some("any") => Mode::Any,
        _ => Mode::All {
            fail_fast: get("fail_fast").is_some_and(|v| v.as_boolean() == Some(true)),
        },
    };
    let limit = get("concurrency")
        .and_then(|v| v.as_integer())
        .filter(|n| *n > 0)
        .map_or(MAX_IN_FLIGHT, |n| (n as usize).min(MAX_IN_FLIGHT));
    // Each function is taken as its branch starts: a reference per item
    // held up front would run out of slots past a million items.
    let n = fns.raw_len();
    let mut pending = 0..n;
    let mut running = FuturesUnordered::new();
    let mut refill = true;
    // Mode::All answers `{ ok = {...}, value = {...}, failed = i }`: two
    // arrays rather than a table per branch (a `map` over 100,000 items
    // made 100,000 of them, each with three string keys to intern).
    // A race or an `any` answers one branch: its arrays stay unsized.
    let all = if matches!(mode, Mode::All { .. }) {
        n
    } else {
        0
    };
    let oks = lua.create_table_with_capacity(all, 0).map_err(usage)?;
    let values = lua.create_table_with_capacity(all, 0).map_err(usage)?;
    let errors = lua.create_table().map_err(usage)?;
    loop {
        // Branches start a batch at a time, and those that finished at once
        // are taken between batches: every branch still starts without
        // waiting for another to end, but a `map` whose items end at once
        // (replayed, or pure Lua) never holds all its coroutines together.
        if refill {
            for i in pending
                .by_ref()
                .take(START_BATCH.min(limit - running.len()))
            {
                let f: Function = fns.raw_get(i + 1).map_err(usage)?;
                let fut = f.call_async::<MultiValue>(());
                running.push(async move { (i, fut.await) });
            }
        }
        let more = !pending.is_empty() && running.len() < limit;
        refill = true;
        let next = if more {
            // Take what is done; start the next batch once nothing is.
            let once = std::future::poll_fn(|cx| Poll::Ready(running.poll_next_unpin(cx)));
            match once.await {
                Poll::Ready(Some(next)) => {
                    refill = false;
                    Some(next)
                }
                Poll::Ready(None) | Poll::Pending => continue,
            }
        } else {
            running.next().await
        };
        let Some((i, out)) = next else {
            break;
        };
        // A branch that raised past its pcall hit a VM limit: stop everything.
        let returned = out.map_err(|e| match e {
            e @ mlua::Error::MemoryError(_) => usage(e),
            e => HostError::new("branch_failed", e.to_string()),
        })?;
        let mut it = returned.into_iter();
        let ok = it.next().and_then(|v| v.as_boolean()).unwrap_or(false);
        let value = it.next().unwrap_or(Value::Nil);
        match mode {
            Mode::Race => return winner(lua, ok, value, i),
            Mode::Any if ok => return winner(lua, ok, value, i),
            Mode::Any => errors.raw_set(i + 1, value).map_err(usage)?,
            Mode::All { fail_fast } => {
                oks.raw_set(i + 1, ok).map_err(usage)?;
                values.raw_set(i + 1, value).map_err(usage)?;
                if fail_fast && !ok {
                    return settled(lua, oks, values, Some(i + 1));
                }
            }
        }
    }
    if mode == Mode::Any {
        let entry = lua.create_table().map_err(usage)?;
        entry.raw_set("ok", false).map_err(usage)?;
        entry.raw_set("errors", errors).map_err(usage)?;
        return Ok(Value::Table(entry));
    }
    settled(lua, oks, values, None)
}

/// A race's or an `any`'s answer: `{ ok, value, index }` of one branch.
fn winner(lua: &Lua, ok: bool, value: Value, i: usize) -> Result<Value, HostError> {
    let entry = lua.create_table().map_err(usage)?;
    entry.raw_set("ok", ok).map_err(usage)?;
    entry.raw_set("value", value).map_err(usage)?;
    entry.raw_set("index", i + 1).map_err(usage)?;
    Ok(Value::Table(entry))
}

/// Mode::All's answer: each branch's `ok` and value by index (nil where a
/// branch never finished), and the branch whose failure stopped the rest.
fn settled(
    lua: &Lua,
    oks: mlua::Table,
    values: mlua::Table,
    failed: Option<usize>,
) -> Result<Value, HostError> {
    let out = lua.create_table_with_capacity(0, 3).map_err(usage)?;
    out.raw_set("ok", oks).map_err(usage)?;
    out.raw_set("value", values).map_err(usage)?;
    out.raw_set("failed", failed).map_err(usage)?;
    Ok(Value::Table(out))
}
