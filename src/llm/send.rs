//! Sending one turn, within the agent's `turn_timeout`, adapted to what
//! the endpoint + model was found to accept (see `structured`): the
//! structured-output mode, turns with tools sent unstreamed, and
//! `max_completion_tokens` for models that refuse `max_tokens` (OpenAI's
//! reasoning models). Each adaptation is learnt from a refusal, noted
//! once (`llm_note`), and remembered for the life of the process.

use super::structured::{self, Mode};
use super::{Endpoint, Step, Turn, fail, http, millis, seconds};
use crate::engine::{OutputKind, SpawnCtx};
use serde_json::{Value, json};
use std::time::Duration;

impl Step {
    /// Sends a turn within `turn_timeout`, stepping down the structured
    /// output modes while the server refuses them (see `structured`).
    /// Returns the turn, the mode that worked and the body as sent.
    pub(super) async fn send(
        &self,
        ctx: &SpawnCtx,
        ep: &Endpoint,
        body: &Value,
    ) -> Result<(Turn, Option<Mode>, Value), Value> {
        let schema = (self.spec.schema.as_ref()).filter(|_| {
            // A response_format the blueprint sets itself is sent as is.
            !self.spec.extra.contains_key("response_format")
        });
        let mut mode = schema.map(|_| structured::remembered(&ep.base, &ep.model));
        // A turn that may call tools, where streaming it was found to fail.
        let tools = body["tool_choice"] == "auto";
        let learnt = || structured::streams_tools(&ep.base, &ep.model);
        let mut stream = self.spec.stream && (!tools || learnt());
        let mut completion = structured::says_max_completion(&ep.base, &ep.model);
        let limit = Duration::from_millis(self.spec.turn_timeout_ms());
        let partial = |text: &str| {
            let _ = ctx
                .engine
                .emit(&ctx.token, OutputKind::Partial, json!({ "delta": text }));
        };
        loop {
            let mut sent = body.clone();
            if let (Some(s), Some(m)) = (schema, mode) {
                structured::apply(&mut sent, s, m);
            }
            if let Some(b) = sent.as_object_mut() {
                if !stream {
                    b.insert("stream".into(), json!(false));
                    b.remove("stream_options");
                }
                if completion && let Some(n) = b.remove("max_tokens") {
                    b.insert("max_completion_tokens".into(), n);
                }
            }
            let req = http::Request {
                url: format!("{}/chat/completions", ep.base),
                key: ep.key.clone(),
                headers: &ep.headers,
                body: sent,
                stream,
                timeout: (self.spec.timeout.as_ref().and_then(millis))
                    .map_or(limit, Duration::from_millis),
                retries: self.spec.retries,
            };
            let Ok(out) = tokio::time::timeout(limit, http::chat(&req, &partial)).await else {
                return Err(fail(
                    "turn_timeout",
                    format!(
                        "agent `{}`: the model did not finish its turn within {}; raise \
                         `turn_timeout` for this agent, or lower `max_tokens`",
                        self.name,
                        seconds(limit)
                    ),
                ));
            };
            match out {
                Ok(turn) => {
                    if let Some(m) = mode {
                        structured::remember(&ep.base, &ep.model, m);
                    }
                    return Ok((turn, mode, req.body));
                }
                Err(f) if !completion && refuses_max_tokens(&f, &req.body) => {
                    structured::max_completion(&ep.base, &ep.model);
                    let msg = format!(
                        "agent `{}`: {} refused `max_tokens` for model {}; sending it as \
                         `max_completion_tokens`",
                        self.name, ep.base, ep.model
                    );
                    self.note(ctx, "max_tokens_renamed", msg);
                    completion = true;
                }
                Err(f) if structured::refused(&f) && mode.and_then(Mode::next).is_some() => {
                    let (from, to) = (mode.unwrap_or(Mode::Text), mode.and_then(Mode::next));
                    let to = to.unwrap_or(Mode::Text);
                    self.note(ctx, "structured_fallback", format!(
                        "agent `{}`: {} refused structured output as `{}`, trying `{}` with the \
                         schema in the prompt ({})", self.name, ep.base, from.name(), to.name(),
                        f.message));
                    mode = Some(to);
                }
                Err(f) if f.code == http::EMPTY_STREAM && stream && tools => {
                    structured::no_streamed_tools(&ep.base, &ep.model);
                    let msg = format!(
                        "agent `{}`: {} cannot stream a turn that offers tools; sending such \
                         turns without streaming",
                        self.name, ep.base
                    );
                    self.note(ctx, "stream_fallback", msg);
                    stream = false;
                }
                Err(f) => {
                    return Err(json!({ "code": f.code, "error": f.message, "status": f.status }));
                }
            }
        }
    }
}

/// A 400 that asks for `max_completion_tokens` instead of the `max_tokens`
/// sent (OpenAI's reasoning models).
fn refuses_max_tokens(f: &http::Failure, sent: &Value) -> bool {
    f.status == Some(400)
        && sent.get("max_tokens").is_some()
        && f.body.contains("max_tokens")
        && f.body.contains("max_completion_tokens")
}
