//! A run whose code changed is refused by `resume`; only a user's resume
//! replay-checks its journal to say why (under a deadline). The serve
//! sweep, which retries interrupted runs every pass, never runs that
//! check: its refusal points at `swarm upgrade` instead.

mod common;

use common::dir::{Dir, text};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn blueprint(first: u32, gate: &str) -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "k" {{
  agents = {{
    echo = swarm.agent.rust {{ name = "echo" }},
    wait = swarm.agent.process {{ shell = 'while [ ! -e "{gate}" ]; do sleep 0.05; done; echo 1' }},
  }},
  flow = function()
    swarm.step("echo", {first})
    swarm.step("wait", 1)
    return "done"
  end,
}}
"#
    )
}

fn entries(d: &Dir, run: &str) -> usize {
    let out = d.swarm(&["show", run, "--json", "--events", "0"]);
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str::<Value>(&first)
        .ok()
        .and_then(|v| v["journal"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn the_sweep_refuses_a_changed_run_without_checking_it_a_user_resume_says_where() {
    let d = Dir::new("resume-check");
    let gate = d.0.join("go").display().to_string();
    let bp = d.file("k.lua", &blueprint(1, &gate));
    let mut child = d.spawn(&["run", &bp, "--run-id", "k1"]);
    let t0 = Instant::now();
    while entries(&d, "k1") < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "step 1 never recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(&gate, "").unwrap();
    d.file("k.lua", &blueprint(2, &gate));

    let mut serve = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &d.db()])
        .arg(&d.0)
        .env("SWARM_LEASE_MS", "300")
        .env_remove("SWARM_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = serve.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let refused = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("run k1 not resumed") => break line,
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = serve.kill();
                panic!("no refusal from the sweep ({e}): {}", seen.join("\n"));
            }
        }
    };
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        refused.contains("`swarm upgrade k1` checks its journal"),
        "{refused}"
    );
    assert!(!refused.contains("diverges"), "not checked: {refused}");

    let out = d.swarm(&["resume", "k1"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("on the new version it diverges at 1: "), "{t}");
}
