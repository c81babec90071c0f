//! Journal hooks for the flow library: replay recorded calls by position,
//! record new ones (waiting for the commit), and refuse a flow that asks for
//! something other than what its journal recorded at that position.
//! Present in every VM; inert unless the VM's run has a journal.

use super::to_json;
use crate::lua::ctx::VmCtx;
use crate::lua::error::HostError;
use crate::lua::location::caller_location;
use crate::store::{Halt, Journal, JournalEntry, QuestionRecord, input_hash};
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::sync::Arc;

/// What an entry costs beyond its value: position, kind, key, hash, row.
pub(crate) const ENTRY_OVERHEAD: u64 = 128;

/// Refuses, before anything is stored, an entry of `bytes` that would take
/// the run's journal past its budget (`journal_budget`).
pub(super) fn within_budget(lua: &Lua, what: &str, bytes: usize) -> Result<(), HostError> {
    let Some(ctx) = lua.app_data_ref::<VmCtx>() else {
        return Ok(());
    };
    let (entries, used) = *ctx.journal_used.lock().unwrap_or_else(|e| e.into_inner());
    let limits = *ctx.run_limits.lock().unwrap_or_else(|e| e.into_inner());
    let max_entries = limits
        .journal_entries
        .unwrap_or(crate::lua::JOURNAL_ENTRIES);
    let max_bytes = limits.journal_bytes.unwrap_or(crate::lua::JOURNAL_BYTES);
    let bytes = used + bytes as u64 + ENTRY_OVERHEAD;
    if entries < max_entries && bytes <= max_bytes {
        return Ok(());
    }
    Err(HostError::new(
        "journal_budget",
        format!(
            "{}: {what} would take the run's journal past its budget of {max_entries} \
             entries or {} ({entries} entries and {} journaled so far; `limits.journal_entries`, \
             `limits.journal_bytes` raise it)",
            caller_location(lua, 0),
            crate::engine::size::human(max_bytes as usize),
            crate::engine::size::human(used as usize),
        ),
    ))
}

/// Counts an entry of `bytes` that was stored.
fn spent(lua: &Lua, bytes: usize) {
    if let Some(ctx) = lua.app_data_ref::<VmCtx>() {
        let mut used = ctx.journal_used.lock().unwrap_or_else(|e| e.into_inner());
        used.0 += 1;
        used.1 += bytes as u64 + ENTRY_OVERHEAD;
    }
}

/// The JSON size of `v`, refused past the engine's payload limit (the
/// one every step input, result and question meets) before it is stored.
fn admit(lua: &Lua, what: &'static str, v: &serde_json::Value) -> Result<usize, HostError> {
    let limit = lua
        .app_data_ref::<VmCtx>()
        .map_or(usize::MAX, |ctx| ctx.host.engine.payload_limit());
    let bytes = crate::engine::size::measure(v, limit).json;
    if bytes > limit {
        return Err(crate::engine::EngineError::TooLarge { what, bytes, limit }.into());
    }
    within_budget(lua, what, bytes)?;
    Ok(bytes)
}

pub(super) fn journal(lua: &Lua) -> Option<Arc<Journal>> {
    lua.app_data_ref::<VmCtx>().and_then(|ctx| ctx.journal())
}

/// The number of the journal attached to this VM's run (unique per
/// execution), or nil: asked before every journaled call and every read
/// of the clock, so a number, not the run id, which would allocate.
pub fn active(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, ()| {
        let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
        Ok(ctx.journal_id().map(|id| id as i64))
    })
}

pub fn register(lua: &Lua, host: &Table) -> mlua::Result<()> {
    // found, ok, value, input hash — or raises when the flow diverged from
    // its journal. The hash goes back into `journal_put`.
    host.raw_set(
        "journal_get",
        lua.create_function(
            |lua, (pos, kind, key, input): (String, String, String, Value)| {
                let Some(j) = journal(lua) else {
                    return Ok((false, Value::Nil, Value::Nil, None));
                };
                let input =
                    to_json(lua, input, "journaled input").map_err(mlua::Error::external)?;
                let hash = input_hash(&input);
                let Some(e) = replay(lua, &j, &pos, &kind, &key, &hash)? else {
                    return Ok((false, Value::Nil, Value::Nil, Some(hash)));
                };
                let value = lua.to_value_with(&e.value, super::ser_opts())?;
                Ok((true, Value::Boolean(e.ok), value, Some(hash)))
            },
        )?,
    )?;
    host.raw_set(
        "question_name",
        lua.create_function(|lua, q: Value| {
            let q = to_json(lua, q, "question").map_err(mlua::Error::external)?;
            Ok(QuestionRecord::name_of(&q))
        })?,
    )?;
    host.raw_set(
        "journal_asked",
        lua.create_function(|lua, (key, pos): (String, String)| {
            if let Some(j) = journal(lua) {
                j.asked(&key, &pos);
            }
            Ok(())
        })?,
    )?;
    Ok(())
}

/// The entry an earlier execution recorded at `pos`, if any; halts the run
/// as diverged when that entry is a different call (kind, key or input).
/// In a replay check, a call with no entry halts it at its frontier: a
/// check runs nothing.
pub(super) fn replay(
    lua: &Lua,
    j: &Journal,
    pos: &str,
    kind: &str,
    key: &str,
    hash: &str,
) -> mlua::Result<Option<JournalEntry>> {
    let Some(e) = j.take(pos) else {
        if j.is_check() {
            let msg = format!(
                "{}: the flow asks for {kind}({key}, input hash {hash}) at position {pos}, \
                 past the journal",
                caller_location(lua, 0)
            );
            return Err(halt_at(lua, j, Halt::Frontier, msg, pos));
        }
        return Ok(None);
    };
    if e.kind == kind && e.key == key && e.input_hash == hash {
        return Ok(Some(e));
    }
    // A check says what it found; a run also says how to go on.
    let hint = match j.is_check() {
        true => String::new(),
        false => format!("; fix or revert the code, then `swarm resume {}`", j.run()),
    };
    let msg = format!(
        "{}: flow is not deterministic: journal has {}({}, input hash {}) at position {pos}, \
         flow asked for {kind}({key}, input hash {hash}){hint}",
        caller_location(lua, 0),
        e.kind,
        e.key,
        e.input_hash,
    );
    Err(halt_at(lua, j, Halt::Diverged, msg, pos))
}

/// Records a call's outcome and waits for the commit; a failed write
/// interrupts the run.
pub(super) async fn record(
    lua: &Lua,
    j: &Journal,
    at: (&str, &str, &str),
    hash: String,
    ok: bool,
    value: serde_json::Value,
) -> Result<(), HostError> {
    let (pos, kind, key) = at;
    let bytes = crate::engine::size::measure(&value, usize::MAX).json;
    j.record(pos, kind, key, hash, ok, value)
        .await
        .map_err(|e| fault(lua, j, e))?;
    spent(lua, bytes);
    Ok(())
}

/// Records an entry taken from another run (a fork's reused step) and
/// waits for the commit; a failed write interrupts the run.
pub(super) async fn record_taken(lua: &Lua, j: &Journal, e: JournalEntry) -> Result<(), HostError> {
    let bytes = crate::engine::size::measure(&e.value, usize::MAX).json;
    j.write(e).await.map_err(|e| fault(lua, j, e))?;
    spent(lua, bytes);
    Ok(())
}

/// Waits until this execution provably still owns its run (at once, but
/// for a renewal after a pause): asked before every step is dispatched. A
/// lost run stops here, before the step starts: nothing runs in an owner
/// that was fenced out.
pub(super) async fn hold(lua: &Lua, j: &Journal) -> Result<(), HostError> {
    match j.hold().await {
        Ok(()) => Ok(()),
        Err(lost) => {
            let _ = halt(lua, j, Halt::Lost, lost.message.clone());
            Err(HostError::new("run_lost", lost.message))
        }
    }
}

/// [`hold`] for the journal of this VM's run, if it has one.
pub(super) async fn hold_run(lua: &Lua) -> Result<(), HostError> {
    match journal(lua) {
        Some(j) => hold(lua, &j).await,
        None => Ok(()),
    }
}

pub(super) fn store_err(e: crate::store::StoreError) -> HostError {
    HostError::new("journal", e.to_string())
}

/// Stops the run for `why`: records it on the journal and trips the VM, so
/// no `pcall` in the flow can swallow it and the flow ends at once. The run
/// then ends resumable (see [`Halt::status`]), never as a step failure.
pub(super) fn halt(lua: &Lua, j: &Journal, why: Halt, message: String) -> mlua::Error {
    j.halt(why, message.clone());
    trip(lua, message)
}

/// [`halt`] at journal position `pos`.
fn halt_at(lua: &Lua, j: &Journal, why: Halt, message: String, pos: &str) -> mlua::Error {
    j.halt_at(why, message.clone(), pos);
    trip(lua, message)
}

fn trip(lua: &Lua, message: String) -> mlua::Error {
    if let Some(ctx) = lua.app_data_ref::<VmCtx>() {
        ctx.limits.trip(crate::lua::Tripped::Cancelled);
    }
    mlua::Error::RuntimeError(message)
}

/// A failed journal write: the run is interrupted, naming the cause.
fn fault(lua: &Lua, j: &Journal, e: crate::store::StoreError) -> HostError {
    let message = format!(
        "{e}; the run is interrupted: `swarm resume {}` continues it",
        j.run()
    );
    let _ = halt(lua, j, Halt::Fault, message.clone());
    HostError::new("journal_fault", message)
}

/// `wait("journal_put", pos, { kind, key, hash, ok, value })`, `hash` being
/// what `journal_get` returned for the same call.
pub async fn put(lua: &Lua, pos: Value, spec: Value) -> Result<Value, HostError> {
    let Some(j) = journal(lua) else {
        return Ok(Value::Boolean(false));
    };
    let bad = |m: &str| HostError::new("bad_argument", format!("journal_put: {m}"));
    let pos = pos.to_string().map_err(|_| bad("position"))?;
    let Value::Table(spec) = spec else {
        return Err(bad("spec"));
    };
    let get = |k: &str| spec.get::<Value>(k).unwrap_or(Value::Nil);
    let kind = get("kind").to_string().map_err(|_| bad("kind"))?;
    let key = get("key").to_string().map_err(|_| bad("key"))?;
    let hash = get("hash").to_string().map_err(|_| bad("hash"))?;
    let ok = get("ok").as_boolean().unwrap_or(false);
    let value = to_json(lua, get("value"), "journaled value")?;
    admit(lua, "a journaled value", &value)?;
    record(lua, &j, (&pos, &kind, &key), hash, ok, value).await?;
    Ok(Value::Boolean(true))
}

/// `wait("journal_question", pos, question)`: stores the question (so
/// `swarm answer` can find it) and returns an answer already given, if any.
pub async fn question(lua: &Lua, pos: Value, question: Value) -> Result<Value, HostError> {
    let Some(j) = journal(lua) else {
        return Ok(Value::Nil);
    };
    let pos = pos
        .to_string()
        .map_err(|_| HostError::new("bad_argument", "journal_question: position"))?;
    let question = to_json(lua, question, "question")?;
    // Every size check before anything is stored.
    let bytes = admit(lua, "the question", &question)?;
    let name = QuestionRecord::name_of(&question);
    let store = j.store().clone();
    let run = j.run().to_string();
    let answered = store
        .questions(&run)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|q| q.pos == pos)
        .and_then(|q| q.answer);
    if let Some(a) = answered {
        return lua
            .to_value_with(&a, super::ser_opts())
            .map_err(HostError::from);
    }
    j.ask(QuestionRecord {
        run,
        pos,
        name,
        question,
        answer: None,
    })
    .await
    .map_err(|e| fault(lua, &j, e))?;
    spent(lua, bytes);
    Ok(Value::Nil)
}
