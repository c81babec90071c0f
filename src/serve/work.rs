//! The routes remote workers call (`swarm worker`): claim a step from a
//! queue (long poll), renew the claim by heartbeat (which also tells the
//! worker when to stop), send the command's events, post its result. Each
//! call after the claim names the claim and the task it is for; the board
//! refuses a claim used for another task (403) and a claim that has ended
//! (409: expired, cancelled, already done) — see `store::work`. The queue
//! is the journal's, shared by every server on it.

use super::Server;
use super::error::{ApiError, Body};
use crate::engine::{OutputKind, TaskId};
use crate::run::service::Action;
use crate::spawn::queue_of;
use crate::store::work::{ClaimError, POLL, Posted, WorkClaim, WorkQueue};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

type S = State<Arc<Server>>;

/// Longest a claim or heartbeat request is held open.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/queues/{queue}/claim", post(claim))
        .route("/v1/claims/{claim}/heartbeat", post(heartbeat))
        .route("/v1/claims/{claim}/events", post(events))
        .route("/v1/claims/{claim}/result", post(result))
}

impl From<ClaimError> for ApiError {
    fn from(e: ClaimError) -> ApiError {
        let status = match e {
            ClaimError::Unknown(_) => StatusCode::NOT_FOUND,
            ClaimError::OtherTask { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

fn wait(ms: Option<u64>) -> Duration {
    Duration::from_millis(ms.unwrap_or(0)).min(MAX_WAIT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimReq {
    /// Who is claiming, for the run's events (e.g. `host:pid`).
    worker: Option<String>,
    /// How long to wait for a step when none is queued.
    wait_ms: Option<u64>,
}

/// The queue this server's journal shares with every server on it.
fn queue(s: &Server) -> &dyn WorkQueue {
    queue_of(Some(&s.store), s.engine.board())
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    crate::run::RunError::Store(e).into()
}

/// Waits up to `wait` for a step of `queue` to claim: woken by offers in
/// this process, looking again every [`POLL`] for other servers' offers.
async fn claim_wait(
    s: &Server,
    queue_name: &str,
    run: Option<&str>,
    wait: Duration,
) -> Result<Option<WorkClaim>, ApiError> {
    let until = tokio::time::Instant::now() + wait;
    let lease = s.engine.board().lease();
    loop {
        let changed = queue(s).changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(c) = queue(s)
            .claim(queue_name, run, lease)
            .await
            .map_err(store_err)?
        {
            return Ok(Some(c));
        }
        let poll = tokio::time::sleep(POLL);
        tokio::select! {
            _ = &mut changed => {}
            _ = poll => {}
            _ = tokio::time::sleep_until(until) => return Ok(None),
        }
    }
}

/// 200 with the step (claim id, task, attempt, agent, input, profile,
/// lease), or 204 when none came within the wait.
async fn claim(
    State(s): S,
    headers: HeaderMap,
    Path(queue): Path<String>,
    body: Body<ClaimReq>,
) -> Result<Response, ApiError> {
    let who = s.who(&headers)?;
    who.check(Action::Work, None)?;
    let req = body.parse()?;
    let Some(c) = claim_wait(&s, &queue, who.run.as_deref(), wait(req.wait_ms)).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let worker = req.worker.unwrap_or_default();
    if let Some(token) = self::queue(&s).token(c.id) {
        let note = json!({ "remote": "claimed", "queue": queue, "worker": worker });
        let _ = s.engine.emit(&token, OutputKind::Progress, note);
    }
    let o = &c.item;
    let body = json!({
        "claim": c.claim, "task": o.task.0, "attempt": o.attempt, "agent": o.agent,
        "input": o.input, "profile": o.profile, "run": o.run,
        "lease_ms": c.lease.as_millis() as u64,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Beat {
    /// Hold the reply this long unless the claim ends first.
    wait_ms: Option<u64>,
}

/// Renews the lease, then waits (up to `wait_ms`, at most half a lease)
/// for the claim to end; 200 `{lease_ms}` while it stands, else the 409
/// saying why it ended — the worker's cue to kill its command.
async fn heartbeat(
    State(s): S,
    headers: HeaderMap,
    Path(claim): Path<String>,
    body: Body<Beat>,
) -> Result<Json<Value>, ApiError> {
    let who = s.who(&headers)?;
    who.check(Action::Work, None)?;
    let beat = body.parse()?;
    // A worker bound to a run touches that run's claims only.
    let run = queue(&s).check(&claim).await.map_err(store_err)??;
    who.check(Action::Work, run.as_deref())?;
    let lease = s.engine.board().lease();
    queue(&s).renew(&claim, lease).await.map_err(store_err)??;
    let until = tokio::time::Instant::now() + wait(beat.wait_ms).min(lease / 2);
    loop {
        let changed = queue(&s).changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        queue(&s).check(&claim).await.map_err(store_err)??;
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    queue(&s).renew(&claim, lease).await.map_err(store_err)??;
    Ok(Json(json!({ "lease_ms": lease.as_millis() as u64 })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsReq {
    task: u64,
    events: Vec<EventIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    event: String,
    #[serde(default)]
    data: Value,
}

/// The command's events (progress, partial, artifact, stderr), in order:
/// emitted as the step's own when its run executes in this server, else
/// journaled as the run's events for the server that executes it.
async fn events(
    State(s): S,
    headers: HeaderMap,
    Path(claim): Path<String>,
    body: Body<EventsReq>,
) -> Result<Json<Value>, ApiError> {
    let who = s.who(&headers)?;
    who.check(Action::Work, None)?;
    let req = body.parse()?;
    let task = TaskId(req.task);
    let (id, item) = queue(&s).claimed(&claim, task).await.map_err(store_err)??;
    who.check(Action::Work, item.run.as_deref())?;
    let mut rows = Vec::new();
    for e in req.events {
        let kind: OutputKind = e.event.parse().map_err(ApiError::bad_request)?;
        match queue(&s).token(id) {
            Some(token) => s.engine.emit(&token, kind, e.data).map_err(|e| {
                let status = match e {
                    crate::engine::EngineError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::CONFLICT,
                };
                ApiError::new(status, e.code(), e.to_string())
            })?,
            None => rows.extend(item.run.as_deref().map(|run| {
                crate::store::EventRow {
                    run: run.into(),
                    kind: "remote_output",
                    payload: json!({ "task": task.0, "attempt": item.attempt, "event": e.event,
                                 "data": e.data })
                    .to_string()
                    .into(),
                    epoch: 0,
                }
            })),
        }
    }
    if !rows.is_empty() {
        s.store.append_events(rows).await.map_err(store_err)?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultReq {
    task: u64,
    ok: bool,
    #[serde(default)]
    value: Value,
}

/// The step's result; only the live claim on that task may post it.
async fn result(
    State(s): S,
    headers: HeaderMap,
    Path(claim): Path<String>,
    body: Body<ResultReq>,
) -> Result<Json<Value>, ApiError> {
    let who = s.who(&headers)?;
    who.check(Action::Work, None)?;
    let req = body.parse()?;
    let task = TaskId(req.task);
    let (_, item) = queue(&s).claimed(&claim, task).await.map_err(store_err)??;
    who.check(Action::Work, item.run.as_deref())?;
    let posted = Posted {
        value: req.value,
        ok: req.ok,
    };
    queue(&s)
        .post(&claim, task, posted)
        .await
        .map_err(store_err)??;
    Ok(Json(json!({})))
}
