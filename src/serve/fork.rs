//! `POST /v1/runs/{id}/fork`: the HTTP face of `swarm fork`. The new run
//! is of the source's blueprint in its live version; the caller must be
//! allowed to start runs (the role table) and to read the source.

use super::Server;
use super::error::{ApiError, Body};
use crate::run::ForkRequest;
use crate::run::service::Action;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ForkReq {
    /// The journal position to run live from (default as `swarm fork`).
    at: Option<String>,
    /// The new run's id.
    id: Option<String>,
    /// A new input.
    input: Option<Value>,
    /// Results to replace before the fork point, by position.
    #[serde(default)]
    set: BTreeMap<String, Value>,
    /// `unchanged` (the default) or `none`.
    reuse: Option<String>,
}

pub(super) async fn fork(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body<ForkReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = s.who(&headers)?;
    // Who may first: a caller that may not start runs learns nothing.
    who.check(Action::Start, None)?;
    let req = body.parse()?;
    let reuse = match req.reuse.as_deref() {
        None | Some("unchanged") => true,
        Some("none") => false,
        Some(other) => {
            let message = format!("`reuse` is `unchanged` or `none`, not `{other}`");
            return Err(ApiError::bad_request(message));
        }
    };
    if let Some(new) = &req.id {
        super::api::check_id(new)?;
        if s.store.run(new).await?.is_some() {
            let message = format!("a run `{new}` exists already");
            return Err(ApiError::new(StatusCode::CONFLICT, "run_exists", message));
        }
    }
    let source = s.runs.record(&who, &id).await?;
    let run = s.dev.prepare_as(&source.blueprint, req.id.clone())?;
    let fork = ForkRequest {
        source: id.clone(),
        at: req.at,
        run_id: req.id,
        input: req.input,
        set: req.set.into_iter().collect(),
        reuse,
    };
    let new = s.runs.fork_prepared(&who, &fork, run).await?.id;
    let at = match &new {
        Some(n) => s.store.run(n).await?.and_then(|r| r.fork).map(|f| f.at),
        None => None,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": new, "status": "running", "fork": { "run": id, "at": at } })),
    ))
}
