//! Journal entries by the page: each fold of the step log writes one row
//! per run holding the JSON array of the entries it folds, not a row per
//! entry. A row per entry (ten bound columns, a B-tree insert keyed by
//! run and position) cost SQLite more than the rest of a journaled step,
//! and it was paid on every fold, the run's last one included.
//!
//! A page also counts the entries that are steps (`steps`: every kind but
//! the LLM's turns and tool calls), so listing runs never parses pages.
//! A position is recorded once; should it come twice (a step log folded
//! again after its process died between the commit and the deletion),
//! readers keep the later one, and adopting a log skips the positions the
//! database has already.

use super::not_ours;
use super::steplog::Logged;
use crate::store::JournalEntry;
use rusqlite::{Transaction, params};
use std::collections::HashMap;

/// Kinds that are not steps of the flow (they belong to an LLM step).
const NOT_STEPS: [&str; 2] = ["llm_turn", "llm_tool"];

/// Writes `entries` (a fold of the step log, or a log adopted): a page per
/// run, made of the JSON the step log wrote, and the tokens they spent
/// added to their runs' totals.
pub(super) fn insert_entries<'a>(
    tx: &Transaction,
    entries: impl IntoIterator<Item = &'a Logged>,
) -> rusqlite::Result<()> {
    // Per run, in order: its page's text, its steps, its tokens.
    let mut pages: Vec<(&str, String, i64, u64)> = Vec::new();
    for e in entries {
        let i = match pages.iter().position(|(run, ..)| *run == e.run) {
            Some(i) => i,
            None => {
                pages.push((&e.run, String::from("["), 0, 0));
                pages.len() - 1
            }
        };
        let (_, text, steps, tokens) = &mut pages[i];
        if text.len() > 1 {
            text.push(',');
        }
        text.push_str(e.json());
        *steps += i64::from(!NOT_STEPS.contains(&e.kind.as_str()));
        *tokens += e.tokens;
    }
    for (run, mut text, steps, tokens) in pages {
        text.push(']');
        tx.prepare_cached("INSERT INTO journal_pages (run, steps, entries) VALUES (?1, ?2, ?3)")?
            .execute(params![run, steps, text])?;
        if tokens > 0 {
            tx.prepare_cached("UPDATE runs SET tokens = tokens + ?2 WHERE id = ?1")?
                .execute(params![run, tokens as i64])?;
        }
    }
    Ok(())
}

/// The entries of `run` in the database by position, a position once (the
/// later page wins).
pub(super) fn by_position(
    conn: &rusqlite::Connection,
    run: &str,
) -> rusqlite::Result<HashMap<String, JournalEntry>> {
    let mut stmt =
        conn.prepare_cached("SELECT entries FROM journal_pages WHERE run = ?1 ORDER BY id")?;
    let mut rows = stmt.query([run])?;
    let mut by_pos = HashMap::new();
    while let Some(r) = rows.next()? {
        let text: String = r.get(0)?;
        let page: Vec<JournalEntry> = serde_json::from_str(&text).map_err(|e| not_ours(r, 0, e))?;
        for e in page {
            if e.run != run {
                return Err(not_ours(r, 0, format!("an entry of run {:?}", e.run)));
            }
            keep(&mut by_pos, e);
        }
    }
    Ok(by_pos)
}

/// Puts `e` in `by_pos` unless an entry of a later ownership holds its
/// position: of one epoch, the later wins; across epochs, the later
/// epoch (a stale owner's record never replaces its successor's).
pub(super) fn keep(by_pos: &mut HashMap<String, JournalEntry>, e: JournalEntry) {
    match by_pos.get(&e.pos) {
        Some(had) if had.epoch > e.epoch => {}
        _ => {
            by_pos.insert(e.pos.clone(), e);
        }
    }
}

/// `entries` less those whose position the database holds already (at the
/// same or a later epoch): a log adopted from a process that died after
/// folding it, before deleting it.
pub(super) fn unrecorded<'a>(
    tx: &Transaction,
    entries: &'a [Logged],
) -> rusqlite::Result<Vec<&'a Logged>> {
    let mut known: HashMap<&str, HashMap<String, JournalEntry>> = HashMap::new();
    for e in entries {
        if !known.contains_key(e.run.as_str()) {
            known.insert(&e.run, by_position(tx, &e.run)?);
        }
    }
    Ok(entries
        .iter()
        .filter(|e| {
            known[e.run.as_str()]
                .get(&e.pos)
                .is_none_or(|had| had.epoch < e.epoch())
        })
        .collect())
}
