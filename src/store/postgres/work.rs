//! The remote-step work queue in Postgres (`store/work.rs` has the
//! contract): one row per offered step; a claim takes the oldest queued
//! row with `FOR UPDATE SKIP LOCKED`, so claimants on any number of nodes
//! never wait on, nor take, the same row; a claim's lease lapses by the
//! database's clock. Claims that ended are remembered for an hour in
//! `work_ended`, so a late worker learns why.

use super::{Inner, NOW_MS, PostgresStore, json};
use crate::auth::CapToken;
use crate::engine::TaskId;
use crate::store::work::{ClaimError, Posted, WorkClaim, WorkItem, WorkQueue, WorkState};
use crate::store::{Commit, StoreError, StoreFut};
use deadpool_postgres::GenericClient;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long an ended claim is remembered.
const ENDED_KEPT_MS: i64 = 3_600_000;

const ITEM: &str = "id, queue, run, task, attempt, agent, input, profile";

impl Inner {
    fn item_row(&self, r: &tokio_postgres::Row) -> Result<(u64, WorkItem), StoreError> {
        Ok((
            r.get::<_, i64>(0) as u64,
            WorkItem {
                queue: r.get(1),
                run: r.get(2),
                task: TaskId(r.get::<_, i64>(3) as u64),
                attempt: r.get::<_, i64>(4) as u32,
                agent: r.get(5),
                input: json(self, "input", r.get(6))?.unwrap_or(Value::Null),
                profile: json(self, "profile", r.get(7))?.unwrap_or(Value::Null),
            },
        ))
    }

    /// Why `claim` is not live: what `work_ended` remembers of it.
    async fn ended(&self, c: &impl GenericClient, claim: &str) -> Result<ClaimError, StoreError> {
        let why: Option<String> = c
            .query_opt("SELECT why FROM work_ended WHERE claim = $1", &[&claim])
            .await
            .map_err(|e| self.read_error(e))?
            .map(|r| r.get(0));
        let c = claim.to_string();
        Ok(match why.as_deref() {
            Some("expired") => ClaimError::Expired(c),
            Some("cancelled") => ClaimError::Cancelled(c),
            Some("done") => ClaimError::Done(c),
            _ => ClaimError::Unknown(c),
        })
    }

    async fn remember(
        &self,
        c: &impl GenericClient,
        claim: &str,
        why: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "WITH old AS (DELETE FROM work_ended WHERE ended_ms < {NOW_MS} - $3)
             INSERT INTO work_ended (claim, why, ended_ms) VALUES ($1, $2, {NOW_MS})
             ON CONFLICT (claim) DO UPDATE SET why = excluded.why, ended_ms = excluded.ended_ms"
        );
        c.execute(&sql, &[&claim, &why, &ENDED_KEPT_MS])
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(())
    }

    /// The live claim `claim` on `task`, or why it is not.
    async fn live(
        &self,
        c: &impl GenericClient,
        claim: &str,
        task: TaskId,
    ) -> Result<Result<(u64, WorkItem), ClaimError>, StoreError> {
        let row = c
            .query_opt(
                &format!("SELECT {ITEM} FROM work WHERE claim = $1 AND state = 'claimed'"),
                &[&claim],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        Ok(match row.map(|r| self.item_row(&r)).transpose()? {
            Some((_, item)) if item.task != task => Err(ClaimError::OtherTask {
                claim: claim.to_string(),
                bound: item.task,
                asked: task,
            }),
            Some(found) => Ok(found),
            None => Err(self.ended(c, claim).await?),
        })
    }
}

impl PostgresStore {
    /// A queue operation, waking this process's waiters once it is done.
    fn queue_op<T, F>(&self, op: impl FnOnce(Arc<Inner>) -> F) -> StoreFut<'static, T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let changed = self.changed.clone();
        let inner = self.inner.clone();
        let f = op(self.inner.clone());
        super::spawn(async move {
            let v = f.await?;
            changed.notify_waiters();
            // The other nodes' waiters (workers polling for steps).
            if let Ok(c) = inner.client().await {
                inner.notify(&c, super::wake::WORK).await;
            }
            Ok(v)
        })
    }
}

impl WorkQueue for PostgresStore {
    fn offer(&self, item: WorkItem, token: Option<CapToken>) -> StoreFut<'static, u64> {
        let tokens = self.tokens.clone();
        self.queue_op(move |s| async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await.map_err(|e| s.write_error(e))?;
            let sql = format!(
                "INSERT INTO work (queue, run, task, attempt, agent, input, profile, state, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', {NOW_MS}) RETURNING id"
            );
            let id: i64 = tx
                .query_one(
                    &sql,
                    &[
                        &item.queue,
                        &item.run,
                        &(item.task.0 as i64),
                        &i64::from(item.attempt),
                        &item.agent,
                        &item.input.to_string(),
                        &item.profile.to_string(),
                    ],
                )
                .await
                .map_err(|e| s.write_error(e))?
                .get(0);
            // Known before the commit lets a claimer see the step.
            if let Some(token) = token {
                lock(&tokens).insert(id as u64, token);
            }
            tx.commit().await.map_err(|e| s.write_error(e))?;
            Ok(id as u64)
        })
    }

    fn token(&self, id: u64) -> Option<CapToken> {
        lock(&self.tokens).get(&id).cloned()
    }

    fn claim(
        &self,
        queue: &str,
        run: Option<&str>,
        lease: Duration,
    ) -> StoreFut<'static, Option<WorkClaim>> {
        let (queue, run) = (queue.to_string(), run.map(str::to_string));
        let claim = crate::engine::board::new_claim_id();
        self.queue_op(move |s| async move {
            let c = s.client().await?;
            let sql = format!(
                "UPDATE work SET state = 'claimed', claim = $1, claim_until_ms = {NOW_MS} + $2
                 WHERE id = (SELECT id FROM work WHERE queue = $3 AND state = 'queued'
                               AND ($4::text IS NULL OR run = $4) ORDER BY id LIMIT 1
                             FOR UPDATE SKIP LOCKED)
                 RETURNING {ITEM}"
            );
            let ms = lease.as_millis() as i64;
            let row = c
                .query_opt(&sql, &[&claim, &ms, &queue, &run])
                .await
                .map_err(|e| s.write_error(e))?;
            let Some(row) = row else { return Ok(None) };
            let (id, item) = s.item_row(&row)?;
            Ok(Some(WorkClaim {
                claim,
                id,
                item,
                lease,
            }))
        })
    }

    fn renew(&self, claim: &str, lease: Duration) -> StoreFut<'static, Result<(), ClaimError>> {
        let claim = claim.to_string();
        self.op(move |s| async move {
            let c = s.client().await?;
            let sql = format!(
                "UPDATE work SET claim_until_ms = {NOW_MS} + $2 WHERE claim = $1 AND state = 'claimed'"
            );
            let n = c
                .execute(&sql, &[&claim, &(lease.as_millis() as i64)])
                .await
                .map_err(|e| s.write_error(e))?;
            Ok(if n == 1 { Ok(()) } else { Err(s.ended(&c, &claim).await?) })
        })
    }

    fn check(&self, claim: &str) -> StoreFut<'static, Result<Option<String>, ClaimError>> {
        let claim = claim.to_string();
        self.op(move |s| async move {
            let c = s.client().await?;
            let row = c
                .query_opt(
                    "SELECT run FROM work WHERE claim = $1 AND state = 'claimed'",
                    &[&claim],
                )
                .await
                .map_err(|e| s.read_error(e))?;
            Ok(match row {
                Some(r) => Ok(r.get(0)),
                None => Err(s.ended(&c, &claim).await?),
            })
        })
    }

    fn claimed(
        &self,
        claim: &str,
        task: TaskId,
    ) -> StoreFut<'static, Result<(u64, WorkItem), ClaimError>> {
        let claim = claim.to_string();
        self.op(move |s| async move {
            let c = s.client().await?;
            s.live(&c, &claim, task).await
        })
    }

    fn post(
        &self,
        claim: &str,
        task: TaskId,
        posted: Posted,
    ) -> StoreFut<'static, Result<(), ClaimError>> {
        let claim = claim.to_string();
        self.queue_op(move |s| async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await.map_err(|e| s.write_error(e))?;
            // Locks the row: of two posts on one claim, one settles it.
            tx.execute(
                "SELECT 1 FROM work WHERE claim = $1 AND state = 'claimed' FOR UPDATE",
                &[&claim],
            )
            .await
            .map_err(|e| s.write_error(e))?;
            if let Err(e) = s.live(&tx, &claim, task).await? {
                return Ok(Err(e));
            }
            tx.execute(
                "UPDATE work SET state = 'done', claim = NULL, ok = $2, value = $3
                 WHERE claim = $1 AND state = 'claimed'",
                &[&claim, &posted.ok, &posted.value.to_string()],
            )
            .await
            .map_err(|e| s.write_error(e))?;
            s.remember(&tx, &claim, "done").await?;
            tx.commit().await.map_err(|e| s.write_error(e))?;
            Ok(Ok(()))
        })
    }

    fn state(&self, id: u64) -> StoreFut<'static, WorkState> {
        self.op(move |s| async move {
            let c = s.client().await?;
            let sql = format!(
                "SELECT state, coalesce(claim_until_ms < {NOW_MS}, true), ok, value
                 FROM work WHERE id = $1"
            );
            let row = c
                .query_opt(&sql, &[&(id as i64)])
                .await
                .map_err(|e| s.read_error(e))?;
            let Some(r) = row else {
                return Ok(WorkState::Gone);
            };
            let state: String = r.get(0);
            Ok(match state.as_str() {
                "queued" => WorkState::Queued,
                "claimed" => WorkState::Claimed { lapsed: r.get(1) },
                _ => WorkState::Done(Posted {
                    ok: r.get::<_, Option<bool>>(2).unwrap_or(false),
                    value: json(&s, "value", r.get(3))?.unwrap_or(Value::Null),
                }),
            })
        })
    }

    fn lapse(&self, id: u64) -> StoreFut<'static, Option<u32>> {
        self.queue_op(move |s| async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await.map_err(|e| s.write_error(e))?;
            let sql = format!(
                "UPDATE work w SET state = 'queued', claim = NULL, claim_until_ms = NULL,
                   expiries = w.expiries + 1
                 FROM (SELECT id, claim FROM work WHERE id = $1 AND state = 'claimed'
                         AND claim_until_ms < {NOW_MS} FOR UPDATE) old
                 WHERE w.id = old.id RETURNING old.claim, w.expiries"
            );
            let row = tx
                .query_opt(&sql, &[&(id as i64)])
                .await
                .map_err(|e| s.write_error(e))?;
            let Some(row) = row else { return Ok(None) };
            let (claim, expiries): (String, i64) = (row.get(0), row.get(1));
            s.remember(&tx, &claim, "expired").await?;
            tx.commit().await.map_err(|e| s.write_error(e))?;
            Ok(Some(expiries as u32))
        })
    }

    fn withdraw(&self, id: u64) -> Commit {
        lock(&self.tokens).remove(&id);
        self.queue_op(move |s| async move {
            let mut c = s.client().await?;
            let tx = c.transaction().await.map_err(|e| s.write_error(e))?;
            let row = tx
                .query_opt(
                    "DELETE FROM work WHERE id = $1 RETURNING claim",
                    &[&(id as i64)],
                )
                .await
                .map_err(|e| s.write_error(e))?;
            if let Some(claim) = row.and_then(|r| r.get::<_, Option<String>>(0)) {
                s.remember(&tx, &claim, "cancelled").await?;
            }
            tx.commit().await.map_err(|e| s.write_error(e))?;
            Ok(())
        })
    }

    fn waiting(&self) -> StoreFut<'static, Vec<(String, usize)>> {
        self.op(move |s| async move {
            let c = s.client().await?;
            let rows = c
                .query(
                    "SELECT queue, count(*) FROM work WHERE state = 'queued'
                     GROUP BY queue ORDER BY queue",
                    &[],
                )
                .await
                .map_err(|e| s.read_error(e))?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as usize))
                .collect())
        })
    }

    fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }
}
