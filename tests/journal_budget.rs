//! A run's journal budget is the run's, not each execution's: a run
//! stopped and resumed (here at a question) counts what its journal holds
//! already, so `limits.journal_entries` bounds the run however often it
//! is resumed.

mod common;

use common::dir::{Dir, text};

#[test]
fn a_resumed_run_counts_the_entries_it_journaled_before() {
    let d = Dir::new("journal-budget-resume");
    let bp = d.file(
        "b.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "b" {
  limits = { journal_entries = 6 },
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function()
    for i = 1, 3 do swarm.step("echo", i) end
    swarm.ask { key = "go", text = "Go on?" }
    for i = 4, 8 do swarm.step("echo", i) end
    return "done"
  end,
}
"#,
    );
    let out = d.swarm(&["run", &bp, "--run-id", "b"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let out = d.swarm(&["answer", "b", "go", "yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = d.swarm(&["resume", "b"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("journal_budget"), "{}", text(&out));
    assert!(text(&out).contains("budget of 6 entries"), "{}", text(&out));
}
