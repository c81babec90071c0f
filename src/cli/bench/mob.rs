//! `mob`: one mob member asked 200 times in a row, in one run journaled
//! in SQLite, against the scripted OpenAI-compatible server. Bytes stored
//! per turn (its journal entries and its conversation rows) at turn 10 and
//! at turn 200: a conversation is stored once, a turn adding only what is
//! new, so the two should match. Host overhead per member turn: the time
//! per turn minus a bare HTTP round trip to the same server.

use super::{engine, line, run_passed};
use crate::llm::scripted::Scripted;
use crate::run::{self, RunOptions};
use crate::store::{SqliteStore, Store};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const TURNS: usize = 200;

fn blueprint(url: &str) -> String {
    format!(
        r#"
local swarm = require "swarm"
return swarm.blueprint "mob" {{
  agents = {{ member = swarm.agent.llm {{ base_url = "{url}", model = "bench" }} }},
  flow = function(input)
    local m = swarm.mob(input.mob):spawn {{ id = "m", agent = "member" }}
    for i = 1, input.n do assert(m:ask("turn " .. i) == "ok") end
    return input.n
  end,
}}
"#
    )
}

/// The JSON bytes stored for turn `k` (1-based): its journal entries
/// (the turn at position `k + 1`, the spawn being 1, and its model calls
/// under it) and its two conversation rows.
fn bytes_of_turn(journal: &[crate::store::JournalEntry], turns: &[Value], k: usize) -> f64 {
    let pos = (k + 1).to_string();
    let under = format!("{pos}~");
    let entries: usize = journal
        .iter()
        .filter(|e| e.pos == pos || e.pos.starts_with(&under))
        .map(|e| serde_json::to_string(e).map_or(0, |s| s.len()))
        .sum();
    let rows: usize = turns
        .iter()
        .skip(2 * (k - 1))
        .take(2)
        .map(|t| t.to_string().len())
        .sum();
    (entries + rows) as f64
}

pub async fn mob() {
    let server = Scripted::start(Vec::new()).await.expect("scripted server");
    let db = std::env::temp_dir().join(format!("swarm-bench-mob-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("journal"));
    let opts = RunOptions {
        store: Some(store.clone()),
        ..RunOptions::default()
    };
    let source = blueprint(&server.url);
    let r = run::prepare_source(&engine(), Path::new("mob.lua"), &source, opts)
        .expect("bench blueprint");
    let warm = r
        .run(json!({ "mob": "warm", "n": 20 }))
        .await
        .expect("warm-up");
    run_passed("mob", &warm, Some(&json!(20)));
    let start = Instant::now();
    let report = r
        .run(json!({ "mob": "bench", "n": TURNS }))
        .await
        .expect("run");
    let per_turn = start.elapsed().as_secs_f64() * 1e6 / TURNS as f64;
    run_passed("mob", &report, Some(&json!(TURNS)));
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.url);
    let body = json!({ "model": "bench", "messages": [], "stream": true });
    let start = Instant::now();
    for _ in 0..TURNS {
        let resp = client.post(&url).json(&body).send().await.expect("raw");
        assert!(resp.text().await.expect("raw body").contains("[DONE]"));
    }
    let raw = start.elapsed().as_secs_f64() * 1e6 / TURNS as f64;
    let id = report.run_id.clone().expect("a journaled run");
    let journal = store.journal(&id).await.expect("journal");
    let turns = store.turns("bench", "m#1").await.expect("turns");
    line(
        "mob",
        "bytes_stored_turn_10",
        bytes_of_turn(&journal, &turns, 10),
        "bytes",
    );
    let last = bytes_of_turn(&journal, &turns, TURNS);
    line("mob", "bytes_stored_turn_200", last, "bytes");
    line("mob", "us_per_member_turn", per_turn, "us");
    line("mob", "us_raw_http_round_trip", raw, "us");
    line(
        "mob",
        "us_host_overhead_per_member_turn",
        (per_turn - raw).max(0.0),
        "us",
    );
    drop(store);
    let _ = std::fs::remove_file(&db);
}
