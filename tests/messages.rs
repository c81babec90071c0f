//! Messages into running runs: `swarm.recv(topic)` in a flow, fed by
//! `swarm send` from other processes and by `POST /v1/runs/{id}/messages`.
//! Each message is received once, in the order sent, across a SIGKILL of
//! the run's owner and its resume; a sender's id makes a retry a no-op;
//! a run that does not wait stops `waiting`; unknown and finished runs
//! are refused with their codes.

mod common;

use common::HANG_GUARD;
use common::dir::{Dir, text, wait_exit};
use common::server::{Client, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

/// A flow that receives `input.n` messages on `work`, appending each to
/// `effects` through a process step, and returns them in order.
fn receiver(d: &Dir) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agents/append.sh");
    let effects = d.0.join("effects.txt");
    d.file(
        "recv.lua",
        &format!(
            r#"local swarm = require "swarm"
return swarm.blueprint "recv" {{
  agents = {{ append = swarm.agent.process {{ cmd = {{ "sh", "{script}", "{effects}" }} }} }},
  flow = function(input)
    local got = {{}}
    for i = 1, input.n do
      local v, meta = swarm.recv("work")
      assert(meta.topic == "work" and meta.seq >= i)
      got[i] = swarm.step("append", v)
    end
    return got
  end,
}}
"#,
            script = script.display(),
            effects = effects.display(),
        ),
    )
}

/// The run's head as `swarm show --json` prints it.
fn head(d: &Dir, id: &str) -> Value {
    let out = d.swarm(&["show", id, "--json"]);
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&first).unwrap_or(Value::Null)
}

fn entries(head: &Value, kind: &str) -> Vec<Value> {
    head["journal"]
        .as_array()
        .map(|j| j.iter().filter(|e| e["kind"] == kind).cloned().collect())
        .unwrap_or_default()
}

/// Polls the journal until `done` holds (a hang guard, not a timer).
fn until(d: &Dir, what: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let h = head(d, id);
        if done(&h) {
            return h;
        }
        assert!(t0.elapsed() < HANG_GUARD, "hang guard: {what}: {h}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

fn send(d: &Dir, args: &[&str]) -> String {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    let out = d.swarm(&all);
    assert!(out.status.success(), "swarm send {args:?}: {}", text(&out));
    text(&out)
}

fn lines(d: &Dir) -> Vec<String> {
    std::fs::read_to_string(d.0.join("effects.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn messages_from_other_processes_arrive_in_order_once_across_a_sigkill() {
    let d = Dir::new("messages-kill");
    let bp = receiver(&d);
    let mut owner = d.spawn(&[
        "run",
        &bp,
        "--input",
        r#"{"n":5}"#,
        "--run-id",
        "inbox",
        "--wait-answers",
    ]);
    until(&d, "the run is recorded", "inbox", |h| {
        h["run"]["status"] == "running"
    });
    // Three messages while it runs, one of them retried with its id.
    send(&d, &["inbox", "work", "1"]);
    send(&d, &["inbox", "work", "2", "--id", "two"]);
    let again = send(&d, &["inbox", "work", "2", "--id", "two"]);
    assert!(again.contains("already sent as message 2"), "{again}");
    send(&d, &["inbox", "work", "3"]);
    // Its third step is recorded: it now waits in its fourth recv.
    until(&d, "three steps", "inbox", |h| {
        entries(h, "step").len() == 3
    });
    owner.kill().unwrap();
    let _ = owner.wait();
    assert_eq!(lines(&d), ["1", "2", "3"]);
    // Sent while no one executes it: the run is stopped, then resumed.
    let out = send(&d, &["inbox", "work", "4"]);
    assert!(out.contains("swarm resume inbox"), "{out}");
    send(&d, &["inbox", "work", "5", "--id", "five"]);
    let out = wait_exit(
        d.spawn(&["resume", "inbox", "--wait-answers", "--json"]),
        HANG_GUARD.as_secs(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let h = head(&d, "inbox");
    assert_eq!(h["run"]["status"], "pass", "{h}");
    assert_eq!(h["run"]["result"], json!([1, 2, 3, 4, 5]), "{h}");
    assert_eq!(lines(&d), ["1", "2", "3", "4", "5"], "each step once");
    let mut seqs: Vec<u64> = entries(&h, "recv")
        .iter()
        .map(|e| e["value"]["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "each message received once: {h}");
}

#[test]
fn a_run_that_does_not_wait_stops_waiting_and_resumes_with_the_message() {
    let d = Dir::new("messages-waiting");
    let bp = receiver(&d);
    let out = d.swarm(&["run", &bp, "--input", r#"{"n":1}"#, "--run-id", "w"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("waiting for a message"),
        "{}",
        text(&out)
    );
    let h = head(&d, "w");
    assert_eq!(h["run"]["status"], "waiting", "{h}");
    assert_eq!(h["run"]["result"]["code"], "message_awaited", "{h}");
    let why = h["run"]["result"]["error"].as_str().unwrap();
    assert!(why.contains("recv.lua:"), "names the line: {why}");
    assert!(why.contains("swarm send w work"), "{why}");
    let listed = d.swarm(&["runs", "--status", "waiting"]);
    assert!(text(&listed).contains("w "), "{}", text(&listed));
    let sent = send(&d, &["w", "work", "7", "--json"]);
    let sent: Value = serde_json::from_str(sent.lines().next().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"seq": 1, "duplicate": false, "resume_needed": true})
    );
    let out = d.swarm(&["resume", "w"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(head(&d, "w")["run"]["result"], json!([7]));
    // A finished run takes no more messages; an unknown one is named.
    let late = d.swarm(&["send", "w", "work", "8"]);
    assert_eq!(late.status.code(), Some(2));
    assert!(text(&late).contains("[run_finished]"), "{}", text(&late));
    let none = d.swarm(&["send", "nope", "work", "8"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(text(&none).contains("no run `nope`"), "{}", text(&none));
    let null = d.swarm(&["send", "w", "work", "null"]);
    assert!(text(&null).contains("run_finished"), "{}", text(&null));
}

#[test]
fn recv_times_out_with_a_typed_error_and_misuse_names_the_line() {
    let d = Dir::new("messages-timeout");
    let bp = d.file(
        "t.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "t" {
  flow = function()
    local v, err = swarm.recv("never", { timeout = "300ms" })
    local ok, bad = pcall(swarm.recv, "", {})
    local ok2, bad2 = pcall(swarm.recv, "x", { timeout = "soon" })
    return { v = v, code = err.code, topic = err.topic, bad = bad.code, bad2 = bad2.code,
             said = tostring(bad2) }
  end,
}
"#,
    );
    let out = d.swarm(&["run", &bp, "--run-id", "t", "--wait-answers", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r = head(&d, "t")["run"]["result"].clone();
    assert_eq!(r["code"], "recv_timeout", "{r}");
    assert_eq!(r["topic"], "never");
    assert!(r["v"].is_null());
    assert_eq!(r["bad"], "bad_argument");
    assert_eq!(r["bad2"], "bad_argument");
    assert!(r["said"].as_str().unwrap().contains("t.lua:6"), "{r}");
}

#[test]
fn recv_without_a_journal_is_a_clear_error() {
    let d = Dir::new("messages-nojournal");
    let bp = d.file(
        "n.lua",
        "local swarm = require 'swarm'\nreturn swarm.blueprint 'n' {\n  flow = function() return swarm.recv('x') end,\n}\n",
    );
    let out = d.swarm(&["run", &bp, "--no-journal"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("n.lua:3") && said.contains("--no-journal"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_http_reach_a_running_run_in_order_once() {
    let bp = r#"local swarm = require 'swarm'
return swarm.blueprint 'inbox' {
  flow = function(input)
    local got = {}
    for i = 1, input.n do got[i] = swarm.recv('q') end
    return got
  end,
}
"#;
    let s = serve(&fresh("messages-http", &[("inbox.lua", bp)]), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let (code, run) = op
        .post("/v1/runs", json!({"blueprint": "inbox", "input": {"n": 3}}))
        .await;
    assert_eq!(code, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let path = format!("/v1/runs/{id}/messages");
    let (code, r) = op
        .post(&path, json!({"topic": "q", "value": {"a": 1}, "id": "m1"}))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        r,
        json!({"seq": 1, "duplicate": false, "resume_needed": false})
    );
    let (_, r) = op
        .post(&path, json!({"topic": "q", "value": {"a": 1}, "id": "m1"}))
        .await;
    assert_eq!(r["duplicate"], true, "a retry adds nothing: {r}");
    // A token bound to the run may send to it, and to no other.
    let bound = Client::new(&s, Some(s.token(Role::Operator, Some(&id))));
    let (code, r) = bound
        .post(&path, json!({"topic": "q", "value": "two"}))
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = bound
        .post("/v1/runs/other/messages", json!({"topic": "q", "value": 1}))
        .await;
    assert_eq!(
        (code, r["code"].as_str()),
        (404, Some("unknown_run")),
        "{r}"
    );
    let (code, r) = bound.get("/v1/mobs").await;
    assert_eq!((code, r["code"].as_str()), (403, Some("forbidden")), "{r}");
    let (code, r) = op.post(&path, json!({"topic": "q", "value": null})).await;
    assert_eq!(
        (code, r["code"].as_str()),
        (400, Some("bad_message")),
        "{r}"
    );
    // One message is at most 1 MiB of JSON (the body may be larger).
    let big = "x".repeat((1 << 20) + 1);
    let (code, r) = op.post(&path, json!({"topic": "q", "value": big})).await;
    assert_eq!(
        (code, r["code"].as_str()),
        (400, Some("bad_message")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("1048576"), "{r}");
    let (code, r) = op.post(&path, json!({"topic": "q", "value": 3})).await;
    assert_eq!(code, 200, "{r}");
    let done = op.until(&id, |r| r["status"] == "pass").await;
    assert_eq!(done["result"], json!([{"a": 1}, "two", 3]), "{done}");
    let (code, r) = op.post(&path, json!({"topic": "q", "value": 4})).await;
    assert_eq!(
        (code, r["code"].as_str()),
        (409, Some("run_finished")),
        "{r}"
    );
    let (code, r) = op
        .post(
            "/v1/runs/no-such/messages",
            json!({"topic": "q", "value": 4}),
        )
        .await;
    assert_eq!(
        (code, r["code"].as_str()),
        (404, Some("unknown_run")),
        "{r}"
    );
}

/// Topics are numbered together: messages of two topics sent interleaved
/// are received per topic in order, each once, whatever the other topic's
/// numbers are in between.
#[test]
fn interleaved_topics_are_received_each_in_its_order() {
    let d = Dir::new("messages-topics");
    let bp = d.file(
        "two.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "two" {
  flow = function()
    local a, b = {}, {}
    for i = 1, 3 do a[i] = swarm.recv("a") end
    for i = 1, 3 do b[i] = swarm.recv("b") end
    return { a = a, b = b }
  end,
}
"#,
    );
    let out = d.swarm(&["run", &bp, "--run-id", "two"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for i in 1..=3 {
        send(&d, &["two", "b", &format!("\"b{i}\"")]);
        send(&d, &["two", "a", &format!("\"a{i}\"")]);
    }
    let out = d.swarm(&["resume", "two"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        head(&d, "two")["run"]["result"],
        json!({ "a": ["a1", "a2", "a3"], "b": ["b1", "b2", "b3"] })
    );
}
