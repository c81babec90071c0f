//! LLM agents: one backend speaking the OpenAI-compatible chat-completions
//! protocol (OpenAI, gateways, llama.cpp, Ollama's `/v1`, vLLM).
//!
//! A step of an LLM agent is a loop of model turns: each turn is sent (or,
//! in a resumed run, replayed from the journal), its tool calls run as
//! child tasks of the step through the tool agents' own stacks, and the
//! loop ends with the final answer, validated against `schema` when set.
//! The run supplies the two things this layer cannot see: its [`Tools`]
//! and its [`TurnLog`] (the journal).

mod estimate;
mod http;
pub mod mail;
mod offer;
pub mod schema;
pub mod scripted;
mod send;
mod structured;
mod tools;
mod usage;
mod wire;

pub use offer::{Offered, ToolCatalog, wire_name};
pub use usage::{Meter, Tally, Usage, thousands};
pub use wire::{Accumulator, SseDecoder, Turn};

use crate::engine::OutputKind;
use crate::engine::{Outcome, SpawnCtx, Spawner, Worker};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use structured::Mode;

/// An LLM agent as the blueprint declares it (`swarm.agent.llm { ... }`).
#[derive(Debug, Clone, Deserialize)]
pub struct LlmSpec {
    /// Default `$SWARM_LLM_BASE_URL`, else `https://api.openai.com/v1`.
    pub base_url: Option<String>,
    /// Default `$SWARM_LLM_MODEL`.
    pub model: Option<String>,
    /// The NAME of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    pub system: Option<String>,
    #[serde(default)]
    pub tools: Vec<String>,
    pub schema: Option<Value>,
    #[serde(default = "max_turns")]
    pub max_turns: u32,
    pub temperature: Option<f64>,
    /// Sent with every turn; 0 sends none (the server's own limit).
    #[serde(default = "max_tokens")]
    pub max_tokens: u64,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra fields merged into every request body.
    #[serde(default)]
    pub extra: serde_json::Map<String, Value>,
    /// Per-request limit in ms (a number, or a string like "90s");
    /// default `turn_timeout`.
    pub timeout: Option<Value>,
    /// The most one turn may take, retries included (ms or "5m").
    pub turn_timeout: Option<Value>,
    #[serde(default = "yes")]
    pub stream: bool,
    /// Retries of a turn on 429, 5xx, connection errors and broken streams.
    #[serde(default = "retries")]
    pub retries: u32,
}

fn max_turns() -> u32 {
    8
}
/// Enough for any answer a step should give in one turn; a small local
/// model that rambles stops within a minute or two instead of never.
pub const DEFAULT_MAX_TOKENS: u64 = 2048;
fn max_tokens() -> u64 {
    DEFAULT_MAX_TOKENS
}
/// The default `turn_timeout`: a 2,048-token answer at a laptop's pace.
pub const DEFAULT_TURN_TIMEOUT_MS: u64 = 300_000;

impl LlmSpec {
    /// The per-turn limit, in ms.
    fn turn_timeout_ms(&self) -> u64 {
        let set = |v: &Option<Value>| v.as_ref().and_then(millis);
        set(&self.turn_timeout).unwrap_or(DEFAULT_TURN_TIMEOUT_MS)
    }
}

/// `300s`, `1.5s`, `250ms`: a limit as messages show it.
fn seconds(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms if ms >= 1000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms => format!("{ms}ms"),
    }
}
fn yes() -> bool {
    true
}
fn retries() -> u32 {
    4
}

/// How many times an answer that fails `schema` is sent back for another.
const SCHEMA_RETRIES: u32 = 1;

/// A tool the model may call: another agent of the blueprint.
#[derive(Debug, Clone)]
pub struct ToolInfo {
    pub description: String,
    /// JSON Schema of its arguments.
    pub params: Value,
}

/// The run's agents, as tools.
pub trait Tools: Send + Sync {
    fn describe(&self, name: &str) -> Option<ToolInfo>;
    /// The tools an agent's `tools` list names, described. By default
    /// each name through [`Tools::describe`]; a run whose agents include
    /// tool families (`fs.*`, an MCP server's) lists them, which may start
    /// their servers.
    fn select(
        &self,
        names: &[String],
    ) -> BoxFuture<'static, Result<Vec<(String, ToolInfo)>, String>> {
        let found: Result<Vec<_>, String> = names
            .iter()
            .map(|n| match self.describe(n) {
                Some(info) => Ok((n.clone(), info)),
                None => Err(format!("tool `{n}` is not an agent of this blueprint")),
            })
            .collect();
        Box::pin(std::future::ready(found))
    }
    /// Runs tool `name` as a child task of `ctx`'s task through its own
    /// stack; its result, or a description of why it failed.
    fn call(
        &self,
        ctx: &SpawnCtx,
        name: &str,
        args: Value,
    ) -> BoxFuture<'static, Result<Value, Value>>;
}

/// The run's journal, seen from inside a step. `request` is what the
/// entry answers (a turn's request body, a tool call): replaying an entry
/// recorded for another request is an error that stops the run
/// (`diverged`), as it is for flow steps.
pub trait TurnLog: Send + Sync {
    /// What an earlier execution recorded at `pos`, if anything.
    fn replay(&self, pos: &str, request: &Value) -> Result<Option<Value>, String>;
    /// Records `value` at `pos`, `tokens` being what it spent; resolves
    /// once it is on disk. An error means the journal stopped the run (it
    /// ends interrupted).
    fn record(
        &self,
        pos: &str,
        kind: &str,
        request: &Value,
        value: Value,
        tokens: u64,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// In a fork: what its source recorded at `pos` (`kind`: `llm_turn`
    /// or `llm_tool`) for this very `request`, now recorded as this run's
    /// (reused, spending nothing); the caller uses it instead of sending.
    /// `None` when there is nothing to reuse.
    fn reuse(
        &self,
        _pos: &str,
        _kind: &str,
        _request: &Value,
    ) -> BoxFuture<'static, Result<Option<Value>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// What a step needs from its run: the other agents as tools, the
/// journal, and the token meter.
#[derive(Clone)]
pub struct RunSide {
    pub tools: Arc<dyn Tools>,
    pub log: Arc<dyn TurnLog>,
    pub meter: Arc<Meter>,
    /// Delivers a mob member's `send_message` calls (`mail.rs`).
    pub mail: Option<Arc<dyn mail::PeerMail>>,
}

/// The spawner of one LLM agent.
pub struct LlmAgent {
    name: String,
    spec: LlmSpec,
    side: RunSide,
}

impl LlmAgent {
    pub fn new(name: &str, spec: LlmSpec, side: RunSide) -> LlmAgent {
        LlmAgent {
            name: name.to_string(),
            spec,
            side,
        }
    }
}

impl Spawner for LlmAgent {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        let step = Step {
            name: self.name.clone(),
            spec: self.spec.clone(),
            side: self.side.clone(),
        };
        Box::pin(async move {
            let cancel = ctx.cancel.clone();
            tokio::select! {
                out = step.run(&ctx) => Ok(match out {
                    Ok(v) => Outcome::Pass(v),
                    Err(e) => Outcome::Blocked(e),
                }),
                // Dropping the turn aborts its HTTP request at once.
                _ = cancel.cancelled() => Ok(Outcome::Cancelled),
            }
        })
    }
}

/// A typed step error, as the flow sees it in `result`.
fn fail(code: &str, message: impl Into<String>) -> Value {
    json!({ "code": code, "error": message.into() })
}

/// Milliseconds from a number or a duration string (`crate::duration`).
fn millis(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_f64() {
        return Some(n as u64);
    }
    crate::duration::parse_ms(v.as_str()?)
        .ok()
        .map(|ms| ms as u64)
}

/// The messages a step starts from: a string, `{ prompt }` or `{ messages }`.
fn opening(system: Option<&str>, input: &Value) -> Result<Vec<Value>, Value> {
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(json!({ "role": "system", "content": s }));
    }
    match input {
        Value::String(s) => messages.push(json!({ "role": "user", "content": s })),
        Value::Object(o) if o.get("messages").is_some_and(Value::is_array) => {
            messages.extend(o["messages"].as_array().into_iter().flatten().cloned());
        }
        Value::Object(o) if o.get("prompt").is_some() => {
            let p = match &o["prompt"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            messages.push(json!({ "role": "user", "content": p }));
        }
        other => {
            return Err(fail(
                "llm_input",
                format!(
                    "an LLM step takes a string, {{ prompt = ... }} or {{ messages = {{...}} }}, got {}",
                    wire::excerpt(other)
                ),
            ));
        }
    }
    Ok(messages)
}

/// One step's loop (see the module doc).
struct Step {
    name: String,
    spec: LlmSpec,
    side: RunSide,
}

/// Where a step's turns go, resolved once per step.
struct Endpoint {
    base: String,
    model: String,
    key: Option<String>,
    headers: Vec<(String, String)>,
}

impl Step {
    async fn run(&self, ctx: &SpawnCtx) -> Result<Value, Value> {
        let mut messages = opening(self.spec.system.as_deref(), &ctx.input)?;
        let ep = self.endpoint()?;
        let offered = self.offered(ctx.member.as_deref()).await?;
        let tools = offered.wire();
        let mut schema_left = SCHEMA_RETRIES;
        // Whether a final answer without a tool call is still worth a note.
        let mut note_unused = !tools.is_empty();
        for turn_no in 1..=self.spec.max_turns {
            let last = turn_no == self.spec.max_turns;
            let body = self.body(&ep.model, &messages, &tools, last);
            let pos = ctx.journal_pos.as_ref().map(|p| format!("{p}~t{turn_no}"));
            let turn = self.turn(ctx, &ep, body, turn_no, pos.as_deref()).await?;
            messages.push(turn.message.clone());
            let calls = turn.tool_calls();
            if !calls.is_empty() {
                note_unused = false;
                let results = self
                    .call_tools(ctx, &offered, &calls, pos.as_deref())
                    .await?;
                messages.extend(results);
                continue;
            }
            if note_unused {
                // Once per step, even when a schema retry answers again.
                note_unused = false;
                self.note(
                    ctx,
                    "tools_unused",
                    format!(
                        "agent `{}` was offered tools ({}) and answered without calling any",
                        self.name,
                        self.spec.tools.join(", ")
                    ),
                );
            }
            let content = turn.content();
            let Some(schema) = &self.spec.schema else {
                return Ok(Value::String(content));
            };
            match schema::check(schema, &content) {
                Ok(v) => return Ok(v),
                Err(why) if schema_left > 0 => {
                    schema_left -= 1;
                    messages.push(json!({ "role": "user", "content": format!(
                        "Your answer does not match the required JSON schema: {why}. \
                         Answer again with only a JSON value that matches it.") }));
                }
                Err(why) => {
                    return Err(json!({ "code": "llm_schema", "error": format!(
                        "agent `{}`: the model's answer does not match the schema after {} \
                         tries: {why}", self.name, SCHEMA_RETRIES + 1), "output": content }));
                }
            }
        }
        Err(fail(
            "llm_max_turns",
            format!(
                "agent `{}` used all {} turns without a final answer",
                self.name, self.spec.max_turns
            ),
        ))
    }

    /// An event (a progress output `{ llm_note: { code, message } }`) and
    /// a warning in the log: something a user should see about a step
    /// that did not fail.
    fn note(&self, ctx: &SpawnCtx, code: &str, message: String) {
        tracing::warn!(code, "{message}");
        let note = json!({ "llm_note": { "code": code, "agent": self.name, "message": message } });
        let _ = ctx.engine.emit(&ctx.token, OutputKind::Progress, note);
    }

    fn endpoint(&self) -> Result<Endpoint, Value> {
        let base = self
            .spec
            .base_url
            .clone()
            .or_else(|| std::env::var("SWARM_LLM_BASE_URL").ok());
        let base = base.unwrap_or_else(|| "https://api.openai.com/v1".into());
        let model = self
            .spec
            .model
            .clone()
            .or_else(|| std::env::var("SWARM_LLM_MODEL").ok());
        let refused = |why: String| fail("llm_config", format!("agent `{}`: {why}", self.name));
        let Some(model) = model else {
            return Err(refused("no model (set `model` or $SWARM_LLM_MODEL)".into()));
        };
        let key = match &self.spec.api_key_env {
            // Checked when the agent was built; again here, where the key
            // is read, so no other path reaches a variable not allowed.
            Some(var) => {
                crate::spawn::secrets::may_name(var).map_err(refused)?;
                let unset = || refused(format!("the API key variable ${var} is not set"));
                Some(std::env::var(var).map_err(|_| unset())?)
            }
            // No variable named: $SWARM_LLM_API_KEY when set (local
            // servers need none).
            None => std::env::var("SWARM_LLM_API_KEY").ok(),
        };
        Ok(Endpoint {
            base: base.trim_end_matches('/').to_string(),
            model,
            key,
            headers: self.spec.headers.clone().into_iter().collect(),
        })
    }

    /// The tools this step offers the model: its agent's, and a mob
    /// member's `send_message` when the step is one of its turns (as the
    /// host marked it, never as its input says).
    async fn offered(&self, member: Option<&Value>) -> Result<Offered, Value> {
        let host = member
            .and_then(mail::offered)
            .filter(|_| self.side.mail.is_some());
        if self.spec.tools.is_empty() && host.is_none() {
            return Ok(Offered::default());
        }
        let mut listed = Vec::new();
        if !self.spec.tools.is_empty() {
            let found = self.side.tools.select(&self.spec.tools).await;
            listed =
                found.map_err(|why| fail("llm_config", format!("agent `{}`: {why}", self.name)))?;
        }
        listed.extend(host);
        Ok(Offered::new(listed))
    }

    /// The turn's request as the journal knows it: structured output asked
    /// as `json_schema` whatever mode is sent (see `structured`), so a run
    /// resumed in a process that has not learnt the mode yet replays.
    /// Tools go with `tool_choice = "auto"` (OpenAI's default, which
    /// llama-cpp-python needs said), except on the `last` turn: `"none"`,
    /// so a model that keeps calling tools must answer.
    fn body(&self, model: &str, messages: &[Value], tools: &[Value], last: bool) -> Value {
        let mut body = json!({ "model": model, "messages": messages, "stream": self.spec.stream });
        let b = body.as_object_mut().expect("object");
        if self.spec.stream {
            b.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        if !tools.is_empty() {
            b.insert("tools".into(), json!(tools));
            let choice = if last { "none" } else { "auto" };
            b.insert("tool_choice".into(), json!(choice));
        }
        if let Some(t) = self.spec.temperature {
            b.insert("temperature".into(), json!(t));
        }
        if self.spec.max_tokens > 0 {
            b.insert("max_tokens".into(), json!(self.spec.max_tokens));
        }
        if let Some(s) = &self.spec.schema {
            b.insert(
                "response_format".into(),
                json!({ "type": "json_schema",
                "json_schema": { "name": "answer", "schema": s, "strict": true } }),
            );
        }
        for (k, v) in &self.spec.extra {
            b.insert(k.clone(), v.clone());
        }
        body
    }

    /// One turn: replayed from the journal when an earlier execution
    /// finished it, else sent, reported and recorded. Either way it is
    /// charged to the run's token meter, and a turn the model cut at
    /// `max_tokens` ends the step.
    async fn turn(
        &self,
        ctx: &SpawnCtx,
        ep: &Endpoint,
        body: Value,
        turn_no: u32,
        pos: Option<&str>,
    ) -> Result<Turn, Value> {
        let model = ep.model.as_str();
        let replayed = match pos {
            Some(p) => self
                .side
                .log
                .replay(p, &body)
                .map_err(|e| fail("diverged", e))?,
            None => None,
        };
        if let Some(rec) = replayed {
            let turn = Turn::recorded(&rec);
            let spent = Usage::of_turn(turn.usage.as_ref());
            self.side
                .meter
                .charge(model, spent)
                .map_err(|e| fail("token_budget", e))?;
            return self.cut_short(turn);
        }
        if let Some(p) = pos {
            let reused = self.side.log.reuse(p, "llm_turn", &body).await;
            // A fork's reused turn: this run spent nothing on it.
            if let Some(rec) = reused.map_err(|e| fail("journal_fault", e))? {
                return self.cut_short(Turn::recorded(&rec));
            }
        }
        self.side
            .meter
            .check()
            .map_err(|e| fail("token_budget", e))?;
        let started = Instant::now();
        let (mut turn, mode, sent) = self.send(ctx, ep, &body).await?;
        if estimate::missing(turn.usage.as_ref()) {
            turn.usage = Some(estimate::usage(&sent, &turn.message));
        }
        let spent = Usage::of_turn(turn.usage.as_ref());
        let report = json!({
            "llm": { "model": model, "turn": turn_no, "ms": started.elapsed().as_millis() as u64,
                     "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens,
                     "estimated": spent.estimated, "structured": mode.map(Mode::name) }
        });
        let _ = ctx.engine.emit(&ctx.token, OutputKind::Progress, report);
        if let Some(p) = pos {
            let rec = json!({ "message": turn.message, "usage": turn.usage, "model": model,
                              "finish_reason": turn.finish_reason });
            self.side
                .log
                .record(p, "llm_turn", &body, rec, spent.total_tokens)
                .await
                .map_err(|e| fail("journal_fault", e))?;
        }
        self.side
            .meter
            .charge(model, spent)
            .map_err(|e| fail("token_budget", e))?;
        self.cut_short(turn)
    }

    /// A turn the model ended at `max_tokens` is an unfinished answer.
    fn cut_short(&self, turn: Turn) -> Result<Turn, Value> {
        if turn.finish_reason.as_deref() != Some("length") {
            return Ok(turn);
        }
        let limit = match self.spec.max_tokens {
            0 => "the server's token limit".to_string(),
            n => format!("max_tokens ({n})"),
        };
        Err(
            json!({ "code": "max_tokens", "output": turn.content(), "error": format!(
            "agent `{}`: the model's answer was cut off at {limit}; raise `max_tokens` for \
             this agent, or ask for a shorter answer", self.name) }),
        )
    }
}
