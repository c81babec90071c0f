//! The layer registry: hint key → layer factory.
//!
//! An unknown key is an error that lists the known ones, never a silent skip.
//! Built-in layers are registered in [`LayerRegistry::builtin`].

use super::{Layer, Outcome, SpawnCtx, SpawnError, Spawner, Worker};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

type Factory = Box<dyn Fn(&Value) -> Result<Arc<dyn Layer>, SpawnError> + Send + Sync>;

#[derive(Default)]
pub struct LayerRegistry {
    factories: BTreeMap<String, Factory>,
}

impl LayerRegistry {
    /// The registry with every built-in layer.
    pub fn builtin() -> LayerRegistry {
        let mut reg = LayerRegistry::default();
        reg.register("timeout", |opts| {
            let ms =
                opts.get("ms")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| SpawnError::LayerOptions {
                        layer: "timeout".into(),
                        message: "needs `ms`, a positive integer".into(),
                    })?;
            Ok(Arc::new(Timeout(Duration::from_millis(ms))))
        });
        reg
    }

    pub fn register<F>(&mut self, key: &str, factory: F)
    where
        F: Fn(&Value) -> Result<Arc<dyn Layer>, SpawnError> + Send + Sync + 'static,
    {
        self.factories.insert(key.to_string(), Box::new(factory));
    }

    /// Builds the layer registered under `key` with `opts`.
    pub fn build(&self, key: &str, opts: &Value) -> Result<Arc<dyn Layer>, SpawnError> {
        match self.factories.get(key) {
            Some(f) => f(opts),
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

/// `timeout {ms}`: an attempt running longer ends as `Timeout`.
struct Timeout(Duration);

struct TimeoutSpawner {
    limit: Duration,
    inner: Arc<dyn Spawner>,
}

impl Layer for Timeout {
    fn wrap(&self, inner: Arc<dyn Spawner>) -> Arc<dyn Spawner> {
        Arc::new(TimeoutSpawner {
            limit: self.0,
            inner,
        })
    }
}

impl Spawner for TimeoutSpawner {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        let worker = self.inner.spawn(ctx);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, worker).await {
                Ok(out) => out,
                Err(_) => Ok(Outcome::Timeout),
            }
        })
    }
}
