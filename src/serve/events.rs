//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events, from
//! a cursor (`Last-Event-ID`, or `?after=`), following the run while it
//! executes and ending with an `end` event (the run's status and result).
//! What is followed, and when the end comes, is [`Runs::follow`]'s
//! (src/run/follow.rs); this file only speaks SSE.
//!
//! [`Runs::follow`]: crate::run::Runs::follow

use super::Server;
use super::error::{ApiError, Params};
use crate::run::{Follow, Followed};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;

#[derive(Deserialize)]
pub struct After {
    after: Option<i64>,
}

pub async fn stream(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(q): Params<After>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // A resuming client's `Last-Event-ID` is an id this server sent; any
    // other value is refused, not read as "from the start" (after the
    // caller's authority: a refused caller learns nothing else).
    let resume_from = match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("`Last-Event-ID` is not an event id this server sent")
            }),
    };
    let follow = s.runs.follow(&s.who(&headers)?, &id).await?;
    let follow = follow.after(resume_from?.or(q.after).unwrap_or(0));
    let events = futures_util::stream::unfold(follow, |mut f: Follow| async move {
        let ev = sse(f.next().await?);
        Some((Ok(ev), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn sse(followed: Followed) -> Event {
    match followed {
        Followed::Event(e) => Event::default()
            .id(e.id.to_string())
            .event(e.kind)
            .data(e.payload.to_string()),
        Followed::End { status, result } => {
            let end = serde_json::json!({ "status": status, "result": result });
            Event::default().event("end").data(end.to_string())
        }
    }
}
