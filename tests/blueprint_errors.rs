//! Blueprint mistakes point at the mistake: each problem names its own
//! line (not the `swarm.blueprint` or agent line above it) and, for a
//! misspelt name, the name meant — layer names and options, hint keys,
//! agent and blueprint fields, agents at run time, blueprints over HTTP.

mod common;

use common::cli::swarm;
use std::path::{Path, PathBuf};

fn write(name: &str, body: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bperr-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("b.lua");
    std::fs::write(&p, body).unwrap();
    p
}

/// `swarm check` on `body`: its error lines (exit 2 asserted).
fn problems(name: &str, body: &str) -> Vec<String> {
    let p = write(name, body);
    let out = swarm().arg("check").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err.lines()
        .filter(|l| l.contains("b.lua:"))
        .map(|l| l.split("b.lua").nth(1).unwrap().to_string())
        .collect()
}

const MISTAKES: &str = r#"local swarm = require 'swarm'
return swarm.blueprint 'b' {
  agents = {
    echo = swarm.agent.rust { name = "echo",
      layers = { { "timeout", after = "1s" } },
    },
    w = swarm.agent.llm { model = "m",
      sytem = "be brief" },
  },
  hints = {
    layers = {
      "audit",
      { "retry", maxx = 3 },
      "retyr",
      "timeout",
    },
    layer = {},
  },
  flow = function(input) return input end,
}
"#;

#[test]
fn each_problem_names_its_own_line_and_the_name_meant() {
    let got = problems("mistakes", MISTAKES);
    let want = [
        ":5: `agents.echo.layers[1] (timeout)` unknown option `after` (options: ms)",
        ":8: `agents.w.sytem` unknown field (did you mean `system`?)",
        ":13: `hints.layers[2] (retry)` unknown option `maxx` (options: max, backoff_ms, on) (did you mean `max`?)",
        ":14: `hints.layers[3]` unknown layer `retyr`",
        ":15: `hints.layers[4] (timeout)` needs option `ms` (options: ms)",
        ":17: `hints.layer` unknown hint (hints: layers) (did you mean `layers`?)",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing `{w}` in:\n{}",
            got.join("\n")
        );
    }
    assert!(
        got.iter()
            .any(|g| g.contains("unknown layer `retyr`") && g.ends_with("(did you mean `retry`?)"))
    );
    assert_eq!(got.len(), want.len(), "{}", got.join("\n"));
}

#[test]
fn a_misspelt_blueprint_field_is_named_with_its_line() {
    let got = problems(
        "field",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'b' {\n  agents = {},\n  flwo = function() end,\n  flow = function() return 1 end,\n}\n",
    );
    assert_eq!(
        got,
        [":4: `flwo` unknown field (did you mean `flow`?)"],
        "{got:?}"
    );
}

#[test]
fn layer_options_take_durations_and_run() {
    let p = write(
        "durations",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'b' {\n  agents = { s = swarm.agent.rust { name = 'sleep', layers = { { 'timeout', ms = '300ms' } } } },\n  flow = function() return swarm.step('s', { ms = 60000, value = 1 }) end,\n}\n",
    );
    let out = swarm()
        .arg("run")
        .arg(&p)
        .args(["--no-journal", "--json"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("timeout"), "{text}");
}

#[test]
fn an_unknown_agent_at_run_time_suggests_the_one_meant() {
    // Named through a variable, so `swarm check` cannot see it.
    let p = write(
        "runtime",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'b' {\n  agents = { echo = swarm.agent.rust { name = 'echo' } },\n  flow = function(input)\n    local name = input\n    return swarm.step(name, 1)\n  end,\n}\n",
    );
    let out = swarm()
        .arg("run")
        .arg(&p)
        .args(["--no-journal", "--input", "\"ecoh\""])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("b.lua:6: unknown agent `ecoh` (did you mean `echo`?)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_blueprint_over_http_suggests_the_one_meant() {
    use common::server::{Client, fresh, serve};
    let hello = "local swarm = require 'swarm'\nreturn swarm.blueprint 'hello' {\n  agents = {},\n  flow = function(input) return input end,\n}\n";
    let s = serve(
        &fresh("bperr-http", &[("hello.lua", hello)]),
        &["--no-auth"],
    );
    let c = Client::new(&s, None);
    let (code, body) = c
        .post(
            "/v1/runs",
            serde_json::json!({"blueprint": "helo", "input": 1}),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["code"], "unknown_blueprint", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no live blueprint named `helo` (did you mean `hello`?)"),
        "{body}"
    );
}
