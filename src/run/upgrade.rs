//! Moving a stopped run to the current version of its code. A run keeps
//! the blueprint (and helper) hashes it started with, and `resume` refuses
//! it once they change; `upgrade` replay-checks its journal against the
//! code as it is now (nothing dispatched) and, only if every recorded
//! call is asked for again, records the new version (the store's
//! `set_version`, fenced by a claim on the run) and an event
//! `run_upgraded` with both hashes. A run whose journal would diverge is
//! kept on its version, and the verdict says where and why.

use super::replay::Verdict;
use super::runs::Runs;
use super::service::{Action, Authority};
use super::{RunError, RunOptions};
use crate::store::{EventRow, Owner, RunRecord, Version};
use std::path::PathBuf;

/// What `upgrade` did to a run (or, checking only, would do).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "upgrade", rename_all = "lowercase")]
pub enum Upgraded {
    /// Its code has not changed.
    Current,
    /// Moved (checking only: would move) from one hash to the other.
    Moved { from: String, to: String },
    /// Kept on its version: its journal diverges on the new one.
    Kept { verdict: Verdict },
}

/// The first twelve characters of a hash, as messages show it.
fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

impl Runs {
    /// Upgrades stopped run `id` (waiting, interrupted or diverged) to its
    /// code as the files are now, when its journal replays there; with
    /// `check`, says what it would do and changes nothing.
    pub async fn upgrade(
        &self,
        who: &Authority,
        id: &str,
        check: bool,
        opts: RunOptions,
    ) -> Result<Upgraded, RunError> {
        who.check(Action::Resume, Some(id))?;
        let record = self.record(who, id).await?;
        if !record.status.is_resumable() {
            return Err(RunError::Refused(format!(
                "run `{id}` is {}: only a waiting, interrupted or diverged run is upgraded",
                record.status
            )));
        }
        let to = self.version_now(&record, &opts)?;
        if to.hash == record.hash && to.helpers == record.helpers {
            return Ok(Upgraded::Current);
        }
        let store = self.journal()?.clone();
        // Held while it is checked and moved: nobody resumes it meanwhile.
        let fence = match check {
            true => None,
            false => Some(store.claim(id, &Owner::new()).await?),
        };
        let verdict = self.replay(who, id, None, opts).await;
        let moved = match (&verdict, &fence) {
            (Ok(v), Some(f)) if v.is_ok() => store.set_version(id, &to, f).await.map(|_| true),
            _ => Ok(false),
        };
        if let Some(f) = &fence {
            if let Ok(true) = moved {
                let payload = serde_json::json!({ "from": record.hash, "to": to.hash,
                    "helpers": to.helpers });
                let event = EventRow {
                    run: id.into(),
                    kind: "run_upgraded",
                    payload: payload.to_string().into(),
                    epoch: f.epoch,
                };
                let _ = store.append_events(vec![event]).await;
            }
            // Released as it was found, whatever happened.
            store.set_status(id, record.status, None, Some(f)).await?;
        }
        moved?;
        Ok(match verdict? {
            v if v.is_ok() => Upgraded::Moved {
                from: short(&record.hash),
                to: short(&to.hash),
            },
            verdict => Upgraded::Kept { verdict },
        })
    }

    /// The version of run `record`'s code as the files are now.
    fn version_now(&self, record: &RunRecord, opts: &RunOptions) -> Result<Version, RunError> {
        let path = PathBuf::from(&record.path);
        let source = super::blueprint::read(&path)?;
        let opts = RunOptions {
            store: None,
            ..opts.clone()
        };
        let run = super::prepare_source(self.engine(), &path, &source, opts)?;
        Ok(Version {
            hash: super::blueprint::hash(&source),
            helpers: run.helper_hashes(),
        })
    }
}

/// How long a refused resume may spend checking the journal to say why.
const EXPLAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// What `resume` says of a run whose code changed: whether its journal
/// replays on the new version (then `swarm upgrade` moves it there) or
/// where it diverges, so the refusal names the divergence rather than
/// only offering `--force`.
pub(super) async fn on_new_code(
    engine: &crate::engine::Engine,
    path: &std::path::Path,
    source: &str,
    record: &RunRecord,
    opts: &RunOptions,
    explain: bool,
) -> String {
    let Some(store) = opts.store.clone().filter(|_| explain) else {
        return format!(
            "`swarm upgrade {}` checks its journal against the new version and moves it \
             there if it replays; or resume with --force",
            record.id
        );
    };
    let checked = async {
        let entries = store.journal(&record.id).await?;
        let opts = RunOptions {
            store: None,
            print: opts.print.clone(),
            deadline: Some(EXPLAIN_DEADLINE),
            ..RunOptions::default()
        };
        let run = super::prepare_source(engine, path, source, opts)?;
        run.check(record, entries).await
    };
    let Ok(checked) = tokio::time::timeout(EXPLAIN_DEADLINE, checked).await else {
        return format!(
            "the check of its journal against the new version did not finish within {} s; \
             `swarm upgrade {}` checks it, or resume with --force",
            EXPLAIN_DEADLINE.as_secs(),
            record.id
        );
    };
    match checked {
        Ok(Verdict::Ok { .. }) => format!(
            "its journal replays on the new version: `swarm upgrade {}` moves it there, \
             then resume (or resume with --force)",
            record.id
        ),
        Ok(Verdict::Diverged { at, message }) => format!(
            "on the new version it diverges{}: {message}; fix or revert the code, or \
             resume with --force to replay the journal against the new version anyway",
            at.map_or(String::new(), |a| format!(" at {a}"))
        ),
        Ok(Verdict::Unchecked { at, message }) => format!(
            "on the new version its journal could not be confirmed{}: {message}; \
             resume with --force to replay the journal against it anyway",
            at.map_or(String::new(), |a| format!(" at {a}"))
        ),
        Err(e) => format!(
            "the new version could not be checked ({e}); resume with --force to replay \
             the journal against it"
        ),
    }
}
