//! The observe verbs: `subscribe` (follow the ledger from a cursor), and
//! the host's own `note`, `announce` and `last_cursor`.

use crate::auth::{CapToken, Verb};
use crate::engine::events::{Event, EventKind};
use crate::engine::state::Access;
use crate::engine::{Engine, EngineError, TaskId};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// Follows the ledger from a cursor: catch-up and live in one loop. A
/// subscription by a token bound to a run sees only that run's events.
pub struct Subscription {
    engine: Engine,
    token: CapToken,
    /// The last event handed out, or skipped as not visible.
    cursor: u64,
    /// The last event read from the ledger.
    fetched: u64,
    buf: VecDeque<Event>,
}

impl Subscription {
    /// The cursor of the last event handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next event, waiting for one if the subscriber is caught up.
    pub async fn next(&mut self) -> Result<Event, EngineError> {
        loop {
            if let Some(ev) = self.try_next()? {
                return Ok(ev);
            }
            let engine = self.engine.clone();
            let notified = engine.ledger_notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(ev) = self.try_next()? {
                return Ok(ev);
            }
            notified.await;
        }
    }

    /// The next event if one is already in the ledger.
    pub fn try_next(&mut self) -> Result<Option<Event>, EngineError> {
        while self.buf.is_empty() {
            let (after, tok) = (self.fetched, &self.token);
            let (batch, last) = self.engine.with_state("subscribe", |s| {
                let batch = s.ledger.after(after, 512)?;
                let last = batch.last().map(|e| e.cursor);
                let seen: Vec<Event> = batch.into_iter().filter(|e| s.sees_event(tok, e)).collect();
                Ok::<_, EngineError>((seen, last))
            })?;
            let Some(last) = last else { break };
            self.fetched = last;
            if batch.is_empty() {
                self.cursor = last;
            }
            self.buf.extend(batch);
        }
        Ok(self.buf.pop_front().inspect(|ev| self.cursor = ev.cursor))
    }
}

/// Events a run-bound [`Engine::last_cursor_for`] looks back through
/// (bounded: it runs under the engine lock).
const NEWEST_SCAN: usize = 10_000;

impl Engine {
    /// Subscribes to events with cursor > `after` (0 for everything kept).
    pub fn subscribe(&self, tok: &CapToken, after: u64) -> Result<Subscription, EngineError> {
        self.with_state("subscribe", |s| {
            s.authorize(tok, Access::verb(Verb::Subscribe))
        })?;
        Ok(Subscription {
            engine: self.clone(),
            token: tok.clone(),
            cursor: after,
            fetched: after,
            buf: VecDeque::new(),
        })
    }

    /// Appends a layer's note to the ledger. Host code only: layers run in
    /// the host, so this is not a verb and Lua cannot reach it.
    pub fn note(&self, task: TaskId, layer: &'static str, note: Value) {
        self.with_state("note", |s| {
            s.emit(
                Some(task),
                EventKind::LayerNote {
                    layer,
                    note: Arc::new(note),
                },
            )
        });
    }

    /// Appends a host event (e.g. a blueprint reload). Host code only.
    pub fn announce(&self, kind: EventKind) {
        self.with_state("announce", |s| s.emit(None, kind));
    }

    /// The newest cursor in the ledger. Host code only: it reflects every
    /// run's activity; Lua reaches [`Engine::last_cursor_for`].
    pub fn last_cursor(&self) -> u64 {
        self.with_state("last_cursor", |s| s.ledger.last_cursor())
    }

    /// The largest step input, result, question or answer the engine takes
    /// (as JSON): what a journaled payload is measured against before it
    /// is stored.
    pub fn payload_limit(&self) -> usize {
        self.with_state("payload_limit", |s| s.config.max_payload_bytes)
    }

    /// The newest cursor `tok` may know of. Needs the observer right
    /// (`subscribe`). A token that sees every run gets the ledger's newest;
    /// a token bound to a run gets its run's newest event among the last
    /// [`NEWEST_SCAN`] held (else 0, from which a subscription sees all it
    /// may): the engine-wide counter moves with other runs' work, a side
    /// channel a run must not read.
    pub fn last_cursor_for(&self, tok: &CapToken) -> Result<u64, EngineError> {
        self.with_state("last_cursor", |s| {
            s.check(tok, Verb::Subscribe, None)?;
            if tok.claims.task.is_none() {
                return Ok(s.ledger.last_cursor());
            }
            Ok(s.ledger
                .newest(NEWEST_SCAN, |e| s.sees_event(tok, e))
                .unwrap_or(0))
        })
    }
}
