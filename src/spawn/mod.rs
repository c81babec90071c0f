//! Spawning: the agent backends and the layers that wrap them.
//!
//! Backends implement the engine's [`Spawner`] seam, one per file. A
//! [`Layer`] wraps a spawner, tower style; the [`LayerRegistry`] maps hint
//! keys to layer factories, and [`build_stack`] is the one place a stack is
//! assembled.

pub mod kinds;
mod layers;
pub mod process;
mod remote;
mod rust;
pub mod secrets;

pub use layers::{LayerEnv, LayerRegistry, layer_fn};
pub use process::{ProcessAgent, ProcessSpec};
pub use remote::{RemoteAgent, RemoteSpec, queue_of};
pub use rust::RustAgent;

use crate::engine::Spawner;
use std::sync::Arc;

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
