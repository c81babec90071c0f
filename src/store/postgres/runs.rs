//! Runs and their questions in Postgres: each write one conditional
//! statement, so a fenced write applies whole or not at all whichever
//! node makes it; run rows read back as [`RunRecord`]s.

use super::{Inner, NOW_MS, json};
use crate::store::{Fence, Owner, Prune, QuestionRecord, RunRecord, RunStatus, StoreError};
use serde_json::Value;
use tokio_postgres::Row;

/// Kinds that are not steps of the flow (they belong to an LLM step).
pub(super) const NOT_STEPS: [&str; 2] = ["llm_turn", "llm_tool"];

pub(super) const RUN_COLUMNS: &str = "id, blueprint, path, hash, input, status, result, pid, \
     created_ms, updated_ms, \
     (SELECT coalesce(sum(j.steps), 0)::int8 FROM journal_pages j WHERE j.run = runs.id), \
     owner, owner_host, owned_since_ms, lease_until_ms, helpers, \
     (SELECT coalesce(sum(j.tokens), 0)::int8 FROM journal_pages j WHERE j.run = runs.id), epoch, \
     fork";

impl Inner {
    pub(super) fn run_row(&self, r: &Row) -> Result<RunRecord, StoreError> {
        let status: String = r.get(5);
        Ok(RunRecord {
            id: r.get(0),
            blueprint: r.get(1),
            path: r.get(2),
            hash: r.get(3),
            input: json(self, "input", r.get(4))?.unwrap_or(Value::Null),
            status: status.parse().map_err(|e| self.not_ours("status", e))?,
            result: json(self, "result", r.get(6))?,
            pid: r.get::<_, Option<i64>>(7).map(|p| p as u32),
            created_ms: r.get::<_, i64>(8) as u64,
            updated_ms: r.get::<_, i64>(9) as u64,
            steps: r.get::<_, i64>(10) as u64,
            owner: r.get(11),
            owner_host: r.get(12),
            owned_since_ms: r.get::<_, Option<i64>>(13).map(|v| v as u64),
            lease_until_ms: r.get::<_, Option<i64>>(14).map(|v| v as u64),
            helpers: match json(self, "helpers", r.get(15))? {
                Some(v) => serde_json::from_value(v).map_err(|e| self.not_ours("helpers", e))?,
                None => Default::default(),
            },
            tokens: r.get::<_, i64>(16) as u64,
            epoch: r.get::<_, i64>(17) as u64,
            fork: match json(self, "fork", r.get(18))? {
                Some(v) => serde_json::from_value(v).map_err(|e| self.not_ours("fork", e))?,
                None => None,
            },
        })
    }

    pub(super) async fn create_run(&self, r: RunRecord, o: Owner) -> Result<Fence, StoreError> {
        let c = self.client().await?;
        let lease = crate::store::lease().as_millis() as i64;
        let sql = format!(
            "INSERT INTO runs (id, blueprint, path, hash, input, status, pid, created_ms,
               updated_ms, owner, owner_host, owner_machine, owned_since_ms, lease_until_ms,
               helpers, epoch, fork)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, {NOW_MS},
                     {NOW_MS} + $12, $13, 1, $14)"
        );
        let stmt = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.write_error(e))?;
        c.execute(
            &stmt,
            &[
                &r.id,
                &r.blueprint,
                &r.path,
                &r.hash,
                &r.input.to_string(),
                &r.status.as_str(),
                &i64::from(o.pid),
                &(r.created_ms as i64),
                &o.id,
                &o.host,
                &o.machine,
                &lease,
                &serde_json::to_string(&r.helpers).unwrap_or_default(),
                &r.fork.as_ref().map(|f| serde_json::json!(f).to_string()),
            ],
        )
        .await
        .map_err(|e| self.write_error(e))?;
        Ok(Fence {
            owner: o.id,
            epoch: 1,
        })
    }

    pub(super) async fn set_version(
        &self,
        run: String,
        version: crate::store::Version,
        fence: Fence,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "UPDATE runs SET hash = $2, helpers = $3, updated_ms = {NOW_MS}
             WHERE id = $1 AND owner = $4 AND epoch = $5"
        );
        let stmt = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.write_error(e))?;
        let helpers = serde_json::to_string(&version.helpers).unwrap_or_default();
        let epoch = fence.epoch as i64;
        let n = c
            .execute(
                &stmt,
                &[&run, &version.hash, &helpers, &fence.owner, &epoch],
            )
            .await
            .map_err(|e| self.write_error(e))?;
        if n == 0 {
            return Err(StoreError::Fenced {
                run,
                epoch: fence.epoch,
            });
        }
        Ok(())
    }

    pub(super) async fn set_status(
        &self,
        run: String,
        status: RunStatus,
        result: Option<Value>,
        fence: Option<Fence>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "UPDATE runs SET status = $2, result = coalesce($3, result), updated_ms = {NOW_MS},
               cancel_requested = CASE WHEN $2 = 'running' THEN cancel_requested ELSE false END,
               owner = CASE WHEN $2 = 'running' THEN owner ELSE NULL END,
               lease_until_ms = CASE WHEN $2 = 'running' THEN lease_until_ms ELSE NULL END,
               epoch = CASE WHEN $4::text IS NULL THEN epoch + 1 ELSE epoch END
             WHERE id = $1 AND ($4::text IS NULL OR (owner = $4 AND epoch = $5))"
        );
        let stmt = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.write_error(e))?;
        let (owner, epoch) = fence
            .as_ref()
            .map(|f| (f.owner.clone(), f.epoch as i64))
            .unzip();
        let n = c
            .execute(
                &stmt,
                &[
                    &run,
                    &status.as_str(),
                    &result.map(|v| v.to_string()),
                    &owner,
                    &epoch,
                ],
            )
            .await
            .map_err(|e| self.write_error(e))?;
        match fence {
            Some(f) if n == 0 => Err(StoreError::Fenced {
                run,
                epoch: f.epoch,
            }),
            _ => Ok(()),
        }
    }

    pub(super) async fn load_run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let c = self.client().await?;
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let stmt = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.read_error(e))?;
        let row = c
            .query_opt(&stmt, &[&id])
            .await
            .map_err(|e| self.read_error(e))?;
        row.map(|r| self.run_row(&r)).transpose()
    }

    pub(super) async fn load_runs(
        &self,
        status: Option<RunStatus>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let c = self.client().await?;
        let rows = match status {
            Some(st) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = $1 ORDER BY created_ms, id"
                );
                c.query(&sql, &[&st.as_str()]).await
            }
            None => {
                let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY created_ms, id");
                c.query(&sql, &[]).await
            }
        }
        .map_err(|e| self.read_error(e))?;
        rows.iter().map(|r| self.run_row(r)).collect()
    }

    /// Deletes the finished runs `filter` names, with everything of
    /// theirs, in one transaction; the status is checked again in the
    /// delete, so a run that came back to life is never touched.
    pub(super) async fn prune(&self, filter: Prune) -> Result<Vec<String>, StoreError> {
        let statuses: Vec<&str> = filter
            .statuses
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| s.as_str())
            .collect();
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.write_error(e))?;
        let rows = tx
            .query(
                "DELETE FROM runs WHERE id IN (
                   SELECT id FROM runs WHERE updated_ms < $1 AND status = ANY($2)
                   ORDER BY updated_ms DESC, id DESC OFFSET $3)
                 AND status IN ('pass', 'blocked', 'cancelled')
                 RETURNING id",
                &[
                    &(filter.before_ms as i64),
                    &statuses,
                    &(filter.keep_last as i64),
                ],
            )
            .await
            .map_err(|e| self.write_error(e))?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        for table in [
            "journal_pages",
            "event_pages",
            "event_heads",
            "questions",
            "messages",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE run = ANY($1)"), &[&ids])
                .await
                .map_err(|e| self.write_error(e))?;
        }
        tx.commit().await.map_err(|e| self.write_error(e))?;
        Ok(ids)
    }

    pub(super) async fn request_cancel(&self, run: String) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "UPDATE runs SET cancel_requested = true WHERE id = $1",
            &[&run],
        )
        .await
        .map_err(|e| self.write_error(e))?;
        self.notify(&c, &run).await;
        Ok(())
    }

    pub(super) async fn cancel_requested(&self, run: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT cancel_requested FROM runs WHERE id = $1")
            .await
            .map_err(|e| self.read_error(e))?;
        let row = c
            .query_opt(&stmt, &[&run])
            .await
            .map_err(|e| self.read_error(e))?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    /// Records a question; with a fence, only while that ownership holds
    /// the run. An open question asked again is not a second one.
    pub(super) async fn ask(
        &self,
        q: QuestionRecord,
        fence: Option<Fence>,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let epoch = fence.as_ref().map(|f| f.epoch as i64);
        let sql = format!(
            "WITH held AS (SELECT $5::int8 IS NULL
                                  OR EXISTS (SELECT 1 FROM runs WHERE id = $1 AND epoch = $5) AS ok),
                  put AS (INSERT INTO questions (run, pos, name, question, asked_ms)
                          SELECT $1, $2, $3, $4, {NOW_MS} FROM held WHERE ok
                          ON CONFLICT (run, pos) DO NOTHING RETURNING 1)
             SELECT ok FROM held"
        );
        let row = c
            .query_one(
                &sql,
                &[&q.run, &q.pos, &q.name, &q.question.to_string(), &epoch],
            )
            .await
            .map_err(|e| self.write_error(e))?;
        match fence {
            Some(f) if !row.get::<_, bool>(0) => Err(StoreError::Fenced {
                run: q.run,
                epoch: f.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Answers the first open question of `run` named (or at) `name`.
    /// Concurrent answerers skip a question another is answering, so
    /// eight answers to two questions land exactly twice.
    pub(super) async fn answer(
        &self,
        run: String,
        name: String,
        answer: Value,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let sql = format!(
            "WITH q AS (SELECT run, pos FROM questions
                        WHERE run = $1 AND answer IS NULL AND (name = $2 OR pos = $2)
                        ORDER BY asked_ms, seq LIMIT 1 FOR UPDATE SKIP LOCKED)
             UPDATE questions SET answer = $3, answered_ms = {NOW_MS}
             FROM q WHERE questions.run = q.run AND questions.pos = q.pos
               AND questions.answer IS NULL"
        );
        let n = c
            .execute(&sql, &[&run, &name, &answer.to_string()])
            .await
            .map_err(|e| self.write_error(e))?;
        if n > 0 {
            self.notify(&c, &run).await;
        }
        Ok(n > 0)
    }

    pub(super) async fn load_questions(
        &self,
        run: &str,
    ) -> Result<Vec<QuestionRecord>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT run, pos, name, question, answer FROM questions WHERE run = $1
                 ORDER BY asked_ms, seq",
                &[&run],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        rows.iter()
            .map(|r| {
                Ok(QuestionRecord {
                    run: r.get(0),
                    pos: r.get(1),
                    name: r.get(2),
                    question: json(self, "question", r.get(3))?.unwrap_or(Value::Null),
                    answer: json(self, "answer", r.get(4))?,
                })
            })
            .collect()
    }
}
