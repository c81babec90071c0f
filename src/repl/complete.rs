//! Tab completion over the REPL's globals and module fields.
//!
//! The word before the cursor is split on `.` and `:`; each part is looked
//! up from the session's global environment, following `__index` tables
//! (so frozen library tables and the environment's fall-through to the
//! sandbox's globals complete too). Completion reads the VM only while no
//! Lua runs (rustyline calls it from the prompt).

use mlua::{Table, Value};
use rustyline::completion::{Completer, Pair};
use rustyline::{Context, Helper, Highlighter, Hinter, Validator};
use std::collections::BTreeSet;

#[derive(Helper, Hinter, Highlighter, Validator)]
pub struct LuaHelper {
    pub env: Table,
}

/// The table's own string keys plus those of its `__index` chain.
fn keys(t: &Table) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cur = Some(t.clone());
    for _ in 0..8 {
        let Some(t) = cur.take() else { break };
        for (k, _) in t.pairs::<Value, Value>().flatten() {
            if let Value::String(s) = k
                && let Ok(s) = s.to_str()
            {
                out.insert(s.to_string());
            }
        }
        cur = t
            .metatable()
            .and_then(|mt| mt.raw_get::<Option<Table>>("__index").ok().flatten());
    }
    out
}

/// Looks `name` up in `t`, following `__index` tables.
fn field(t: &Table, name: &str) -> Option<Value> {
    let v: Value = t.get(name).ok()?;
    (!v.is_nil()).then_some(v)
}

impl LuaHelper {
    /// Candidates for the identifier chain ending at `pos` in `line`.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let head = &line[..pos];
        let start = head
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == ':'))
            .map_or(0, |i| i + 1);
        let word = &head[start..];
        let cut = word.rfind(['.', ':']).map_or(0, |i| i + 1);
        let (path, prefix) = (&word[..cut.saturating_sub(1)], &word[cut..]);
        let mut table = self.env.clone();
        if cut > 0 {
            for part in path.split(['.', ':']) {
                match field(&table, part) {
                    Some(Value::Table(t)) => table = t,
                    _ => return (start + cut, Vec::new()),
                }
            }
        }
        let found = keys(&table)
            .into_iter()
            .filter(|k| k.starts_with(prefix) && !k.starts_with("__"))
            .collect();
        (start + cut, found)
    }
}

impl Completer for LuaHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, found) = self.candidates(line, pos);
        Ok((
            start,
            found
                .into_iter()
                .map(|k| Pair {
                    display: k.clone(),
                    replacement: k,
                })
                .collect(),
        ))
    }
}
