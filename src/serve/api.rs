//! The HTTP routes: each handler authenticates its caller, asks the run
//! service, and answers JSON (see the table in the README, "Server").

use super::error::{ApiError, Body, Params};
use super::{Server, events};
use crate::run::service::{Action, Answered, Cancelled};
use crate::store::RunStatus;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type S = State<Arc<Server>>;
type Reply = Result<(StatusCode, Json<Value>), ApiError>;

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/whoami", get(whoami))
        .route("/v1/stats", get(stats))
        .route("/v1/blueprints", get(blueprints))
        .route("/v1/runs", post(start).get(list))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/journal", get(journal))
        .route("/v1/runs/{id}/events", get(events::stream))
        .route("/v1/runs/{id}/answers", post(answer))
        .route("/v1/runs/{id}/messages", post(message))
        .route("/v1/mobs", get(mobs))
        .route("/v1/mobs/{name}", get(mob))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/runs/{id}/resume", post(resume))
        .route("/v1/runs/{id}/fork", post(super::fork::fork))
        .merge(super::work::routes())
        .merge(super::page::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such route (see /v1/health)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_method",
                "this route does not take that method (see the README's route table)",
            )
        })
}

fn ok(body: Value) -> Reply {
    Ok((StatusCode::OK, Json(body)))
}

async fn health() -> Json<Value> {
    Json(json!({ "ok": true, "version": env!("CARGO_PKG_VERSION") }))
}

/// The caller's own authority: its role and the one run it is bound to
/// (the page says what a token may do before it tries).
async fn whoami(State(s): S, headers: HeaderMap) -> Reply {
    let who = s.who(&headers)?;
    ok(json!({ "role": who.role.as_str(), "run": who.run }))
}

/// What the server holds in memory: the runs executing here, the runs
/// followed over SSE, and the engine's tasks, sessions and events. A
/// finished run leaves nothing behind, so these go back down when runs end.
async fn stats(State(s): S, headers: HeaderMap) -> Reply {
    let who = s.who(&headers)?;
    who.check(Action::Read, None)?;
    if let Some(run) = &who.run {
        let message = format!("a caller bound to run `{run}` sees that run, not the server");
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message));
    }
    let following = s.runs.followed_count();
    ok(json!({
        "draining": s.draining(),
        "executing": s.runs.active_count(),
        "following": following,
        "engine": s.engine.held(),
    }))
}

async fn blueprints(State(s): S, headers: HeaderMap) -> Reply {
    s.who(&headers)?.check(Action::Read, None)?;
    let list: Vec<Value> = s
        .dev
        .versions()
        .into_iter()
        .map(|v| {
            json!({ "name": v.name, "version": v.version, "hash": v.hash,
                         "path": v.path.display().to_string(), "input": v.input })
        })
        .collect();
    ok(json!({ "blueprints": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRun {
    blueprint: String,
    #[serde(default)]
    input: Value,
    id: Option<String>,
}

/// A run id a client chose: short, and safe in a URL and a file name.
pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    if crate::run::valid_run_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "`id` must be 1-128 characters of A-Z, a-z, 0-9, '-', '_' or '.'",
        ))
    }
}

async fn start(State(s): S, headers: HeaderMap, body: Body<NewRun>) -> Reply {
    let who = s.who(&headers)?;
    who.check(Action::Start, None)?;
    let req = body.parse()?;
    if let Some(id) = &req.id {
        check_id(id)?;
        if s.store.run(id).await?.is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "run_exists",
                format!("a run `{id}` exists already"),
            ));
        }
    }
    let run = s.dev.prepare_as(&req.blueprint, req.id)?;
    let id = s.runs.start_prepared(&who, run, req.input).await?.id;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "status": "running" })),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    blueprint: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    /// `oldest` (the default) or `newest` first.
    order: Option<String>,
}

async fn list(State(s): S, headers: HeaderMap, Params(q): Params<ListQuery>) -> Reply {
    let who = s.who(&headers)?;
    let status = match &q.status {
        Some(st) => Some(st.parse::<RunStatus>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let mut runs = s.runs.list(&who, status).await?;
    match q.order.as_deref() {
        None | Some("oldest") => {}
        Some("newest") => runs.reverse(),
        Some(other) => {
            let message = format!("`order` is `oldest` or `newest`, not `{other}`");
            return Err(ApiError::bad_request(message));
        }
    }
    if let Some(b) = &q.blueprint {
        runs.retain(|r| &r.blueprint == b);
    }
    if let Some(after) = &q.after {
        match runs.iter().position(|r| &r.id == after) {
            Some(i) => drop(runs.drain(..=i)),
            None => runs.clear(),
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let more = runs.len() > limit;
    runs.truncate(limit);
    let next = more.then(|| runs.last().map(|r| r.id.clone())).flatten();
    ok(json!({ "runs": runs, "next": next }))
}

async fn show(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let shown = s.runs.show(&s.who(&headers)?, &id).await?;
    let mut body = serde_json::to_value(&shown.run).unwrap_or_default();
    let open: Vec<&crate::store::QuestionRecord> = shown
        .questions
        .iter()
        .filter(|q| q.answer.is_none())
        .collect();
    body["usage"] = json!(shown.usage);
    body["open_questions"] = json!(open);
    body["questions"] = json!(shown.questions);
    body["executing_here"] = json!(s.is_active(&id));
    body["cause"] = cause(&shown.run);
    ok(body)
}

/// Why an unfinished run last stopped, as `{code, message}`: an owner
/// lost, a journal fault, a signal, a question left unanswered. Null for
/// a finished run (its result says how it ended) and one never stopped.
fn cause(run: &crate::store::RunRecord) -> Value {
    let result = run.result.as_ref().filter(|_| !run.status.is_finished());
    match result.and_then(|r| Some((r.get("code")?.as_str()?, r))) {
        Some((code, r)) => json!({ "code": code, "message": r.get("error") }),
        None => Value::Null,
    }
}

async fn journal(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let shown = s.runs.show(&s.who(&headers)?, &id).await?;
    ok(json!({ "run": id, "entries": shown.journal }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerReq {
    question: String,
    value: Value,
}

async fn answer(
    State(s): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<AnswerReq>,
) -> Reply {
    let who = s.who(&headers)?;
    who.check(Action::Answer, Some(&id))?;
    let req = body.parse()?;
    let answered = s.runs.answer(&who, &id, &req.question, req.value).await?;
    ok(json!({ "answered": true, "resume_needed": answered == Answered::NeedsResume }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageReq {
    topic: String,
    value: Value,
    id: Option<String>,
}

/// A message into a run, for its flow's `swarm.recv(topic)`: `{seq,
/// duplicate, resume_needed}` (a retry with the same `id` adds nothing).
async fn message(
    State(s): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<MessageReq>,
) -> Reply {
    let who = s.who(&headers)?;
    who.check(Action::Send, Some(&id))?;
    let req = body.parse()?;
    let sent = s
        .runs
        .send(&who, &id, &req.topic, req.value, req.id.as_deref())
        .await?;
    ok(json!(sent))
}

/// Every mob: its members, their status, incarnation, labels, token use
/// and last reply (not for a caller bound to one run).
async fn mobs(State(s): S, headers: HeaderMap) -> Reply {
    let mobs = s.runs.mobs(&s.who(&headers)?).await?;
    ok(json!({ "mobs": mobs }))
}

async fn mob(State(s): S, headers: HeaderMap, Path(name): Path<String>) -> Reply {
    ok(json!(s.runs.mob(&s.who(&headers)?, &name).await?))
}

async fn cancel(State(s): S, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let who = s.who(&headers)?;
    let status = match s.runs.cancel(&who, &id).await? {
        Cancelled::Now => "cancelled",
        Cancelled::Requested => "cancelling",
    };
    ok(json!({ "id": id, "status": status }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResumeReq {
    #[serde(default)]
    force: bool,
}

async fn resume(
    State(s): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<ResumeReq>,
) -> Reply {
    let who = s.who(&headers)?;
    // Who may first, then what the run's state allows: a caller that may
    // not resume learns nothing about the run.
    who.check(Action::Resume, Some(&id))?;
    let req = body.parse()?;
    s.runs.record(&who, &id).await?;
    if s.is_active(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "refused",
            format!("run `{id}` is running on this server"),
        ));
    }
    s.runs.resume(&who, &id, req.force, s.opts.clone()).await?;
    ok(json!({ "id": id, "status": "running" }))
}
