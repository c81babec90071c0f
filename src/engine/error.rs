//! Typed engine errors, each with a stable code for Lua and the CLI.

use super::TaskStatus;
use crate::auth::AuthError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no task {0}")]
    UnknownTask(u64),
    #[error("task {task} is {status}; `{verb}` needs {needs}")]
    InvalidState {
        task: u64,
        status: TaskStatus,
        verb: &'static str,
        needs: &'static str,
    },
    #[error("no pending senior question with key `{0}`")]
    UnknownResumeKey(String),
    #[error("senior question `{0}` was already answered")]
    AlreadyAnswered(String),
    #[error("unknown or expired worker handle")]
    UnknownHandle,
    #[error("`{0}` needs a worker token bound to a task")]
    NoBoundTask(&'static str),
    #[error("events after cursor {cursor} are no longer in memory (oldest kept is {oldest})")]
    EventsEvicted { cursor: u64, oldest: u64 },
    #[error("{what} timed out after {ms} ms")]
    Timeout { what: &'static str, ms: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("{what} is {} of JSON, over the limit of {}", super::size::human(*bytes), super::size::human(*limit))]
    TooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("the engine already holds {} of task inputs (limit {}); wait for tasks to finish", super::size::human(*held), super::size::human(*limit))]
    Full { held: usize, limit: usize },
}

impl EngineError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Auth(a) => a.code(),
            EngineError::UnknownTask(_) => "unknown_task",
            EngineError::InvalidState { .. } => "invalid_state",
            EngineError::UnknownResumeKey(_) => "unknown_resume_key",
            EngineError::AlreadyAnswered(_) => "already_answered",
            EngineError::UnknownHandle => "unknown_handle",
            EngineError::NoBoundTask(_) => "no_bound_task",
            EngineError::EventsEvicted { .. } => "events_evicted",
            EngineError::Timeout { .. } => "timeout",
            EngineError::Invalid(_) => "invalid",
            EngineError::TooLarge { .. } => "payload_too_large",
            EngineError::Full { .. } => "engine_full",
        }
    }
}
