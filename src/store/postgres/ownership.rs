//! Who runs a run, decided by Postgres: a claim is one compare-and-set
//! `UPDATE` that also grows the epoch; a lease lapses when the database's
//! clock passes its end; the sweep marks lapsed runs `interrupted` in one
//! statement. An owner on this machine whose process is gone has provably
//! stopped, so its runs are free at once (the one thing judged here).

use super::{Inner, NOW_MS};
use crate::store::{Fence, Owner, RunRecord, StoreError, clock_text};

/// A lapsed lease by the database's clock: no owner, or its end passed.
/// `$dead` names an owner seen dead, whose lease counts as lapsed.
const LAPSED: &str = "(owner IS NULL OR lease_until_ms IS NULL OR lease_until_ms < NOW_MS)";

fn lapsed_sql() -> String {
    LAPSED.replace("NOW_MS", NOW_MS)
}

/// Whether process `pid` is gone (signal 0 says no such process). One we
/// may not signal exists all the same.
fn gone(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks whether the process exists.
    pid as u32 != std::process::id()
        && unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// "run r7 is being run by host-a (pid 4121) since 12:03:10; its lease
/// expires in 20 s".
fn owned_message(r: &RunRecord, left_ms: i64) -> String {
    let since = r.owned_since_ms.map_or("?".to_string(), clock_text);
    format!(
        "run {} is being run by {} (pid {}) since {since}; its lease expires in {} s \
         (a run has one owner at a time: wait for it, or `swarm cancel {}`)",
        r.id,
        r.owner_host.as_deref().unwrap_or("?"),
        r.pid.unwrap_or(0),
        (left_ms.max(0) as u64).div_ceil(1000),
        r.id,
    )
}

impl Inner {
    /// The owner of `run` when it ran on this machine and its process is
    /// gone.
    async fn dead_owner(
        &self,
        c: &deadpool_postgres::Client,
        run: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = c
            .query_opt(
                "SELECT owner, pid FROM runs WHERE id = $1 AND owner_machine = $2",
                &[&run, &self.machine],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        Ok(row.and_then(|r| {
            let (owner, pid): (Option<String>, Option<i64>) = (r.get(0), r.get(1));
            pid.filter(|p| gone(*p)).and(owner)
        }))
    }

    pub(super) async fn claim(&self, run: String, o: Owner) -> Result<Fence, StoreError> {
        let c = self.client().await?;
        let dead = self.dead_owner(&c, &run).await?;
        let lease = crate::store::lease().as_millis() as i64;
        let sql = format!(
            "UPDATE runs SET status = 'running', owner = $2, owner_host = $3, pid = $4,
               owned_since_ms = {NOW_MS}, lease_until_ms = {NOW_MS} + $5, updated_ms = {NOW_MS},
               owner_machine = $6, epoch = epoch + 1
             WHERE id = $1 AND status NOT IN ('pass', 'blocked', 'cancelled')
               AND ({lapsed} OR owner = $2 OR owner = $7)
             RETURNING epoch",
            lapsed = lapsed_sql()
        );
        let stmt = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.write_error(e))?;
        let row = c
            .query_opt(
                &stmt,
                &[
                    &run,
                    &o.id,
                    &o.host,
                    &i64::from(o.pid),
                    &lease,
                    &o.machine,
                    &dead,
                ],
            )
            .await
            .map_err(|e| self.write_error(e))?;
        if let Some(row) = row {
            return Ok(Fence {
                owner: o.id,
                epoch: row.get::<_, i64>(0) as u64,
            });
        }
        let left = c
            .query_opt(
                &format!("SELECT coalesce(lease_until_ms - {NOW_MS}, 0) FROM runs WHERE id = $1"),
                &[&run],
            )
            .await
            .map_err(|e| self.read_error(e))?
            .map_or(0, |r| r.get::<_, i64>(0));
        drop(c);
        Err(StoreError::Owned(match self.load_run(&run).await? {
            Some(r) if r.status == crate::store::RunStatus::Running => owned_message(&r, left),
            Some(r) => format!("run {} already finished ({})", r.id, r.status),
            None => format!("no run `{run}`"),
        }))
    }

    pub(super) async fn renew(&self, run: String, f: Fence) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let lease = crate::store::lease().as_millis() as i64;
        let sql = format!(
            "UPDATE runs SET lease_until_ms = {NOW_MS} + $4
             WHERE id = $1 AND owner = $2 AND epoch = $3 AND status = 'running'"
        );
        let stmt = c
            .prepare_cached(&sql)
            .await
            .map_err(|e| self.write_error(e))?;
        let n = c
            .execute(&stmt, &[&run, &f.owner, &(f.epoch as i64), &lease])
            .await
            .map_err(|e| self.write_error(e))?;
        Ok(n == 1)
    }

    /// Whether `run`'s lease has lapsed by the database's clock, or its
    /// owner is provably dead.
    pub(super) async fn lapsed(&self, run: &str) -> Result<bool, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {} FROM runs WHERE id = $1", lapsed_sql()),
                &[&run],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        match row {
            None => Ok(false),
            Some(r) if r.get::<_, bool>(0) => Ok(true),
            Some(_) => Ok(self.dead_owner(&c, run).await?.is_some()),
        }
    }

    /// Marks the runs whose owner's lease lapsed (or whose owner is seen
    /// dead here) `interrupted`, in one statement; the epoch grows,
    /// fencing out an owner that was only paused.
    pub(super) async fn sweep(&self) -> Result<Vec<String>, StoreError> {
        let c = self.client().await?;
        let here = c
            .query(
                "SELECT owner, pid FROM runs WHERE status = 'running' AND owner_machine = $1",
                &[&self.machine],
            )
            .await
            .map_err(|e| self.read_error(e))?;
        let dead: Vec<String> = here
            .iter()
            .filter(|r| r.get::<_, Option<i64>>(1).is_some_and(gone))
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect();
        let sql = format!(
            "UPDATE runs SET status = 'interrupted', owner = NULL, lease_until_ms = NULL,
               updated_ms = {NOW_MS}, epoch = epoch + 1,
               result = json_build_object('code', 'owner_lost', 'error',
                 'its owner stopped renewing its lease (it died, or was paused or cut off); '
                 || '`swarm resume ' || id || '` continues it')::text
             WHERE status = 'running' AND ({lapsed} OR owner = ANY($1))
             RETURNING id, created_ms",
            lapsed = lapsed_sql()
        );
        let rows = c
            .query(&sql, &[&dead])
            .await
            .map_err(|e| self.write_error(e))?;
        let mut marked: Vec<(i64, String)> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
        marked.sort();
        Ok(marked.into_iter().map(|(_, id)| id).collect())
    }
}
