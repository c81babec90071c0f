//! `llm`: LLM agents against the scripted OpenAI-compatible server on
//! loopback, answering at once. Host overhead per model turn (a one-turn
//! step, 1,000 in a row in one run, minus a bare HTTP round trip to the
//! same server), and 1,000
//! concurrent LLM steps. Every answer is checked: a failing step panics
//! instead of printing a figure.

use super::{engine, line, peak_rss_mb};
use crate::llm::scripted::Scripted;
use crate::run::{self, RunOptions};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn blueprint(url: &str) -> String {
    format!(
        r#"
local swarm = require "swarm"
return swarm.blueprint "llm" {{
  agents = {{ model = swarm.agent.llm {{ base_url = "{url}", model = "bench" }} }},
  flow = function(input)
    if input.seq then
      local out = {{}}
      for i = 1, input.n do out[i] = swarm.step("model", "q" .. i) end
      return out
    end
    local items = {{}}
    for i = 1, input.n do items[i] = i end
    return swarm.map(items, function(i) return swarm.step("model", "q" .. i) end,
                     {{ concurrency = input.n }})
  end,
}}
"#
    )
}

/// Both figures.
pub async fn llm() {
    let server = Scripted::start(Vec::new()).await.expect("scripted server");
    let engine = engine();
    let source = blueprint(&server.url);
    let r = run::prepare_source(
        &engine,
        Path::new("llm.lua"),
        &source,
        RunOptions::default(),
    )
    .expect("bench blueprint");
    let check = |n: usize, v: &serde_json::Value| {
        let ok = v
            .as_array()
            .is_some_and(|a| a.len() == n && a.iter().all(|x| x == "ok"));
        assert!(ok, "bench llm: a step failed: {v}");
    };
    let turns = 1000;
    let seq = json!({ "n": turns, "seq": true });
    check(turns, &r.run(seq.clone()).await.expect("warm-up").result);
    // One run of sequential one-turn steps: the run's start is spread over
    // all of them, so what remains is the step and the turn.
    let start = Instant::now();
    check(turns, &r.run(seq).await.expect("run").result);
    let per_turn = start.elapsed().as_secs_f64() * 1e6 / turns as f64;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.url);
    let body = json!({ "model": "bench", "messages": [], "stream": true });
    let start = Instant::now();
    for _ in 0..turns {
        let text = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("raw request");
        let text = text.text().await.expect("raw body");
        assert!(text.contains("[DONE]"), "bench llm: bad raw answer");
    }
    let raw = start.elapsed().as_secs_f64() * 1e6 / turns as f64;
    line("llm", "us_per_turn", per_turn, "us");
    line("llm", "us_raw_http_round_trip", raw, "us");
    line(
        "llm",
        "us_host_overhead_per_turn",
        (per_turn - raw).max(0.0),
        "us",
    );

    let n = 1000;
    let start = Instant::now();
    let report = r.run(json!({ "n": n })).await.expect("concurrent run");
    check(n, &report.result);
    line(
        "llm",
        "ms_1000_concurrent_steps",
        start.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    line("llm", "errors", 0.0, "count");
    line("llm", "peak_rss", peak_rss_mb(), "MB");
}
