//! What the MCP face tells a client while a run goes on, both read from
//! [`Runs::follow`] (the one place that follows a run): progress
//! notifications while a `run_<name>` or `resume_run` call waits for its
//! run (when the call carries a progress token), and
//! `notifications/resources/updated` for a subscribed `swarm://runs/{id}`.
//! Each watcher is a task that ends when the run ends, the call or
//! subscription ends ([`Watch`] is dropped), or the client is gone.
//!
//! Notifications for one burst of events are coalesced: a subscriber is
//! told once per page of new events, not once per event.
//!
//! [`Runs::follow`]: crate::run::Runs::follow

use crate::run::service::Authority;
use crate::run::{Followed, Runs};
use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken, ResourceUpdatedNotificationParam};
use rmcp::service::{Peer, RequestContext, SubscriptionSink};
use std::sync::Arc;

/// A running watcher; dropping it stops it.
pub(super) struct Watch(Option<tokio::task::JoinHandle<()>>);

impl Watch {
    fn start(work: impl Future<Output = ()> + Send + 'static) -> Watch {
        Watch(Some(tokio::spawn(work)))
    }

    /// Lets the watcher catch up with a run that has ended (it stops by
    /// itself at the run's end), waiting at most `within`: every event
    /// is told before the call's answer, none after it.
    pub(super) async fn finish(mut self, within: std::time::Duration) {
        if let Some(task) = self.0.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(within, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Where a tool call's progress goes: the client asked for it by sending
/// a progress token with the call.
#[derive(Clone)]
pub(super) struct Progress {
    token: ProgressToken,
    peer: Peer<RoleServer>,
}

impl Progress {
    /// The call's progress sink, when the client sent a progress token.
    pub(super) fn of(ctx: &RequestContext<RoleServer>) -> Option<Progress> {
        let token = ctx.meta.get_progress_token()?;
        Some(Progress {
            token,
            peer: ctx.peer.clone(),
        })
    }

    /// Reports run `id`'s events as progress (one notification each: the
    /// count so far, and the event's kind and agent) until the run ends or
    /// the returned [`Watch`] is dropped.
    pub(super) fn watch(self, runs: &Arc<Runs>, who: Authority, id: String) -> Watch {
        let runs = runs.clone();
        Watch::start(async move {
            let Ok(mut follow) = runs.follow(&who, &id).await else {
                return;
            };
            let mut seen = 0u32;
            while let Some(Followed::Event(e)) = follow.next().await {
                seen += 1;
                let about = match e.payload.get("agent").and_then(|a| a.as_str()) {
                    Some(agent) => format!("{} {agent}", e.kind),
                    None => e.kind,
                };
                let mut note = ProgressNotificationParam::new(self.token.clone(), f64::from(seen));
                note.message = Some(about);
                if self.peer.notify_progress(note).await.is_err() {
                    return; // the client is gone
                }
            }
        })
    }
}

/// The URI of run `id` as a resource.
pub(super) fn run_uri(id: &str) -> String {
    format!("swarm://runs/{id}")
}

/// The run id a `swarm://runs/{id}` URI names.
pub(super) fn run_of(uri: &str) -> Option<&str> {
    uri.strip_prefix("swarm://runs/")
        .filter(|id| crate::run::valid_run_id(id))
}

/// Where a subscription's `resources/updated` notifications go: the
/// session's peer (`resources/subscribe`, before 2026-07-28) or a
/// `subscriptions/listen` stream.
#[derive(Clone)]
pub(super) enum Updates {
    Peer(Peer<RoleServer>),
    Listen(SubscriptionSink),
}

impl Updates {
    /// Sends one update of `uri`; false once nobody listens.
    async fn send(&self, uri: &str) -> bool {
        match self {
            Updates::Peer(p) => {
                let note = ResourceUpdatedNotificationParam::new(uri);
                p.notify_resource_updated(note).await.is_ok()
            }
            Updates::Listen(s) => s.notify_resource_updated(uri).await.is_ok(),
        }
    }
}

/// Tells `to` that `swarm://runs/{id}` changed, once per burst of new
/// events and once when the run ends, until the [`Watch`] is dropped.
pub(super) fn updates(runs: &Arc<Runs>, who: Authority, id: String, to: Updates) -> Watch {
    let runs = runs.clone();
    Watch::start(async move {
        let Ok(follow) = runs.follow(&who, &id).await else {
            return;
        };
        // Told of what happens from now on, not of what was there.
        let Some(store) = runs.store() else { return };
        let Ok((_, last)) = store.event_tail(&id, 0).await else {
            return;
        };
        let mut follow = follow.after(last);
        let uri = run_uri(&id);
        while let Some(next) = follow.next().await {
            let end = matches!(next, Followed::End { .. });
            if follow.queued() > 0 && !end {
                continue; // more of this burst is already here
            }
            if !to.send(&uri).await || end {
                return;
            }
        }
    })
}
