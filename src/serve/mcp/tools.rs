//! The tools `swarm mcp` and `/mcp` offer, each one call into [`Runs`]
//! (or the live blueprints, or `run::check`): the face renders, the run
//! service decides. A tool is listed to a caller only when its role may
//! do what the tool does (the one `Action` × `Role` table), and the run
//! service checks again when it is called.

use super::McpFace;
use super::watch::Progress;
use crate::llm::wire_name;
use crate::run::RunError;
use crate::run::service::{Action, Answered, Authority, Cancelled};
use crate::store::RunStatus;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One fixed tool: its name, what it does, the action it needs and the
/// JSON Schema of its arguments.
pub(super) struct Fixed {
    pub name: &'static str,
    pub about: &'static str,
    pub action: Action,
    pub schema: fn() -> Value,
}

fn run_id() -> Value {
    json!({ "type": "object", "properties": { "id": { "type": "string", "description": "The run's id." } },
            "required": ["id"] })
}

pub(super) const FIXED: &[Fixed] = &[
    Fixed {
        name: "list_runs",
        about: "List the runs in the journal, newest last, optionally of one status \
                (running, waiting, interrupted, pass, blocked, cancelled, diverged).",
        action: Action::Read,
        schema: || json!({ "type": "object", "properties": { "status": { "type": "string" } } }),
    },
    Fixed {
        name: "show_run",
        about: "Show one run: status, result, token usage, open questions and its last events.",
        action: Action::Read,
        schema: run_id,
    },
    Fixed {
        name: "answer_question",
        about: "Answer a run's open question (by its key or text); a waiting run goes on.",
        action: Action::Answer,
        schema: || {
            json!({ "type": "object", "properties": {
                "id": { "type": "string" }, "question": { "type": "string" }, "value": {} },
                "required": ["id", "question", "value"] })
        },
    },
    Fixed {
        name: "send_to_run",
        about: "Send a message into a run, for its flow's swarm.recv(topic); `message_id` \
                makes a retry a no-op.",
        action: Action::Send,
        schema: || {
            json!({ "type": "object", "properties": {
                "id": { "type": "string" }, "topic": { "type": "string" }, "value": {},
                "message_id": { "type": "string" } },
                "required": ["id", "topic", "value"] })
        },
    },
    Fixed {
        name: "cancel_run",
        about: "Cancel a run (final: a cancelled run is not resumed).",
        action: Action::Cancel,
        schema: run_id,
    },
    Fixed {
        name: "resume_run",
        about: "Resume an interrupted or waiting run from its journal (journaled steps replay).",
        action: Action::Resume,
        schema: || {
            json!({ "type": "object", "properties": {
                "id": { "type": "string" }, "force": { "type": "boolean" } }, "required": ["id"] })
        },
    },
    Fixed {
        name: "fork_run",
        about: "Fork a run: a new run of its blueprint as it is now, replaying the run's \
                journal before position `at` (default: the first failed step, or the end) \
                and running live from there; `set` replaces recorded results before `at` \
                ({position: value}); past `at`, unchanged calls reuse the recorded result \
                unless `reuse` is \"none\".",
        action: Action::Start,
        schema: || {
            json!({ "type": "object", "properties": {
                "id": { "type": "string", "description": "The run to fork." },
                "at": { "type": "string", "description": "A journal position: 12, 3/2:1." },
                "new_id": { "type": "string" }, "input": {},
                "set": { "type": "object" },
                "reuse": { "type": "string", "enum": ["unchanged", "none"] } },
                "required": ["id"] })
        },
    },
    Fixed {
        name: "list_blueprints",
        about: "List the live blueprints: name, description, input schema, file.",
        action: Action::Read,
        schema: || json!({ "type": "object", "properties": {} }),
    },
    Fixed {
        name: "check_blueprint",
        about: "Check a blueprint file without running it; its problems with file:line.",
        action: Action::Read,
        schema: || {
            json!({ "type": "object", "properties": { "path": { "type": "string" } },
                    "required": ["path"] })
        },
    },
];

/// How long `run_<name>` waits for the run to end before answering with
/// its id and status (it goes on).
const WAIT: Duration = Duration::from_secs(5);

/// A tool's answer: its structured value and a short text.
pub(super) type Answer = Result<(Value, String), RunError>;

/// The run tool's name for blueprint `name`.
pub(super) fn run_tool(name: &str) -> String {
    wire_name(&format!("run_{name}"))
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Result<&'a str, RunError> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| RunError::Refused(format!("argument `{key}` (a string) is required")))
}

impl McpFace {
    /// Calls fixed tool `name`.
    pub(super) async fn fixed(
        &self,
        who: &Authority,
        name: &str,
        args: &Value,
        progress: Option<Progress>,
    ) -> Answer {
        match name {
            "list_runs" => self.list_runs(who, args).await,
            "show_run" => self.show_run(who, str_arg(args, "id")?).await,
            "answer_question" => {
                let (id, q) = (str_arg(args, "id")?, str_arg(args, "question")?);
                let value = args.get("value").cloned().unwrap_or(Value::Null);
                let done = self.runs.answer(who, id, q, value).await?;
                let resume = done == Answered::NeedsResume;
                let text = match resume {
                    true => format!("answered; run {id} is stopped: resume_run continues it"),
                    false => format!("answered; run {id} goes on"),
                };
                Ok((json!({ "answered": true, "resume_needed": resume }), text))
            }
            "send_to_run" => {
                let (id, topic) = (str_arg(args, "id")?, str_arg(args, "topic")?);
                let value = args.get("value").cloned().unwrap_or(Value::Null);
                let client = args.get("message_id").and_then(Value::as_str);
                let sent = self.runs.send(who, id, topic, value, client).await?;
                let text = format!("sent to run {id} as message {}", sent.seq);
                Ok((json!(sent), text))
            }
            "cancel_run" => {
                let id = str_arg(args, "id")?;
                let status = match self.runs.cancel(who, id).await? {
                    Cancelled::Now => "cancelled",
                    Cancelled::Requested => "cancelling",
                };
                Ok((
                    json!({ "id": id, "status": status }),
                    format!("run {id}: {status}"),
                ))
            }
            "resume_run" => {
                let id = str_arg(args, "id")?;
                let force = args.get("force").and_then(Value::as_bool).unwrap_or(false);
                let h = self.runs.resume(who, id, force, self.opts.clone()).await?;
                self.wait(who, h, progress).await
            }
            "fork_run" => self.fork(who, args, progress).await,
            "list_blueprints" => self.list_blueprints(who),
            "check_blueprint" => self.check_blueprint(who, str_arg(args, "path")?).await,
            other => Err(RunError::Refused(format!("no tool `{other}`"))),
        }
    }

    async fn list_runs(&self, who: &Authority, args: &Value) -> Answer {
        let status = match args.get("status").and_then(Value::as_str) {
            Some(s) => Some(s.parse::<RunStatus>().map_err(RunError::Refused)?),
            None => None,
        };
        let runs = self.runs.list(who, status).await?;
        let list: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({ "id": r.id, "blueprint": r.blueprint, "status": r.status.as_str(),
                             "created_ms": r.created_ms, "steps": r.steps })
            })
            .collect();
        let text = format!("{} runs", list.len());
        Ok((json!({ "runs": list }), text))
    }

    async fn show_run(&self, who: &Authority, id: &str) -> Answer {
        const LAST: usize = 20;
        let shown = self.runs.show(who, id).await?;
        let open: Vec<&crate::store::QuestionRecord> = shown
            .questions
            .iter()
            .filter(|q| q.answer.is_none())
            .collect();
        let events = match self.runs.store() {
            Some(store) => store.events(id, 0, 10_000).await?,
            None => Vec::new(),
        };
        let last: Vec<Value> = events[events.len().saturating_sub(LAST)..]
            .iter()
            .map(|e| json!({ "id": e.id, "kind": e.kind, "payload": e.payload }))
            .collect();
        let r = &shown.run;
        let text = format!(
            "run {id}: {} ({} steps, {} open questions)",
            r.status.as_str(),
            r.steps,
            open.len()
        );
        let body = json!({ "id": id, "blueprint": r.blueprint, "status": r.status.as_str(),
            "result": r.result, "usage": shown.usage, "open_questions": open, "events": last });
        Ok((body, text))
    }

    /// Forks a run into the live version of its blueprint.
    async fn fork(&self, who: &Authority, args: &Value, progress: Option<Progress>) -> Answer {
        who.check(Action::Start, None)?;
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        let set = match args.get("set") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => {
                return Err(RunError::Fork(
                    "`set` is an object: {position: value}".into(),
                ));
            }
        };
        let req = crate::run::ForkRequest {
            source: str_arg(args, "id")?.to_string(),
            at: text("at"),
            run_id: text("new_id"),
            input: args.get("input").cloned(),
            set,
            reuse: text("reuse").as_deref() != Some("none"),
        };
        let source = self.runs.record(who, &req.source).await?;
        let prepared = self
            .live
            .prepare_as(&source.blueprint, req.run_id.clone())?;
        let h = self.runs.fork_prepared(who, &req, prepared).await?;
        self.wait(who, h, progress).await
    }

    fn list_blueprints(&self, who: &Authority) -> Answer {
        who.check(Action::Read, None)?;
        let list: Vec<Value> = self
            .live
            .versions()
            .iter()
            .map(|v| {
                json!({ "name": v.name, "description": v.description, "input": v.input,
                             "path": v.path, "version": v.version, "tool": run_tool(&v.name) })
            })
            .collect();
        let text = format!("{} blueprints", list.len());
        Ok((json!({ "blueprints": list }), text))
    }

    async fn check_blueprint(&self, who: &Authority, path: &str) -> Answer {
        who.check(Action::Read, None)?;
        // Listing an MCP agent's tools may start its server: off the
        // async workers.
        let (engine, file) = (self.runs.engine().clone(), std::path::PathBuf::from(path));
        let checked =
            tokio::task::spawn_blocking(move || crate::run::check::check_file(&engine, &file))
                .await
                .map_err(|e| RunError::Refused(format!("the check failed: {e}")))?;
        let mut problems: Vec<Value> = match &checked.error {
            Some(RunError::Blueprint(crate::run::BlueprintError::Invalid(ps))) => ps
                .iter()
                .map(|p| json!({ "at": p.location, "field": p.field, "message": p.message }))
                .collect(),
            Some(e) => vec![json!({ "at": path, "message": e.to_string(), "code": e.code() })],
            None => Vec::new(),
        };
        problems.extend(checked.unknown.iter().map(|u| json!({ "message": u })));
        let ok = checked.ok();
        let text = match ok {
            true => format!("ok {path}"),
            false => format!("{path}: {} problems", problems.len()),
        };
        let tools: serde_json::Map<String, Value> = checked
            .tools
            .iter()
            .map(|(a, t)| (a.clone(), json!(t)))
            .collect();
        let body = json!({ "ok": ok, "problems": problems, "warnings": checked.warnings,
                           "tools": tools });
        Ok((body, text))
    }

    /// Starts a run of the live blueprint whose run tool is `tool`.
    pub(super) async fn start(
        &self,
        who: &Authority,
        tool: &str,
        input: Value,
        progress: Option<Progress>,
    ) -> Answer {
        who.check(Action::Start, None)?;
        let name = self
            .live
            .versions()
            .into_iter()
            .find(|v| run_tool(&v.name) == tool)
            .map(|v| v.name)
            .ok_or_else(|| RunError::Refused(format!("no tool `{tool}`")))?;
        let prepared = self.live.prepare(&name)?;
        let h = self.runs.start_prepared(who, prepared, input).await?;
        self.wait(who, h, progress).await
    }

    /// The run's report when it ends within [`WAIT`]; else its id and
    /// status (and open questions: a run that waits for an answer is
    /// answered at once). Meanwhile its events go to `progress`.
    async fn wait(
        &self,
        who: &Authority,
        h: crate::run::Handle,
        progress: Option<Progress>,
    ) -> Answer {
        let id = h.id.clone();
        let progress = match (progress, &id) {
            (Some(p), Some(id)) => Some(p.watch(&self.runs, who.clone(), id.clone())),
            _ => None,
        };
        let finished = h.finished();
        tokio::pin!(finished);
        let until = Instant::now() + WAIT;
        loop {
            let tick = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                report = &mut finished => {
                    if let Some(p) = progress {
                        p.finish(Duration::from_secs(5)).await;
                    }
                    let r = report?;
                    let status = r.status.as_str();
                    let text = format!("run {}: {status}", id.as_deref().unwrap_or("?"));
                    return Ok((json!({ "id": id, "status": status, "result": r.result,
                                       "usage": r.usage }), text));
                }
                _ = tick => {}
            }
            let Some(id) = &id else { continue };
            let open = match self.runs.store() {
                Some(s) => s
                    .questions(id)
                    .await?
                    .into_iter()
                    .filter(|q| q.answer.is_none())
                    .count(),
                None => 0,
            };
            if open > 0 || Instant::now() >= until {
                let (mut body, _) = self.show_run(who, id).await?;
                if let Some(o) = body.as_object_mut() {
                    o.remove("events");
                    o.insert(
                        "status".into(),
                        json!(if open > 0 { "waiting" } else { "running" }),
                    );
                }
                let text = format!(
                    "run {id}: {} (show_run for more)",
                    body["status"].as_str().unwrap_or("running")
                );
                return Ok((body, text));
            }
        }
    }
}
