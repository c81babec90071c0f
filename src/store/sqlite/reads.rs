//! The read side of [`SqliteStore`]: each query on the reader connection,
//! as plain functions the async `Store` impl wraps. Split from `sqlite.rs`.

use super::{RUN_COLUMNS, SqliteStore, json, run_row};
use crate::store::{JournalEntry, QuestionRecord, RunRecord, RunStatus, StoreError};
use rusqlite::OptionalExtension;
use serde_json::Value;

impl SqliteStore {
    pub(super) fn load_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()
        })
    }

    pub(super) fn load_runs(
        &self,
        status: Option<RunStatus>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        // Two statements, so that one status is found through its index:
        // `?1 IS NULL OR status = ?1` scanned every run ever kept, and every
        // `swarm run` asks for the running ones when it opens the journal.
        self.read(|c| match status {
            Some(status) => c
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1 ORDER BY created_ms, id"
                ))?
                .query_map([status.as_str()], run_row)?
                .collect(),
            None => c
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs ORDER BY created_ms, id"
                ))?
                .query_map([], run_row)?
                .collect(),
        })
    }

    /// A run's journal: the database's rows, with the entries still only
    /// in step logs (this process's pending ones, a live owner's) merged in.
    pub(super) fn load_journal(&self, run: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let live = self.writes.adopt(Some(run));
        // No fold runs while the rows and the pending entries are read, so
        // none is in neither.
        let (rows, pending) = self.writes.quiet(|| {
            let rows = self.read(|c| super::entries::by_position(c, run));
            (rows, self.writes.log.pending_of(run))
        });
        let mut by_pos = rows?;
        for e in live {
            if by_pos.get(&e.pos).is_none_or(|had| had.epoch < e.epoch) {
                by_pos.insert(e.pos.clone(), e);
            }
        }
        for e in pending {
            super::entries::keep(&mut by_pos, e);
        }
        let mut entries: Vec<JournalEntry> = by_pos.into_values().collect();
        entries.sort_by(|a, b| (a.at_ms, &a.pos).cmp(&(b.at_ms, &b.pos)));
        Ok(entries)
    }

    pub(super) fn load_questions(&self, run: &str) -> Result<Vec<QuestionRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT run, pos, name, question, answer FROM questions WHERE run = ?1 ORDER BY asked_ms",
            )?;
            stmt.query_map([run], |r| {
                Ok(QuestionRecord {
                    run: r.get(0)?,
                    pos: r.get(1)?,
                    name: r.get(2)?,
                    question: json(r, 3)?.unwrap_or(Value::Null),
                    answer: json(r, 4)?,
                })
            })?
            .collect()
        })
    }

    pub(super) fn load_cancel_requested(&self, run: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT cancel_requested FROM runs WHERE id = ?1",
                [run],
                |r| r.get::<_, bool>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(false))
        })
    }
}
