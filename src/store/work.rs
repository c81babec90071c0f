//! The remote-step work queue, behind the store: steps of remote agents
//! offered on named queues, claimed by workers under leases, renewed by
//! heartbeat, lapsed back onto their queue when a worker goes silent, and
//! settled by the one live claim's result.
//!
//! It lives in the store so that every server on one journal shares it: a
//! step offered by the server executing its run may be claimed through
//! any of them. The contract is poll-shaped (offer, then read its state)
//! so that a database can fill it; [`WorkQueue::changed`] wakes waiters in
//! this process at once, and waiters poll (every [`POLL`]) for what other
//! processes did. Whether a claim has lapsed is decided by the store, on
//! its clock. The engine's in-memory board fills the same contract for a
//! journal kept in memory.

use super::{Commit, StoreFut};
use crate::auth::CapToken;
use crate::engine::TaskId;
use crate::engine::board::Board;
pub use crate::engine::board::{ClaimError, Posted, WorkClaim, WorkItem, WorkState};
use std::time::Duration;

/// How often a waiter looks again for what other processes did to the
/// queue (claims, results, lapses) when nothing here woke it.
pub const POLL: Duration = Duration::from_millis(250);

/// The queue's contract (see the module doc). Every claim-addressed call
/// answers a [`ClaimError`] for a claim that is not live: unknown,
/// expired, cancelled, done, or used for another task.
pub trait WorkQueue: Send + Sync {
    /// Puts a step on its queue; returns its id. `token` is the attempt's
    /// token when the step executes in this process: kept here (never
    /// stored), and known before any claimer can see the step, so a
    /// worker's events reach the engine as the step's own.
    fn offer(&self, item: WorkItem, token: Option<CapToken>) -> StoreFut<'static, u64>;
    /// The attempt token of step `id`, when it executes in this process.
    fn token(&self, id: u64) -> Option<CapToken>;
    /// Takes the oldest queued step of `queue` (of run `run` only, when
    /// given) under a lease of `lease`. Never hands one step to two
    /// claimers.
    fn claim(
        &self,
        queue: &str,
        run: Option<&str>,
        lease: Duration,
    ) -> StoreFut<'static, Option<WorkClaim>>;
    /// Renews a live claim for another `lease`.
    fn renew(&self, claim: &str, lease: Duration) -> StoreFut<'static, Result<(), ClaimError>>;
    /// The run of live claim `claim` (a worker bound to a run may touch
    /// only its claims), or why it is not live (a heartbeat holds until
    /// it is not).
    fn check(&self, claim: &str) -> StoreFut<'static, Result<Option<String>, ClaimError>>;
    /// The step behind a live claim on `task`, with its id.
    fn claimed(
        &self,
        claim: &str,
        task: TaskId,
    ) -> StoreFut<'static, Result<(u64, WorkItem), ClaimError>>;
    /// Settles the step with its worker's result; the claim ends.
    fn post(
        &self,
        claim: &str,
        task: TaskId,
        posted: Posted,
    ) -> StoreFut<'static, Result<(), ClaimError>>;
    /// Where step `id` stands.
    fn state(&self, id: u64) -> StoreFut<'static, WorkState>;
    /// Puts step `id` back on its queue if its claim lapsed (the claim is
    /// fenced: nothing sent on it counts any more). Returns how many claims
    /// on it have lapsed so far, when this one did.
    fn lapse(&self, id: u64) -> StoreFut<'static, Option<u32>>;
    /// Takes step `id` off the queue; a live claim on it ends as cancelled.
    fn withdraw(&self, id: u64) -> Commit;
    /// Steps waiting on each queue.
    fn waiting(&self) -> StoreFut<'static, Vec<(String, usize)>>;
    /// Wakes when this process changed the queue.
    fn changed(&self) -> &tokio::sync::Notify;
}

/// An answer the board has already given, as a store future.
fn now<T: Send + 'static>(v: T) -> StoreFut<'static, T> {
    Box::pin(std::future::ready(Ok(v)))
}

/// The board is the queue of runs journaled in memory.
impl WorkQueue for Board {
    fn offer(&self, item: WorkItem, token: Option<CapToken>) -> StoreFut<'static, u64> {
        now(Board::offer(self, item, token))
    }
    fn token(&self, id: u64) -> Option<CapToken> {
        Board::token(self, id)
    }
    fn claim(
        &self,
        queue: &str,
        run: Option<&str>,
        lease: Duration,
    ) -> StoreFut<'static, Option<WorkClaim>> {
        now(Board::claim(self, queue, run, lease))
    }
    fn renew(&self, claim: &str, lease: Duration) -> StoreFut<'static, Result<(), ClaimError>> {
        now(Board::renew(self, claim, lease))
    }
    fn check(&self, claim: &str) -> StoreFut<'static, Result<Option<String>, ClaimError>> {
        now(Board::check(self, claim))
    }
    fn claimed(
        &self,
        claim: &str,
        task: TaskId,
    ) -> StoreFut<'static, Result<(u64, WorkItem), ClaimError>> {
        now(Board::claimed(self, claim, task))
    }
    fn post(
        &self,
        claim: &str,
        task: TaskId,
        posted: Posted,
    ) -> StoreFut<'static, Result<(), ClaimError>> {
        now(Board::post(self, claim, task, posted))
    }
    fn state(&self, id: u64) -> StoreFut<'static, WorkState> {
        now(Board::state(self, id))
    }
    fn lapse(&self, id: u64) -> StoreFut<'static, Option<u32>> {
        now(Board::lapse(self, id))
    }
    fn withdraw(&self, id: u64) -> Commit {
        Board::withdraw(self, id);
        now(())
    }
    fn waiting(&self) -> StoreFut<'static, Vec<(String, usize)>> {
        now(Board::waiting(self))
    }
    fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }
}
