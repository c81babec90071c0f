//! `wait("recv", topic, until)`: the host side of `swarm.recv`. Takes the
//! first message sent into the run on `topic` that the flow has not
//! received (`store/inbox.rs`), waiting for one: woken at once by a send
//! through this process (the run service wakes the inbox), and by the
//! store's wake-up for sends from other processes (`Store::woken`: a
//! Postgres NOTIFY, or SQLite's short poll). The flow
//! library journals what it returns, so a resumed run receives the same
//! messages at the same places.

use super::journal::{halt, journal, store_err};
use crate::lua::error::HostError;
use crate::lua::location::caller_location;
use crate::store::{Halt, Journal};
use mlua::{Lua, LuaSerdeExt, Value};
use serde_json::json;
use std::time::Duration;

/// How many messages one read of the store takes at most (each at most
/// `run::service::MESSAGE_MAX` bytes: a read holds a few MiB at most).
const BATCH: usize = 8;

/// Returns `{seq, topic, value, id, sent_ms}` for the message taken, or
/// `{timeout = true}` once `until` (epoch ms) has passed without one.
pub async fn recv(lua: &Lua, topic: Value, until: Value) -> Result<Value, HostError> {
    let Some(j) = journal(lua) else {
        return Err(HostError::new(
            "bad_call",
            format!(
                "{}: swarm.recv needs a journaled run: messages reach a run through its \
                 store (this one runs with --no-journal)",
                caller_location(lua, 0)
            ),
        ));
    };
    let topic = match &topic {
        Value::String(s) => s.to_str()?.to_string(),
        _ => return Err(HostError::new("bad_argument", "recv: topic")),
    };
    let until = match until {
        Value::Integer(n) => Some(n.max(0) as u64),
        Value::Number(n) => Some(n.max(0.0) as u64),
        _ => None,
    };
    loop {
        let woken = j.inbox().woken();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(m) = take(&j, &topic).await? {
            let value = json!({ "seq": m.seq, "topic": m.topic, "value": m.value,
                                "id": m.id, "sent_ms": m.sent_ms });
            return Ok(lua.to_value_with(&value, super::ser_opts())?);
        }
        let now = crate::engine::now_ms();
        if until.is_some_and(|u| now >= u) {
            return Ok(lua.to_value(&json!({ "timeout": true }))?);
        }
        if !j.waits_for_messages() {
            return Err(stop_waiting(lua, &j, &topic));
        }
        // A send through this process wakes the inbox; one through another
        // wakes the store's waiter (Postgres: NOTIFY, at once; SQLite: a
        // short poll, `Store::woken`).
        let elsewhere = j.store().woken(j.run());
        let deadline = async {
            match until {
                Some(u) => tokio::time::sleep(Duration::from_millis(u - now)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut woken => {}
            () = elsewhere => {}
            () = deadline => {}
        }
    }
}

/// The first message on `topic` the flow has not received, taken.
async fn take(j: &Journal, topic: &str) -> Result<Option<crate::store::MessageRecord>, HostError> {
    let inbox = j.inbox();
    let mut after = inbox.cursor(topic);
    loop {
        let found = j
            .store()
            .messages(j.run(), topic, after, BATCH)
            .await
            .map_err(store_err)?;
        let full = found.len() == BATCH;
        let last = found.last().map(|m| m.seq);
        if let Some(m) = inbox.take(topic, found) {
            return Ok(Some(m));
        }
        match last {
            Some(seq) if full => after = seq,
            _ => return Ok(None),
        }
    }
}

/// Stops a run that does not wait for messages (`swarm run` without a
/// terminal or `--wait-answers`): it ends `waiting`, saying how to go on.
fn stop_waiting(lua: &Lua, j: &Journal, topic: &str) -> HostError {
    let run = j.run();
    let message = format!(
        "{}: the flow waits for a message on `{topic}`: send one with \
         `swarm send {run} {topic} JSON`, then continue with `swarm resume {run}` \
         (`swarm run --wait-answers` waits instead)",
        caller_location(lua, 0),
    );
    let _ = halt(lua, j, Halt::Waiting, message.clone());
    HostError::new(Halt::Waiting.code(), message)
}
