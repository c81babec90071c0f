//! The senior desk: answers a run's senior questions.
//!
//! A question's name is its `key` field (tables) or its text (strings).
//! Answers come from `--answer NAME=VALUE` first, then from the terminal
//! when the run is interactive; otherwise the run is cancelled with a
//! message saying how to answer.

use super::{RunError, RunOptions};
use crate::auth::{CapToken, Role};
use crate::engine::{AttachOptions, Caller, Engine, TaskId};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

pub struct Desk {
    handle: JoinHandle<()>,
    senior: CapToken,
    unanswered: Arc<Mutex<Option<String>>>,
}

/// The name `--answer` uses for a question.
pub fn question_name(q: &Value) -> String {
    match q {
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| "question".into()),
        other => other.to_string(),
    }
}

/// An answer given on the command line or terminal: JSON if it parses,
/// otherwise the text itself.
pub fn parse_answer(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl Desk {
    pub fn open(
        engine: &Engine,
        operator: &CapToken,
        root: TaskId,
        opts: &RunOptions,
    ) -> Result<Desk, RunError> {
        let senior = engine.attach(
            Caller::Host,
            AttachOptions::new("senior-desk", Role::Senior),
        )?;
        let unanswered = Arc::new(Mutex::new(None));
        let (engine, operator) = (engine.clone(), operator.clone());
        let (answers, interactive, slot) =
            (opts.answers.clone(), opts.interactive, unanswered.clone());
        let desk_token = senior.clone();
        let handle = tokio::spawn(async move {
            let mut seen = HashSet::new();
            let hold = Duration::from_secs(3600);
            while let Ok(open) = engine.pending_questions(&senior, &seen, hold).await {
                for q in open {
                    seen.insert(q.key.clone());
                    if !under(&engine, &operator, q.task, root) {
                        continue;
                    }
                    let name = question_name(&q.question);
                    match answer(&answers, interactive, &name, &q.question).await {
                        Some(a) => {
                            let _ = engine.resume(&senior, &q.key, a);
                        }
                        None => {
                            let msg = format!(
                                "senior question `{name}` needs an answer: pass --answer \
                                 {name}=VALUE or run on a terminal"
                            );
                            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                            let _ = engine.cancel_task(&operator, root);
                            return;
                        }
                    }
                }
            }
        });
        Ok(Desk {
            handle,
            senior: desk_token,
            unanswered,
        })
    }

    /// The desk's senior session token.
    pub fn token(&self) -> &CapToken {
        &self.senior
    }

    /// Stops the desk; returns why the run could not go on, if it could not.
    pub fn close(self) -> Option<String> {
        self.handle.abort();
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// True when `task` is `root` or one of its descendants.
fn under(engine: &Engine, tok: &CapToken, task: TaskId, root: TaskId) -> bool {
    let mut cur = Some(task);
    for _ in 0..16 {
        match cur {
            Some(t) if t == root => return true,
            Some(t) => cur = engine.read_task(tok, t).ok().and_then(|v| v.parent),
            None => return false,
        }
    }
    false
}

async fn answer(
    answers: &BTreeMap<String, Value>,
    interactive: bool,
    name: &str,
    question: &Value,
) -> Option<Value> {
    if let Some(a) = answers.get(name) {
        return Some(a.clone());
    }
    if !interactive {
        return None;
    }
    let text = match question {
        Value::Object(m) => m
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string(),
        _ => name.to_string(),
    };
    let shown = serde_json::to_string_pretty(question).unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "\nsenior question `{text}`:\n{shown}");
        let _ = write!(err, "answer> ");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(parse_answer(line.trim()))
    })
    .await
    .ok()
    .flatten()
}
