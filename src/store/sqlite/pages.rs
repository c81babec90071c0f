//! Events by the page: a run's events are stored a batch to a row, not an
//! event to a row. A step makes three events, and a row per event cost
//! SQLite more (two B-tree inserts, page splits) than the rest of the
//! step's journaling together.
//!
//! A page holds events `first..=last` of one run, in order: `payload` is
//! the JSON array of their texts and `kinds` the JSON array of their
//! kinds. Ids are per-run cursors: a page continues from the run's last
//! id, so ids ascend without gaps (pages migrated from the row-per-event
//! schema keep their old ids, which may skip). Readers expand pages and
//! return events one by one, as before.

use super::{SqliteStore, not_ours};
use crate::store::{EventRecord, EventRow, StoreError};
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Most events a page holds, and most bytes of event text (a page holds
/// at least one event, however big): reading one event parses at most a
/// page.
const PAGE_EVENTS: usize = 256;
const PAGE_BYTES: usize = 256 * 1024;

/// `events` cut into pages, in order.
pub(in crate::store) fn paged<'a>(
    events: &'a [&'a EventRow],
) -> impl Iterator<Item = &'a [&'a EventRow]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take(PAGE_EVENTS)
            .take_while(|e| {
                bytes += e.payload.len();
                bytes <= PAGE_BYTES
            })
            .count()
            .max(1)
            .min(rest.len());
        let (page, after) = rest.split_at(n);
        rest = after;
        (!page.is_empty()).then_some(page)
    })
}

/// Writes `events` as pages: per run, in order, after that run's last id.
pub(super) fn insert_events(tx: &Transaction, events: &[EventRow]) -> rusqlite::Result<()> {
    let mut runs: Vec<(&Arc<str>, Vec<&EventRow>)> = Vec::new();
    for e in events {
        match runs.iter_mut().find(|(run, _)| **run == e.run) {
            Some((_, of_run)) => of_run.push(e),
            None => runs.push((&e.run, vec![e])),
        }
    }
    let mut last = tx.prepare_cached(
        "SELECT last FROM event_pages WHERE run = ?1 ORDER BY first DESC LIMIT 1",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO event_pages (run, first, last, kinds, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut epoch = tx.prepare_cached("SELECT epoch FROM runs WHERE id = ?1")?;
    for (run, of_run) in runs {
        // A stale owner's events are not stored (their run has moved on).
        let fence = of_run[0].epoch;
        if fence > 0
            && epoch
                .query_row([&**run], |r| r.get::<_, i64>(0))
                .optional()?
                .is_some_and(|e| e as u64 != fence)
        {
            continue;
        }
        let mut next: i64 = last
            .query_row([&**run], |r| r.get::<_, i64>(0))
            .optional()?
            .map_or(1, |l| l + 1);
        for page in paged(&of_run) {
            let (kinds, payload) = encode(page);
            let end = next + page.len() as i64 - 1;
            insert.execute(params![&**run, next, end, kinds, payload])?;
            next = end + 1;
        }
    }
    Ok(())
}

/// A page's `kinds` and `payload` texts. Payloads are already JSON text;
/// kinds are names swarm gives, quoted as JSON all the same.
pub(in crate::store) fn encode(page: &[&EventRow]) -> (String, String) {
    let size = page.iter().map(|e| e.payload.len() + 1).sum::<usize>() + 2;
    let names = page.iter().map(|e| e.kind.len() + 3).sum::<usize>() + 2;
    let (mut kinds, mut payload) = (String::with_capacity(names), String::with_capacity(size));
    kinds.push('[');
    payload.push('[');
    for (i, e) in page.iter().enumerate() {
        if i > 0 {
            kinds.push(',');
            payload.push(',');
        }
        push_quoted(&mut kinds, e.kind);
        payload.push_str(&e.payload);
    }
    kinds.push(']');
    payload.push(']');
    (kinds, payload)
}

/// Appends `name` as a JSON string. Kinds are plain names, quoted as they
/// are; one that needs escaping goes through serde_json (building a
/// `Value` per event cost more than the page's SQLite insert).
fn push_quoted(out: &mut String, name: &str) {
    if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(name);
        out.push('"');
    } else {
        out.push_str(&Value::from(name).to_string());
    }
}

/// The events of one stored page that `keep` (given an id and a kind)
/// wants, with their ids. Only those are parsed: the others are skipped
/// as raw text, so a follower reading the newest few events of a page
/// does not build all of them. A page whose arrays do not match its id
/// range is not what swarm wrote: corruption.
fn expand(
    run: &str,
    row: &rusqlite::Row,
    mut keep: impl FnMut(i64, &str) -> bool,
) -> rusqlite::Result<Vec<EventRecord>> {
    let (first, last): (i64, i64) = (row.get(0)?, row.get(1)?);
    let (kinds, payloads): (String, String) = (row.get(2)?, row.get(3)?);
    let kinds: Vec<String> = serde_json::from_str(&kinds).map_err(|e| not_ours(row, 2, e))?;
    let raw: Vec<&RawValue> = serde_json::from_str(&payloads).map_err(|e| not_ours(row, 3, e))?;
    let n = usize::try_from(last - first + 1).unwrap_or(0);
    if kinds.len() != n || raw.len() != n {
        let held = raw.len();
        return Err(not_ours(
            row,
            3,
            format!("event page {first}..={last} holds {held} events"),
        ));
    }
    let mut out = Vec::new();
    for ((id, kind), payload) in (first..).zip(kinds).zip(raw) {
        if keep(id, &kind) {
            out.push(EventRecord {
                id,
                run: run.to_string(),
                kind,
                payload: serde_json::from_str(payload.get()).map_err(|e| not_ours(row, 3, e))?,
            });
        }
    }
    Ok(out)
}

impl SqliteStore {
    /// Up to `limit` events of `run` after id `after` (and of kind `kind`
    /// if given), oldest first.
    fn load_pages(
        &self,
        run: &str,
        after: i64,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // Pages without the kind are skipped unread: its quoted name is in
        // a page's `kinds` text exactly when one of its events has it.
        let quoted = kind.map(|k| Value::from(k).to_string());
        self.read(|c| {
            // From the page holding id `after` on: found in the index, so
            // following a long run costs the same at its end as at its start.
            let mut stmt = c.prepare_cached(
                "SELECT first, last, kinds, payload FROM event_pages
                 WHERE run = ?1 AND last > ?2 AND (?3 IS NULL OR instr(kinds, ?3) > 0)
                   AND first >= coalesce((SELECT max(first) FROM event_pages
                                          WHERE run = ?1 AND first <= ?2), 0)
                 ORDER BY first",
            )?;
            let mut rows = stmt.query(params![run, after, quoted])?;
            let mut out = Vec::new();
            while out.len() < limit {
                let Some(row) = rows.next()? else { break };
                let room = limit - out.len();
                let mut kept = 0;
                let wanted = expand(run, row, |id, k| {
                    let wanted = id > after && kind.is_none_or(|want| k == want) && kept < room;
                    kept += usize::from(wanted);
                    wanted
                })?;
                out.extend(wanted);
            }
            Ok(out)
        })
    }

    pub(super) fn load_events(
        &self,
        run: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.load_pages(run, after, None, limit)
    }

    pub(super) fn load_events_of_kind(
        &self,
        run: &str,
        kind: &str,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.load_pages(run, 0, Some(kind), limit)
    }

    /// How many events `run` has, and the id just before its last `n`
    /// (0 when it has no more than `n`). Ids may skip between migrated
    /// pages, so the pages are walked back from the end.
    pub(super) fn load_event_tail(&self, run: &str, n: usize) -> Result<(u64, i64), StoreError> {
        self.read(|c| {
            let count: i64 = c.query_row(
                "SELECT coalesce(sum(last - first + 1), 0) FROM event_pages WHERE run = ?1",
                [run],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT first, last FROM event_pages WHERE run = ?1 ORDER BY first DESC",
            )?;
            let mut rows = stmt.query([run])?;
            let mut left = n as i64;
            while let Some(row) = rows.next()? {
                let (first, last): (i64, i64) = (row.get(0)?, row.get(1)?);
                if last - first + 1 > left {
                    return Ok((count as u64, last - left));
                }
                left -= last - first + 1;
            }
            Ok((count as u64, 0))
        })
    }
}
