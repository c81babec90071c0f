//! How a run ended, decided in one place: the status to record and the
//! result to report, whatever stopped it (a journal halt, a lost lease, an
//! interruption, the deadline, the desk, the flow itself), and the result
//! of a run whose end could not be recorded.

use super::{Journal, Prepared, desk};
use crate::store::StoreError;

impl Prepared {
    /// How the run ended, decided in one place: the status to record and
    /// the result to report. A journal halt comes first, then an
    /// interruption, the deadline, the desk's stop, and last the root
    /// task's own outcome.
    pub(super) fn ending(
        &self,
        view: &crate::engine::TaskView,
        stop: Option<desk::Stop>,
        overran: Option<std::time::Duration>,
        journal: Option<&Journal>,
    ) -> (crate::store::RunStatus, serde_json::Value) {
        use crate::store::RunStatus;
        use serde_json::json;
        let of_task = RunStatus::of_task(view.status);
        if let Some((why, message)) = journal.and_then(|j| j.halted()) {
            let mut result = json!({ "error": message, "code": why.code() });
            // Where it diverged: a fork of the run starts there by default.
            if let Some(at) = journal.and_then(|j| j.halted_at()) {
                result["at"] = json!(at);
            }
            return (why.status(), result);
        }
        if self.interrupted.load(std::sync::atomic::Ordering::Relaxed) {
            let run = journal.map_or("", |j| j.run());
            if self.drained.load(std::sync::atomic::Ordering::Relaxed) {
                let error = format!(
                    "its server was shut down; another server of its blueprint takes it \
                     over, or `swarm resume {run}` continues it"
                );
                return (
                    RunStatus::Interrupted,
                    json!({ "error": error, "code": "drained" }),
                );
            }
            let error = format!("interrupted; `swarm resume {run}` continues it");
            return (
                RunStatus::Interrupted,
                json!({ "error": error, "code": "interrupted" }),
            );
        }
        if let Some(limit) = overran {
            let error = format!("the run's deadline of {} passed", human_duration(limit));
            return (of_task, json!({ "error": error, "code": "run_deadline" }));
        }
        if let Some(error) = self.meter.tripped() {
            return (
                RunStatus::Blocked,
                json!({ "error": error, "code": "token_budget" }),
            );
        }
        match stop {
            Some(desk::Stop::Unanswered(message)) => {
                // Without a journal there is nothing to come back to.
                let status = if journal.is_some() {
                    RunStatus::Waiting
                } else {
                    of_task
                };
                (
                    status,
                    json!({ "error": message, "code": "senior_unanswered" }),
                )
            }
            Some(desk::Stop::Cancelled) => (
                of_task,
                json!({ "error": "cancelled with `swarm cancel`", "code": "cancelled" }),
            ),
            None => (
                of_task,
                view.result
                    .as_ref()
                    .map(|r| (**r).clone())
                    .unwrap_or(serde_json::Value::Null),
            ),
        }
    }
}

/// The result of a run whose end could not be recorded. Refused by the
/// fence: another owner took the run, which is now that owner's. Any
/// other failure: the run stays `running` until its lease lapses (or, on
/// this machine, at once once we exit), then it is interrupted and
/// resumable. Never a pass, whatever the flow returned: nothing says so
/// on disk.
pub(super) fn unrecorded_end(
    j: &Journal,
    e: &StoreError,
    status: crate::store::RunStatus,
) -> serde_json::Value {
    if let StoreError::Fenced { .. } = e {
        let why = j
            .lease()
            .and_then(|l| l.lost().map(|l| l.message.clone()))
            .unwrap_or_else(|| format!("lost run {}: {e}; stopped", j.run()));
        return serde_json::json!({ "error": why, "code": "run_lost" });
    }
    serde_json::json!({
        "error": format!(
            "{e}; the run could not be recorded as {status}: `swarm resume {}` \
             continues it once the journal is writable",
            j.run()
        ),
        "code": "journal_fault",
    })
}

/// `1h`, `90s`, `250ms`.
fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}
