//! Who runs a run: the owner record and its lease (claim, renew, the sweep
//! of expired owners), and pruning finished runs. Split from `sqlite.rs`,
//! whose `Store` impl calls these.

use super::{RUN_COLUMNS, SqliteStore, block_on, run_row};
use crate::engine::now_ms;
use crate::store::{
    Fence, Owner, Prune, RunRecord, RunStatus, StoreError, StoreFut, clock, clock_text,
};
use rusqlite::{Connection, OptionalExtension, named_params, params};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The owner of `r` when it provably is gone: it ran on this machine (same
/// host, same pid namespace) and its process no longer exists.
fn dead_owner(c: &Connection, r: &RunRecord, me: &str) -> Option<String> {
    let machine: Option<String> = c
        .query_row(
            "SELECT owner_machine FROM runs WHERE id = ?1",
            [&r.id],
            |row| row.get(0),
        )
        .ok()
        .flatten();
    let pid = r.pid?;
    // SAFETY: signal 0 only checks whether the process exists. One we may
    // not signal (EPERM) exists all the same: only "no such process" is
    // a dead owner.
    let alive = pid == std::process::id()
        || unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
        || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    (machine.as_deref() == Some(me) && !alive)
        .then(|| r.owner.clone())
        .flatten()
}

/// The lease's end, in epoch ms, for a lease taken now: for people only
/// (`swarm show`); expiry is decided on the boot clock ([`boot_lease`]).
pub(super) fn lease_end() -> i64 {
    (now_ms() + crate::store::lease().as_millis() as u64) as i64
}

/// This boot, and the end on its boot clock of a lease taken now.
pub(super) fn boot_lease() -> (&'static str, i64) {
    let until = clock::boot_ms() + crate::store::lease().as_millis() as u64;
    (clock::boot_id(), until as i64)
}

/// The one rule for a lapsed lease, on the machine's boot clock: no owner,
/// a lease from another boot, or one whose end has passed. (Leases written
/// before the boot clock was recorded fall back to their wall-clock end.)
/// Binds `:boot` (this boot's id), `:boot_now` and `:wall_now`.
const LAPSED: &str = "(owner IS NULL
    OR (lease_boot IS NULL AND (lease_until_ms IS NULL OR lease_until_ms < :wall_now))
    OR (lease_boot IS NOT NULL AND (lease_boot != :boot OR lease_until_boot IS NULL
                                    OR lease_until_boot < :boot_now)))";

/// "run r7 is being run by host-a (pid 4121) since 12:03:10; its lease
/// expires in 20 s".
fn owned_message(r: &RunRecord, left_ms: u64) -> String {
    let since = r.owned_since_ms.map_or("?".to_string(), clock_text);
    format!(
        "run {} is being run by {} (pid {}) since {since}; its lease expires in {} s \
         (a run has one owner at a time: wait for it, or `swarm cancel {}`)",
        r.id,
        r.owner_host.as_deref().unwrap_or("?"),
        r.pid.unwrap_or(0),
        left_ms.div_ceil(1000),
        r.id,
    )
}

impl SqliteStore {
    /// Takes `run` for `owner` in one write: the compare-and-set, then the
    /// row as it now stands, read in the same transaction.
    pub(super) fn claim_run(&self, run: &str, owner: &Owner) -> StoreFut<'static, Fence> {
        let (id, o) = (run.to_string(), owner.clone());
        let decided = self.write_with(move |tx| {
            let dead = match load(tx, &id)? {
                Some(r) => dead_owner(tx, &r, &o.machine),
                None => None,
            };
            // One statement decides: unfinished, and unowned, or its
            // lease lapsed, or its owner was seen dead. The epoch grows:
            // the previous owner's writes are refused from now on.
            let (boot, until) = boot_lease();
            let now = now_ms() as i64;
            tx.execute(
                &format!(
                    "UPDATE runs SET status = 'running', owner = :owner, owner_host = :host,
                       pid = :pid, owned_since_ms = :wall_now, lease_until_ms = :until_ms,
                       updated_ms = :wall_now, owner_machine = :machine, epoch = epoch + 1,
                       lease_boot = :boot, lease_until_boot = :until
                     WHERE id = :id AND status NOT IN ('pass', 'blocked', 'cancelled')
                       AND ({LAPSED} OR owner = :owner OR owner = :dead)"
                ),
                named_params! {
                    ":id": id, ":owner": o.id, ":host": o.host, ":pid": o.pid,
                    ":wall_now": now, ":until_ms": lease_end(), ":machine": o.machine,
                    ":boot": boot, ":until": until, ":boot_now": clock::boot_ms() as i64,
                    ":dead": dead,
                },
            )?;
            Ok((load(tx, &id)?, lease_left(tx, &id)?))
        });
        let (run, owner, epochs) = (run.to_string(), owner.id.clone(), self.epochs.clone());
        Box::pin(async move {
            match decided.await? {
                (Some(r), _) if r.owner.as_deref() == Some(owner.as_str()) => {
                    let mut known = epochs.lock().unwrap_or_else(|e| e.into_inner());
                    let e = known.entry(run).or_default();
                    *e = (*e).max(r.epoch);
                    Ok(Fence {
                        owner,
                        epoch: r.epoch,
                    })
                }
                (Some(r), left) if r.status == RunStatus::Running => {
                    Err(StoreError::Owned(owned_message(&r, left)))
                }
                (Some(r), _) => Err(StoreError::Owned(format!(
                    "run {} already finished ({})",
                    r.id, r.status
                ))),
                (None, _) => Err(StoreError::Owned(format!("no run `{run}`"))),
            }
        })
    }

    /// Extends the lease while `fence` holds the run: one fenced update,
    /// whose row count is the answer.
    pub(super) fn renew_lease(
        &self,
        run: &str,
        fence: &Fence,
    ) -> crate::store::StoreFut<'static, bool> {
        let (id, f) = (run.to_string(), fence.clone());
        let renewed = Arc::new(AtomicBool::new(false));
        let flag = renewed.clone();
        let commit =
            self.submit(Box::new(move |tx| {
                let (boot, until) = boot_lease();
                let n = tx
                .prepare_cached(
                    "UPDATE runs SET lease_until_ms = ?4, lease_boot = ?5, lease_until_boot = ?6
                     WHERE id = ?1 AND owner = ?2 AND epoch = ?3 AND status = 'running'",
                )?
                .execute(params![id, f.owner, f.epoch as i64, lease_end(), boot, until])?;
                flag.store(n == 1, Ordering::Relaxed);
                Ok(())
            }));
        Box::pin(async move {
            commit.await?;
            Ok(renewed.load(Ordering::Relaxed))
        })
    }

    /// Whether `run`'s lease has lapsed on the boot clock, or its owner is
    /// provably dead.
    pub(super) fn lease_lapsed(&self, run: &str) -> Result<bool, StoreError> {
        let me = Owner::new().machine;
        let Some(r) = self.load_run(run)? else {
            return Ok(false);
        };
        self.read(|c| Ok(dead_owner(c, &r, &me).is_some() || lease_left(c, run)? == 0))
    }

    pub(super) fn prune_runs(&self, filter: &Prune) -> Result<Vec<String>, StoreError> {
        let statuses: Vec<&str> = filter
            .statuses
            .iter()
            .filter(|s| s.is_finished())
            .map(|s| s.as_str())
            .collect();
        let candidates: Vec<String> = self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, status FROM runs WHERE updated_ms < ?1 ORDER BY updated_ms DESC, id DESC",
            )?;
            stmt.query_map([filter.before_ms as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .filter_map(|row| match row {
                Ok((id, status)) if statuses.contains(&status.as_str()) => Some(Ok(id)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
        })?;
        let doomed: Vec<String> = candidates.into_iter().skip(filter.keep_last).collect();
        let ids = doomed.clone();
        block_on(self.submit(Box::new(move |tx| {
            for id in &ids {
                // The status check again: never a run that came back to life.
                let n = tx.execute(
                    "DELETE FROM runs WHERE id = ?1 AND status IN ('pass', 'blocked', 'cancelled')",
                    [id],
                )?;
                if n == 1 {
                    for table in ["journal_pages", "event_pages", "questions", "messages"] {
                        tx.execute(&format!("DELETE FROM {table} WHERE run = ?1"), [id])?;
                    }
                }
            }
            Ok(())
        })))?;
        // Give the space back to the file system: VACUUM rewrites the
        // database through the write-ahead log, so the checkpoint comes
        // after it (the other way round left the whole database in the
        // log, and the file no smaller).
        self.read(|c| c.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);"))?;
        Ok(doomed)
    }

    /// Marks the runs whose owner's lease lapsed (or whose owner is seen
    /// dead) `interrupted`, in one write; the epoch grows, fencing out an
    /// owner that was only paused.
    pub(super) fn sweep_expired(&self) -> StoreFut<'static, Vec<String>> {
        let me = Owner::new().machine;
        self.write_with(move |tx| {
            let running: Vec<RunRecord> = tx
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY created_ms, id"
                ))?
                .query_map([], run_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut marked = Vec::new();
            for r in running {
                let dead = dead_owner(tx, &r, &me);
                let n = tx.execute(
                    &format!(
                        "UPDATE runs SET status = 'interrupted', owner = NULL, lease_until_ms = NULL,
                           lease_until_boot = NULL, updated_ms = :wall_now, epoch = epoch + 1,
                           result = json_object('code', 'owner_lost', 'error',
                             'its owner stopped renewing its lease (it died, or was paused or cut off); '
                             || '`swarm resume ' || id || '` continues it')
                         WHERE id = :id AND status = 'running' AND ({LAPSED} OR owner = :dead)"
                    ),
                    named_params! {
                        ":id": r.id, ":wall_now": now_ms() as i64, ":boot": clock::boot_id(),
                        ":boot_now": clock::boot_ms() as i64, ":dead": dead,
                    },
                )?;
                if n == 1 {
                    marked.push(r.id);
                }
            }
            Ok(marked)
        })
    }
}

/// Run `id` as the connection sees it now.
fn load(c: &Connection, id: &str) -> rusqlite::Result<Option<RunRecord>> {
    c.query_row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [id],
        run_row,
    )
    .optional()
}

/// Milliseconds left on `run`'s lease by the boot clock (0: lapsed).
fn lease_left(c: &Connection, run: &str) -> rusqlite::Result<u64> {
    let row: Option<(bool, Option<i64>)> = c
        .query_row(
            &format!("SELECT {LAPSED}, lease_until_boot FROM runs WHERE id = :id"),
            named_params! {
                ":id": run, ":boot": clock::boot_id(), ":boot_now": clock::boot_ms() as i64,
                ":wall_now": now_ms() as i64,
            },
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        None | Some((true, _)) => 0,
        Some((false, until)) => {
            until.map_or(1, |u| (u as u64).saturating_sub(clock::boot_ms()).max(1))
        }
    })
}
