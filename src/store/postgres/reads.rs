//! Reading pages back: a run's journal (a position once, the later
//! ownership's entry winning) and its events from a cursor, expanded
//! from the pages the group commit wrote (`batch.rs`).

use super::Inner;
use crate::store::{EventRecord, JournalEntry, StoreError};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;

impl Inner {
    pub(super) async fn load_journal(&self, run: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT entries FROM journal_pages WHERE run = $1 ORDER BY id")
            .await
            .map_err(|e| self.read_error(e))?;
        let rows = c
            .query(&stmt, &[&run])
            .await
            .map_err(|e| self.read_error(e))?;
        let mut by_pos: HashMap<String, JournalEntry> = HashMap::new();
        for r in rows {
            let text: String = r.get(0);
            let page: Vec<JournalEntry> =
                serde_json::from_str(&text).map_err(|e| self.not_ours("entries", e))?;
            for e in page {
                // Of one epoch the later wins; across epochs the later epoch.
                match by_pos.get(&e.pos) {
                    Some(had) if had.epoch > e.epoch => {}
                    _ => {
                        by_pos.insert(e.pos.clone(), e);
                    }
                }
            }
        }
        let mut entries: Vec<JournalEntry> = by_pos.into_values().collect();
        entries.sort_by(|a, b| (a.at_ms, &a.pos).cmp(&(b.at_ms, &b.pos)));
        Ok(entries)
    }

    /// Up to `limit` events of `run` after id `after` (of kind `kind`
    /// only, if given), oldest first. Pages without the kind are skipped
    /// unread: its quoted name is in a page's `kinds` exactly when one of
    /// its events has it.
    pub(super) async fn load_events(
        &self,
        run: &str,
        after: i64,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let c = self.client().await?;
        let quoted = kind.map(|k| Value::from(k).to_string());
        // A page holds at least one event: `limit` pages are enough.
        let pages = limit.min(1 << 20) as i64;
        let stmt = c
            .prepare_cached(
                "SELECT first, last, kinds, payload FROM event_pages
                 WHERE run = $1 AND last > $2 AND ($3::text IS NULL OR strpos(kinds, $3) > 0)
                 ORDER BY first LIMIT $4",
            )
            .await
            .map_err(|e| self.read_error(e))?;
        let rows = c
            .query(&stmt, &[&run, &after, &quoted, &pages])
            .await
            .map_err(|e| self.read_error(e))?;
        let mut out = Vec::new();
        for row in rows {
            if out.len() >= limit {
                break;
            }
            let (first, last): (i64, i64) = (row.get(0), row.get(1));
            let kinds: Vec<String> =
                serde_json::from_str(row.get(2)).map_err(|e| self.not_ours("kinds", e))?;
            let raw: Vec<&RawValue> =
                serde_json::from_str(row.get(3)).map_err(|e| self.not_ours("payload", e))?;
            let n = usize::try_from(last - first + 1).unwrap_or(0);
            if kinds.len() != n || raw.len() != n {
                let held = raw.len();
                return Err(self.not_ours(
                    "payload",
                    format!("event page {first}..={last} holds {held} events"),
                ));
            }
            for ((id, k), payload) in (first..).zip(kinds).zip(raw) {
                if id <= after || kind.is_some_and(|want| k != want) || out.len() >= limit {
                    continue;
                }
                out.push(EventRecord {
                    id,
                    run: run.to_string(),
                    kind: k,
                    payload: serde_json::from_str(payload.get())
                        .map_err(|e| self.not_ours("payload", e))?,
                });
            }
        }
        Ok(out)
    }

    /// How many events `run` has, and the id just before its last `n`:
    /// ids are gapless from 1, so both follow from the run's last id.
    pub(super) async fn event_tail(&self, run: &str, n: usize) -> Result<(u64, i64), StoreError> {
        let c = self.client().await?;
        let last: i64 = c
            .query_opt("SELECT last FROM event_heads WHERE run = $1", &[&run])
            .await
            .map_err(|e| self.read_error(e))?
            .map_or(0, |r| r.get(0));
        Ok((last as u64, (last - n as i64).max(0)))
    }
}
