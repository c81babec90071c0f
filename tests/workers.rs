//! Remote workers against a real `swarm serve`: real `swarm worker`
//! processes running real commands, kill -9 of a worker mid-step (the step
//! is claimed again once the lease lapses), cancel reaching the worker's
//! command, and the claim routes driven by hand: bound to one task (403),
//! fenced once expired (409), refused to the wrong roles.

mod common;

use common::server::{Client, Serve, fresh, serve};
use lua_swarm::auth::Role;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command with the process-agent contract: doubles `input.n`; with
/// `input.hold`, first records its pid in `pids` and waits for `open`.
const DOUBLE: &str = r#"import json, os, sys, time
doc = json.load(sys.stdin)
inp = doc["input"]
if inp.get("hold"):
    with open("pids", "a") as f:
        f.write(f"{os.getpid()}\n")
    while not os.path.exists("open"):
        time.sleep(0.02)
print("doubling", inp["n"], file=sys.stderr, flush=True)
print(json.dumps({"event": "progress", "data": {"step": "half"}}), flush=True)
print(json.dumps({"event": "final", "value": {"n": inp["n"] * 2}, "ok": True}))
"#;

const BLUEPRINTS: &[(&str, &str)] = &[
    (
        "chain.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "chain" {
  agents = { gpu = swarm.agent.remote { queue = "gpu", system = "be quick" } },
  flow = function(input)
    local a = swarm.step("gpu", input)
    return swarm.step("gpu", { n = a.n + 1, hold = input.hold2 })
  end,
}
"#,
    ),
    (
        "pair.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "pair" {
  agents = { gpu = swarm.agent.remote { queue = "hand" } },
  flow = function()
    return swarm.parallel {
      function() return swarm.step("gpu", { n = 1 }) end,
      function() return swarm.step("gpu", { n = 2 }) end,
    }
  end,
}
"#,
    ),
];

fn fresh_here(name: &str) -> PathBuf {
    let dir = fresh(&format!("workers-{name}"), BLUEPRINTS);
    std::fs::write(dir.join("double.py"), DOUBLE).unwrap();
    dir
}

/// A `swarm worker` process for queue `gpu` running `double.py`.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(s: &Serve, token: &str) -> Worker {
    let log = std::fs::File::create(s.dir.join("worker.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args([
            "worker",
            "--server",
            &s.url,
            "--queue",
            "gpu",
            "--concurrency",
            "2",
        ])
        .args(["--token", token, "--", "python3", "double.py"])
        .current_dir(&s.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Worker(child)
}

async fn start(c: &Client, blueprint: &str, input: Value) -> String {
    let (code, body) = c
        .post(
            "/v1/runs",
            json!({ "blueprint": blueprint, "input": input }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// The pids `double.py` recorded, once there are at least `n`.
async fn pids(dir: &Path, n: usize) -> Vec<i32> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        if pids.len() >= n {
            return pids;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "hang guard");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); its state in /proc says it is dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

async fn until_dead(pid: i32) {
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pid {pid} lives on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(events: &[(String, String)], what: &str) -> usize {
    events.iter().filter(|(_, d)| d.contains(what)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_remote_steps_with_the_process_contract() {
    let s = serve(&fresh_here("basic"), &[]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    let _w = worker(&s, &s.token(Role::Worker, None));
    let id = start(&c, "chain", json!({ "n": 3 })).await;
    let run = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "pass", "{run}");
    assert_eq!(run["result"], json!({ "n": 14 }));
    let events = c.events(&id, None).await;
    assert_eq!(kinds(&events, r#""remote":"claimed""#), 2, "{events:?}");
    assert_eq!(kinds(&events, r#""data":"doubling 3""#), 1, "stderr line");
    assert_eq!(kinds(&events, r#""step":"half""#), 2, "NDJSON progress");
    let (_, journal) = c.get(&format!("/v1/runs/{id}/journal")).await;
    assert_eq!(journal["entries"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_step_is_claimed_again_after_its_lease() {
    let s = serve(&fresh_here("kill"), &["--lease", "2s"]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    let token = s.token(Role::Worker, None);
    let mut first = worker(&s, &token);
    let id = start(&c, "chain", json!({ "n": 1, "hold2": true })).await;
    let held = pids(&s.dir, 1).await[0];
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // The command dies with its worker (parent-death signal).
    until_dead(held).await;
    let _second = worker(&s, &token);
    let again = pids(&s.dir, 2).await[1];
    assert_ne!(again, held);
    std::fs::write(s.dir.join("open"), "").unwrap();
    let run = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "pass", "{run}");
    assert_eq!(run["result"], json!({ "n": 6 }));
    let events = c.events(&id, None).await;
    assert!(
        kinds(&events, r#""remote":"lease_expired""#) >= 1,
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_kills_the_worker_s_command() {
    let s = serve(&fresh_here("cancel"), &[]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    let mut w = worker(&s, &s.token(Role::Worker, None));
    let id = start(&c, "chain", json!({ "n": 1, "hold": true })).await;
    let held = pids(&s.dir, 1).await[0];
    let (code, body) = c.post(&format!("/v1/runs/{id}/cancel"), json!({})).await;
    assert_eq!(code, 200, "{body}");
    until_dead(held).await;
    let run = c.until(&id, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "cancelled", "{run}");
    // The worker lives on and takes the next step.
    let next = start(&c, "chain", json!({ "n": 2 })).await;
    let run = c.until(&next, |r| r["status"] != "running").await;
    assert_eq!(run["result"], json!({ "n": 10 }), "{run}");
    assert!(w.0.try_wait().unwrap().is_none(), "the worker exited");
}

/// Claims the next step of queue `hand` by hand.
async fn claim(c: &Client) -> (u16, Value) {
    c.post("/v1/queues/hand/claim", json!({ "wait_ms": 30000 }))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_bound_to_their_task_and_refused_to_other_roles() {
    let s = serve(&fresh_here("bound"), &[]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let w = Client::new(&s, Some(s.token(Role::Worker, None)));
    let id = start(&op, "pair", json!({})).await;
    let (_, a) = claim(&w).await;
    let (_, b) = claim(&w).await;
    let (ca, ta, tb) = (a["claim"].as_str().unwrap(), &a["task"], &b["task"]);
    assert_eq!(b["run"], json!(id));
    let result = |task: &Value| json!({ "task": task, "ok": true, "value": 1 });
    let (code, body) = w.post(&format!("/v1/claims/{ca}/result"), result(tb)).await;
    assert_eq!((code, &body["code"]), (403, &json!("forbidden")), "{body}");
    let events = json!({ "task": tb, "events": [{ "event": "progress", "data": 1 }] });
    let (code, _) = w.post(&format!("/v1/claims/{ca}/events"), events).await;
    assert_eq!(code, 403);
    let (code, body) = w.post("/v1/claims/cnope/heartbeat", json!({})).await;
    assert_eq!((code, &body["code"]), (404, &json!("unknown_claim")));
    for (role, code) in [(Role::Observer, 403), (Role::Senior, 403)] {
        let other = Client::new(&s, Some(s.token(role, None)));
        assert_eq!(claim(&other).await.0, code, "{role:?}");
    }
    assert_eq!(claim(&Client::new(&s, None)).await.0, 401);
    let elsewhere = Client::new(&s, Some(s.token(Role::Worker, Some("other-run"))));
    let (code, _) = elsewhere
        .post("/v1/queues/hand/claim", json!({ "wait_ms": 0 }))
        .await;
    assert_eq!(code, 204, "a worker bound to another run sees no steps");
    // Nor may it touch this run's claims: heartbeat, events and result on
    // a claim it did not get are refused, and the claim stands.
    let (code, body) = elsewhere
        .post(&format!("/v1/claims/{ca}/heartbeat"), json!({}))
        .await;
    assert_eq!(
        (code, &body["code"]),
        (404, &json!("unknown_run")),
        "{body}"
    );
    let events = json!({ "task": ta, "events": [{ "event": "progress", "data": 1 }] });
    let (code, _) = elsewhere
        .post(&format!("/v1/claims/{ca}/events"), events)
        .await;
    assert_eq!(code, 404);
    let stolen = json!({ "task": ta, "ok": true, "value": "stolen" });
    let (code, _) = elsewhere
        .post(&format!("/v1/claims/{ca}/result"), stolen)
        .await;
    assert_eq!(code, 404);
    // Each claim posts its own result; the second post of one is refused.
    for (claim, task, n) in [(ca, ta, 10), (b["claim"].as_str().unwrap(), tb, 20)] {
        let body = json!({ "task": task, "ok": true, "value": n });
        let path = format!("/v1/claims/{claim}/result");
        assert_eq!(w.post(&path, body.clone()).await.0, 200);
        let (code, again) = w.post(&path, body).await;
        assert_eq!((code, &again["code"]), (409, &json!("claim_done")));
    }
    let run = op.until(&id, |r| r["status"] != "running").await;
    assert_eq!(run["result"], json!([10, 20]), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_on_an_expired_claim_is_fenced() {
    let s = serve(&fresh_here("fence"), &["--lease", "1s"]);
    let op = Client::new(&s, Some(s.token(Role::Operator, None)));
    let w = Client::new(&s, Some(s.token(Role::Worker, None)));
    let id = start(&op, "pair", json!({})).await;
    let (_, first) = claim(&w).await;
    let stale = first["claim"].as_str().unwrap().to_string();
    // Never renewed: the lease lapses and the step is offered again (the
    // other step may come first, and lapse too: claims are taken until
    // this one's task is back).
    loop {
        let (code, step) = claim(&w).await;
        assert_eq!(code, 200, "{step}");
        if step["task"] == first["task"] {
            break;
        }
    }
    let body = json!({ "task": first["task"], "ok": true, "value": "late" });
    let (code, refused) = w.post(&format!("/v1/claims/{stale}/result"), body).await;
    assert_eq!(
        (code, &refused["code"]),
        (409, &json!("claim_expired")),
        "{refused}"
    );
    let (code, _) = w
        .post(&format!("/v1/claims/{stale}/heartbeat"), json!({}))
        .await;
    assert_eq!(code, 409);
    // Whatever is queued now (both steps, claimed again as leases lapse
    // under load) gets a prompt result; the stale value never lands.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "hang guard");
        let (code, step) = w
            .post("/v1/queues/hand/claim", json!({ "wait_ms": 200 }))
            .await;
        if code == 200 {
            let n = step["input"]["n"].as_i64().unwrap() * 10;
            let body = json!({ "task": step["task"], "ok": true, "value": n });
            let claim = step["claim"].as_str().unwrap();
            w.post(&format!("/v1/claims/{claim}/result"), body).await;
        }
        let (_, run) = op.get(&format!("/v1/runs/{id}")).await;
        if run["status"] != "running" {
            assert_eq!(run["result"], json!([10, 20]), "{run}");
            break;
        }
    }
}

#[test]
fn a_remote_step_outside_a_server_says_what_it_needs() {
    let dir = fresh_here("local");
    let out = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["run", "chain.lua", "--no-journal", "--input", r#"{"n":1}"#])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no_server") && err.contains("swarm worker --queue gpu"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_releases_its_claims_and_the_command_stops() {
    let s = serve(&fresh_here("drain"), &["--lease", "3s"]);
    let c = Client::new(&s, Some(s.token(Role::Operator, None)));
    let w = worker(&s, &s.token(Role::Worker, None));
    let id = start(&c, "chain", json!({ "n": 1, "hold": true })).await;
    let held = pids(&s.dir, 1).await[0];
    let mut s = s;
    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.child.wait().unwrap().success());
    until_dead(held).await;
    drop(w);
    let runs = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["show", &id, "--json", "--db"])
        .arg(&s.db)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&runs.stdout);
    assert!(head.contains(r#""status":"interrupted""#), "{head}");
}
