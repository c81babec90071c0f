//! A run as one JSON document, so a journal can travel: `swarm export`
//! writes a run's record, journal and questions; `swarm import` records
//! them in another store, through the store contract (any backend to any
//! backend). Events stay behind: they are the run's log, not its state.
//! An imported run is owned by nobody: one exported while `running` is
//! imported `interrupted`, resumable like any other.

use super::runs::Runs;
use super::service::{Action, Authority};
use super::{RunError, valid_run_id};
use crate::store::{JournalEntry, Owner, QuestionRecord, RunRecord, RunStatus};
use serde::{Deserialize, Serialize};

/// The document's format version.
pub const EXPORT_FORMAT: u32 = 1;

/// One run, whole: what `swarm export` prints and `swarm import` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    pub swarm_export: u32,
    pub run: RunRecord,
    pub journal: Vec<JournalEntry>,
    pub questions: Vec<QuestionRecord>,
}

impl Runs {
    /// Run `id` as one document.
    pub async fn export(&self, who: &Authority, id: &str) -> Result<Exported, RunError> {
        let run = self.record(who, id).await?;
        let store = self.journal()?;
        Ok(Exported {
            swarm_export: EXPORT_FORMAT,
            journal: store.journal(id).await?,
            questions: store.questions(id).await?,
            run,
        })
    }

    /// Records `doc` in this store, as run `rename` when given (else its
    /// own id); returns the id. Refused when the id is taken. Written whole
    /// or the run ends `blocked` saying why (never half a journal to resume).
    pub async fn import(
        &self,
        who: &Authority,
        mut doc: Exported,
        rename: Option<&str>,
    ) -> Result<String, RunError> {
        who.check(Action::Start, None)?;
        if doc.swarm_export != EXPORT_FORMAT {
            return Err(RunError::Refused(format!(
                "this is a swarm export of format {}; this swarm reads format {EXPORT_FORMAT}",
                doc.swarm_export
            )));
        }
        let id = rename.unwrap_or(&doc.run.id).to_string();
        if !valid_run_id(&id) {
            return Err(RunError::BadRunId(id));
        }
        let store = self.journal()?;
        super::import_check::sanitize(store.as_ref(), &mut doc).await?;
        let status = match doc.run.status {
            RunStatus::Running => RunStatus::Interrupted,
            st => st,
        };
        let result = doc.run.result.take();
        // `blocked` until written whole: an import that stops partway is
        // never claimed or resumed with half a journal.
        let record = RunRecord {
            id: id.clone(),
            status: RunStatus::Blocked,
            ..doc.run
        };
        let fence = store.create_run(&record, &Owner::new()).await?;
        let written: Result<(), crate::store::StoreError> = async {
            for e in doc.journal {
                let e = JournalEntry {
                    run: id.clone(),
                    epoch: fence.epoch,
                    ..e
                };
                store.append(e).await?;
            }
            for q in doc.questions {
                let answer = q.answer.clone();
                let pos = q.pos.clone();
                let q = QuestionRecord {
                    run: id.clone(),
                    answer: None,
                    ..q
                };
                store.ask(q, Some(&fence)).await?;
                if let Some(a) = answer {
                    store.answer(&id, &pos, a).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let why = serde_json::json!({ "code": e.code(),
                "error": format!("the import could not be recorded whole ({e}); import again") });
            let _ = store
                .set_status(&id, RunStatus::Blocked, Some(why), Some(&fence))
                .await;
            return Err(e.into());
        }
        store.set_status(&id, status, result, Some(&fence)).await?;
        Ok(id)
    }
}
