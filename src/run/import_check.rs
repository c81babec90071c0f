//! What `swarm import` checks before it writes anything: the document is
//! someone else's file, so nothing in it is trusted. Its blueprint path
//! must be absolute and plain (a resumed run executes that file), every
//! journal position must parse and every kind be one the flow records,
//! and lineage (a fork's source, an entry's origin) is kept only when it
//! names a run this store has. The creation time is the import's.

use super::RunError;
use super::position::Position;
use crate::engine::now_ms;
use crate::store::Store;
use std::collections::HashMap;
use std::path::{Component, Path};

/// The largest document `swarm import` reads.
pub const MAX_IMPORT_BYTES: u64 = 256 * 1024 * 1024;

/// The kinds of entry a flow records (`lua/swarm/flow.lua`, `init.lua`,
/// the LLM step's turns and tool calls).
const KINDS: [&str; 9] = [
    "step", "ask", "sleep", "random", "now", "os.time", "os.clock", "llm_turn", "llm_tool",
];

fn invalid(message: String) -> RunError {
    RunError::Import(message)
}

/// Refuses `doc` naming the first thing wrong in it, or makes it safe to
/// record: lineage that names no run here is dropped, `created_ms` is now.
pub(super) async fn sanitize(store: &dyn Store, doc: &mut super::Exported) -> Result<(), RunError> {
    let path = Path::new(&doc.run.path);
    let plain = path.components().all(|c| {
        matches!(
            c,
            Component::RootDir | Component::Normal(_) | Component::Prefix(_)
        )
    });
    if doc.run.path.is_empty() || !path.is_absolute() || !plain {
        return Err(invalid(format!(
            "run.path `{}`: a blueprint path must be absolute, without `.` or `..`",
            doc.run.path
        )));
    }
    for (i, e) in doc.journal.iter().enumerate() {
        Position::parse(&e.pos).map_err(|why| invalid(format!("journal[{i}].pos: {why}")))?;
        if !KINDS.contains(&e.kind.as_str()) {
            return Err(invalid(format!(
                "journal[{i}].kind `{}` at {}: not a kind of entry a flow records ({})",
                e.kind,
                e.pos,
                KINDS.join(", ")
            )));
        }
    }
    for (i, q) in doc.questions.iter().enumerate() {
        Position::parse(&q.pos).map_err(|why| invalid(format!("questions[{i}].pos: {why}")))?;
    }
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut exists = async |run: &str| -> Result<bool, RunError> {
        if let Some(k) = known.get(run) {
            return Ok(*k);
        }
        let k = store.run(run).await?.is_some();
        known.insert(run.to_string(), k);
        Ok(k)
    };
    if let Some(f) = &doc.run.fork
        && !exists(&f.run).await?
    {
        doc.run.fork = None;
    }
    for e in &mut doc.journal {
        if let Some(o) = &e.from
            && !exists(&o.run).await?
        {
            e.from = None;
        }
    }
    doc.run.created_ms = now_ms();
    Ok(())
}
