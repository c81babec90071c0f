//! Many nodes on one Postgres: three `swarm serve` processes share one
//! throwaway database (`common/postgres.rs`). An answer posted to one node
//! continues a run waiting on another, and a cancel at one node ends a run
//! waiting on another, both carried by LISTEN/NOTIFY (the nodes' safety
//! poll is set far past the hang guard); 60 runs whose process agent
//! appends to a side-effect file are started across the nodes, one node
//! is killed with SIGKILL mid-way, and every run still ends `pass`, each
//! completed step's side effect happening once (only a step in flight at
//! the kill may run again); a run of the killed node followed over SSE
//! through another node reads gapless across the takeover. SIGTERM on a
//! node drains it, and another node takes its runs over. A worker at one
//! node takes the remote steps of a run executing at another.

mod common;

use common::postgres::Postgres;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The deployment's token secret, the same on every node.
const SECRET: &str = "the secret the three nodes of this test share, 48 bytes";
/// Far beyond what the test needs: only a hang trips it.
const HANG: Duration = Duration::from_secs(180);
const RUNS: usize = 60;
const STEPS: u64 = 6;

struct Node {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swarm(store: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swarm"));
    c.env("SWARM_SECRET", SECRET)
        .env("SWARM_STORE", store)
        .env("SWARM_LEASE_MS", "3000")
        // Far past the hang guard: an answer or a cancel given at another
        // node can only arrive in time by NOTIFY, never by the safety poll.
        .env("SWARM_PG_SAFETY_POLL_MS", "600000")
        .stdin(Stdio::null());
    c
}

/// Starts `swarm serve DIR` on `store`; returns once it listens.
fn node(dir: &Path, store: &str) -> Node {
    let mut child = swarm(store)
        .arg("serve")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting swarm serve");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let (stderr, seen) = (child.stderr.take().unwrap(), lines.clone());
    // Killed when dropped, should it never listen.
    let mut node = Node {
        child,
        url: String::new(),
        lines,
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(HANG)
            .unwrap_or_else(|e| panic!("swarm serve did not listen ({e}): {:?}", node.lines));
        if let Some(at) = line.find("http://") {
            node.url = line[at..].split_whitespace().next().unwrap().to_string();
            return node;
        }
    }
}

fn blueprints(dir: &Path, effects: &Path) {
    let agent = format!(
        "import json, sys, time\n\
         i = json.load(sys.stdin)['input']\n\
         time.sleep(0.2)\n\
         with open({fx:?}, 'a') as f:\n    f.write('%s %d\\n' % (i['tag'], i['i']))\n\
         print(i['i'])\n",
        fx = effects.display().to_string()
    );
    std::fs::write(dir.join("agent.py"), agent).unwrap();
    let side = format!(
        "local swarm = require 'swarm'\n\
         return swarm.blueprint 'side' {{\n\
           agents = {{ work = swarm.agent.process {{ cmd = {{ 'python3', {agent:?} }} }} }},\n\
           flow = function(input)\n\
             local sum = 0\n\
             for i = 1, {STEPS} do sum = sum + swarm.step('work', {{ tag = input.tag, i = i }}) end\n\
             return sum\n\
           end,\n\
         }}\n",
        agent = dir.join("agent.py").display().to_string()
    );
    std::fs::write(dir.join("side.lua"), side).unwrap();
    std::fs::write(
        dir.join("asks.lua"),
        "local swarm = require 'swarm'\n\
         return swarm.blueprint 'asks' {\n\
           flow = function() return { said = swarm.ask { key = 'go', text = 'Continue?' } } end,\n\
         }\n",
    )
    .unwrap();
}

struct Api {
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = tokio::time::timeout(HANG, req.send())
            .await
            .expect("hang guard")
            .expect("the node answers");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn run(&self, node: &Node, id: &str) -> Value {
        let (code, run) = self
            .call("GET", format!("{}/v1/runs/{id}", node.url), None)
            .await;
        assert_eq!(code, 200, "{run}");
        run
    }

    /// Polls run `id` at `node` until `done` (a hang guard, not a timer).
    async fn until(&self, node: &Node, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let run = self.run(node, id).await;
            if done(&run) {
                return run;
            }
            assert!(start.elapsed() < HANG, "hang guard: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Follows run `id`'s events over SSE at `node` from the start,
    /// reconnecting from the last id seen whenever the stream ends before
    /// the run has passed; every (id, kind) read, in order.
    async fn follow(&self, node_url: String, id: String) -> Vec<(i64, String)> {
        let (mut seen, start) = (Vec::<(i64, String)>::new(), Instant::now());
        loop {
            assert!(start.elapsed() < HANG, "hang guard: followed {seen:?}");
            let mut req = self
                .http
                .get(format!("{node_url}/v1/runs/{id}/events"))
                .bearer_auth(&self.token);
            if let Some((last, _)) = seen.last() {
                req = req.header("Last-Event-ID", last.to_string());
            }
            let body = match tokio::time::timeout(HANG, req.send()).await {
                Ok(Ok(r)) => r.text().await.unwrap_or_default(),
                _ => String::new(),
            };
            let mut passed = false;
            for block in body.split("\n\n") {
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(|v| v.trim().to_string())
                };
                match (field("id:"), field("event:"), field("data:")) {
                    (Some(n), Some(kind), _) => seen.push((n.parse().unwrap(), kind)),
                    (None, Some(end), Some(data)) if end == "end" => {
                        passed = serde_json::from_str::<Value>(&data).unwrap()["status"] == "pass";
                    }
                    _ => {}
                }
            }
            if passed {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `(tag, step)` → how many times its side effect happened.
fn effects(path: &Path) -> HashMap<(String, u64), usize> {
    let mut n = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let mut w = line.split_whitespace();
        if let (Some(tag), Some(i)) = (w.next(), w.next().and_then(|i| i.parse().ok())) {
            *n.entry((tag.to_string(), i)).or_default() += 1;
        }
    }
    n
}

/// A fresh directory of its own for each test (they run at once).
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn three_nodes_share_runs_and_survive_a_kill() {
    let Some(pg) = Postgres::start("nodes") else {
        return;
    };
    let store = pg.database("swarm");
    let dir = scratch("postgres-nodes");
    let fx = dir.join("effects");
    blueprints(&dir, &fx);
    let (mut a, mut b, c) = (node(&dir, &store), node(&dir, &store), node(&dir, &store));
    let out = swarm(&store)
        .args(["token", "--role", "operator"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = Api {
        http: reqwest::Client::new(),
        token: String::from_utf8(out.stdout).unwrap().trim().to_string(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // An answer at node C continues the run waiting on node A.
        let new = json!({ "blueprint": "asks", "id": "ask" });
        let got = api
            .call("POST", format!("{}/v1/runs", a.url), Some(new))
            .await;
        assert_eq!(got.0, 201, "{}", got.1);
        api.until(&c, "ask", |r| {
            r["questions"].as_array().is_some_and(|q| !q.is_empty())
        })
        .await;
        let answer = json!({ "question": "go", "value": "yes" });
        let got = api
            .call(
                "POST",
                format!("{}/v1/runs/ask/answers", c.url),
                Some(answer),
            )
            .await;
        assert_eq!(got.0, 200, "{}", got.1);
        let done = api.until(&b, "ask", |r| r["status"] != "running").await;
        assert_eq!(done["status"], "pass", "{done}");
        assert_eq!(done["result"], json!({ "said": "yes" }));

        // A cancel at node B ends the run waiting on node A.
        let new = json!({ "blueprint": "asks", "id": "ask2" });
        let got = api
            .call("POST", format!("{}/v1/runs", a.url), Some(new))
            .await;
        assert_eq!(got.0, 201, "{}", got.1);
        api.until(&b, "ask2", |r| {
            r["questions"].as_array().is_some_and(|q| !q.is_empty())
        })
        .await;
        let got = api
            .call(
                "POST",
                format!("{}/v1/runs/ask2/cancel", b.url),
                Some(json!({})),
            )
            .await;
        assert_eq!(got.0, 200, "{}", got.1);
        let done = api.until(&c, "ask2", |r| r["status"] != "running").await;
        assert_eq!(done["status"], "cancelled", "{done}");

        // 60 runs across the nodes; A's first run followed through B.
        let nodes = [&a, &b, &c];
        for n in 0..RUNS {
            let id = format!("r{n:02}");
            let new = json!({ "blueprint": "side", "id": id, "input": { "tag": id } });
            let at = nodes[n % 3];
            let got = api
                .call("POST", format!("{}/v1/runs", at.url), Some(new))
                .await;
            assert_eq!(got.0, 201, "{}", got.1);
        }
        let followed = tokio::spawn({
            let api = Api {
                http: api.http.clone(),
                token: api.token.clone(),
            };
            let url = b.url.clone();
            async move { api.follow(url, "r00".into()).await }
        });
        // Mid-way: some steps done everywhere, none of the runs finished.
        let start = Instant::now();
        while effects(&fx).len() < RUNS {
            assert!(
                start.elapsed() < HANG,
                "hang guard: {:?}",
                effects(&fx).len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.child.kill().unwrap();
        a.child.wait().unwrap();
        let killed_at = effects(&fx);
        for n in 0..RUNS {
            let id = format!("r{n:02}");
            let r = api.until(&b, &id, |r| r["status"] == "pass").await;
            assert_eq!(r["result"], json!((1..=STEPS).sum::<u64>()), "{r}");
        }
        // Each step's side effect once; only a step of a run of A that
        // was in flight at the kill (one per run: its steps are
        // sequential) may have happened twice.
        let happened = effects(&fx);
        for n in 0..RUNS {
            let tag = format!("r{n:02}");
            let twice: Vec<u64> = (1..=STEPS)
                .filter(|i| {
                    let k = happened.get(&(tag.clone(), *i)).copied().unwrap_or(0);
                    assert!(k >= 1, "run {tag} step {i} never happened");
                    assert!(k <= 2, "run {tag} step {i} happened {k} times");
                    k == 2
                })
                .collect();
            if n % 3 != 0 {
                assert!(
                    twice.is_empty(),
                    "run {tag} of a live node repeated steps {twice:?}"
                );
            }
            assert!(twice.len() <= 1, "run {tag} repeated steps {twice:?}");
            // The one that ran twice was in flight at the kill: the last
            // whose effect had happened then, or the next (the killed
            // node's agent process outlives it and may finish its write).
            let last = (1..=STEPS)
                .filter(|i| killed_at.contains_key(&(tag.clone(), *i)))
                .max()
                .unwrap_or(0);
            for i in twice {
                assert!(
                    i == last || i == last + 1,
                    "run {tag} repeated step {i}; step {last} was the last begun at the kill"
                );
            }
        }
        // The run of A followed through B: every event once, ids 1..n.
        let seen = tokio::time::timeout(HANG, followed).await.unwrap().unwrap();
        let ids: Vec<i64> = seen.iter().map(|(id, _)| *id).collect();
        let want: Vec<i64> = (1..=ids.len() as i64).collect();
        assert_eq!(ids, want, "r00's events through B: {seen:?}");

        // SIGTERM drains node B: its runs stop `drained` and node C takes
        // them over without waiting for a lease.
        for n in 0..6 {
            let id = format!("d{n}");
            let new = json!({ "blueprint": "side", "id": id, "input": { "tag": id } });
            let got = api
                .call("POST", format!("{}/v1/runs", b.url), Some(new))
                .await;
            assert_eq!(got.0, 201, "{}", got.1);
        }
        let start = Instant::now();
        while (0..6).any(|n| !effects(&fx).contains_key(&(format!("d{n}"), 1))) {
            assert!(start.elapsed() < HANG, "hang guard");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: signals a child this test started and has not reaped.
        unsafe { libc::kill(b.child.id() as libc::pid_t, libc::SIGTERM) };
        let exit = tokio::task::block_in_place(|| b.child.wait()).unwrap();
        assert!(exit.success(), "node B's drain: {exit}");
        for n in 0..6 {
            let r = api
                .until(&c, &format!("d{n}"), |r| r["status"] == "pass")
                .await;
            assert_eq!(r["result"], json!((1..=STEPS).sum::<u64>()), "{r}");
        }
        let resumed = c.lines.lock().unwrap().join("\n");
        assert!(resumed.contains("resumed run d0"), "{resumed}");
        assert!(resumed.contains("drained"), "{resumed}");
    });
    let lines = |n: &Node| n.lines.lock().unwrap().join("\n");
    eprintln!("node B said:\n{}\nnode C said:\n{}", lines(&b), lines(&c));
}

/// A worker connected to one node takes the remote steps of a run that
/// another node executes: the work queue is in the database, a step
/// offered at A is claimed, heartbeated and settled through B (woken by
/// NOTIFY, not by a poll), a claimed step is never handed out again by
/// either, and the run at A passes with the worker's results.
#[test]
fn a_worker_at_one_node_takes_the_steps_of_a_run_at_another() {
    let Some(pg) = Postgres::start("queue") else {
        return;
    };
    let store = pg.database("swarm");
    let dir = scratch("postgres-queue");
    std::fs::write(
        dir.join("pair.lua"),
        "local swarm = require 'swarm'\n\
         return swarm.blueprint 'pair' {\n\
           agents = { gpu = swarm.agent.remote { queue = 'shared' } },\n\
           flow = function()\n\
             return swarm.parallel {\n\
               function() return swarm.step('gpu', { n = 1 }) end,\n\
               function() return swarm.step('gpu', { n = 2 }) end,\n\
             }\n\
           end,\n\
         }\n",
    )
    .unwrap();
    let (a, b) = (node(&dir, &store), node(&dir, &store));
    let token = |role: &str| {
        let out = swarm(&store)
            .args(["token", "--role", role])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let http = reqwest::Client::new();
    let op = Api {
        http: http.clone(),
        token: token("operator"),
    };
    let worker = Api {
        http,
        token: token("worker"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let new = json!({ "blueprint": "pair", "id": "pair" });
        let got = op
            .call("POST", format!("{}/v1/runs", a.url), Some(new))
            .await;
        assert_eq!(got.0, 201, "{}", got.1);
        let mut claims = Vec::new();
        for _ in 0..2 {
            let wait = json!({ "wait_ms": 60000 });
            let url = format!("{}/v1/queues/shared/claim", b.url);
            let (code, step) = worker.call("POST", url, Some(wait)).await;
            assert_eq!(code, 200, "{step}");
            assert_eq!(step["run"], "pair", "{step}");
            claims.push(step);
        }
        let url = format!("{}/v1/queues/shared/claim", a.url);
        let (code, none) = worker
            .call("POST", url, Some(json!({ "wait_ms": 300 })))
            .await;
        assert_eq!(code, 204, "a claimed step was handed out twice: {none}");
        for step in &claims {
            let claim = step["claim"].as_str().unwrap();
            let url = format!("{}/v1/claims/{claim}/heartbeat", b.url);
            assert_eq!(worker.call("POST", url, Some(json!({}))).await.0, 200);
            let n = step["input"]["n"].as_i64().unwrap();
            let result = json!({ "task": step["task"], "ok": true, "value": n * 10 });
            let url = format!("{}/v1/claims/{claim}/result", b.url);
            let (code, body) = worker.call("POST", url, Some(result.clone())).await;
            assert_eq!(code, 200, "{body}");
            let url = format!("{}/v1/claims/{claim}/result", a.url);
            let (code, again) = worker.call("POST", url, Some(result)).await;
            assert_eq!(
                (code, &again["code"]),
                (409, &json!("claim_done")),
                "{again}"
            );
        }
        let done = op.until(&a, "pair", |r| r["status"] != "running").await;
        assert_eq!(done["status"], "pass", "{done}");
        assert_eq!(done["result"], json!([10, 20]), "{done}");
    });
}
