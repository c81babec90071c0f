//! The layer registry: hint key → layer factory, and the helper that turns
//! a closure into a layer.
//!
//! An unknown key is an error that lists the known ones, never a silent skip.
//! Built-in layers live in `builtin.rs`; user layers written in Lua are made
//! by the Lua layer (`lua/layer.rs`) with [`layer_fn`].

mod builtin;

use super::Layer;
use crate::auth::CapToken;
use crate::engine::Engine;
use crate::engine::{SpawnCtx, SpawnError, Spawner, Worker};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a layer factory may use: the engine and the run's operator token
/// (e.g. `senior_escalation` asks the senior with it).
#[derive(Clone)]
pub struct LayerEnv {
    pub engine: Engine,
    pub token: CapToken,
}

type Factory = Box<dyn Fn(&Value, &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> + Send + Sync>;

#[derive(Default)]
pub struct LayerRegistry {
    factories: BTreeMap<String, Factory>,
}

impl LayerRegistry {
    /// The registry with every built-in layer: audit, retry, timeout,
    /// long_hold, senior_escalation, rate_limit, concurrency. An embedder
    /// adds its own with [`LayerRegistry::register`] and passes the
    /// registry in `RunOptions::layers`; blueprints then validate and build
    /// against it.
    pub fn builtin() -> LayerRegistry {
        let mut reg = LayerRegistry::default();
        builtin::register_all(&mut reg);
        reg
    }

    /// One shared registry of the built-in layers, for hosts that add none.
    pub fn shared_builtin() -> Arc<LayerRegistry> {
        static SHARED: std::sync::OnceLock<Arc<LayerRegistry>> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(LayerRegistry::builtin()))
            .clone()
    }

    /// Whether a layer is registered under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.factories.contains_key(key)
    }

    pub fn register<F>(&mut self, key: &str, factory: F)
    where
        F: Fn(&Value, &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> + Send + Sync + 'static,
    {
        self.factories.insert(key.to_string(), Box::new(factory));
    }

    /// Builds the layer registered under `key` with `opts`.
    pub fn build(
        &self,
        key: &str,
        opts: &Value,
        env: &LayerEnv,
    ) -> Result<Arc<dyn Layer>, SpawnError> {
        match self.factories.get(key) {
            Some(f) => f(opts, env),
            None => Err(SpawnError::UnknownLayer {
                key: key.to_string(),
                known: self.keys().join(", "),
            }),
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }
}

/// A layer from a closure `f(inner, ctx) -> Worker`.
pub fn layer_fn<F>(f: F) -> Arc<dyn Layer>
where
    F: Fn(&Arc<dyn Spawner>, SpawnCtx) -> Worker + Send + Sync + 'static,
{
    Arc::new(FnLayer(Arc::new(f)))
}

struct FnLayer<F>(Arc<F>);

struct Wrapped<F> {
    inner: Arc<dyn Spawner>,
    f: Arc<F>,
}

impl<F> Layer for FnLayer<F>
where
    F: Fn(&Arc<dyn Spawner>, SpawnCtx) -> Worker + Send + Sync + 'static,
{
    fn wrap(&self, inner: Arc<dyn Spawner>) -> Arc<dyn Spawner> {
        Arc::new(Wrapped {
            inner,
            f: self.0.clone(),
        })
    }
}

impl<F> Spawner for Wrapped<F>
where
    F: Fn(&Arc<dyn Spawner>, SpawnCtx) -> Worker + Send + Sync,
{
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        (self.f)(&self.inner, ctx)
    }
}
