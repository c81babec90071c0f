//! Group commit of journal entries and events: one writer task per
//! store takes everything appended while its last transaction committed
//! and writes it in one transaction, a page per run (one row holding the
//! run's entries, one holding its events), never a round trip per step.
//!
//! In the same transaction it reads the epochs of the runs it writes: an
//! entry of an ownership older than the run's is refused
//! ([`StoreError::Fenced`]), an event of any other ownership is dropped.
//! A run's event ids come from its row in `event_heads`, bumped in that
//! transaction: the row lock orders two nodes' pages of one run, and a
//! page commits before the next one's ids are handed out, so a reader
//! following a cursor never sees a gap. Lock order is by run id; a
//! deadlock or serialization failure all the same is retried.

use super::Inner;
use crate::store::{Commit, EventRow, JournalEntry, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most appends one transaction takes.
const MOST: usize = 8192;
/// How often a transaction that deadlocked is tried again.
const RETRIES: usize = 5;

enum Job {
    Entry(JournalEntry),
    Events(Vec<EventRow>),
}

type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<(Job, Reply)>,
    transactions: Arc<AtomicU64>,
}

impl Batcher {
    pub(super) fn start(inner: Arc<Inner>) -> Batcher {
        let (queue, rx) = mpsc::unbounded_channel();
        let transactions = Arc::new(AtomicU64::new(0));
        super::runtime().spawn(write(inner, rx, transactions.clone()));
        Batcher {
            queue,
            transactions,
        }
    }

    pub(super) fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    fn submit(&self, job: Job) -> Commit {
        let (tx, rx) = oneshot::channel();
        let sent = self.queue.send((job, tx));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    pub(super) fn append(&self, entry: JournalEntry) -> Commit {
        self.submit(Job::Entry(entry))
    }

    pub(super) fn append_events(&self, events: Vec<EventRow>) -> Commit {
        if events.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.submit(Job::Events(events))
    }
}

/// The writer: waits for an append, takes every other one queued, commits
/// them together, answers each. Ends when the store is dropped and its
/// queue is empty.
async fn write(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<(Job, Reply)>,
    transactions: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MOST {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let (jobs, replies): (Vec<Job>, Vec<Reply>) = jobs.into_iter().unzip();
        let mut outcome = Err(Retry::Fail(StoreError::Closed));
        for _ in 0..RETRIES {
            transactions.fetch_add(1, Ordering::Relaxed);
            outcome = commit(&inner, &jobs).await;
            match &outcome {
                Err(Retry::Again(_)) => continue,
                _ => break,
            }
        }
        match outcome {
            Ok(each) => {
                for (reply, r) in replies.into_iter().zip(each) {
                    let _ = reply.send(r);
                }
            }
            Err(Retry::Again(e) | Retry::Fail(e)) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Why a transaction failed: worth another try, or not.
enum Retry {
    Again(StoreError),
    Fail(StoreError),
}

impl From<StoreError> for Retry {
    fn from(e: StoreError) -> Self {
        Retry::Fail(e)
    }
}

impl Inner {
    fn batch_error(&self, e: tokio_postgres::Error) -> Retry {
        use tokio_postgres::error::SqlState;
        let again = matches!(
            e.code(),
            Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
        );
        let e = self.write_error(e);
        if again {
            Retry::Again(e)
        } else {
            Retry::Fail(e)
        }
    }
}

/// Writes `jobs` in one transaction; each job's own answer (a stale
/// entry is refused alone).
async fn commit(inner: &Inner, jobs: &[Job]) -> Result<Vec<Result<(), StoreError>>, Retry> {
    let mut c = inner.client().await?;
    let tx = c.transaction().await.map_err(|e| inner.batch_error(e))?;
    let mut runs: Vec<&str> = jobs
        .iter()
        .flat_map(|j| -> Vec<&str> {
            match j {
                Job::Entry(e) => vec![&e.run],
                Job::Events(rows) => rows.iter().map(|r| &*r.run).collect(),
            }
        })
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let epochs: HashMap<String, u64> = tx
        .query("SELECT id, epoch FROM runs WHERE id = ANY($1)", &[&runs])
        .await
        .map_err(|e| inner.batch_error(e))?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    let mut answers = Vec::with_capacity(jobs.len());
    let mut pages = Pages::default();
    for job in jobs {
        answers.push(match job {
            Job::Entry(e) => match epochs.get(&e.run) {
                Some(now) if e.epoch > 0 && *now > e.epoch => Err(StoreError::Fenced {
                    run: e.run.clone(),
                    epoch: e.epoch,
                }),
                _ => {
                    pages.entry(e);
                    Ok(())
                }
            },
            Job::Events(rows) => {
                for r in rows {
                    let stale = r.epoch > 0 && epochs.get(&*r.run).is_some_and(|e| *e != r.epoch);
                    if !stale {
                        pages.event(r);
                    }
                }
                Ok(())
            }
        });
    }
    pages.write(inner, &tx).await?;
    tx.commit().await.map_err(|e| inner.batch_error(e))?;
    Ok(answers)
}

/// What one transaction writes, per run in first-seen order.
#[derive(Default)]
struct Pages<'a> {
    /// Per run: its entries' JSON array, steps, tokens.
    entries: Vec<(&'a str, String, i64, i64)>,
    events: Vec<(&'a str, Vec<&'a EventRow>)>,
}

impl<'a> Pages<'a> {
    fn entry(&mut self, e: &'a JournalEntry) {
        let i = match self.entries.iter().position(|(r, ..)| *r == e.run) {
            Some(i) => i,
            None => {
                self.entries.push((&e.run, "[".into(), 0, 0));
                self.entries.len() - 1
            }
        };
        let (_, text, steps, tokens) = &mut self.entries[i];
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(e).unwrap_or_else(|_| "null".into()));
        *steps += i64::from(!super::runs::NOT_STEPS.contains(&e.kind.as_str()));
        *tokens += e.tokens as i64;
    }

    fn event(&mut self, r: &'a EventRow) {
        match self.events.iter_mut().find(|(run, _)| *run == &*r.run) {
            Some((_, rows)) => rows.push(r),
            None => self.events.push((&r.run, vec![r])),
        }
    }

    async fn write(
        mut self,
        inner: &Inner,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), Retry> {
        let err = |e| inner.batch_error(e);
        if !self.entries.is_empty() {
            let mut cols: (Vec<&str>, Vec<i64>, Vec<i64>, Vec<String>) = Default::default();
            for (run, mut text, steps, tokens) in std::mem::take(&mut self.entries) {
                text.push(']');
                cols.0.push(run);
                cols.1.push(steps);
                cols.2.push(tokens);
                cols.3.push(text);
            }
            tx.execute(
                "INSERT INTO journal_pages (run, steps, tokens, entries)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[])",
                &[&cols.0, &cols.1, &cols.2, &cols.3],
            )
            .await
            .map_err(err)?;
        }
        if !self.events.is_empty() {
            self.write_events(inner, tx).await?;
        }
        Ok(())
    }

    /// Event pages, after taking each run's ids in run order (the lock
    /// order).
    async fn write_events(
        mut self,
        inner: &Inner,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), Retry> {
        let err = |e| inner.batch_error(e);
        self.events.sort_by(|a, b| a.0.cmp(b.0));
        let runs: Vec<&str> = self.events.iter().map(|(r, _)| *r).collect();
        let counts: Vec<i64> = self.events.iter().map(|(_, e)| e.len() as i64).collect();
        let heads: HashMap<String, i64> = tx
            .query(
                "INSERT INTO event_heads (run, last)
                 SELECT * FROM unnest($1::text[], $2::int8[]) ORDER BY 1
                 ON CONFLICT (run) DO UPDATE SET last = event_heads.last + excluded.last
                 RETURNING run, last",
                &[&runs, &counts],
            )
            .await
            .map_err(err)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let (mut of, mut first, mut last) = (Vec::new(), Vec::new(), Vec::new());
        let (mut kinds, mut payloads) = (Vec::new(), Vec::new());
        for (run, rows) in &self.events {
            let mut next = heads.get(*run).copied().unwrap_or(0) - rows.len() as i64 + 1;
            for page in crate::store::sqlite::event_pages(rows) {
                let (k, payload) = crate::store::sqlite::encode_event_page(page);
                let end = next + page.len() as i64 - 1;
                of.push(*run);
                first.push(next);
                last.push(end);
                kinds.push(k);
                payloads.push(payload);
                next = end + 1;
            }
        }
        tx.execute(
            "INSERT INTO event_pages (run, first, last, kinds, payload)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[])",
            &[&of, &first, &last, &kinds, &payloads],
        )
        .await
        .map_err(err)?;
        Ok(())
    }
}
