//! The host side of `swarm.mob` (`lua/swarm/mob.lua`): roster operations
//! on the run's store (`wait("mob", op, args, pos)`, journaled by the flow
//! library like `ask` and `sleep`), and a member's turn (`wait("mob_ask",
//! handle, text, pos)`), journaled here as one entry (kind `mob_turn`)
//! after the model step that answers it, itself journaled turn by turn at
//! the same position: a resumed run replays finished turns and finished
//! model calls, and asks the model only for what never finished.
//!
//! Every operation names its origin (`run/position`): made again after a
//! crash, before its entry was journaled, it finds its own effect in the
//! store (`crate::mob`). Each one is also an event on the run's ledger
//! (a layer note of layer `mob`).

use super::journal::{hold, journal, record, replay};
use super::{no_token, to_json, to_lua};
use crate::engine::{TaskSpec, TaskStatus};
use crate::lua::ctx::VmCtx;
use crate::lua::error::HostError;
use crate::lua::location::caller_location;
use crate::mob::{Handle, Mob, MobError, Spawn};
use crate::store::{Journal, MobStore, input_hash};
use mlua::{Lua, Value};
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn need_journal(lua: &Lua) -> Result<Arc<Journal>, HostError> {
    journal(lua).ok_or_else(|| {
        HostError::new(
            "bad_call",
            format!(
                "{}: swarm.mob needs a journaled run: a mob lives in the run's store \
                 (this one runs with --no-journal)",
                caller_location(lua, 0)
            ),
        )
    })
}

/// A refusal, as the flow sees it (its `where` says the line).
fn mob_err(e: MobError) -> HostError {
    HostError::new(e.code(), e.to_string())
}

fn field<T: DeserializeOwned>(args: &Json, key: &str, what: &str) -> Result<T, HostError> {
    serde_json::from_value(args.get(key).cloned().unwrap_or(Json::Null))
        .map_err(|e| HostError::new("bad_argument", format!("{what}: `{key}`: {e}")))
}

fn text(v: Value, what: &str) -> Result<String, HostError> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        other => Err(HostError::new(
            "bad_argument",
            format!("{what}: expects a string, got {}", other.type_name()),
        )),
    }
}

/// An event on the run's ledger, on the flow's root task.
fn note(lua: &Lua, event: Json) {
    if let Some(ctx) = lua.app_data_ref::<VmCtx>()
        && let Some(task) = ctx.parent()
    {
        ctx.host.engine.note(task, "mob", event);
    }
}

/// `wait("mob", op, args, pos)`: one roster operation; its answer.
pub async fn op(lua: &Lua, op: Value, args: Value, pos: Value) -> Result<Value, HostError> {
    let j = need_journal(lua)?;
    let op = text(op, "swarm.mob")?;
    let args = to_json(lua, args, "the mob call's arguments")?;
    let pos = match pos {
        Value::String(s) => s.to_str()?.to_string(),
        _ => format!("unjournaled-{:016x}", rand::random::<u64>()),
    };
    let origin = format!("{}/{pos}", j.run());
    let store: &dyn MobStore = &**j.store();
    let name: String = match args.get("handle") {
        Some(h) => field(h, "mob", "swarm.mob")?,
        None => field(&args, "mob", "swarm.mob")?,
    };
    let mob = Mob::new(store, &name);
    let out = apply(lua, &mob, &op, &args, &origin).await?;
    // Host work in proportion to what was read and answered, charged.
    let bytes = crate::engine::size::measure(&out, usize::MAX).json;
    crate::lua::meter::charge_bytes(lua, bytes)?;
    if !matches!(op.as_str(), "members" | "history" | "work") {
        note(
            lua,
            json!({ "event": op, "mob": name, "args": args, "answer": out }),
        );
    }
    Ok(to_lua(lua, &out)?)
}

/// One roster operation `op` on `mob`, made as `origin`; its answer.
async fn apply(
    lua: &Lua,
    mob: &Mob<'_>,
    op: &str,
    args: &Json,
    origin: &str,
) -> Result<Json, HostError> {
    let what = format!("swarm.mob `{op}`");
    Ok(match op {
        "spawn" | "ensure" => {
            let spec: Spawn = field(args, "spec", &what)?;
            check_agent(lua, &spec.agent)?;
            let view = if op == "spawn" {
                mob.spawn(&spec, origin).await
            } else {
                mob.ensure(&spec, origin).await
            };
            json!(view.map_err(mob_err)?)
        }
        "retire" => {
            let h: Handle = field(args, "handle", &what)?;
            let budget = mob.retire(&h, origin).await.map_err(mob_err)?;
            json!({ "budget": budget })
        }
        "respawn" => {
            let id: String = field(args, "id", &what)?;
            let keep: Option<bool> = field(args, "keep_history", &what)?;
            let view = mob.respawn(&id, keep.unwrap_or(false), origin).await;
            json!(view.map_err(mob_err)?)
        }
        "fork" => {
            let h: Handle = field(args, "handle", &what)?;
            let id: String = field(args, "id", &what)?;
            json!(mob.fork(&h, &id, origin).await.map_err(mob_err)?)
        }
        "wire" | "unwire" => {
            let (a, b): (String, String) = (field(args, "a", &what)?, field(args, "b", &what)?);
            mob.wire(&a, &b, op == "wire").await.map_err(mob_err)?;
            json!(true)
        }
        "tell" => {
            let h: Handle = field(args, "handle", &what)?;
            let (to, body): (String, String) =
                (field(args, "to", &what)?, field(args, "text", &what)?);
            let receipt = mob.tell(&h, &to, &body, origin).await;
            json!(receipt.map_err(mob_err)?)
        }
        "post" => {
            let (to, from, body): (String, String, String) = (
                field(args, "to", &what)?,
                field(args, "from", &what)?,
                field(args, "text", &what)?,
            );
            let receipt = mob.post(&to, &from, &body, origin).await;
            json!(receipt.map_err(mob_err)?)
        }
        "work" | "cancel_work" => {
            let h: Handle = field(args, "handle", &what)?;
            let seq: u64 = field(args, "seq", &what)?;
            if op == "work" {
                json!(mob.work(&h, seq).await.map_err(mob_err)?)
            } else {
                json!({ "cancelled": mob.cancel_work(&h, seq).await.map_err(mob_err)? })
            }
        }
        "members" => {
            let labels: Option<BTreeMap<String, String>> = field(args, "labels", &what)?;
            let found = mob.members(&labels.unwrap_or_default()).await;
            json!(found.map_err(mob_err)?)
        }
        "history" => {
            let h: Handle = field(args, "handle", &what)?;
            json!(mob.history(&h).await.map_err(mob_err)?)
        }
        other => {
            return Err(HostError::new(
                "bad_argument",
                format!("swarm.mob: no operation `{other}`"),
            ));
        }
    })
}

/// A member's profile must be an agent of the blueprint.
fn check_agent(lua: &Lua, agent: &str) -> Result<(), HostError> {
    let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
    if ctx.host.agents.get(agent).is_some() {
        return Ok(());
    }
    let names = ctx.host.agents.names();
    let hint = crate::text::did_you_mean(agent, names.iter().map(String::as_str));
    Err(HostError::new(
        "unknown_agent",
        format!(
            "{}: a member's agent must be an LLM agent of the blueprint: no agent \
             `{agent}`{hint} (known: {})",
            caller_location(lua, 0),
            names.join(", ")
        ),
    ))
}

/// `wait("mob_ask", handle, text, pos)`: one turn of the member behind
/// `handle`; its reply.
pub async fn ask(lua: &Lua, handle: Value, text_v: Value, pos: Value) -> Result<Value, HostError> {
    let j = need_journal(lua)?;
    let h: Handle = serde_json::from_value(to_json(lua, handle, "a member handle")?)
        .map_err(|e| HostError::new("bad_argument", format!("member:ask: the handle: {e}")))?;
    let said = text(text_v, "member:ask")?;
    let pos = text(pos, "member:ask position")?;
    let key = format!("{}/{}", h.mob, h.id);
    let hash = input_hash(&json!({ "handle": h, "text": said }));
    if let Some(e) = replay(lua, &j, &pos, "mob_turn", &key, &hash)? {
        if e.ok {
            return Ok(to_lua(lua, &e.value["reply"])?);
        }
        return Err(turn_failed(&e.value));
    }
    let lock = crate::mob::turn_lock(&h.mob, &h.id);
    let _queued = lock.lock().await;
    let origin = format!("{}/{pos}", j.run());
    let store: &dyn MobStore = &**j.store();
    let mob = Mob::new(store, &h.mob);
    // A turn never opened before (no `STEP~open`) cannot have finished:
    // only one that was is looked for in the conversation.
    let before = opened(lua, &j, &pos, &key).await?;
    let done = match before {
        Some(_) => mob.finished_turn(&h, &origin).await.map_err(mob_err)?,
        None => None,
    };
    let reply = match done {
        Some(reply) => reply,
        None => {
            let turn = Turn {
                h: &h,
                said: &said,
                pos: &pos,
                key: &key,
                origin: &origin,
                before,
            };
            match live_turn(lua, &j, &mob, &turn).await? {
                Ok(reply) => reply,
                Err(failed) => {
                    let at = (pos.as_str(), "mob_turn", key.as_str());
                    record(lua, &j, at, hash, false, failed.clone()).await?;
                    return Err(turn_failed(&failed));
                }
            }
        }
    };
    let at = (pos.as_str(), "mob_turn", key.as_str());
    record(lua, &j, at, hash, true, json!({ "reply": reply })).await?;
    note(
        lua,
        json!({ "event": "turn", "mob": h.mob, "member": h.id, "incarnation": h.incarnation,
                "reply": reply }),
    );
    Ok(to_lua(lua, &reply)?)
}

/// One turn being made, as [`live_turn`] needs it.
struct Turn<'a> {
    h: &'a Handle,
    said: &'a str,
    pos: &'a str,
    key: &'a str,
    origin: &'a str,
    /// What it showed when it first opened, if it did (`opened`).
    before: Option<Json>,
}

/// Opens the turn (journaling which messages it shows), asks the model
/// and closes it: the reply, or the failure to journal.
async fn live_turn(
    lua: &Lua,
    j: &Journal,
    mob: &Mob<'_>,
    t: &Turn<'_>,
) -> Result<Result<Json, Json>, HostError> {
    let before = t.before.clone();
    let upto = before.as_ref().and_then(|b| b["upto"].as_u64());
    let start = mob.open_turn(t.h, t.said, upto).await;
    let mut start = start.map_err(mob_err)?;
    match before.and_then(|b| serde_json::from_value(b["peers"].clone()).ok()) {
        // The peers it was offered the first time: its tools are the same.
        Some(peers) => start.peers = peers,
        None => {
            let at = format!("{}~open", t.pos);
            let hash = input_hash(&Json::Null);
            let shown = json!({ "upto": start.upto, "peers": start.peers });
            record(lua, j, (&at, "mob_open", t.key), hash, true, shown).await?;
        }
    }
    let input = json!({ "messages": start.messages, "peers": start.peers, "member": t.h });
    let bytes = crate::engine::size::measure(&input, usize::MAX).json;
    crate::lua::meter::charge_bytes(lua, bytes)?;
    j.count_spent(t.pos);
    let out = model_step(lua, j, &start.agent, input, t.pos).await;
    let tokens = j.take_spent(t.pos);
    match out? {
        Ok(reply) => {
            let closed = mob.close_turn(t.h, &start, t.origin, &reply, tokens).await;
            closed.map_err(mob_err)?;
            Ok(Ok(reply))
        }
        Err(None) => Err(HostError::new("cancelled", "the turn was cancelled")),
        Err(Some(failed)) => Ok(Err(failed)),
    }
}

/// What the turn at `pos` showed when it first opened, `{upto, peers}`
/// (`STEP~open`, journaled before its model is asked: the last inbox
/// message and the peers it was offered), or `None` for a turn opening now.
async fn opened(lua: &Lua, j: &Journal, pos: &str, key: &str) -> Result<Option<Json>, HostError> {
    let at = format!("{pos}~open");
    let hash = input_hash(&Json::Null);
    Ok(replay(lua, j, &at, "mob_open", key, &hash)?.map(|e| e.value))
}

/// A failed turn as the flow sees it: the step's code where it is one of
/// the known ones, else `member_turn`.
fn turn_failed(recorded: &Json) -> HostError {
    let code = match recorded["code"].as_str() {
        Some("token_budget") => "token_budget",
        Some("timeout") => "timeout",
        Some("blocked") => "blocked",
        _ => "member_turn",
    };
    let message = recorded["message"]
        .as_str()
        .unwrap_or("the member's turn failed");
    HostError::new(code, message.to_string())
}

/// Runs the member's profile agent on `input` as a step of the flow at
/// `pos` (its model turns journal under it). `Err(None)`: cancelled.
async fn model_step(
    lua: &Lua,
    j: &Journal,
    agent: &str,
    input: Json,
    pos: &str,
) -> Result<Result<Json, Option<Json>>, HostError> {
    let (engine, tok, spawner, parent) = {
        let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
        let spawner = ctx.host.agents.get(agent);
        (ctx.host.engine.clone(), ctx.token(), spawner, ctx.parent())
    };
    let tok = tok.ok_or_else(no_token)?;
    let spawner = spawner.ok_or_else(|| {
        HostError::new(
            "unknown_agent",
            format!("no agent `{agent}` for this member"),
        )
    })?;
    super::journal::within_budget(lua, "a member's turn", 0)?;
    hold(lua, j).await?;
    let member = json!({ "member": input["member"], "peers": input["peers"] });
    let mut task = TaskSpec::new(agent, input);
    task.journal_pos = Some(Arc::from(pos));
    task.member = Some(Arc::new(member));
    task.parent = parent;
    let id = engine.start_task(&tok, task)?;
    let view = engine.dispatch_attempt(&tok, id, spawner.as_ref()).await?;
    let result = view.result.as_deref().cloned().unwrap_or(Json::Null);
    Ok(match view.status {
        TaskStatus::Pass => Ok(result),
        TaskStatus::Cancelled => Err(None),
        status => {
            let code = result["code"]
                .as_str()
                .unwrap_or(status.as_str())
                .to_string();
            let why = result["error"]
                .as_str()
                .map_or_else(|| result.to_string(), str::to_string);
            let message = format!(
                "{}: the turn of agent `{agent}` {}: {why}",
                caller_location(lua, 0),
                status.as_str()
            );
            Err(Some(
                json!({ "code": code, "message": message, "result": result }),
            ))
        }
    })
}
