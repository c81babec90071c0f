//! The routes remote workers call (`swarm worker`): claim a step from a
//! queue (long poll), renew the claim by heartbeat (which also tells the
//! worker when to stop), send the command's events, post its result. Each
//! call after the claim names the claim and the task it is for; the board
//! refuses a claim used for another task (403) and a claim that has ended
//! (409: expired, cancelled, already done) — see `engine::board`.

use super::Server;
use super::error::{ApiError, Body};
use crate::engine::board::{ClaimError, Posted};
use crate::engine::{OutputKind, TaskId};
use crate::run::service::Action;
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

/// 200 with the step (claim id, task, attempt, agent, input, profile,
/// lease), or 204 when none came within the wait.
async fn claim(
    State(s): S,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Body(req): Body<ClaimReq>,
) -> Result<Response, ApiError> {
    let who = s.who(&headers)?;
    who.check(Action::Work, None)?;
    if s.draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down",
        ));
    }
    let board = s.engine.board();
    let Some(c) = board
        .claim_wait(&queue, who.run.as_deref(), wait(req.wait_ms))
        .await
    else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let worker = req.worker.unwrap_or_default();
    let note = json!({ "remote": "claimed", "queue": queue, "worker": worker });
    let _ = s.engine.emit(&c.offer.token, OutputKind::Progress, note);
    let o = &c.offer;
    let body = json!({
        "claim": c.claim, "task": o.task.0, "attempt": o.attempt, "agent": &*o.agent,
        "input": &*o.input, "profile": o.profile, "run": o.run,
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
    Body(beat): Body<Beat>,
) -> Result<Json<Value>, ApiError> {
    s.who(&headers)?.check(Action::Work, None)?;
    let board = s.engine.board();
    let ended = board.renew(&claim)?;
    let hold = wait(beat.wait_ms).min(board.lease() / 2);
    if tokio::time::timeout(hold, ended.cancelled()).await.is_ok() {
        board.renew(&claim)?;
    }
    Ok(Json(
        json!({ "lease_ms": board.lease().as_millis() as u64 }),
    ))
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

/// The command's events (progress, partial, artifact, stderr), in order.
async fn events(
    State(s): S,
    headers: HeaderMap,
    Path(claim): Path<String>,
    Body(req): Body<EventsReq>,
) -> Result<Json<Value>, ApiError> {
    s.who(&headers)?.check(Action::Work, None)?;
    let token = s.engine.board().token(&claim, TaskId(req.task))?;
    for e in req.events {
        let kind: OutputKind = e.event.parse().map_err(ApiError::bad_request)?;
        s.engine.emit(&token, kind, e.data).map_err(|e| {
            let status = match e {
                crate::engine::EngineError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::CONFLICT,
            };
            ApiError::new(status, e.code(), e.to_string())
        })?;
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
    Body(req): Body<ResultReq>,
) -> Result<Json<Value>, ApiError> {
    s.who(&headers)?.check(Action::Work, None)?;
    let posted = Posted {
        value: req.value,
        ok: req.ok,
    };
    s.engine.board().post(&claim, TaskId(req.task), posted)?;
    Ok(Json(json!({})))
}
