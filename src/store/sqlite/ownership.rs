//! Who runs a run: the owner record and its lease (claim, renew, the sweep
//! of expired owners), and pruning finished runs. Split from `sqlite.rs`,
//! whose `Store` impl calls these.

use super::{SqliteStore, block_on};
use crate::engine::now_ms;
use crate::store::{Owner, Prune, RunRecord, RunStatus, StoreError};
use rusqlite::{Connection, params};

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
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = pid == std::process::id() || unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    (machine.as_deref() == Some(me) && !alive)
        .then(|| r.owner.clone())
        .flatten()
}

/// The lease's end, in epoch ms, for a lease taken now.
pub(super) fn lease_end() -> i64 {
    (now_ms() + crate::store::lease().as_millis() as u64) as i64
}

/// "run r7 is being run by host-a (pid 4121) since 12:03:10; its lease
/// expires in 20 s".
fn owned_message(r: &RunRecord) -> String {
    let now = now_ms();
    let since = r.owned_since_ms.map_or("?".to_string(), clock);
    let left = r
        .lease_until_ms
        .unwrap_or(0)
        .saturating_sub(now)
        .div_ceil(1000);
    format!(
        "run {} is being run by {} (pid {}) since {since}; its lease expires in {left} s \
         (a run has one owner at a time: wait for it, or `swarm cancel {}`)",
        r.id,
        r.owner_host.as_deref().unwrap_or("?"),
        r.pid.unwrap_or(0),
        r.id,
    )
}

/// `HH:MM:SS` (UTC) of an epoch-ms time.
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

impl SqliteStore {
    pub(super) fn claim_run(&self, run: &str, owner: &Owner) -> Result<(), StoreError> {
        let dead = match self.load_run(run)? {
            Some(r) => self.read(|c| Ok(dead_owner(c, &r, &owner.machine)))?,
            None => None,
        };
        let (id, o) = (run.to_string(), owner.clone());
        // One statement decides: unfinished, and unowned, or its lease
        // expired, or its owner was seen dead (compare-and-swap on it).
        block_on(self.submit(Box::new(move |tx| {
            let now = now_ms() as i64;
            tx.execute(
                "UPDATE runs SET status = 'running', owner = ?2, owner_host = ?3, pid = ?4,
                   owned_since_ms = ?5, lease_until_ms = ?6, updated_ms = ?5, owner_machine = ?7
                 WHERE id = ?1 AND status NOT IN ('pass', 'blocked', 'cancelled')
                   AND (owner IS NULL OR lease_until_ms IS NULL OR lease_until_ms < ?5
                        OR owner = ?2 OR owner = ?8)",
                params![id, o.id, o.host, o.pid, now, lease_end(), o.machine, dead],
            )?;
            Ok(())
        })))?;
        match self.load_run(run)? {
            Some(r) if r.owner.as_deref() == Some(owner.id.as_str()) => Ok(()),
            Some(r) if r.status == RunStatus::Running => Err(StoreError::Owned(owned_message(&r))),
            Some(r) => Err(StoreError::Owned(format!(
                "run {} already finished ({})",
                r.id, r.status
            ))),
            None => Err(StoreError::Owned(format!("no run `{run}`"))),
        }
    }

    pub(super) fn renew_lease(&self, run: &str, owner: &str) -> Result<bool, StoreError> {
        let (id, o) = (run.to_string(), owner.to_string());
        block_on(self.submit(Box::new(move |tx| {
            tx.execute(
                "UPDATE runs SET lease_until_ms = ?3 WHERE id = ?1 AND owner = ?2 AND status = 'running'",
                params![id, o, lease_end()],
            )?;
            Ok(())
        })))?;
        Ok(self
            .load_run(run)?
            .is_some_and(|r| r.owner.as_deref() == Some(owner) && r.status == RunStatus::Running))
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
                    for table in ["journal_pages", "event_pages", "questions"] {
                        tx.execute(&format!("DELETE FROM {table} WHERE run = ?1"), [id])?;
                    }
                }
            }
            Ok(())
        })))?;
        // Give the space back to the file system.
        self.read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;"))?;
        Ok(doomed)
    }

    pub(super) fn sweep_expired(&self) -> Result<Vec<String>, StoreError> {
        let now = now_ms() as i64;
        let me = Owner::new().machine;
        let running = self.load_runs(Some(RunStatus::Running))?;
        let stale: Vec<(String, Option<String>)> = self.read(|c| {
            Ok(running
                .iter()
                .filter_map(|r| {
                    let dead = dead_owner(c, r, &me);
                    let expired = r.lease_until_ms.is_none_or(|t| (t as i64) < now);
                    (expired || dead.is_some()).then(|| (r.id.clone(), dead))
                })
                .collect())
        })?;
        let mut marked = Vec::new();
        for (id, dead) in stale {
            // The same condition again, in the write: a run that finished,
            // renewed its lease or changed hands meanwhile is left alone.
            let run = id.clone();
            block_on(self.submit(Box::new(move |tx| {
                tx.execute(
                    "UPDATE runs SET status = 'interrupted', owner = NULL, lease_until_ms = NULL,
                       updated_ms = ?2
                     WHERE id = ?1 AND status = 'running'
                       AND (lease_until_ms IS NULL OR lease_until_ms < ?2 OR owner = ?3)",
                    params![run, now, dead],
                )?;
                Ok(())
            })))?;
            if self
                .load_run(&id)?
                .is_some_and(|r| r.status == RunStatus::Interrupted)
            {
                marked.push(id);
            }
        }
        Ok(marked)
    }
}
