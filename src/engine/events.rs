//! The event ledger (subscriptions to it are the observe verbs,
//! `verbs/observe.rs`).
//!
//! Every state change appends one [`Event`] with a monotonic cursor. The
//! in-memory ledger keeps the last `retention` events in a ring; a
//! subscription pulls from it by cursor, so catching up and following live
//! are the same loop and nothing can fall into a gap between them. A
//! subscriber that falls further behind than the retention bound gets an
//! explicit `EventsEvicted` error, never a silent skip.

use super::{EngineError, TaskId};
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

/// What kind of worker output an `emit` carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Progress,
    Partial,
    Artifact,
    /// A line a process agent wrote to stderr.
    Stderr,
}

impl std::str::FromStr for OutputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "progress" => Ok(OutputKind::Progress),
            "partial" => Ok(OutputKind::Partial),
            "artifact" => Ok(OutputKind::Artifact),
            "stderr" => Ok(OutputKind::Stderr),
            _ => Err(format!(
                "unknown output kind `{s}` (progress, partial, artifact)"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    SessionAttached {
        subject: Arc<str>,
        role: &'static str,
    },
    SessionDetached {
        subject: Arc<str>,
        reason: &'static str,
    },
    TaskCreated {
        agent: Arc<str>,
        parent: Option<TaskId>,
        /// The step's journal position, when journaled: where a reader
        /// (the web page) finds the step's recorded result.
        #[serde(skip_serializing_if = "Option::is_none")]
        pos: Option<Arc<str>>,
    },
    AttemptStarted {
        attempt: u32,
    },
    AttemptCompleted {
        attempt: u32,
        status: &'static str,
        us: u64,
    },
    TaskCancelled,
    TaskSuspended {
        key: Arc<str>,
    },
    TaskResumed {
        key: Arc<str>,
    },
    SeniorQueried {
        key: Arc<str>,
        question: Arc<Value>,
    },
    SeniorAnswered {
        key: Arc<str>,
    },
    WorkerOutput {
        output: OutputKind,
        data: Arc<Value>,
    },
    /// A note from a middleware layer (audit timings, long-hold warnings).
    LayerNote {
        layer: &'static str,
        note: Arc<Value>,
    },
    /// `swarm dev` made a new version of a blueprint live.
    BlueprintLoaded {
        name: Arc<str>,
        version: u64,
        hash: Arc<str>,
    },
    /// A changed blueprint failed to load; the last good version stays live.
    BlueprintReloadFailed {
        path: Arc<str>,
        error: Arc<str>,
    },
    /// A blueprint's file was deleted.
    BlueprintUnloaded {
        name: Arc<str>,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::SessionAttached { .. } => "session_attached",
            EventKind::SessionDetached { .. } => "session_detached",
            EventKind::TaskCreated { .. } => "task_created",
            EventKind::AttemptStarted { .. } => "attempt_started",
            EventKind::AttemptCompleted { .. } => "attempt_completed",
            EventKind::TaskCancelled => "task_cancelled",
            EventKind::TaskSuspended { .. } => "task_suspended",
            EventKind::TaskResumed { .. } => "task_resumed",
            EventKind::SeniorQueried { .. } => "senior_queried",
            EventKind::SeniorAnswered { .. } => "senior_answered",
            EventKind::WorkerOutput { .. } => "worker_output",
            EventKind::LayerNote { .. } => "layer_note",
            EventKind::BlueprintLoaded { .. } => "blueprint_loaded",
            EventKind::BlueprintReloadFailed { .. } => "blueprint_reload_failed",
            EventKind::BlueprintUnloaded { .. } => "blueprint_unloaded",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub cursor: u64,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    /// The run the task belongs to (its root task), stamped when the
    /// event is appended: a run's events stay its own after its tasks
    /// are evicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<TaskId>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A ring of the most recent events, indexed by cursor in O(1), bounded
/// both in events and in bytes.
pub(crate) struct Ledger {
    events: VecDeque<(Event, usize)>,
    retention: usize,
    retention_bytes: usize,
    bytes: usize,
    next_cursor: u64,
    pub(crate) appended: bool,
}

/// What an event costs to keep: a fixed part plus its payload.
fn weight(kind: &EventKind) -> usize {
    let payload = match kind {
        EventKind::WorkerOutput { data: v, .. }
        | EventKind::SeniorQueried { question: v, .. }
        | EventKind::LayerNote { note: v, .. } => super::size::measure(v, usize::MAX).heap,
        EventKind::BlueprintReloadFailed { error, .. } => error.len(),
        _ => 0,
    };
    128 + payload
}

impl Ledger {
    pub fn new(retention: usize, retention_bytes: usize) -> Ledger {
        Ledger {
            events: VecDeque::new(),
            retention: retention.max(1),
            retention_bytes,
            bytes: 0,
            next_cursor: 1,
            appended: false,
        }
    }

    pub fn push(&mut self, task: Option<TaskId>, run: Option<TaskId>, kind: EventKind) {
        let w = weight(&kind);
        while !self.events.is_empty()
            && (self.events.len() >= self.retention || self.bytes + w > self.retention_bytes)
        {
            if let Some((_, old)) = self.events.pop_front() {
                self.bytes -= old;
            }
        }
        self.bytes += w;
        let event = Event {
            cursor: self.next_cursor,
            at_ms: super::coarse_now_ms(),
            task,
            run,
            kind,
        };
        self.events.push_back((event, w));
        self.next_cursor += 1;
        self.appended = true;
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Drops the events up to and including `cursor`, oldest first.
    pub fn forget_through(&mut self, cursor: u64) {
        while self.events.front().is_some_and(|(e, _)| e.cursor <= cursor) {
            if let Some((_, w)) = self.events.pop_front() {
                self.bytes -= w;
            }
        }
    }

    /// The cursor of the newest event (0 when none yet).
    pub fn last_cursor(&self) -> u64 {
        self.next_cursor - 1
    }

    /// The cursor of the newest of the last `scan` events that `sees`.
    pub fn newest(&self, scan: usize, sees: impl Fn(&Event) -> bool) -> Option<u64> {
        let newest = self.events.iter().rev().take(scan);
        newest.map(|(e, _)| e).find(|e| sees(e)).map(|e| e.cursor)
    }

    /// Up to `max` events with cursor > `after`.
    pub fn after(&self, after: u64, max: usize) -> Result<Vec<Event>, EngineError> {
        let oldest = self.events.front().map_or(self.next_cursor, |e| e.0.cursor);
        if after + 1 < oldest {
            return Err(EngineError::EventsEvicted {
                cursor: after,
                oldest,
            });
        }
        let start = (after + 1 - oldest) as usize;
        Ok(self
            .events
            .iter()
            .skip(start)
            .take(max)
            .map(|(e, _)| e.clone())
            .collect())
    }
}
