//! Worker verbs: what a running worker may do with its bound token.
//! Outputs go to the ledger only (not kept on the task), so a chatty worker
//! costs ledger space, which is bounded, not task memory.

use crate::auth::{AuthError, CapToken, Verb};
use crate::engine::events::{EventKind, OutputKind};
use crate::engine::state::Access;
use crate::engine::{Engine, EngineError, TaskId};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// What a worker is asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Prompt {
    pub task: TaskId,
    pub attempt: u32,
    pub agent: Arc<str>,
    pub input: Arc<Value>,
}

fn bound(tok: &CapToken, verb: &'static str) -> Result<TaskId, EngineError> {
    tok.claims
        .task
        .map(TaskId)
        .ok_or(EngineError::NoBoundTask(verb))
}

impl Engine {
    /// The bound task's input.
    pub fn fetch_prompt(&self, tok: &CapToken) -> Result<Prompt, EngineError> {
        let id = bound(tok, "fetch_prompt")?;
        self.with_state("fetch_prompt", |s| {
            s.authorize(tok, Access::on(Verb::FetchPrompt, id))?;
            let t = s.task(id)?;
            Ok(Prompt {
                task: id,
                attempt: t.attempt,
                agent: t.agent.clone(),
                input: t.input.clone(),
            })
        })
    }

    /// Progress, a partial result or an artifact, as an event.
    pub fn emit(&self, tok: &CapToken, output: OutputKind, data: Value) -> Result<(), EngineError> {
        let id = bound(tok, "emit")?;
        self.with_state("emit", |s| {
            s.authorize(tok, Access::on(Verb::Emit, id))?;
            s.admit("the emitted payload", &data, s.config.max_emit_bytes)?;
            s.emit(
                Some(id),
                EventKind::WorkerOutput {
                    output,
                    data: Arc::new(data),
                },
            );
            Ok(())
        })
    }

    /// Records the attempt's result; it applies when the worker ends.
    pub fn post_result(&self, tok: &CapToken, value: Value, ok: bool) -> Result<(), EngineError> {
        let id = bound(tok, "post_result")?;
        self.with_state("post_result", |s| {
            s.authorize(tok, Access::on(Verb::PostResult, id))?;
            s.admit("the result", &value, s.config.max_payload_bytes)?;
            s.task_mut(id)?.posted = Some((value, ok));
            Ok(())
        })
    }

    /// A short handle (128 random bits, hex) for a process that calls back
    /// later; it dies with the token.
    pub fn worker_handle(&self, tok: &CapToken) -> Result<String, EngineError> {
        self.with_state("worker_handle", |s| {
            s.verify(tok)?;
            let rec = s
                .tokens
                .get_mut(&tok.claims.nonce)
                .ok_or(EngineError::Auth(AuthError::Revoked))?;
            let handle = rec
                .handle
                .get_or_insert_with(|| format!("{:032x}", crate::auth::nonce()))
                .clone();
            s.handles.insert(handle.clone(), tok.clone());
            Ok(handle)
        })
    }

    /// The live token behind a worker handle.
    pub fn token_for_handle(&self, handle: &str) -> Result<CapToken, EngineError> {
        self.with_state("token_for_handle", |s| {
            s.handles
                .get(handle)
                .cloned()
                .ok_or(EngineError::UnknownHandle)
        })
    }
}
