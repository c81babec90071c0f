//! `swarm fork`: a new run from any journal position of a recorded one.
//! A 20-step run through a process agent that appends a line per call to
//! a file (so the calls a fork makes are counted, not guessed): a fork at
//! 12 runs 12–20 only; `--set` changes what step 11 returned and the flow
//! sees it; a fork of a fork; reuse of unchanged steps; LLM turns reused
//! but the one whose prompt changed (the scripted server counts requests);
//! lineage in `swarm runs` and `swarm show`, both ways.

mod common;

use common::dir::{Dir, text};
use lua_swarm::llm::scripted::{Reply, Scripted};
use serde_json::{Value, json};
use std::process::Output;

/// Appends one line per call to the file named on its command line and
/// answers `{n, prev}`: the step's number and what the previous step
/// returned (`n`), so a changed result is seen by the next step.
const RECORDER: &str = r#"import json, sys
doc = json.load(sys.stdin)
i = doc["input"]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(i, sort_keys=True) + "\n")
prev = i.get("prev")
print(json.dumps({"n": i["i"], "prev": prev and prev.get("n")}))
"#;

const TWENTY: &str = r#"local swarm = require "swarm"
return swarm.blueprint "twenty" {
  agents = {
    rec = swarm.agent.process { cmd = { "python3", "rec.py", "calls.log" } },
  },
  flow = function(input)
    local got = {}
    for i = 1, 20 do
      got[i] = swarm.step("rec", { i = i, prev = got[i - 1] })
    end
    return { last = got[20], eleventh = got[11], twelfth = got[12] }
  end,
}
"#;

fn twenty(name: &str) -> Dir {
    let d = Dir::new(&format!("fork-{name}"));
    d.file("rec.py", RECORDER);
    d.file("twenty.lua", TWENTY);
    d
}

/// The calls the recorder saw, as the inputs' step numbers.
fn calls(d: &Dir) -> Vec<u64> {
    let log = std::fs::read_to_string(d.0.join("calls.log")).unwrap_or_default();
    log.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["i"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn clear_calls(d: &Dir) {
    let _ = std::fs::remove_file(d.0.join("calls.log"));
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    text(out)
}

fn result(out: &Output) -> Value {
    ok(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The run's journal as `swarm show --json` gives it.
fn shown(d: &Dir, run: &str) -> Value {
    let out = d.swarm(&["show", run, "--json", "--events", "0"]);
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn source(d: &Dir) {
    let bp = d.0.join("twenty.lua").display().to_string();
    let out = d.swarm(&["run", &bp, "--run-id", "src", "--json"]);
    assert_eq!(result(&out)["last"], json!({"n": 20, "prev": 19}));
    assert_eq!(calls(d), (1..=20).collect::<Vec<_>>());
    clear_calls(d);
}

#[test]
fn a_fork_at_12_runs_steps_12_to_20_only() {
    let d = twenty("at12");
    source(&d);
    let out = d.swarm(&[
        "fork", "src", "--at", "12", "--reuse", "none", "--run-id", "f12", "--json",
    ]);
    assert_eq!(result(&out)["last"], json!({"n": 20, "prev": 19}));
    assert_eq!(calls(&d), (12..=20).collect::<Vec<_>>());
    let f = shown(&d, "f12");
    assert_eq!(
        f["run"]["fork"],
        json!({"run": "src", "at": "12", "reuse": false})
    );
    let journal = f["journal"].as_array().unwrap();
    assert_eq!(journal.len(), 20);
    for e in journal {
        let n: u64 = e["pos"].as_str().unwrap().parse().unwrap();
        if n < 12 {
            assert_eq!(e["from"]["how"], "copied", "{e}");
            assert_eq!(e["from"]["run"], "src", "{e}");
            assert_eq!(e["from"]["pos"], e["pos"], "{e}");
        } else {
            assert!(e.get("from").is_none(), "ran live: {e}");
        }
    }
    let table = ok(&d.swarm(&["show", "f12"]));
    assert!(table.contains("forked     from src at 12"), "{table}");
    assert!(table.contains("copied from src@11"), "{table}");
    assert!(table.contains("live"), "{table}");
    let table = ok(&d.swarm(&["show", "src"]));
    assert!(table.contains("forks      f12 (at 12)"), "{table}");
}

#[test]
fn set_changes_what_step_11_returned_and_the_flow_sees_it() {
    let d = twenty("set");
    source(&d);
    let out = d.swarm(&[
        "fork",
        "src",
        "--at",
        "12",
        "--set",
        r#"11={"n":1100}"#,
        "--run-id",
        "fset",
        "--json",
    ]);
    let r = result(&out);
    assert_eq!(r["eleventh"], json!({"n": 1100}));
    assert_eq!(
        r["twelfth"],
        json!({"n": 12, "prev": 1100}),
        "step 12 saw the edit"
    );
    // Steps 12 and 13 asked something new (each is given the step
    // before); 13 answered as it did in the source, so from 14 on every
    // request is the recorded one and is reused.
    assert_eq!(calls(&d), [12, 13]);
    let f = shown(&d, "fset");
    for e in f["journal"].as_array().unwrap() {
        let n: u64 = e["pos"].as_str().unwrap().parse().unwrap();
        let how = e["from"]["how"].as_str();
        let want = match n {
            11 => Some("edited"),
            12 | 13 => None,
            n if n < 11 => Some("copied"),
            _ => Some("reused"),
        };
        assert_eq!(how, want, "{e}");
    }
    let at11 = f["journal"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pos"] == "11")
        .unwrap();
    assert_eq!(at11["from"]["how"], "edited");
    assert_eq!(at11["value"], json!({"n": 1100}));
}

#[test]
fn unchanged_steps_past_the_fork_point_are_reused_not_run() {
    let d = twenty("reuse");
    source(&d);
    let out = d.swarm(&["fork", "src", "--at", "12", "--run-id", "fre", "--json"]);
    assert_eq!(result(&out)["last"], json!({"n": 20, "prev": 19}));
    assert_eq!(calls(&d), Vec::<u64>::new(), "nothing changed: nothing ran");
    let f = shown(&d, "fre");
    for e in f["journal"].as_array().unwrap() {
        let n: u64 = e["pos"].as_str().unwrap().parse().unwrap();
        let how = if n < 12 { "copied" } else { "reused" };
        assert_eq!(e["from"]["how"], how, "{e}");
    }
    let table = ok(&d.swarm(&["show", "fre"]));
    assert!(table.contains("reused from src@12"), "{table}");
}

#[test]
fn a_fork_of_a_fork_keeps_its_lineage() {
    let d = twenty("twice");
    source(&d);
    ok(&d.swarm(&[
        "fork", "src", "--at", "12", "--reuse", "none", "--run-id", "f1",
    ]));
    clear_calls(&d);
    let out = d.swarm(&[
        "fork", "f1", "--at", "15", "--reuse", "none", "--run-id", "f2", "--json",
    ]);
    assert_eq!(result(&out)["last"], json!({"n": 20, "prev": 19}));
    assert_eq!(calls(&d), (15..=20).collect::<Vec<_>>());
    let f2 = shown(&d, "f2");
    assert_eq!(f2["run"]["fork"]["run"], "f1");
    for e in f2["journal"].as_array().unwrap() {
        let n: u64 = e["pos"].as_str().unwrap().parse().unwrap();
        if n < 15 {
            assert_eq!(e["from"]["run"], "f1", "taken from its own source: {e}");
        }
    }
    let runs = ok(&d.swarm(&["runs"]));
    let line = |id: &str| {
        runs.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no {id} in {runs}"))
            .to_string()
    };
    assert!(line("f1").ends_with("← src@12"), "{runs}");
    assert!(line("f2").ends_with("← f1@15"), "{runs}");
    assert!(!line("src").contains('←'), "{runs}");
    let table = ok(&d.swarm(&["show", "f1"]));
    assert!(table.contains("forked     from src at 12"), "{table}");
    assert!(table.contains("forks      f2 (at 15)"), "{table}");
}

#[test]
fn bad_fork_requests_are_refused_naming_what_and_where() {
    let d = twenty("bad");
    source(&d);
    for (args, want) in [
        (vec!["--at", "3/x"], "`3/x` is not a journal position"),
        (
            vec!["--at", "12", "--set", "14=1"],
            "no entry at 14 before the fork point 12",
        ),
        (vec!["--set", "nope"], "--set `nope`: expected POS=JSON"),
        (
            vec!["--at", "22"],
            "--at 22: run `src` has calls up to position 20",
        ),
        (vec!["--at", "12~t0"], "`~t0` is not a turn"),
    ] {
        let mut all = vec!["fork", "src"];
        all.extend(args);
        let out = d.swarm(&all);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(want), "{}", text(&out));
    }
    let out = d.swarm(&["fork", "ghost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ghost"), "{}", text(&out));
    assert_eq!(calls(&d), Vec::<u64>::new(), "a refused fork runs nothing");
}

/// A writer and a critic, both LLM agents on the scripted server.
fn review(url: &str, critic_prompt: &str) -> String {
    format!(
        r#"local swarm = require "swarm"
return swarm.blueprint "review" {{
  agents = {{
    writer = swarm.agent.llm {{ base_url = "{url}", model = "w", system = "You write." }},
    critic = swarm.agent.llm {{ base_url = "{url}", model = "c", system = "{critic_prompt}" }},
  }},
  flow = function(input)
    local draft = swarm.step("writer", input.topic)
    local review = swarm.step("critic", draft)
    return {{ draft = draft, review = review }}
  end,
}}
"#
    )
}

async fn swarm(d: &Dir, args: &[&str]) -> Output {
    let mut c = d.cmd(args);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_critic_prompt_calls_only_the_critic() {
    let server = Scripted::start(vec![
        Reply::Text("a draft".into()),
        Reply::Text("too short".into()),
    ])
    .await
    .unwrap();
    let d = Dir::new("fork-llm");
    let bp = d.file("review.lua", &review(&server.url, "You critique."));
    let out = swarm(
        &d,
        &[
            "run",
            &bp,
            "--run-id",
            "r1",
            "--input",
            r#"{"topic":"forks"}"#,
        ],
    )
    .await;
    ok(&out);
    assert_eq!(server.count(), 2);
    d.file("review.lua", &review(&server.url, "You critique kindly."));
    server.push([Reply::Text("nice draft".into())]);
    let out = swarm(&d, &["fork", "r1", "--at", "1", "--run-id", "r2", "--json"]).await;
    let r = result(&out);
    assert_eq!(r, json!({"draft": "a draft", "review": "nice draft"}));
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one more request: the critic's");
    assert_eq!(requests[2]["model"], "c");
    assert_eq!(
        requests[2]["messages"][0]["content"],
        "You critique kindly."
    );
    let f = shown(&d, "r2");
    let usage = &f["usage"];
    assert_eq!(
        usage["total"]["total_tokens"], 18,
        "only the critic's turn was spent: {usage}"
    );
    assert_eq!(
        usage["reused"]["total"]["total_tokens"], 18,
        "the writer's was saved: {usage}"
    );
    assert_eq!(f["run"]["tokens"], 18, "{f}");
    let table = ok(&swarm(&d, &["show", "r2"]).await);
    assert!(table.contains("reused from r1@1~t1"), "{table}");
    assert!(table.contains("saved      18 tokens"), "{table}");
    // The same fork without reuse sends both again.
    server.push([Reply::Text("again".into()), Reply::Text("fine".into())]);
    let out = swarm(
        &d,
        &["fork", "r1", "--at", "1", "--reuse", "none", "--json"],
    )
    .await;
    ok(&out);
    assert_eq!(server.count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_fork_route_forks_for_who_may_start_runs_only() {
    use common::server::{Client, fresh, serve};
    use lua_swarm::auth::Role;
    let dir = fresh("fork-http", &[("twenty.lua", TWENTY), ("rec.py", RECORDER)]);
    let s = serve(&dir, &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, run) = op
        .post("/v1/runs", json!({"blueprint": "twenty", "id": "h1"}))
        .await;
    assert_eq!(code, 201, "{run}");
    op.until("h1", |r| r["status"] == "pass").await;
    let ask = json!({"at": "12", "id": "h2", "reuse": "none", "set": {"11": {"n": 1100}}});
    let refused = [
        s.token(Role::Senior, None),
        s.token(Role::Observer, None),
        s.token(Role::Worker, None),
        s.token(Role::Operator, Some("h1")),
    ];
    for token in refused {
        let (code, reply) = Client::new(&s, Some(token))
            .post("/v1/runs/h1/fork", ask.clone())
            .await;
        assert_eq!(
            (code, &reply["code"]),
            (403, &json!("forbidden")),
            "{reply}"
        );
    }
    for (bad, code) in [
        (json!({"reuse": "maybe"}), "bad_request"),
        (json!({"at": "x"}), "fork_invalid"),
        (json!({"set": {"30": 1}}), "fork_invalid"),
    ] {
        let (status, reply) = op.post("/v1/runs/h1/fork", bad).await;
        assert_eq!((status, &reply["code"]), (400, &json!(code)), "{reply}");
    }
    let (code, reply) = op.post("/v1/runs/h1/fork", ask).await;
    assert_eq!(code, 201, "{reply}");
    assert_eq!(reply["fork"], json!({"run": "h1", "at": "12"}));
    let run = op.until("h2", |r| r["status"] == "pass").await;
    assert_eq!(run["result"]["twelfth"], json!({"n": 12, "prev": 1100}));
    assert_eq!(
        run["fork"],
        json!({"run": "h1", "at": "12", "reuse": false})
    );
    let log = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        20 + 9,
        "the fork ran steps 12 to 20: {log}"
    );
}

/// Fails step 7 until a file `up` exists beside it: a tool outage.
const FLAKY: &str = r#"import json, os, sys
doc = json.load(sys.stdin)
i = doc["input"]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(i, sort_keys=True) + "\n")
if i["i"] == 7 and not os.path.exists("up"):
    sys.exit("the tool is down")
print(json.dumps({"n": i["i"]}))
"#;

#[test]
fn without_a_position_a_fork_starts_at_the_failed_step() {
    let d = Dir::new("fork-failed");
    d.file("rec.py", FLAKY);
    let bp = d.file("twenty.lua", TWENTY);
    let out = d.swarm(&["run", &bp, "--run-id", "down"]);
    assert_eq!(out.status.code(), Some(1), "step 7 failed: {}", text(&out));
    assert_eq!(calls(&d), (1..=7).collect::<Vec<_>>());
    clear_calls(&d);
    d.file("up", "");
    let out = d.swarm(&["fork", "down", "--run-id", "again", "--json"]);
    assert_eq!(result(&out)["last"], json!({"n": 20}));
    assert_eq!(
        calls(&d),
        (7..=20).collect::<Vec<_>>(),
        "1-6 replayed, 7 on"
    );
    assert_eq!(shown(&d, "again")["run"]["fork"]["at"], "7");
}

#[test]
fn without_a_position_a_fork_of_a_diverged_run_starts_where_it_diverged() {
    let d = Dir::new("fork-diverged");
    d.file("rec.py", RECORDER);
    let flow = |third: &str| {
        format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "five" {{
  agents = {{ rec = swarm.agent.process {{ cmd = {{ "python3", "rec.py", "calls.log" }} }} }},
  flow = function(input)
    for i = 1, 5 do
      swarm.step("rec", {{ i = i == 3 and {third} or i }})
    end
    return swarm.ask("done?")
  end,
}}
"#
        )
    };
    let bp = d.file("five.lua", &flow("3"));
    let out = d.swarm(&["run", &bp, "--run-id", "w"]);
    assert_eq!(out.status.code(), Some(3), "waiting: {}", text(&out));
    d.file("five.lua", &flow("30"));
    let out = d.swarm(&["resume", "w", "--force"]);
    assert_eq!(out.status.code(), Some(3), "diverged: {}", text(&out));
    assert!(text(&out).contains("diverged"), "{}", text(&out));
    clear_calls(&d);
    let out = d.swarm(&[
        "fork",
        "w",
        "--run-id",
        "w2",
        "--answer",
        "done?=yes",
        "--json",
    ]);
    assert_eq!(result(&out), json!("yes"));
    assert_eq!(shown(&d, "w2")["run"]["fork"]["at"], "3");
    // 1-2 replayed, the new step 3 ran, 4-5 asked what they had: reused.
    assert_eq!(calls(&d), [30]);
}

#[test]
fn set_without_at_forks_just_past_the_edit_and_step_12_sees_it() {
    let d = twenty("set-no-at");
    source(&d);
    let out = d.swarm(&[
        "fork",
        "src",
        "--set",
        r#"11={"n":1100}"#,
        "--run-id",
        "fs",
        "--json",
    ]);
    let r = result(&out);
    assert_eq!(
        r["twelfth"],
        json!({"n": 12, "prev": 1100}),
        "step 12 saw the edit"
    );
    assert_eq!(r["last"], json!({"n": 20, "prev": 19}));
    // 12 and 13 ask something new; from 14 on the requests are the
    // recorded ones: reused, not run.
    assert_eq!(calls(&d), [12, 13]);
    let f = shown(&d, "fs");
    assert_eq!(f["run"]["fork"]["at"], "12");
    for e in f["journal"].as_array().unwrap() {
        let n: u64 = e["pos"].as_str().unwrap().parse().unwrap();
        let want = match n {
            11 => Some("edited"),
            12 | 13 => None,
            n if n < 11 => Some("copied"),
            _ => Some("reused"),
        };
        assert_eq!(e["from"]["how"].as_str(), want, "{e}");
    }
    // An explicit --at past the edit: what follows the edit is still
    // asked again, never copied as it was. (`011` is position 11.)
    clear_calls(&d);
    let out = d.swarm(&[
        "fork",
        "src",
        "--at",
        "16",
        "--set",
        r#"011={"n":1100}"#,
        "--run-id",
        "fs16",
        "--json",
    ]);
    assert_eq!(result(&out)["twelfth"], json!({"n": 12, "prev": 1100}));
    assert_eq!(calls(&d), [12, 13]);
    assert_eq!(shown(&d, "fs16")["run"]["fork"]["at"], "12");
}

#[test]
fn a_new_input_takes_nothing_as_it_was_even_with_at() {
    let d = twenty("input-at");
    source(&d);
    let out = d.swarm(&[
        "fork",
        "src",
        "--at",
        "12",
        "--input",
        r#"{"x":1}"#,
        "--run-id",
        "fi",
        "--json",
    ]);
    assert_eq!(result(&out)["last"], json!({"n": 20, "prev": 19}));
    // The flow ignores its input: every step asks what it asked.
    assert_eq!(calls(&d), Vec::<u64>::new());
    let f = shown(&d, "fi");
    assert_eq!(f["run"]["fork"]["at"], "1");
    assert_eq!(f["run"]["input"], json!({"x": 1}));
    for e in f["journal"].as_array().unwrap() {
        assert_eq!(e["from"]["how"], "reused", "{e}");
    }
}

#[test]
fn a_step_whose_agent_was_removed_is_not_reused() {
    let d = twenty("removed");
    source(&d);
    // The agent `rec` is gone from the blueprint; the flow still asks it.
    d.file(
        "twenty.lua",
        &TWENTY.replace("    rec = swarm.agent", "    gone = swarm.agent"),
    );
    let out = d.swarm(&["fork", "src", "--at", "12", "--run-id", "fr"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("unknown_agent") || t.contains("no agent"), "{t}");
    assert!(t.contains("rec"), "{t}");
    assert_eq!(calls(&d), Vec::<u64>::new(), "nothing ran");
    let f = shown(&d, "fr");
    let reused = f["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["from"]["how"] == "reused")
        .count();
    assert_eq!(reused, 0, "{f}");
}
