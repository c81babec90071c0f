//! Forking a run: a new run of the same blueprint, as it is now, whose
//! journal starts as the source's entries before a position (optionally
//! edited), and which runs live from there. Past that position, a call
//! whose request is the one the source recorded at the same position
//! reuses the source's result instead of running (`--reuse unchanged`):
//! a step by its agent and input, an LLM turn by its whole request, so a
//! changed prompt re-runs only the turns it changes. The fork records its
//! source ([`ForkOf`]) and each entry it took says from where
//! ([`crate::store::Origin`]). Everything here goes through the store
//! contract, so forks work on every store.

use super::position::{Position, Relation};
use super::runs::Runs;
use super::service::{Action, Authority};
use super::{Handle, Prepared, RunError, RunOptions};
use crate::engine::TaskId;
use crate::store::{ForkOf, JournalEntry, RunRecord, RunStatus, Store, Taken, clock};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// What to fork, and how.
#[derive(Debug, Clone, Default)]
pub struct ForkRequest {
    /// The run to fork.
    pub source: String,
    /// The position to run live from (default: see [`default_at`]).
    pub at: Option<String>,
    /// The new run's id (default: `<blueprint>-<8 hex>`).
    pub run_id: Option<String>,
    /// A new input (default: the source's). The fork then runs from the
    /// start, reusing each call whose request is unchanged.
    pub input: Option<Value>,
    /// Recorded results to replace before the fork point: position, value.
    pub set: Vec<(String, Value)>,
    /// Reuse results past the fork point whose request is unchanged.
    pub reuse: bool,
}

/// What a fork takes from its source, decided before anything is written.
pub(super) struct Plan {
    fork: ForkOf,
    input: Value,
    /// The source's entries before the fork point, with how each is taken.
    copied: Vec<(JournalEntry, Taken)>,
    /// The source's entries past it that a call may reuse.
    reusable: Vec<JournalEntry>,
}

/// Kinds of entries past the fork point a call may reuse: steps, and an
/// LLM step's turns and tool calls. Questions, sleeps, the clock and
/// random numbers are asked again.
const REUSABLE: [&str; 3] = ["step", "llm_turn", "llm_tool"];

fn invalid(message: String) -> RunError {
    RunError::Fork(message)
}

fn position(text: &str) -> Result<Position, RunError> {
    Position::parse(text).map_err(invalid)
}

/// Where a fork runs live from when no position is given: the start when
/// the input changes; else the first step that failed, or the position
/// the run diverged at, whichever comes first; else just past the end.
pub fn default_at(source: &RunRecord, journal: &[JournalEntry], new_input: bool) -> String {
    if new_input {
        return "1".into();
    }
    let failed = journal
        .iter()
        .filter(|e| e.kind == "step" && !e.ok)
        .map(|e| e.pos.clone());
    let diverged = (source.status == RunStatus::Diverged)
        .then(|| {
            source
                .result
                .as_ref()?
                .get("at")?
                .as_str()
                .map(str::to_string)
        })
        .flatten();
    let first = failed
        .chain(diverged)
        .filter_map(|p| Some((Position::parse(&p).ok()?, p)))
        .min_by(|a, b| a.0.order(&b.0));
    if let Some((_, p)) = first {
        return p;
    }
    let last = journal
        .iter()
        .filter_map(|e| e.pos.split(['/', '~']).next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (last + 1).to_string()
}

/// The position a fork runs live from: `--at` (or [`default_at`]), but
/// never past the call after the earliest `--set` (what follows an edit
/// is asked again, each call reused only if its request is unchanged),
/// and the start when the input changes.
fn effective_at(
    source: &RunRecord,
    journal: &[JournalEntry],
    req: &ForkRequest,
) -> Result<String, RunError> {
    let at = match &req.at {
        // A new input: nothing is taken as it was; every call is asked
        // again and reused only where it asks what it asked before.
        _ if req.input.is_some() => "1".to_string(),
        Some(at) => at.clone(),
        None => default_at(source, journal, false),
    };
    let last = journal
        .iter()
        .filter_map(|e| Some(Position::parse(&e.pos).ok()?.top()))
        .max()
        .unwrap_or(0);
    let parsed = position(&at)?;
    if parsed.top() > last + 1 {
        return Err(invalid(format!(
            "--at {at}: run `{}` has calls up to position {last}; a fork runs live from \
             {} at the latest",
            source.id,
            last + 1
        )));
    }
    let mut first = (parsed, at);
    for (pos, _) in &req.set {
        let next = position(pos)?.next();
        if next.order(&first.0) == std::cmp::Ordering::Less {
            first = (next.clone(), next.to_string());
        }
    }
    Ok(first.1)
}

/// Plans the fork of `source` (its journal `journal`) that `req` asks for.
pub(super) fn plan(
    source: &RunRecord,
    journal: Vec<JournalEntry>,
    req: &ForkRequest,
) -> Result<Plan, RunError> {
    let at_text = effective_at(source, &journal, req)?;
    let at = position(&at_text)?;
    let mut copied = Vec::new();
    let mut rest = Vec::new();
    for e in journal {
        match position(&e.pos)?.relative_to(&at) {
            Relation::Before => copied.push((e, Taken::Copied)),
            Relation::After => rest.push(e),
        }
    }
    for (pos, value) in &req.set {
        edit(&mut copied, pos, value, &at_text, &source.id)?;
    }

    let reusable = if req.reuse {
        reusable(rest)
    } else {
        Vec::new()
    };
    Ok(Plan {
        fork: ForkOf {
            run: source.id.clone(),
            at: at_text,
            reuse: req.reuse,
        },
        input: req.input.clone().unwrap_or_else(|| source.input.clone()),
        copied,
        reusable,
    })
}

/// Replaces the recorded result at `pos` (a position before the fork
/// point, holding a flow call) with `value`, as a call that passed.
fn edit(
    copied: &mut [(JournalEntry, Taken)],
    pos: &str,
    value: &Value,
    at: &str,
    source: &str,
) -> Result<(), RunError> {
    let wanted = position(pos)?;
    let found = copied
        .iter_mut()
        .find(|(e, _)| Position::parse(&e.pos).is_ok_and(|p| p == wanted));
    let Some((e, how)) = found else {
        return Err(invalid(format!(
            "--set {pos}: run `{source}` has no entry at {pos} before the fork point {at} \
             (`swarm show {source}` lists its positions)"
        )));
    };
    if e.kind.starts_with("llm_") {
        return Err(invalid(format!(
            "--set {pos}: that is one of an LLM step's own entries ({}); set the step's \
             result at {} instead",
            e.kind,
            pos.split('~').next().unwrap_or(pos)
        )));
    }
    e.value = value.clone();
    e.ok = true;
    *how = Taken::Edited;
    Ok(())
}

/// Of the source's entries past the fork point, those a call may reuse:
/// successful steps and LLM entries. A step with LLM turns recorded under
/// it is not reused whole: it runs, and each of its turns is reused only
/// if the request it sends is the one recorded.
fn reusable(rest: Vec<JournalEntry>) -> Vec<JournalEntry> {
    let composite: HashSet<String> = rest
        .iter()
        .filter_map(|e| e.pos.split_once('~').map(|(p, _)| p.to_string()))
        .collect();
    rest.into_iter()
        .filter(|e| e.ok && REUSABLE.contains(&e.kind.as_str()))
        .filter(|e| !(e.kind == "step" && composite.contains(&e.pos)))
        .collect()
}

/// For a fork being resumed: its source and the entries of it it may
/// still reuse (none once the source was pruned).
pub(super) async fn reusable_again(
    store: &dyn Store,
    record: &RunRecord,
) -> Result<Option<(String, Vec<JournalEntry>)>, RunError> {
    let Some(fork) = record.fork.as_ref().filter(|f| f.reuse) else {
        return Ok(None);
    };
    let at = position(&fork.at)?;
    let mut rest = Vec::new();
    for e in store.journal(&fork.run).await? {
        if Position::parse(&e.pos).is_ok_and(|p| p.relative_to(&at) == Relation::After) {
            rest.push(e);
        }
    }
    Ok(Some((fork.run.clone(), reusable(rest))))
}

impl Prepared {
    /// Records the fork `plan` describes as a new run (its taken entries
    /// first, all or none), attaches its journal and starts its root task.
    pub(super) async fn start_fork(&self, plan: Plan) -> Result<TaskId, RunError> {
        self.blueprint.check_input(&plan.input)?;
        let Some(store) = self.opts.store.clone() else {
            return Err(RunError::Refused("forking needs a journal".into()));
        };
        let mut record = self.new_record(&plan.input)?;
        record.fork = Some(plan.fork.clone());
        // Recorded `blocked` (nothing claims, sweeps or resumes that) until
        // every taken entry is on disk: a fork that stops partway is never
        // resumed to run its missing steps again.
        record.status = RunStatus::Blocked;
        let fence = store.create_run(&record, &self.owner).await?;
        let taken: Vec<JournalEntry> = plan
            .copied
            .iter()
            .map(|(e, how)| e.taken(&record.id, *how, fence.epoch))
            .collect();
        let written =
            futures_util::future::try_join_all(taken.iter().map(|e| store.append(e.clone()))).await;
        if let Err(e) = written {
            // Never half a fork: a run missing some of its copied entries
            // would run them again. It ends blocked, saying why.
            let why = serde_json::json!({ "code": e.code(),
                "error": format!("the fork could not be recorded whole ({e}); fork again") });
            let status = RunStatus::Blocked;
            let _ = store
                .set_status(&record.id, status, Some(why), Some(&fence))
                .await;
            return Err(e.into());
        }
        store
            .set_status(&record.id, RunStatus::Running, None, Some(&fence))
            .await?;
        // Its lease runs from here, however long the copy took.
        let taken_at = clock::local_ms();
        if !store.renew(&record.id, &fence).await? {
            return Err(RunError::Refused(format!(
                "fork `{}` was taken by another owner as it started; `swarm resume {}`",
                record.id, record.id
            )));
        }
        let reuse = Some((plan.fork.run.clone(), plan.reusable));
        self.own(store, &record.id, fence, taken_at, taken, reuse);
        self.root(plan.input)
    }
}

impl Runs {
    /// Forks run `req.source` into a new run of its blueprint as the file
    /// at its path is now (see [`Runs::fork_prepared`]).
    pub async fn fork(
        self: &Arc<Self>,
        who: &Authority,
        req: &ForkRequest,
        mut opts: RunOptions,
    ) -> Result<Handle, RunError> {
        who.check(Action::Start, None)?;
        let source = self.record(who, &req.source).await?;
        opts.run_id = req.run_id.clone();
        let path = std::path::PathBuf::from(&source.path);
        let run = super::prepare(self.engine(), &path, self.options(opts))?;
        self.fork_prepared(who, req, run).await
    }

    /// Forks run `req.source` into `run`, a prepared run of the source's
    /// blueprint (the live version, on a server), and executes it. Taken
    /// by callers that may start runs and read the source.
    pub async fn fork_prepared(
        self: &Arc<Self>,
        who: &Authority,
        req: &ForkRequest,
        run: Prepared,
    ) -> Result<Handle, RunError> {
        who.check(Action::Start, None)?;
        self.refuse_if_draining()?;
        let source = self.record(who, &req.source).await?;
        if source.blueprint != run.blueprint.name {
            return Err(invalid(format!(
                "run `{}` is a run of blueprint `{}`, not `{}`",
                source.id, source.blueprint, run.blueprint.name
            )));
        }
        let journal = self.journal()?.journal(&source.id).await?;
        let plan = plan(&source, journal, req)?;
        let root = run.start_fork(plan).await?;
        Ok(self.launch(run, root))
    }
}
