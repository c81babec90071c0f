//! The spawner seam: how the engine runs one attempt of a task.
//!
//! The engine's `dispatch_attempt` calls a [`Spawner`] and awaits the
//! [`Worker`] future it returns (or drops it when the task is cancelled).
//! The seam lives here, with its caller; backends and layers (in `spawn/`,
//! `lua/`, `llm/`) implement it.

use crate::auth::CapToken;
use crate::engine::{Engine, EngineError, TaskId};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything a worker gets for one attempt.
#[derive(Clone)]
pub struct SpawnCtx {
    pub engine: Engine,
    pub task: TaskId,
    pub attempt: u32,
    pub agent: Arc<str>,
    pub input: Arc<Value>,
    /// A worker token bound to `task`, revoked when the attempt settles.
    pub token: CapToken,
    /// Fired when the task is cancelled; a worker must stop when it fires.
    pub cancel: CancellationToken,
    /// How many times a `retry` layer has re-run this attempt (0 at first).
    pub retry: u32,
    /// The task's spawn depth (a run's root is 0, its steps 1).
    pub depth: u32,
    /// The root task of the task's tree (its run).
    pub root: TaskId,
    /// The step's position in its run's journal, when the run is durable.
    pub journal_pos: Option<Arc<str>>,
    /// A mob member's turn: `{member, peers}` (see `TaskSpec::member`).
    pub member: Option<Arc<Value>>,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass(Value),
    Blocked(Value),
    Cancelled,
    Timeout,
    /// The worker ended without a value; whatever it sent through
    /// `post_result` decides the outcome.
    Exited,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "pass",
            Outcome::Blocked(_) => "blocked",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::Exited => "exited",
        }
    }
}

/// Why a worker could not be started or could not finish: each with a
/// stable code, which a blocked task's result carries as `code`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    #[error("unknown layer `{key}` (known: {known})")]
    UnknownLayer { key: String, known: String },
    #[error("layer `{layer}`: {message}")]
    LayerOptions { layer: String, message: String },
    /// An agent's or layer's declaration could not be read.
    #[error("{0}")]
    BadSpec(String),
    /// `agent.rust { name = ... }` names no registered Rust agent.
    #[error("agent `{agent}`: no Rust agent named `{name}` is registered")]
    UnknownRustAgent { agent: String, name: String },
    /// The task's input could not be handed to the worker.
    #[error("the input could not be handed to the agent: {0}")]
    Input(String),
    /// A Lua VM for the attempt could not be built.
    #[error("could not build the Lua VM: {0}")]
    VmSetup(String),
    /// Waiting for a process agent's exit failed.
    #[error("waiting for `{program}`: {message}")]
    Wait { program: String, message: String },
    /// A resource the attempt waited for was shut down.
    #[error("{0} was shut down")]
    Closed(&'static str),
    /// An engine verb the worker needed refused (its code is kept).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SpawnError {
    pub fn code(&self) -> &'static str {
        match self {
            SpawnError::UnknownLayer { .. } => "unknown_layer",
            SpawnError::LayerOptions { .. } => "layer_options",
            SpawnError::BadSpec(_) => "bad_spec",
            SpawnError::UnknownRustAgent { .. } => "unknown_rust_agent",
            SpawnError::Input(_) => "bad_input",
            SpawnError::VmSetup(_) => "vm_setup",
            SpawnError::Wait { .. } => "process_wait",
            SpawnError::Closed(_) => "closed",
            SpawnError::Engine(e) => e.code(),
        }
    }
}

/// A running worker: resolves when the attempt ends. Dropping it abandons
/// the worker (backends kill what they started).
pub type Worker = Pin<Box<dyn Future<Output = Result<Outcome, SpawnError>> + Send>>;

/// Starts workers for task attempts.
pub trait Spawner: Send + Sync {
    fn spawn(&self, ctx: SpawnCtx) -> Worker;
}
