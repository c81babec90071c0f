//! The `rust` backend: a registered async Rust function as an agent.
//!
//! The function gets the whole [`SpawnCtx`] (input, worker token, cancel
//! token) and returns `Ok(value)` for pass or `Err(value)` for blocked.

use crate::engine::{Outcome, SpawnCtx, Spawner, Worker};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

type AgentFn = dyn Fn(SpawnCtx) -> Worker + Send + Sync;

#[derive(Clone)]
pub struct RustAgent {
    f: Arc<AgentFn>,
}

impl RustAgent {
    pub fn new<F, Fut>(f: F) -> RustAgent
    where
        F: Fn(SpawnCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, Value>> + Send + 'static,
    {
        RustAgent {
            f: Arc::new(move |ctx| {
                let fut = f(ctx);
                Box::pin(async move {
                    Ok(match fut.await {
                        Ok(v) => Outcome::Pass(v),
                        Err(v) => Outcome::Blocked(v),
                    })
                })
            }),
        }
    }
}

impl Spawner for RustAgent {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        (self.f)(ctx)
    }
}
