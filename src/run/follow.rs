//! [`Runs::follow`]: a run's events read from the journal from a cursor,
//! then its end (status and result) once it has stopped and every event
//! before that has been read. Every face that streams a run (SSE, MCP
//! progress, the web page) follows it here, so the rule "the end comes
//! after the last event, never before" lives in one place. Reading the
//! journal, not the engine, means a slow follower only falls behind; it
//! never holds a run up, and a run executing on another node of the same
//! store is followed the same way.
//!
//! One poller per followed run watches the journal for new events and the
//! run's end, and tells that run's followers through a `watch` channel; a
//! follower reads the journal only when there is something new, so a
//! thousand followers cost a thousand page reads per burst, not a
//! thousand polls every interval.

use super::RunError;
use super::runs::Runs;
use super::service::Authority;
use crate::store::{EventRecord, RunStatus, Store};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often a followed run's poller looks at the journal.
const POLL: Duration = Duration::from_millis(50);
const PAGE: usize = 1000;

/// What a run's poller last saw: its newest event id, and whether it had
/// stopped before that id was read.
type Tail = watch::Receiver<(i64, bool)>;

/// The pollers of the runs being followed, by run id.
#[derive(Default)]
pub(super) struct Tails(Mutex<HashMap<String, watch::Sender<(i64, bool)>>>);

impl Tails {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<(i64, bool)>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One step of following a run.
#[derive(Debug, Clone)]
pub enum Followed {
    /// An event of the run, in journal order.
    Event(EventRecord),
    /// The run stopped; nothing follows.
    End {
        status: RunStatus,
        result: Option<Value>,
    },
}

/// One follower's place in a run's events.
pub struct Follow {
    runs: Arc<Runs>,
    store: Arc<dyn Store>,
    run: String,
    tail: Tail,
    cursor: i64,
    queue: VecDeque<EventRecord>,
    ended: bool,
}

impl Runs {
    /// Follows run `id` from its first event (see [`Follow::after`]), if
    /// `who` may read it.
    pub async fn follow(self: &Arc<Self>, who: &Authority, id: &str) -> Result<Follow, RunError> {
        self.record(who, id).await?;
        let store = self.store().cloned().ok_or_else(|| {
            RunError::Refused("following a run needs a journal (not --no-journal)".into())
        })?;
        Ok(Follow {
            tail: tail(self, &store, id),
            runs: self.clone(),
            store,
            run: id.to_string(),
            cursor: 0,
            queue: VecDeque::new(),
            ended: false,
        })
    }

    /// Runs being followed now (each has one poller).
    pub fn followed_count(&self) -> usize {
        self.tails().map().len()
    }
}

/// The poller of run `id`, started by its first follower; it ends once
/// the run stops or nobody follows it any more.
fn tail(runs: &Arc<Runs>, store: &Arc<dyn Store>, id: &str) -> Tail {
    let mut tails = runs.tails().map();
    if let Some(tx) = tails.get(id) {
        return tx.subscribe();
    }
    let (tx, rx) = watch::channel((0, false));
    tails.insert(id.to_string(), tx.clone());
    let (runs, store, id) = (runs.clone(), store.clone(), id.to_string());
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            // The status first: a run seen stopped has written all of its
            // events, so the id read after it is its last.
            let stopped = match store.run(&id).await {
                Ok(Some(r)) => r.status != RunStatus::Running || runs.draining(),
                _ => true,
            };
            if let Ok(page) = store.events(&id, last, PAGE).await {
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
        let mut tails = runs.tails().map();
        if tails.get(&id).is_some_and(|t| t.same_channel(&tx)) {
            tails.remove(&id);
        }
    });
    rx
}

impl Follow {
    /// Follows from just after event `cursor` instead (0: the start).
    pub fn after(mut self, cursor: i64) -> Follow {
        self.cursor = cursor;
        self
    }

    /// The next event, or the run's end; `None` after the end (or when the
    /// journal cannot be read).
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                self.cursor = e.id;
                return Some(Followed::Event(e));
            }
            if self.ended {
                return None;
            }
            let (newest, stopped) = *self.tail.borrow_and_update();
            if newest > self.cursor {
                let page = self.store.events(&self.run, self.cursor, PAGE);
                let page = page.await.ok()?;
                if !page.is_empty() {
                    self.queue.extend(page);
                    continue;
                }
            }
            if stopped {
                self.ended = true;
                let record = self.store.run(&self.run).await.ok()??;
                return Some(Followed::End {
                    status: record.status,
                    result: record.result,
                });
            }
            if self.tail.changed().await.is_err() {
                // The poller is gone: the run stopped; one last look.
                self.tail = tail(&self.runs, &self.store, &self.run);
            }
        }
    }

    /// Events already read and not yet handed out (the rest of a page).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The id of the last event handed out (the cursor to resume from).
    pub fn cursor(&self) -> i64 {
        self.cursor
    }
}
