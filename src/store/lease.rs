//! An owner's side of its lease: renewing it, and knowing, before every
//! step it dispatches and every entry it records, that it still holds the
//! run.
//!
//! The store decides on its clock when a lease has lapsed; an owner must
//! never act after that point. It keeps the time of the start of its last
//! successful renewal on the machine's boot clock (`clock.rs`, read through
//! the vDSO: only its own readings are compared): the store stamped that
//! renewal no earlier, so the lease provably runs at least until that
//! start plus its length. Inside that window [`Lease::hold`] is
//! one atomic load; past it (the process was paused, starved, or the store
//! did not answer) it renews first, fenced by epoch, and a refusal means
//! the run is lost: nothing more is dispatched or recorded.

use super::{Fence, RunStatus, Store, StoreError, clock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Why an owner may not go on: another owner took the run, or it was
/// ended from outside. The message names who and when.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Lost {
    pub message: String,
}

pub struct Lease {
    store: Arc<dyn Store>,
    run: String,
    fence: Fence,
    length: Duration,
    /// Boot-clock ms until which this owner provably holds the run.
    valid_until: AtomicU64,
    lost: OnceLock<Lost>,
    /// One renewal at a time; a second caller finds the first's outcome.
    renewing: tokio::sync::Mutex<()>,
    /// Woken once when the run is lost.
    pub lost_signal: tokio::sync::Notify,
}

impl Lease {
    /// The lease `fence` holds on `run`, taken (or renewed) no earlier
    /// than `taken_at` on the boot clock.
    pub fn new(store: Arc<dyn Store>, run: &str, fence: Fence, taken_at: u64) -> Lease {
        let length = super::lease();
        Lease {
            store,
            run: run.to_string(),
            fence,
            valid_until: AtomicU64::new(taken_at + window(length)),
            length,
            lost: OnceLock::new(),
            renewing: tokio::sync::Mutex::new(()),
            lost_signal: tokio::sync::Notify::new(),
        }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// How long the lease lasts.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// Why the run was lost, once it was.
    pub fn lost(&self) -> Option<&Lost> {
        self.lost.get()
    }

    /// Ok while this owner provably holds the run: at once inside the
    /// window of its last renewal, else after renewing now.
    pub async fn hold(&self) -> Result<(), Lost> {
        if let Some(l) = self.lost.get() {
            return Err(l.clone());
        }
        if clock::local_ms() < self.valid_until.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.renew(false).await {
            Ok(()) => Ok(()),
            Err(RenewError::Lost(l)) => Err(l),
            // The store did not answer and the window has passed: another
            // process may take the run at any moment, so this one stops.
            Err(RenewError::Store(e)) => Err(self.lose(format!(
                "could not renew the lease on run {} ({e}) before it ran out; stopped",
                self.run
            ))),
        }
    }

    /// Renews the lease. With `always`, even inside the window (the
    /// periodic renewal); without, only when no other caller renewed it
    /// meanwhile.
    pub async fn renew(&self, always: bool) -> Result<(), RenewError> {
        let _one = self.renewing.lock().await;
        if let Some(l) = self.lost.get() {
            return Err(RenewError::Lost(l.clone()));
        }
        let start = clock::local_ms();
        if !always && start < self.valid_until.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.store.renew(&self.run, &self.fence).await {
            Ok(true) => {
                self.valid_until
                    .fetch_max(start + window(self.length), Ordering::AcqRel);
                Ok(())
            }
            Ok(false) => {
                let message = self.describe_loss().await;
                Err(RenewError::Lost(self.lose(message)))
            }
            Err(e) => Err(RenewError::Store(e)),
        }
    }

    /// Whether the window of the last renewal has passed.
    pub fn lapsed_here(&self) -> bool {
        clock::local_ms() >= self.valid_until.load(Ordering::Acquire)
    }

    /// Records the loss (the first reason wins) and wakes whoever waits.
    pub fn lose(&self, message: String) -> Lost {
        let lost = self.lost.get_or_init(|| Lost { message }).clone();
        self.lost_signal.notify_waiters();
        self.lost_signal.notify_one();
        lost
    }

    /// "lost run r7 to host-b (pid 912) at 12:03:10; stopped", or what
    /// else ended it.
    async fn describe_loss(&self) -> String {
        let id = &self.run;
        match self.store.run(id).await {
            // Ended or interrupted from outside (a cancel, the sweep of a
            // lapsed lease) rather than taken by another owner.
            Ok(Some(r))
                if r.owner.is_none() && !r.status.is_finished()
                    || r.status == RunStatus::Cancelled =>
            {
                format!(
                    "lost run {id}: it was set {} from outside at {}; stopped",
                    r.status,
                    clock_text(r.updated_ms)
                )
            }
            Ok(Some(r)) => format!(
                "lost run {id} to {} (pid {}) at {}; stopped",
                r.owner_host.as_deref().unwrap_or("?"),
                r.pid.unwrap_or(0),
                r.owned_since_ms.map_or("?".into(), clock_text),
            ),
            Ok(None) => format!("lost run {id}: it no longer exists; stopped"),
            Err(e) => format!("lost run {id} to another owner ({e}); stopped"),
        }
    }
}

/// Why a renewal did not extend the lease.
#[derive(Debug)]
pub enum RenewError {
    Lost(Lost),
    Store(StoreError),
}

/// How much of a lease's length an owner counts on after renewing: a
/// tenth is left as margin for the renewal's own latency.
fn window(length: Duration) -> u64 {
    length.as_millis() as u64 * 9 / 10
}

/// `HH:MM:SS UTC` of an epoch-ms time.
pub fn clock_text(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
