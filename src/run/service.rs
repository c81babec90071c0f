//! The rules of a journaled run's lifecycle, in one place: when a run may
//! be resumed (and against which code), how it is cancelled and answered
//! from outside its process. Callers (the CLI today, the HTTP server later)
//! turn the typed outcomes into words; none of them decides these rules.

use super::{Run, RunError, RunOptions, prepare_source};
use crate::engine::{Engine, TaskId};
use crate::store::{RunRecord, RunStatus, Store};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// A recorded run, taken and started again: its journal replays.
pub struct Resumed {
    pub run: Run,
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

/// Why a run cannot be resumed: the refusal, in words for the user.
fn refused(message: String) -> RunError {
    RunError::Refused(message)
}

/// Resumes run `record` of `store`: refused when it has finished, when its
/// blueprint or any helper it `require`d changed (unless `force`), or when
/// another owner holds it; otherwise claimed, prepared and started.
pub async fn resume(
    engine: &Engine,
    record: &RunRecord,
    force: bool,
    opts: RunOptions,
) -> Result<Resumed, RunError> {
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
        return Err(refused(format!(
            "the blueprint {} changed since run `{}` started (was {}, now {}); \
             resume with --force to replay the journal against the new version",
            path.display(),
            record.id,
            &record.hash[..12.min(record.hash.len())],
            &hash[..12]
        )));
    }
    let run = prepare_source(engine, &path, &source, opts)?;
    let changed = run.changed_helpers(&record.helpers);
    if !changed.is_empty() && !force {
        return Err(refused(format!(
            "helper files of run `{}` changed since it started: {}; resume with --force \
             to replay the journal against the new version",
            record.id,
            changed.join(", ")
        )));
    }
    // The claim refuses a run another owner holds (naming it).
    let root = run.resume(record).await?;
    Ok(Resumed { run, root })
}

/// Cancels run `record`: at once when nothing executes it, else by asking
/// its owner. A finished run is refused.
pub fn cancel(store: &Arc<dyn Store>, record: &RunRecord) -> Result<Cancelled, RunError> {
    match record.status {
        st if st.is_finished() => Err(refused(format!(
            "run `{}` already finished ({st})",
            record.id
        ))),
        RunStatus::Running => {
            crate::store::wait(store.request_cancel(&record.id))?;
            Ok(Cancelled::Requested)
        }
        _ => {
            crate::store::wait(store.set_status(&record.id, RunStatus::Cancelled, None, None))?;
            Ok(Cancelled::Now)
        }
    }
}

/// Answers run `record`'s open question `name` (its key or text). Refused,
/// naming the open ones, when there is no such question.
pub fn answer(
    store: &Arc<dyn Store>,
    record: &RunRecord,
    name: &str,
    value: Value,
) -> Result<Answered, RunError> {
    if crate::store::wait(store.answer(&record.id, name, value))? {
        return Ok(match record.status {
            RunStatus::Running => Answered::Continues,
            _ => Answered::NeedsResume,
        });
    }
    let open: Vec<String> = crate::store::wait(store.questions(&record.id))?
        .into_iter()
        .filter(|q| q.answer.is_none())
        .map(|q| q.name)
        .collect();
    Err(refused(format!(
        "run `{}` has no open question `{name}` (open: {})",
        record.id,
        if open.is_empty() {
            "none".into()
        } else {
            open.join(", ")
        }
    )))
}
