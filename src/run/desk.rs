//! The senior desk: answers a run's senior questions.
//!
//! A question's name is its `key` field (tables) or its text (strings).
//! Answers come from `--answer NAME=VALUE` first, then from the terminal
//! when the run is interactive; otherwise the run is cancelled with a
//! message saying how to answer.

use super::{RunError, RunOptions};
use crate::auth::{CapToken, Role};
use crate::engine::{AttachOptions, Caller, Engine, TaskId};
use crate::store::{Journal, QuestionRecord};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why the desk stopped a run.
pub enum Stop {
    /// A question nobody could answer here; the message says how to.
    Unanswered(String),
    /// `swarm cancel` from another process.
    Cancelled,
}

pub struct Desk {
    handle: JoinHandle<()>,
    senior: CapToken,
    unanswered: Arc<Mutex<Option<Stop>>>,
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
        journal: Option<Arc<Journal>>,
    ) -> Result<Desk, RunError> {
        let mut attach = AttachOptions::new("senior-desk", Role::Senior);
        attach.task = Some(root);
        let senior = engine.attach(Caller::Host, attach)?;
        let unanswered = Arc::new(Mutex::new(None));
        let ctx = Ctx {
            engine: engine.clone(),
            operator: operator.clone(),
            senior: senior.clone(),
            root,
            answers: opts.answers.clone(),
            interactive: opts.interactive,
            wait: opts.wait_for_answers,
            journal,
            stopped: unanswered.clone(),
        };
        let handle = tokio::spawn(ctx.serve());
        Ok(Desk {
            handle,
            senior,
            unanswered,
        })
    }

    /// The desk's senior session token.
    pub fn token(&self) -> &CapToken {
        &self.senior
    }

    /// Stops the desk; returns why the run could not go on, if it could not.
    pub fn close(self) -> Option<Stop> {
        self.handle.abort();
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

struct Ctx {
    engine: Engine,
    operator: CapToken,
    senior: CapToken,
    root: TaskId,
    answers: BTreeMap<String, Value>,
    interactive: bool,
    wait: bool,
    journal: Option<Arc<Journal>>,
    stopped: Arc<Mutex<Option<Stop>>>,
}

impl Ctx {
    async fn serve(self) {
        let mut seen = HashSet::new();
        // Engine keys of questions that may still be answered from the
        // journal (by `swarm answer` in another process).
        let mut open: Vec<String> = Vec::new();
        loop {
            // New questions here, or a wake from the journal (an answer or
            // a cancel given elsewhere; by default a short poll).
            let woken = async {
                match &self.journal {
                    Some(j) => j.store().woken(j.run()).await,
                    None => std::future::pending().await,
                }
            };
            let asked =
                self.engine
                    .pending_questions(&self.senior, &seen, Duration::from_secs(3600));
            let new = tokio::select! {
                new = asked => new,
                () = woken => Ok(Vec::new()),
            };
            let Ok(new) = new else {
                return;
            };
            for q in new {
                seen.insert(q.key.clone());
                if !under(&self.engine, &self.operator, q.task, self.root) {
                    continue;
                }
                let name = QuestionRecord::name_of(&q.question);
                if let Some(a) = self.answers.get(&name) {
                    self.answer(&q.key, &name, a.clone()).await;
                    continue;
                }
                // A layer's question (asked on a step, not the flow's root):
                // journal it like `swarm.ask`, so `swarm answer` reaches it
                // and a resumed run finds the answer given meanwhile.
                if let Some(j) = &self.journal
                    && q.task != self.root
                    && self
                        .journal_layer_question(j, &q.key, &name, &q.question)
                        .await
                {
                    continue;
                }
                if self.journal.is_some() {
                    open.push(q.key.clone());
                }
                if self.interactive {
                    self.prompt(q.key.clone(), name, q.question.clone());
                } else if !self.wait || self.journal.is_none() {
                    self.stop(&name);
                    return;
                }
            }
            if let Some(j) = &self.journal {
                if j.store().cancel_requested(j.run()).await.unwrap_or(false) {
                    *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(Stop::Cancelled);
                    let _ = self.engine.cancel_task(&self.operator, self.root);
                    return;
                }
                self.poll_answers(j, &mut open).await;
            }
        }
    }

    /// Resumes the question behind `key` with `a` and records the answer
    /// in the journal, so `swarm show` lists it answered.
    async fn answer(&self, key: &str, name: &str, a: Value) {
        if self.engine.resume(&self.senior, key, a.clone()).is_ok()
            && let Some(j) = &self.journal
        {
            let _ = j.store().answer(j.run(), name, a).await;
        }
    }

    /// Journals a layer's question; true when it was already answered
    /// there (an answer given while the run was stopped), and resumed.
    async fn journal_layer_question(
        &self,
        j: &Journal,
        key: &str,
        name: &str,
        question: &Value,
    ) -> bool {
        let store = j.store();
        let earlier = store.questions(j.run()).await.unwrap_or_default();
        let answered = earlier
            .iter()
            .rev()
            .find(|q| q.pos.starts_with("layer:") && q.name == name && q.answer.is_some());
        if let Some(a) = answered.and_then(|q| q.answer.clone()) {
            let _ = self.engine.resume(&self.senior, key, a);
            return true;
        }
        let pos = format!("layer:{key}");
        let record = crate::store::QuestionRecord {
            run: j.run().to_string(),
            pos: pos.clone(),
            name: name.to_string(),
            question: question.clone(),
            answer: None,
        };
        if j.ask(record).await.is_ok() {
            j.asked(key, &pos);
        }
        false
    }

    /// Answers open questions that were answered in the journal.
    async fn poll_answers(&self, j: &Journal, open: &mut Vec<String>) {
        if open.is_empty() {
            return;
        }
        let Ok(questions) = j.store().questions(j.run()).await else {
            return;
        };
        // The flow registers a question's position just after asking it,
        // so it is looked up at every poll.
        open.retain(|key| {
            let Some(pos) = j.position_of(key) else {
                return true;
            };
            match questions
                .iter()
                .find(|q| q.pos == pos)
                .and_then(|q| q.answer.clone())
            {
                Some(a) => {
                    let _ = self.engine.resume(&self.senior, key, a);
                    false
                }
                None => true,
            }
        });
    }

    /// Asks on the terminal; whichever answer comes first wins.
    fn prompt(&self, key: String, name: String, question: Arc<Value>) {
        let (engine, senior) = (self.engine.clone(), self.senior.clone());
        let journal = self.journal.clone();
        tokio::spawn(async move {
            if let Some(a) = ask_terminal(name.clone(), question).await
                && engine.resume(&senior, &key, a.clone()).is_ok()
                && let Some(j) = journal
            {
                let _ = j.store().answer(j.run(), &name, a).await;
            }
        });
    }

    fn stop(&self, name: &str) {
        let flag = shell_quote(&format!("{name}=VALUE"));
        let how = match &self.journal {
            Some(j) => format!(
                "pass --answer {flag}, run on a terminal, or answer it with \
                 `swarm answer {run} {quoted} VALUE` and continue with `swarm resume {run}`",
                run = j.run(),
                quoted = shell_quote(name),
            ),
            None => format!("pass --answer {flag} or run on a terminal"),
        };
        let msg = format!("senior question `{name}` needs an answer: {how}");
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(Stop::Unanswered(msg));
        let _ = self.engine.cancel_task(&self.operator, self.root);
    }
}

/// `s` as one shell word: as is when that is safe, else in single quotes,
/// so a hint pasted into a shell means what it says.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-=.:/,@%+".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
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

async fn ask_terminal(name: String, question: Arc<Value>) -> Option<Value> {
    let prompt = terminal_prompt(&name, &question);
    tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr();
        let _ = write!(err, "{prompt}");
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok()?;
        Some(parse_answer(line.trim()))
    })
    .await
    .ok()
    .flatten()
}

/// What a person at the terminal sees: the question, its details one per
/// line (not raw JSON), and what an answer looks like.
fn terminal_prompt(name: &str, question: &Value) -> String {
    let mut out = String::from("\n");
    let text = question.get("text").and_then(Value::as_str).unwrap_or(name);
    out.push_str(&format!("senior question: {text}\n"));
    if let Value::Object(fields) = question {
        for (k, v) in fields
            .iter()
            .filter(|(k, _)| !["text", "key"].contains(&k.as_str()))
        {
            let mut shown = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if shown.len() > 200 {
                shown.truncate(197);
                shown.push_str("...");
            }
            out.push_str(&format!("  {k}: {shown}\n"));
        }
    }
    if name.starts_with("escalate:") {
        out.push_str(
            "  any answer passes the step (its result becomes { original, override = answer }); \
             answer {\"ok\": false} to keep it blocked\n",
        );
    } else {
        out.push_str("  answer with text, or JSON for structured values\n");
    }
    out.push_str("answer> ");
    out
}

#[cfg(test)]
mod tests {
    use super::terminal_prompt;
    use serde_json::json;

    #[test]
    fn the_terminal_prompt_reads_as_text() {
        let p = terminal_prompt(
            "escalate:reviewer",
            &json!({"key": "escalate:reviewer", "text": "reviewer blocked twice", "result": {"verdict": "too short"}}),
        );
        assert!(
            p.contains("senior question: reviewer blocked twice\n"),
            "{p}"
        );
        assert!(p.contains("  result: {\"verdict\":\"too short\"}\n"), "{p}");
        assert!(p.contains("{\"ok\": false} to keep it blocked"), "{p}");
        assert!(!p.contains('`'), "{p}");
        let p = terminal_prompt("approve", &json!("approve"));
        assert!(
            p.contains("senior question: approve\n  answer with text"),
            "{p}"
        );
    }
}
