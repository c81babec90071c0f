//! The remote-step work queue in SQLite (`store/work.rs` has the
//! contract): one row per offered step, claimed by one compare-and-set
//! update (SQLite's single writer makes "the oldest queued row" one row
//! for one claimer), its lease judged on the machine's boot clock like a
//! run's. Claims that ended are remembered for an hour in `work_ended`, so
//! a late worker learns why (expired, cancelled, done) instead of
//! "unknown".

use super::{SqliteStore, done};
use crate::auth::CapToken;
use crate::engine::TaskId;
use crate::engine::now_ms;
use crate::store::work::{ClaimError, Posted, WorkClaim, WorkItem, WorkQueue, WorkState};
use crate::store::{Commit, StoreFut, clock};
use rusqlite::{OptionalExtension, Transaction, named_params, params};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long an ended claim is remembered.
const ENDED_KEPT_MS: i64 = 3_600_000;

/// A lapsed claim, on the boot clock: from another boot, or past its end.
/// Binds `:boot` and `:boot_now`.
const LAPSED: &str = "(lease_boot IS NULL OR lease_boot != :boot OR claim_until_boot < :boot_now)";

const ITEM: &str = "id, queue, run, task, attempt, agent, input, profile";

fn item_row(r: &rusqlite::Row) -> rusqlite::Result<(u64, WorkItem)> {
    let json = |i: usize| super::json(r, i).map(|v| v.unwrap_or(Value::Null));
    Ok((
        r.get::<_, i64>(0)? as u64,
        WorkItem {
            queue: r.get(1)?,
            run: r.get(2)?,
            task: TaskId(r.get::<_, i64>(3)? as u64),
            attempt: r.get(4)?,
            agent: r.get(5)?,
            input: json(6)?,
            profile: json(7)?,
        },
    ))
}

/// Why `claim` is not live: what `work_ended` remembers of it.
fn ended(tx: &rusqlite::Connection, claim: &str) -> rusqlite::Result<ClaimError> {
    let why: Option<String> = tx
        .query_row(
            "SELECT why FROM work_ended WHERE claim = ?1",
            [claim],
            |r| r.get(0),
        )
        .optional()?;
    let c = claim.to_string();
    Ok(match why.as_deref() {
        Some("expired") => ClaimError::Expired(c),
        Some("cancelled") => ClaimError::Cancelled(c),
        Some("done") => ClaimError::Done(c),
        _ => ClaimError::Unknown(c),
    })
}

fn remember(tx: &Transaction, claim: &str, why: &str) -> rusqlite::Result<()> {
    let now = now_ms() as i64;
    tx.prepare_cached("DELETE FROM work_ended WHERE ended_ms < ?1")?
        .execute([now - ENDED_KEPT_MS])?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO work_ended (claim, why, ended_ms) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![claim, why, now])?;
    Ok(())
}

/// The live claim `claim` on `task`, or why it is not.
fn live(
    tx: &rusqlite::Connection,
    claim: &str,
    task: TaskId,
) -> rusqlite::Result<Result<(u64, WorkItem), ClaimError>> {
    let found = tx
        .query_row(
            &format!("SELECT {ITEM} FROM work WHERE claim = ?1 AND state = 'claimed'"),
            [claim],
            item_row,
        )
        .optional()?;
    Ok(match found {
        Some((_, item)) if item.task != task => Err(ClaimError::OtherTask {
            claim: claim.to_string(),
            bound: item.task,
            asked: task,
        }),
        Some(found) => Ok(found),
        None => Err(ended(tx, claim)?),
    })
}

impl SqliteStore {
    /// [`write_with`](Self::write_with), waking this process's waiters once
    /// it is committed.
    fn queue_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFut<'static, T> {
        let write = self.write_with(f);
        let changed = self.changed.clone();
        Box::pin(async move {
            let v = write.await?;
            changed.notify_waiters();
            Ok(v)
        })
    }
}

impl WorkQueue for SqliteStore {
    fn offer(&self, item: WorkItem, token: Option<CapToken>) -> StoreFut<'static, u64> {
        let tokens = self.tokens.clone();
        self.queue_write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO work (queue, run, task, attempt, agent, input, profile, state,
                                   expiries, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', 0, ?8)",
            )?
            .execute(params![
                item.queue,
                item.run,
                item.task.0 as i64,
                item.attempt,
                item.agent,
                item.input.to_string(),
                item.profile.to_string(),
                now_ms() as i64
            ])?;
            let id = tx.last_insert_rowid() as u64;
            // Known before the commit lets a claimer see the step. (A
            // rolled-back offer leaves an entry no step will ever read.)
            if let Some(token) = token {
                lock(&tokens).insert(id, token);
            }
            Ok(id)
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
        self.queue_write(move |tx| {
            let until = clock::boot_ms() + lease.as_millis() as u64;
            let n = tx
                .prepare_cached(
                    "UPDATE work SET state = 'claimed', claim = :claim, lease_boot = :boot,
                       claim_until_boot = :until
                     WHERE id = (SELECT id FROM work WHERE queue = :queue AND state = 'queued'
                                   AND (:run IS NULL OR run = :run) ORDER BY id LIMIT 1)",
                )?
                .execute(named_params! {
                    ":claim": claim, ":boot": clock::boot_id(), ":until": until as i64,
                    ":queue": queue, ":run": run,
                })?;
            if n == 0 {
                return Ok(None);
            }
            let (id, item) = tx.query_row(
                &format!("SELECT {ITEM} FROM work WHERE claim = ?1"),
                [&claim],
                item_row,
            )?;
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
        self.write_with(move |tx| {
            let until = clock::boot_ms() + lease.as_millis() as u64;
            let n = tx
                .prepare_cached(
                    "UPDATE work SET claim_until_boot = ?2, lease_boot = ?3
                     WHERE claim = ?1 AND state = 'claimed'",
                )?
                .execute(params![claim, until as i64, clock::boot_id()])?;
            Ok(if n == 1 {
                Ok(())
            } else {
                Err(ended(tx, &claim)?)
            })
        })
    }

    fn check(&self, claim: &str) -> StoreFut<'static, Result<Option<String>, ClaimError>> {
        done(self.read(|c| {
            let live: Option<Option<String>> = c
                .query_row(
                    "SELECT run FROM work WHERE claim = ?1 AND state = 'claimed'",
                    [claim],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match live {
                Some(run) => Ok(run),
                None => Err(ended(c, claim)?),
            })
        }))
    }

    fn claimed(
        &self,
        claim: &str,
        task: TaskId,
    ) -> StoreFut<'static, Result<(u64, WorkItem), ClaimError>> {
        done(self.read(|c| live(c, claim, task)))
    }

    fn post(
        &self,
        claim: &str,
        task: TaskId,
        posted: Posted,
    ) -> StoreFut<'static, Result<(), ClaimError>> {
        let claim = claim.to_string();
        self.queue_write(move |tx| {
            if let Err(e) = live(tx, &claim, task)? {
                return Ok(Err(e));
            }
            tx.prepare_cached(
                "UPDATE work SET state = 'done', claim = NULL, ok = ?2, value = ?3
                 WHERE claim = ?1 AND state = 'claimed'",
            )?
            .execute(params![claim, posted.ok, posted.value.to_string()])?;
            remember(tx, &claim, "done")?;
            Ok(Ok(()))
        })
    }

    fn state(&self, id: u64) -> StoreFut<'static, WorkState> {
        done(self.read(|c| {
            let row = c
                .query_row(
                    &format!("SELECT state, {LAPSED}, ok, value FROM work WHERE id = :id"),
                    named_params! {
                        ":id": id as i64, ":boot": clock::boot_id(),
                        ":boot_now": clock::boot_ms() as i64,
                    },
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, bool>(1)?,
                            r.get::<_, Option<bool>>(2)?,
                            super::json(r, 3)?,
                        ))
                    },
                )
                .optional()?;
            Ok(match row {
                None => WorkState::Gone,
                Some((state, lapsed, ok, value)) => match state.as_str() {
                    "queued" => WorkState::Queued,
                    "claimed" => WorkState::Claimed { lapsed },
                    _ => WorkState::Done(Posted {
                        ok: ok.unwrap_or(false),
                        value: value.unwrap_or(Value::Null),
                    }),
                },
            })
        }))
    }

    fn lapse(&self, id: u64) -> StoreFut<'static, Option<u32>> {
        self.queue_write(move |tx| {
            let old: Option<(String, u32)> = tx
                .query_row(
                    &format!(
                        "SELECT claim, expiries FROM work
                         WHERE id = :id AND state = 'claimed' AND {LAPSED}"
                    ),
                    named_params! {
                        ":id": id as i64, ":boot": clock::boot_id(),
                        ":boot_now": clock::boot_ms() as i64,
                    },
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((claim, expiries)) = old else {
                return Ok(None);
            };
            tx.prepare_cached(
                "UPDATE work SET state = 'queued', claim = NULL, lease_boot = NULL,
                   claim_until_boot = NULL, expiries = expiries + 1
                 WHERE id = ?1 AND claim = ?2",
            )?
            .execute(params![id as i64, claim])?;
            remember(tx, &claim, "expired")?;
            Ok(Some(expiries + 1))
        })
    }

    fn withdraw(&self, id: u64) -> Commit {
        lock(&self.tokens).remove(&id);
        let write = self.queue_write(move |tx| {
            let claim: Option<Option<String>> = tx
                .query_row("SELECT claim FROM work WHERE id = ?1", [id as i64], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(Some(claim)) = claim {
                remember(tx, &claim, "cancelled")?;
            }
            tx.prepare_cached("DELETE FROM work WHERE id = ?1")?
                .execute([id as i64])?;
            Ok(())
        });
        Box::pin(write)
    }

    fn waiting(&self) -> StoreFut<'static, Vec<(String, usize)>> {
        done(self.read(|c| {
            c.prepare_cached(
                "SELECT queue, count(*) FROM work WHERE state = 'queued' GROUP BY queue ORDER BY queue",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
            .collect()
        }))
    }

    fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }
}
