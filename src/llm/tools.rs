//! A step's tool calls: each runs as a child task through the tool
//! agent's own stack, in parallel, journaled so a resumed run replays
//! finished calls; an unknown tool or arguments that fail the tool's
//! `params` go back to the model as the tool's error, for it to fix.

use super::{Offered, Step, fail, schema};
use crate::engine::SpawnCtx;
use serde_json::{Value, json};

impl Step {
    /// Runs the turn's tool calls in parallel; each becomes a `tool`
    /// message. An unknown tool or arguments that fail its `params` go
    /// back to the model as the tool's error.
    pub(super) async fn call_tools(
        &self,
        ctx: &SpawnCtx,
        offered: &Offered,
        calls: &[Value],
        turn_pos: Option<&str>,
    ) -> Result<Vec<Value>, Value> {
        let runs = calls.iter().map(|call| async move {
            let id = call["id"].as_str().unwrap_or_default().to_string();
            let pos = turn_pos.map(|p| format!("{p}~{id}"));
            if let Some(p) = pos.as_deref()
                && let Some(rec) = self
                    .side
                    .log
                    .replay(p, call)
                    .map_err(|e| fail("diverged", e))?
            {
                return Ok(tool_message(&id, &rec));
            }
            if let Some(p) = pos.as_deref() {
                let reused = self.side.log.reuse(p, "llm_tool", call).await;
                if let Some(rec) = reused.map_err(|e| fail("journal_fault", e))? {
                    return Ok(tool_message(&id, &rec));
                }
            }
            let out = self.tool(ctx, offered, call, pos.as_deref()).await;
            let rec = match out {
                Ok(v) => json!({ "ok": true, "value": v }),
                Err(e) => json!({ "ok": false, "error": e }),
            };
            if let Some(p) = &pos {
                self.side
                    .log
                    .record(p, "llm_tool", call, rec.clone(), 0)
                    .await
                    .map_err(|e| fail("journal_fault", e))?;
            }
            Ok(tool_message(&id, &rec))
        });
        futures_util::future::try_join_all(runs).await
    }

    async fn tool(
        &self,
        ctx: &SpawnCtx,
        offered: &Offered,
        call: &Value,
        pos: Option<&str>,
    ) -> Result<Value, Value> {
        let wire = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some((name, info)) = offered.get(wire) else {
            return Err(json!(format!(
                "unknown tool `{wire}` (tools: {})",
                offered.names().join(", ")
            )));
        };
        let raw = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let raw = if raw.trim().is_empty() { "{}" } else { raw };
        let args: Value = serde_json::from_str(raw)
            .map_err(|e| json!(format!("the arguments are not JSON ({e}): {raw}")))?;
        if let Err(why) = schema::validate(&info.params, &args) {
            return Err(json!(format!(
                "the arguments do not match the parameters of `{name}`: {why}"
            )));
        }
        if name == super::mail::SEND_MESSAGE
            && let Some(mail) = &self.side.mail
            && let Some(member) = ctx.member.as_deref().and_then(|m| m.get("member"))
        {
            let text = |k: &str| args[k].as_str().unwrap_or_default().to_string();
            let receipt = mail.send(member, &text("to"), &text("text"), pos).await?;
            let event = json!({ "event": "message", "mob": member["mob"], "from": member["id"],
                                "to": args["to"], "receipt": receipt, "by": "send_message" });
            ctx.engine.note(ctx.task, "mob", event);
            return Ok(receipt);
        }
        self.side.tools.call(ctx, name, args).await
    }
}

/// A tool's outcome as the model reads it.
fn tool_message(id: &str, rec: &Value) -> Value {
    let content = if rec["ok"] == json!(true) {
        match &rec["value"] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    } else {
        format!(
            "error: {}",
            match &rec["error"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            }
        )
    };
    json!({ "role": "tool", "tool_call_id": id, "content": content })
}
