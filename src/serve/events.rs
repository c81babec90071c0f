//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events, read
//! from the journal from a cursor (`Last-Event-ID`, or `?after=`). The
//! stream follows the run while it executes and ends with an `end` event
//! (the run's status and result) once it has stopped and every event
//! before that has been sent. Reading the journal, not the engine, means a
//! slow client only falls behind; it never holds a run up.
//!
//! One poller per followed run watches the journal for new events and the
//! run's end, and tells that run's subscribers through a `watch` channel;
//! a subscriber reads the journal only when there is something new, so a
//! thousand subscribers cost a thousand page reads per burst, not a
//! thousand polls every interval.

use super::Server;
use super::error::{ApiError, Params};
use crate::store::{EventRecord, RunStatus};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a followed run's poller looks at the journal.
const POLL: Duration = Duration::from_millis(50);
const PAGE: usize = 1000;

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
    // Authority and existence first: a refused caller gets a JSON error.
    s.runs.record(&s.who(&headers)?, &id).await?;
    // A resuming client's `Last-Event-ID` is an id this server sent; any
    // other value is refused, not read as "from the start".
    let resume_from = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("`Last-Event-ID` is not an event id this server sent")
                })?,
        ),
    };
    let cursor = resume_from.or(q.after).unwrap_or(0);
    let follow = Follow {
        tail: tail(&s, &id),
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

/// What a run's poller last saw: its newest event id, and whether it had
/// stopped before that id was read.
type Tail = watch::Receiver<(i64, bool)>;

/// The poller of run `id`, started by its first subscriber; it ends once
/// the run stops or nobody follows it any more.
fn tail(server: &Arc<Server>, id: &str) -> Tail {
    let mut tails = server.tails.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = tails.get(id) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel((0, false));
    tails.insert(id.to_string(), tx.clone());
    let (server, id) = (server.clone(), id.to_string());
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            // The status first: a run seen stopped has written all of its
            // events, so the id read after it is its last.
            let stopped = match server.store.run(&id).await {
                Ok(Some(r)) => r.status != RunStatus::Running || server.draining(),
                _ => true,
            };
            if let Ok(page) = server.store.events(&id, last, PAGE).await {
                last = page.last().map_or(last, |e| e.id);
                if page.len() == PAGE {
                    let _ = tx.send((last, false));
                    continue;
                }
            }
            let _ = tx.send((last, stopped));
            if stopped || tx.receiver_count() == 0 {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let mut tails = server.tails.lock().unwrap_or_else(|e| e.into_inner());
        if tails.get(&id).is_some_and(|t| t.same_channel(&tx)) {
            tails.remove(&id);
        }
    });
    rx
}

/// One subscriber's place in a run's events.
struct Follow {
    server: Arc<Server>,
    run: String,
    tail: Tail,
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
            let (newest, stopped) = *self.tail.borrow_and_update();
            if newest > self.cursor {
                let page = self.server.store.events(&self.run, self.cursor, PAGE);
                let page = page.await.ok()?;
                if !page.is_empty() {
                    self.queue.extend(page);
                    continue;
                }
            }
            if stopped {
                self.ended = true;
                let record = self.server.store.run(&self.run).await.ok()??;
                let end = serde_json::json!({ "status": record.status, "result": record.result });
                return Some(Event::default().event("end").data(end.to_string()));
            }
            if self.tail.changed().await.is_err() {
                // The poller is gone: the run stopped; one last look.
                self.tail = tail(&self.server, &self.run);
            }
        }
    }
}
