//! The replay check: a run's journal replayed against a blueprint with
//! nothing dispatched. Every journaled call the flow makes must find the
//! entry the journal recorded at its position (the one replay rule); the
//! first that does not is the divergence, named with the flow's file:line
//! and both sides. A call past the journal stops the check there (nothing
//! runs): fine for a run that has not finished, a divergence for one
//! that passed. A flow that ends while the journal still holds calls it
//! never asked for diverged too. Writes nothing: the run is untouched.

use super::position::Position;
use super::runs::Runs;
use super::service::{Action, Authority};
use super::{FlowSpawner, Prepared, RunError, RunOptions};
use crate::engine::TaskStatus;
use crate::store::{Halt, Journal, JournalEntry, MemoryStore, RunRecord, RunStatus, Store};
use std::path::Path;
use std::sync::Arc;

/// What a replay check found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// The code asks for what the journal recorded. `waits_at`: the
    /// position past the journal it would run live next (an unfinished
    /// run), if it got there.
    Ok {
        replayed: usize,
        waits_at: Option<String>,
    },
    /// The first call that differs: where, and the message (file:line,
    /// what the journal has, what the code asks).
    Diverged { at: Option<String>, message: String },
    /// Not confirmed without running: the check stopped (at the journal's
    /// end in one branch, or at an LLM step in flight) before it reached
    /// the journal's entry at `at`; the message says why.
    Unchecked { at: Option<String>, message: String },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok { .. })
    }
}

impl Prepared {
    /// Replays `entries`, the journal of run `record`, through this
    /// blueprint's flow, dispatching nothing (see the module doc).
    pub async fn check(
        &self,
        record: &RunRecord,
        entries: Vec<JournalEntry>,
    ) -> Result<Verdict, RunError> {
        let total = entries.len();
        // Never written: a check's journal halts before any write.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        self.attach_journal(Journal::new(store, &record.id, entries).checking());
        let journal = self.journal().expect("attached");
        let root = self.root(record.input.clone())?;
        let flow = FlowSpawner {
            vm: self.vm.clone(),
            flow: self.flow.clone(),
        };
        let (view, overran) = self.dispatch_root(root, &flow).await;
        if let Some(tok) = self.flow_token() {
            let _ = self.engine.detach(&tok);
        }
        let view = view?;
        let left: Vec<JournalEntry> = journal
            .unreplayed()
            .into_iter()
            .filter(|e| !e.kind.starts_with("llm_"))
            .collect();
        let replayed = total - journal.unreplayed().len();
        let at = journal.halted_at();
        Ok(match journal.halted() {
            Some((Halt::Frontier, _)) if record.status != RunStatus::Pass => {
                self.at_frontier(&journal.unreplayed(), left, replayed, at)
            }
            Some((Halt::Frontier, message)) => Verdict::Diverged {
                at,
                message: format!("{message}; the run passed without it"),
            },
            Some((_, message)) => Verdict::Diverged { at, message },
            None if overran.is_some() => Verdict::Diverged {
                at: None,
                message: "the replay did not end within its deadline".into(),
            },
            None => self.ended(record, &view, left, replayed),
        })
    }

    /// The verdict on an unfinished run whose check stopped at `at`, the
    /// first call past its journal: ok only when nothing else is left
    /// unchecked (`left`: the entries never replayed but LLM ones, `all`:
    /// every one) and no LLM step is in flight there.
    fn at_frontier(
        &self,
        all: &[JournalEntry],
        left: Vec<JournalEntry>,
        replayed: usize,
        at: Option<String>,
    ) -> Verdict {
        let frontier = at.as_deref().unwrap_or("?");
        let inside = format!("{frontier}~");
        if all.iter().any(|e| e.pos.starts_with(&inside)) {
            return Verdict::Unchecked {
                message: format!(
                    "{}: LLM step in flight at {frontier}: its turns cannot be checked \
                     without running",
                    self.blueprint.chunk
                ),
                at,
            };
        }
        match first(left) {
            Some(e) => Verdict::Unchecked {
                at: Some(e.pos.clone()),
                message: format!(
                    "{}: the check stopped at {frontier} (past the journal) and never reached \
                     {}({}, input hash {}), which the journal has at position {}: that part \
                     of the run cannot be confirmed",
                    self.blueprint.chunk, e.kind, e.key, e.input_hash, e.pos
                ),
            },
            None => Verdict::Ok {
                replayed,
                waits_at: at,
            },
        }
    }

    /// The verdict on a flow that ran to its end in the check.
    fn ended(
        &self,
        record: &RunRecord,
        view: &crate::engine::TaskView,
        left: Vec<JournalEntry>,
        replayed: usize,
    ) -> Verdict {
        if let Some(e) = first(left) {
            return Verdict::Diverged {
                at: Some(e.pos.clone()),
                message: format!(
                    "{}: the flow ended without asking for {}({}, input hash {}), which the \
                     journal has at position {}",
                    self.blueprint.chunk, e.kind, e.key, e.input_hash, e.pos
                ),
            };
        }
        if record.status == RunStatus::Pass && view.status != TaskStatus::Pass {
            let why = view.result.as_deref().cloned().unwrap_or_default();
            let why = why.get("error").cloned().unwrap_or(why);
            return Verdict::Diverged {
                at: None,
                message: format!("the run passed, the flow now fails: {why}"),
            };
        }
        Verdict::Ok {
            replayed,
            waits_at: None,
        }
    }
}

/// The first of `entries` in the flow's order.
fn first(entries: Vec<JournalEntry>) -> Option<JournalEntry> {
    entries
        .into_iter()
        .filter_map(|e| Some((Position::parse(&e.pos).ok()?, e)))
        .min_by(|a, b| a.0.order(&b.0))
        .map(|(_, e)| e)
}

impl Runs {
    /// Replay-checks run `id` against the blueprint at `blueprint`, or at
    /// its own path as the file is now. Nothing is dispatched or written.
    pub async fn replay(
        &self,
        who: &Authority,
        id: &str,
        blueprint: Option<&Path>,
        opts: RunOptions,
    ) -> Result<Verdict, RunError> {
        who.check(Action::Read, Some(id))?;
        let record = self.record(who, id).await?;
        let entries = self.journal()?.journal(id).await?;
        let path =
            blueprint.map_or_else(|| Path::new(&record.path).to_path_buf(), Path::to_path_buf);
        let run = super::prepare(
            self.engine(),
            &path,
            RunOptions {
                store: None,
                ..opts
            },
        )?;
        run.check(&record, entries).await
    }
}
