//! Spawning: how a task attempt becomes a running worker.
//!
//! A [`Spawner`] turns one attempt into a [`Worker`] future; the engine's
//! `dispatch_attempt` awaits it (or drops it when the task is cancelled). A
//! [`Layer`] wraps a spawner, tower style; the [`LayerRegistry`] maps hint
//! keys to layer factories, and [`build_stack`] is the one place a stack is
//! assembled. Backends live one per file.

mod layers;
pub mod process;
mod remote;
mod rust;

pub use layers::{LayerEnv, LayerRegistry, layer_fn};
pub use process::{ProcessAgent, ProcessSpec};
pub use remote::{RemoteAgent, RemoteSpec};
pub use rust::RustAgent;

use crate::auth::CapToken;
use crate::engine::{Engine, TaskId};
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
    /// The step's position in its run's journal, when the run is durable.
    pub journal_pos: Option<Arc<str>>,
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

/// Typed spawning errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpawnError {
    #[error("unknown layer `{key}` (known: {known})")]
    UnknownLayer { key: String, known: String },
    #[error("layer `{layer}`: {message}")]
    LayerOptions { layer: String, message: String },
    #[error("worker failed: {0}")]
    Failed(String),
}

impl SpawnError {
    pub fn code(&self) -> &'static str {
        match self {
            SpawnError::UnknownLayer { .. } => "unknown_layer",
            SpawnError::LayerOptions { .. } => "layer_options",
            SpawnError::Failed(_) => "worker_failed",
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

/// Wraps a spawner with extra behaviour (timeouts, retries, audit, ...).
pub trait Layer: Send + Sync {
    fn wrap(&self, inner: Arc<dyn Spawner>) -> Arc<dyn Spawner>;
}

/// Builds a stack from a backend and layers listed **outer → inner**: the
/// first layer sees the attempt first and the outcome last.
pub fn build_stack(backend: Arc<dyn Spawner>, layers: &[Arc<dyn Layer>]) -> Arc<dyn Spawner> {
    layers
        .iter()
        .rev()
        .fold(backend, |inner, layer| layer.wrap(inner))
}
