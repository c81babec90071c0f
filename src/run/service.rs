//! The rules of a run's lifecycle, in one place: who may do what to which
//! run (the one `Action` × `Role` table), when a run may be resumed (and
//! against which code), how a recorded run is cancelled and answered.
//! [`super::Runs`] applies them for every face (the CLI, the REPL, `swarm
//! dev`, the HTTP server), which pass the caller's [`Authority`] and turn
//! the typed outcomes into words; none of them decides these rules.

use super::{Prepared, RunError, RunOptions, prepare_source};
use crate::auth::Role;
use crate::engine::{Engine, TaskId};
use crate::store::{JournalEntry, QuestionRecord, RunRecord, RunStatus, Store};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// What a caller asks the run service to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Resume,
    Cancel,
    Interrupt,
    Answer,
    /// Send a message into a run (`swarm send`, `POST .../messages`).
    Send,
    /// List and show runs, their journal, questions and events.
    Read,
    /// Claim remote steps from a queue and report on them (`swarm worker`).
    Work,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Resume => "resume",
            Action::Cancel => "cancel",
            Action::Interrupt => "interrupt",
            Action::Answer => "answer",
            Action::Send => "send messages to",
            Action::Read => "read",
            Action::Work => "work",
        }
    }

    /// The one table: operators do everything, seniors answer and read,
    /// observers read, workers touch runs only through the steps they claim.
    fn allowed(self, role: Role) -> bool {
        match role {
            Role::Operator => true,
            Role::Senior => matches!(self, Action::Answer | Action::Read),
            Role::Observer => self == Action::Read,
            Role::Worker => self == Action::Work,
        }
    }
}

/// Who is calling: a role, and the one run a bound caller may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub role: Role,
    /// When set, every other run is as if it did not exist.
    pub run: Option<String>,
    /// When set, the incarnation of `run` (its `created_ms`) the caller
    /// was given: a later run that reuses the id (after a prune) is as if
    /// it did not exist either.
    pub incarnation: Option<u64>,
}

impl Authority {
    /// The user at this machine's terminal: operator over every run.
    pub fn local() -> Authority {
        Authority {
            role: Role::Operator,
            run: None,
            incarnation: None,
        }
    }

    /// Refuses `action` on `run` (or on runs in general, for `None`):
    /// a role that may not do it is `forbidden`; a run outside a bound
    /// caller's is `unknown_run`, revealing nothing about it; a bound
    /// caller starts no runs.
    /// Refuses `record` when the caller is bound to another incarnation of
    /// its id (the run was pruned and the id taken again): `unknown_run`.
    pub fn reaches(&self, record: &crate::store::RunRecord) -> Result<(), RunError> {
        match self.incarnation {
            Some(c) if c != record.created_ms => Err(RunError::UnknownRun(record.id.clone())),
            _ => Ok(()),
        }
    }

    pub fn check(&self, action: Action, run: Option<&str>) -> Result<(), RunError> {
        if let (Some(mine), Some(asked)) = (&self.run, run)
            && mine != asked
        {
            return Err(RunError::UnknownRun(asked.to_string()));
        }
        if let (Some(mine), Action::Start) = (&self.run, action) {
            return Err(RunError::Bound(mine.clone()));
        }
        if !action.allowed(self.role) {
            return Err(RunError::Forbidden {
                role: self.role,
                action: action.as_str(),
            });
        }
        Ok(())
    }
}

/// A run as `show` presents it: its record, journal and questions.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shown {
    pub run: RunRecord,
    pub journal: Vec<JournalEntry>,
    pub questions: Vec<QuestionRecord>,
    /// Model tokens, from the journal's LLM turns.
    pub usage: super::JournalUsage,
}

/// A recorded run, taken and started again: its journal replays.
pub struct Resumed {
    pub run: Prepared,
    pub root: TaskId,
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// The run was not executing: it is now `cancelled`.
    Now,
    /// The run is executing: its owner has been asked to stop it.
    Requested,
}

/// What `answer` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The run is executing and waits for it: it goes on by itself.
    Continues,
    /// The run is stopped: `resume` continues it with the answer.
    NeedsResume,
}

/// What `send` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    /// The message's number in the run.
    pub seq: u64,
    /// The run had a message with this sender's id already: nothing new.
    pub duplicate: bool,
    /// The run is stopped: `resume` continues it, and it receives this.
    pub resume_needed: bool,
}

/// The longest topic and sender's id a message may have.
const MESSAGE_NAME_MAX: usize = 256;

/// The most bytes of JSON one message's value may take (and the engine's
/// payload limit, when smaller): a `recv` reads a few at a time, so the
/// host never holds more than a few MiB of a run's mail at once.
pub const MESSAGE_MAX: usize = 1 << 20;

/// Sends a message on `topic` into run `record`: refused when the run has
/// finished (`run_finished`), and for a topic or id that is empty or too
/// long, a null value or one past `limit` bytes of JSON (`bad_message`).
pub(super) async fn send_record(
    who: &Authority,
    store: &Arc<dyn Store>,
    record: &RunRecord,
    message: (&str, Value, Option<&str>),
    limit: usize,
) -> Result<Sent, RunError> {
    who.check(Action::Send, Some(&record.id))?;
    let (topic, value, id) = message;
    if record.status.is_finished() {
        return Err(RunError::Finished {
            run: record.id.clone(),
            status: record.status,
        });
    }
    let bad = |m: String| Err(RunError::BadMessage(m));
    if topic.is_empty() || topic.len() > MESSAGE_NAME_MAX {
        return bad(format!(
            "a message's topic must be 1-{MESSAGE_NAME_MAX} bytes, not {}",
            topic.len()
        ));
    }
    if let Some(id) = id.filter(|id| id.is_empty() || id.len() > MESSAGE_NAME_MAX) {
        return bad(format!(
            "a message's id must be 1-{MESSAGE_NAME_MAX} bytes, not {}",
            id.len()
        ));
    }
    if value.is_null() {
        return bad(
            "a message's value must not be null (`swarm.recv` answers nil on a \
                    timeout); send an object, a string, a number or a boolean"
                .into(),
        );
    }
    let limit = limit.min(MESSAGE_MAX);
    let bytes = crate::engine::size::measure(&value, limit).json;
    if bytes > limit {
        return bad(format!(
            "the message's value is {bytes} bytes of JSON, past the limit of {limit}"
        ));
    }
    let posted = store.send_message(&record.id, topic, value, id).await?;
    Ok(Sent {
        seq: posted.seq,
        duplicate: posted.duplicate,
        resume_needed: record.status != RunStatus::Running,
    })
}

/// Why a run cannot be resumed: the refusal, in words for the user.
fn refused(message: String) -> RunError {
    RunError::Refused(message)
}

/// Resumes run `record` of `store`: refused when it has finished, when its
/// blueprint or any helper it `require`d changed (unless `force`), or when
/// another owner holds it; otherwise claimed, prepared and started.
pub(super) async fn resume(
    who: &Authority,
    engine: &Engine,
    record: &RunRecord,
    force: bool,
    explain: bool,
    opts: RunOptions,
) -> Result<Resumed, RunError> {
    who.check(Action::Resume, Some(&record.id))?;
    if record.status.is_finished() {
        return Err(refused(format!(
            "run `{}` already finished ({}); there is nothing to resume",
            record.id, record.status
        )));
    }
    let path = PathBuf::from(&record.path);
    let source = super::blueprint::read(&path)?;
    let hash = super::blueprint::hash(&source);
    if hash != record.hash && !force {
        let now = super::upgrade::on_new_code(engine, &path, &source, record, &opts, explain).await;
        return Err(refused(format!(
            "the blueprint {} changed since run `{}` started (was {}, now {}); {now}",
            path.display(),
            record.id,
            &record.hash[..12.min(record.hash.len())],
            &hash[..12]
        )));
    }
    let run = prepare_source(engine, &path, &source, opts.clone())?;
    let changed = run.changed_helpers(&record.helpers);
    if !changed.is_empty() && !force {
        let now = super::upgrade::on_new_code(engine, &path, &source, record, &opts, explain).await;
        return Err(refused(format!(
            "helper files of run `{}` changed since it started: {}; {now}",
            record.id,
            changed.join(", ")
        )));
    }
    // The claim refuses a run another owner holds (naming it).
    let root = run.resume(record).await?;
    Ok(Resumed { run, root })
}

/// Cancels run `record`: at once when nothing executes it (not running,
/// or its owner's lease lapsed: that owner is fenced out), else by asking
/// its owner. A finished run is refused.
pub(super) async fn cancel_record(
    who: &Authority,
    store: &Arc<dyn Store>,
    record: &RunRecord,
) -> Result<Cancelled, RunError> {
    who.check(Action::Cancel, Some(&record.id))?;
    match record.status {
        st if st.is_finished() => Err(refused(format!(
            "run `{}` already finished ({st})",
            record.id
        ))),
        RunStatus::Running if !store.lapsed(&record.id).await? => {
            store.request_cancel(&record.id).await?;
            Ok(Cancelled::Requested)
        }
        _ => {
            store
                .set_status(&record.id, RunStatus::Cancelled, None, None)
                .await?;
            Ok(Cancelled::Now)
        }
    }
}

/// Answers run `record`'s open question `name` (its key or text). Refused,
/// naming the open ones, when there is no such question.
pub(super) async fn answer_record(
    who: &Authority,
    store: &Arc<dyn Store>,
    record: &RunRecord,
    name: &str,
    value: Value,
) -> Result<Answered, RunError> {
    who.check(Action::Answer, Some(&record.id))?;
    if store.answer(&record.id, name, value).await? {
        return Ok(match record.status {
            RunStatus::Running => Answered::Continues,
            _ => Answered::NeedsResume,
        });
    }
    let open: Vec<String> = store
        .questions(&record.id)
        .await?
        .into_iter()
        .filter(|q| q.answer.is_none())
        .map(|q| q.name)
        .collect();
    Err(RunError::UnknownQuestion {
        run: record.id.clone(),
        name: name.to_string(),
        open: if open.is_empty() {
            "none".into()
        } else {
            open.join(", ")
        },
    })
}
