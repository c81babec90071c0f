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
mod fork;
pub mod listen;
pub mod mcp;
mod origin;
mod page;
mod sweep;
mod work;

pub use auth::Access;
pub use error::ApiError;

use crate::auth::Signer;
use crate::engine::Engine;
use crate::reload::LiveBlueprints;
use crate::run::service::Authority;
use crate::run::{RunOptions, Runs};
use crate::store::{RunRecord, Store};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted (a run's input, an answer).
pub const BODY_LIMIT: usize = 4 << 20;

/// What the server holds. Its runs execute in [`Runs`]; the server keeps
/// none of its own.
pub struct Server {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    /// The live blueprints of the served directory.
    pub dev: Arc<LiveBlueprints>,
    /// The runs executing here.
    pub runs: Arc<Runs>,
    signer: Signer,
    access: Access,
    /// How resumed runs run (the same options as `dev`'s).
    opts: RunOptions,
    /// What the orphan sweep remembers between passes.
    sweep: Arc<sweep::Memory>,
    /// Host names answered beyond loopback (`--allow-host`).
    hosts: std::sync::OnceLock<origin::Hosts>,
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
        let runs = Runs::releasing(engine.clone(), Some(store.clone()));
        let sweep = Arc::new(sweep::Memory::default());
        let remember = sweep.clone();
        runs.on_end(Box::new(move |id, report| {
            remember.ended(id, &report.result)
        }));
        Arc::new(Server {
            engine,
            store,
            dev,
            runs,
            signer,
            access,
            opts,
            sweep,
            hosts: std::sync::OnceLock::new(),
        })
    }

    /// The host names this server answers to beyond loopback (see
    /// `origin.rs`); set once, before serving.
    pub fn allow_hosts(&self, names: &[String]) {
        let _ = self.hosts.set(origin::Hosts::new(names));
    }

    fn hosts(&self) -> &origin::Hosts {
        self.hosts.get_or_init(origin::Hosts::default)
    }

    /// The routes and their layers, outer to inner: a tracing span per
    /// request; `503 draining` for every request once the server drains;
    /// where a request comes from (`origin.rs`); the body limit. No request timeout: event streams, claims and
    /// heartbeats are long polls by design, and every other handler
    /// answers from memory or the journal.
    pub fn router(self: &Arc<Self>) -> Router {
        api::routes()
            .merge(mcp::routes(self))
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                origin::guard,
            ))
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

    fn is_active(&self, id: &str) -> bool {
        self.runs.is_active(id)
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
        self.runs
            .resume_interrupted(|r| served.contains(&r.path), self.opts.clone())
            .await
    }

    /// Takes run `r` and executes it here; its id once launched.
    async fn resume(&self, r: &RunRecord) -> Result<Option<String>, crate::run::RunError> {
        let who = Authority::local();
        let h = self
            .runs
            .resume_unasked(&who, &r.id, self.opts.clone())
            .await?;
        Ok(h.id)
    }

    /// Stops taking requests (each is answered `503 draining`) and
    /// interrupts the running runs (resumable), then waits until they have
    /// stopped, at most `limit`. Returns the ids of runs still executing.
    pub async fn drain(&self, limit: Duration) -> Vec<String> {
        self.runs.drain(limit).await
    }

    fn draining(&self) -> bool {
        self.runs.draining()
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
