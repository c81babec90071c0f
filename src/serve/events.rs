//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events, read
//! from the journal from a cursor (`Last-Event-ID`, or `?after=`). The
//! stream follows the run while it executes and ends with an `end` event
//! (the run's status and result) once it has stopped and every event
//! before that has been sent. Reading the journal, not the engine, means a
//! slow client only falls behind; it never holds a run up.

use super::Server;
use super::error::ApiError;
use crate::run::service;
use crate::store::{EventRecord, RunStatus};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How often a quiet stream looks at the journal again.
const POLL: Duration = Duration::from_millis(100);
const PAGE: usize = 1000;

#[derive(Deserialize)]
pub struct After {
    after: Option<i64>,
}

pub async fn stream(
    State(s): State<Arc<Server>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Authority and existence first: a refused caller gets a JSON error.
    service::record(&s.who(&headers)?, &s.store, &id)?;
    let resume_from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let cursor = resume_from.or(q.after).unwrap_or(0);
    let follow = Follow {
        server: s,
        run: id,
        cursor,
        queue: VecDeque::new(),
        ended: false,
    };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        let ev = f.next().await?;
        Some((Ok(ev), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One subscriber's place in a run's events.
struct Follow {
    server: Arc<Server>,
    run: String,
    cursor: i64,
    queue: VecDeque<EventRecord>,
    ended: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                self.cursor = e.id;
                return Some(
                    Event::default()
                        .id(e.id.to_string())
                        .event(e.kind)
                        .data(e.payload.to_string()),
                );
            }
            if self.ended {
                return None;
            }
            // The status is read before the events: a run seen stopped has
            // written all of its events, so an empty page then is the end.
            let record = crate::store::wait(self.server.store.run(&self.run)).ok()??;
            let stopped = record.status != RunStatus::Running || self.server.draining();
            let page = crate::store::wait(self.server.store.events(&self.run, self.cursor, PAGE));
            let page = page.ok()?;
            if !page.is_empty() {
                self.queue.extend(page);
                continue;
            }
            if stopped {
                self.ended = true;
                let end = serde_json::json!({ "status": record.status, "result": record.result });
                return Some(Event::default().event("end").data(end.to_string()));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
