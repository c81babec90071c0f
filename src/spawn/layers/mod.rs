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

/// A registered layer: its factory and, when declared, the options it
/// takes (any other is an error naming them).
struct Entry {
    factory: Factory,
    options: Option<Options>,
}

/// The options a layer takes, and which of them it needs.
#[derive(Clone, Copy)]
struct Options {
    all: &'static [&'static str],
    required: &'static [&'static str],
}

#[derive(Default)]
pub struct LayerRegistry {
    factories: BTreeMap<String, Entry>,
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

    /// Registers a layer whose options are not checked by name.
    pub fn register<F>(&mut self, key: &str, factory: F)
    where
        F: Fn(&Value, &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> + Send + Sync + 'static,
    {
        let entry = Entry {
            factory: Box::new(factory),
            options: None,
        };
        self.factories.insert(key.to_string(), entry);
    }

    /// Registers a layer taking exactly `options`, of which it needs
    /// `required`: a blueprint naming any other, or leaving a needed one
    /// out, is refused when it loads, with the valid ones and a suggestion.
    pub fn register_with<F>(
        &mut self,
        key: &str,
        options: &'static [&'static str],
        required: &'static [&'static str],
        factory: F,
    ) where
        F: Fn(&Value, &LayerEnv) -> Result<Arc<dyn Layer>, SpawnError> + Send + Sync + 'static,
    {
        let entry = Entry {
            factory: Box::new(factory),
            options: Some(Options {
                all: options,
                required,
            }),
        };
        self.factories.insert(key.to_string(), entry);
    }

    /// What is wrong with `opts` for layer `key` by its declared options:
    /// an unknown one (with the valid ones and a suggestion), or a needed
    /// one left out. `None` when they suit, or `key` declared none.
    pub fn option_problem(&self, key: &str, opts: &Value) -> Option<(String, String)> {
        let known = self.factories.get(key)?.options?;
        let given = opts.as_object()?;
        let list = if known.all.is_empty() {
            "it takes none".to_string()
        } else {
            format!("options: {}", known.all.join(", "))
        };
        if let Some(bad) = given.keys().find(|k| !known.all.contains(&k.as_str())) {
            let hint = crate::text::did_you_mean(bad, known.all.iter().copied());
            return Some((
                bad.clone(),
                format!("unknown option `{bad}` ({list}){hint}"),
            ));
        }
        let missing = known.required.iter().find(|k| !given.contains_key(**k))?;
        Some((
            key.to_string(),
            format!("needs option `{missing}` ({list})"),
        ))
    }

    /// Builds the layer registered under `key` with `opts`.
    pub fn build(
        &self,
        key: &str,
        opts: &Value,
        env: &LayerEnv,
    ) -> Result<Arc<dyn Layer>, SpawnError> {
        match self.factories.get(key) {
            Some(_) if let Some((_, message)) = self.option_problem(key, opts) => {
                Err(SpawnError::LayerOptions {
                    layer: key.to_string(),
                    message,
                })
            }
            Some(e) => (e.factory)(opts, env),
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
