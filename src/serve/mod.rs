//! `swarm serve`: runs over HTTP. One engine and one journal serve many
//! runs at once; each request acts with the authority of its bearer token
//! (see [`auth`]) through the run service, so the HTTP API has exactly the
//! CLI's rules. Live events are read back from the journal (SSE), so a
//! slow client never holds up a run.
//!
//! Runs started here execute in this process until they end; then the
//! engine lets go of them (the journal keeps everything), so a server's
//! memory does not grow with its history. On SIGTERM the server drains:
//! every request is answered `503 draining` while the running runs stop
//! `interrupted` (resumable), then it exits. On start it resumes the
//! interrupted runs of the blueprints it serves, and meanwhile it sweeps
//! the journal for runs whose owner is gone (see [`sweep`]).

mod api;
pub mod auth;
mod error;
mod events;
mod sweep;
mod work;

pub use auth::Access;
pub use error::ApiError;

use crate::auth::Signer;
use crate::engine::{Engine, TaskId};
use crate::reload::LiveBlueprints;
use crate::run::service::{self, Authority};
use crate::run::{Prepared, RunOptions, RunReport};
use crate::store::{RunRecord, RunStatus, Store};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest request body accepted (a run's input, an answer).
pub const BODY_LIMIT: usize = 4 << 20;

/// What the server holds.
pub struct Server {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    /// The live blueprints of the served directory.
    pub dev: Arc<LiveBlueprints>,
    signer: Signer,
    access: Access,
    /// How resumed runs run (the same options as `dev`'s).
    opts: RunOptions,
    active: Mutex<HashMap<String, Active>>,
    draining: AtomicBool,
    idle: tokio::sync::Notify,
    /// The journal poller of each run being followed over SSE.
    tails: Mutex<HashMap<String, tokio::sync::watch::Sender<(i64, bool)>>>,
    /// What the orphan sweep remembers between passes.
    sweep: sweep::Memory,
}

/// A run executing in this server.
struct Active {
    run: Arc<Prepared>,
    root: TaskId,
    /// The engine's newest event when it was launched: its event sink
    /// reads only what comes after, so older events may be let go.
    since: u64,
}

impl Server {
    pub fn new(
        engine: Engine,
        store: Arc<dyn Store>,
        dev: Arc<LiveBlueprints>,
        signer: Signer,
        access: Access,
        opts: RunOptions,
    ) -> Arc<Server> {
        Arc::new(Server {
            engine,
            store,
            dev,
            signer,
            access,
            opts,
            active: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            idle: tokio::sync::Notify::new(),
            tails: Mutex::new(HashMap::new()),
            sweep: sweep::Memory::default(),
        })
    }

    /// The routes and their layers, outer to inner: a tracing span per
    /// request; `503 draining` for every request once the server drains;
    /// the body limit. No request timeout: event streams, claims and
    /// heartbeats are long polls by design, and every other handler
    /// answers from memory or the journal.
    pub fn router(self: &Arc<Self>) -> Router {
        api::routes()
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                refuse_draining,
            ))
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .with_state(self.clone())
    }

    /// The caller of a request.
    fn who(&self, headers: &HeaderMap) -> Result<Authority, ApiError> {
        auth::authority(&self.signer, self.access, headers)
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_active(&self, id: &str) -> bool {
        self.active().contains_key(id)
    }

    /// Executes a started run to its end in the background; once it has
    /// ended, nothing of it stays in memory.
    fn launch(self: &Arc<Self>, run: Prepared, root: TaskId) -> Option<String> {
        let id = run.run_id();
        let run = Arc::new(run);
        if let Some(id) = &id {
            let mut active = self.active();
            let since = self.engine.last_cursor();
            let (run, root) = (run.clone(), root);
            active.insert(id.clone(), Active { run, root, since });
        }
        // Launched as the drain began: it stops with the others.
        if self.draining() {
            let _ = service::interrupt(&Authority::local(), &run, root);
        }
        let server = self.clone();
        let key = id.clone();
        tokio::spawn(async move {
            let report = run.finish(root).await;
            if let Err(e) = &report {
                tracing::warn!("run {key:?} ended with an error: {e}");
            }
            drop(run);
            server.ended(key.as_deref(), root, report.ok());
        });
        id
    }

    /// Lets go of a run that has ended: its place among the active runs,
    /// its tasks, sessions and events in the engine (its journal has them)
    /// and the engine events no run executing here still needs. A journal
    /// fault is remembered for the sweep, which records it as the cause.
    fn ended(&self, id: Option<&str>, root: TaskId, report: Option<RunReport>) {
        let gone = id.and_then(|id| self.active().remove(id));
        // The run's own session ends with it (its VM too): not under a lock.
        drop(gone);
        self.engine.forget_run(root);
        {
            // Under the lock a launch takes to note where its events start.
            let active = self.active();
            let needed = active.values().map(|a| a.since).min();
            let upto = needed.unwrap_or_else(|| self.engine.last_cursor());
            self.engine.forget_events(upto);
        }
        if let (Some(id), Some(report)) = (id, report) {
            self.sweep.ended(id, &report.result);
        }
        self.idle.notify_waiters();
    }

    /// Cancels a run executing here at once (its record says so already).
    fn cancel_here(&self, id: &str) {
        if let Some(a) = self.active().get(id) {
            let _ = a.run.cancel(a.root);
        }
    }

    /// The canonical paths of the blueprints served here.
    fn served(&self) -> Vec<String> {
        self.dev
            .versions()
            .iter()
            .filter_map(|v| std::fs::canonicalize(&v.path).ok())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Resumes the interrupted runs of the blueprints served here (those
    /// whose owner died were marked interrupted when the journal opened).
    /// Returns the ids resumed; a run another owner holds is left alone.
    pub async fn resume_interrupted(self: &Arc<Self>) -> Vec<String> {
        let served = self.served();
        let Ok(runs) = service::list(
            &Authority::local(),
            &self.store,
            Some(RunStatus::Interrupted),
        ) else {
            return Vec::new();
        };
        let mut resumed = Vec::new();
        for r in runs.into_iter().filter(|r| served.contains(&r.path)) {
            match self.resume(&r).await {
                Ok(id) => resumed.extend(id),
                Err(e) => tracing::warn!("run {} not resumed: {e}", r.id),
            }
        }
        resumed
    }

    /// Takes run `r` and executes it here; its id once launched.
    async fn resume(
        self: &Arc<Self>,
        r: &RunRecord,
    ) -> Result<Option<String>, crate::run::RunError> {
        let who = Authority::local();
        let s = service::resume(&who, &self.engine, r, false, self.opts.clone()).await?;
        Ok(self.launch(s.run, s.root))
    }

    /// Stops taking requests (each is answered `503 draining`) and
    /// interrupts the running runs (resumable), then waits until they have
    /// stopped, at most `limit`. Returns the ids of runs still executing.
    pub async fn drain(&self, limit: Duration) -> Vec<String> {
        self.draining.store(true, Ordering::SeqCst);
        let who = Authority::local();
        for a in self.active().values() {
            let _ = service::interrupt(&who, &a.run, a.root);
        }
        let _ = tokio::time::timeout(limit, async {
            loop {
                let idle = self.idle.notified();
                if self.active().is_empty() {
                    return;
                }
                idle.await;
            }
        })
        .await;
        self.active().keys().cloned().collect()
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The middleware that answers every request `503 draining` once the
/// server shuts down, until it exits: a client (or a load balancer) sees
/// why, instead of a refused connection.
async fn refuse_draining(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    if s.draining() {
        return ApiError::draining().into_response();
    }
    next.run(req).await
}
