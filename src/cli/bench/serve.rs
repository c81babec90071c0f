//! `serve`: the HTTP server in this process on a loopback port, driven by
//! a real HTTP client. Runs started per second (a one-step Rust-agent
//! blueprint, journal on, 64 requests in flight), and 1,000 SSE
//! subscribers on one run (every subscriber must see every event: a lost
//! event panics instead of printing a figure). And remote workers: the
//! protocol alone (claim → result over HTTP, per step of a sequential
//! flow), and `swarm worker`'s loop (in this process) running `cat`, beside
//! the same command as a local process agent.

use super::{line, peak_rss_mb};
use crate::auth::{Role, Signer};
use crate::engine::{Engine, EngineConfig};
use crate::reload::LiveBlueprints;
use crate::run::RunOptions;
use crate::serve::{Access, Server, auth};
use crate::store::{RunStatus, SqliteStore, Store, wait};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLUEPRINTS: &[(&str, &str)] = &[
    (
        "one.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "one" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input) return swarm.step("echo", input) end,
}
"#,
    ),
    (
        "many.lua",
        r#"local swarm = require "swarm"
return swarm.blueprint "many" {
  agents = { echo = swarm.agent.rust { name = "echo" } },
  flow = function(input)
    for i = 1, input.steps do swarm.step("echo", i) end
    return input.steps
  end,
}
"#,
    ),
];

/// The `cat` flow the worker figures compare, once per agent kind:
/// `NAME` becomes the blueprint's name, `AGENT` its agent.
const CAT_FLOW: &str = r#"local swarm = require "swarm"
return swarm.blueprint "NAME" {
  agents = { cat = AGENT },
  flow = function(input)
    for i = 1, input.steps do
      assert(swarm.step("cat", i).input == i, "step " .. i .. " came back wrong")
    end
    return input.steps
  end,
}
"#;

const CAT_AGENTS: &[(&str, &str)] = &[
    ("remote", r#"swarm.agent.remote { queue = "bench" }"#),
    ("local", r#"swarm.agent.process { cmd = { "cat" } }"#),
];

struct Bench {
    url: String,
    token: String,
    /// The server's token signer (the secret beside its journal).
    signer: Signer,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    engine: Engine,
}

async fn start_server() -> (Bench, std::path::PathBuf) {
    start_server_on(None).await
}

/// The server on `store` (a new SQLite journal when `None`).
async fn start_server_on(store: Option<Arc<dyn Store>>) -> (Bench, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("swarm-bench-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    for (file, body) in BLUEPRINTS {
        std::fs::write(dir.join(file), body).expect("bench blueprint");
    }
    for (name, agent) in CAT_AGENTS {
        let body = CAT_FLOW.replace("NAME", name).replace("AGENT", agent);
        std::fs::write(dir.join(format!("{name}.lua")), body).expect("bench blueprint");
    }
    let db = dir.join("swarm.db");
    let store: Arc<dyn Store> = match store {
        Some(s) => s,
        None => Arc::new(SqliteStore::open(&db).expect("journal")),
    };
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let opts = RunOptions {
        store: Some(store.clone()),
        wait_for_answers: true,
        ..RunOptions::default()
    };
    let dev = Arc::new(LiveBlueprints::new(engine.clone(), opts.clone()));
    dev.scan(&dir);
    let signer = auth::signer(&db).expect("secret");
    let token = auth::mint(&signer, Role::Operator, Duration::from_secs(3600), None);
    engine.board().open(Duration::from_secs(30));
    let server = Server::new(
        engine.clone(),
        store.clone(),
        dev,
        signer.clone(),
        Access::Tokens,
        opts,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = server.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = reqwest::Client::new();
    (
        Bench {
            url,
            token,
            signer,
            store,
            http,
            engine,
        },
        dir,
    )
}

impl Bench {
    async fn start(&self, blueprint: &str, input: Value, id: String) {
        let resp = self
            .http
            .post(format!("{}/v1/runs", self.url))
            .bearer_auth(&self.token)
            .json(&json!({ "blueprint": blueprint, "input": input, "id": id }))
            .send()
            .await
            .expect("start request");
        assert_eq!(resp.status().as_u16(), 201, "bench serve: a start failed");
    }

    /// Waits until every run has stopped, then checks each one passed.
    async fn all_passed(&self, n: usize) {
        let guard = Instant::now();
        while !wait(self.store.runs(Some(RunStatus::Running)))
            .expect("runs")
            .is_empty()
        {
            assert!(
                guard.elapsed() < Duration::from_secs(300),
                "bench serve: hang"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let runs = wait(self.store.runs(None)).expect("runs");
        assert!(runs.len() >= n, "bench serve: {} runs recorded", runs.len());
        let bad = runs.iter().find(|r| r.status != RunStatus::Pass);
        assert!(bad.is_none(), "bench serve: a run failed: {bad:?}");
    }

    /// The number of events one SSE subscriber reads before `end`.
    /// Connections are opened `connecting` at a time (a thousand SYNs at
    /// once overflow the listen backlog), then all stay open together.
    async fn subscribe(&self, run: &str, connecting: &tokio::sync::Semaphore) -> usize {
        let permit = connecting.acquire().await.expect("semaphore");
        let resp = self
            .http
            .get(format!("{}/v1/runs/{run}/events", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("events request");
        drop(permit);
        let mut body = resp.bytes_stream();
        let (mut text, mut events) = (String::new(), 0);
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("events body")));
            let mut used = 0;
            while let Some(at) = text[used..].find("\n\n") {
                let block = &text[used..used + at];
                if block.contains("event: end") {
                    return events;
                }
                events += usize::from(block.starts_with("id:"));
                used += at + 2;
            }
            text.drain(..used);
        }
        panic!("bench serve: an event stream ended without `end`");
    }
}

pub async fn serve() {
    let (b, dir) = start_server().await;
    worker_overhead(&b).await;
    let n = 2000;
    let start = Instant::now();
    let starts = (0..n).map(|i| b.start("one", json!(i), format!("r{i}")));
    futures_util::stream::iter(starts)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let started = start.elapsed();
    b.all_passed(n).await;
    line(
        "serve",
        "runs_started_per_s",
        n as f64 / started.as_secs_f64(),
        "runs/s",
    );
    line(
        "serve",
        "runs_finished_per_s",
        n as f64 / start.elapsed().as_secs_f64(),
        "runs/s",
    );

    b.start("many", json!({ "steps": 200 }), "sse".into()).await;
    let subscribers = 1000;
    let start = Instant::now();
    let connecting = tokio::sync::Semaphore::new(100);
    let counts: Vec<usize> =
        futures_util::future::join_all((0..subscribers).map(|_| b.subscribe("sse", &connecting)))
            .await;
    let total = wait(b.store.event_tail("sse", 1)).expect("event count").0 as usize;
    let lost: usize = counts.iter().map(|c| total.abs_diff(*c)).sum();
    assert!(
        total > 200,
        "bench serve: the SSE run wrote only {total} events"
    );
    assert_eq!(lost, 0, "bench serve: SSE subscribers lost events");
    line(
        "serve",
        "ms_1000_sse_subscribers_to_end",
        start.elapsed().as_secs_f64() * 1e3,
        "ms",
    );
    line("serve", "sse_events_per_subscriber", total as f64, "events");
    line("serve", "sse_lost_events", lost as f64, "events");
    line("serve", "peak_rss", peak_rss_mb(), "MB");
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs started per second through the server on `store` (as `serve`'s
/// own figure: a one-step blueprint, 64 requests in flight), each
/// checked to pass; run ids fresh, so a shared database may be reused.
pub(super) async fn runs_started(workload: &str, figure: &str, store: Arc<dyn Store>) {
    let (b, dir) = start_server_on(Some(store)).await;
    let (n, tag) = (1000, format!("b{:08x}-", rand::random::<u32>()));
    let start = Instant::now();
    let starts = (0..n).map(|i| b.start("one", json!(i), format!("{tag}{i}")));
    futures_util::stream::iter(starts)
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let started = start.elapsed();
    let guard = Instant::now();
    loop {
        let runs = wait(b.store.runs(None)).expect("runs");
        let mine: Vec<_> = runs.iter().filter(|r| r.id.starts_with(&tag)).collect();
        if mine.len() == n && mine.iter().all(|r| r.status.is_finished()) {
            let bad = mine.iter().find(|r| r.status != RunStatus::Pass);
            assert!(bad.is_none(), "bench {workload}: a run failed: {bad:?}");
            break;
        }
        assert!(
            guard.elapsed() < Duration::from_secs(300),
            "bench {workload}: hang"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    line(workload, figure, n as f64 / started.as_secs_f64(), "runs/s");
    let _ = std::fs::remove_dir_all(dir);
}

/// Waits for run `id` to end and checks it passed.
async fn passed(b: &Bench, id: &str) {
    let guard = Instant::now();
    loop {
        let run = wait(b.store.run(id)).expect("run").expect("recorded");
        if run.status != RunStatus::Running {
            assert_eq!(run.status, RunStatus::Pass, "bench serve: {run:?}");
            return;
        }
        assert!(
            guard.elapsed() < Duration::from_secs(300),
            "bench serve: hang"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Per-step time of `steps` sequential steps of `blueprint` (checked).
async fn per_step_us(b: &Bench, blueprint: &str, steps: u32) -> f64 {
    let start = Instant::now();
    b.start(blueprint, json!({ "steps": steps }), blueprint.into())
        .await;
    passed(b, blueprint).await;
    start.elapsed().as_secs_f64() * 1e6 / f64::from(steps)
}

fn worker_token(b: &Bench) -> String {
    auth::mint(&b.signer, Role::Worker, Duration::from_secs(3600), None)
}

/// A worker's side of the protocol without a command: claim, post the
/// result the flow checks, repeat, for `steps` steps.
async fn hand_worker(b: &Bench, token: &str, steps: u32) {
    let post = |path: String, body: Value| {
        b.http
            .post(format!("{}{path}", b.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    for _ in 0..steps {
        let claim = post("/v1/queues/bench/claim".into(), json!({ "wait_ms": 30000 }))
            .await
            .expect("claim");
        assert_eq!(
            claim.status().as_u16(),
            200,
            "bench serve: no step to claim"
        );
        let c: Value = claim.json().await.expect("claim body");
        let claim = c["claim"].as_str().unwrap_or_default();
        let body = json!({ "task": c["task"], "ok": true, "value": { "input": c["input"] } });
        let done = post(format!("/v1/claims/{claim}/result"), body)
            .await
            .expect("result");
        assert_eq!(done.status().as_u16(), 200, "bench serve: result refused");
    }
}

/// The remote-worker figures (see the module doc).
async fn worker_overhead(b: &Bench) {
    let token = worker_token(b);
    let steps = 1000;
    let start = Instant::now();
    let ((), ()) = tokio::join!(
        b.start("remote", json!({ "steps": steps }), "remote-hand".into()),
        hand_worker(b, &token, steps)
    );
    passed(b, "remote-hand").await;
    let protocol = start.elapsed().as_secs_f64() * 1e6 / f64::from(steps);
    line(
        "serve",
        "worker_claim_to_result_per_step_us",
        protocol,
        "us",
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let opts = crate::worker::WorkerOptions {
        server: b.url.clone(),
        queue: "bench".into(),
        concurrency: 1,
        token: Some(token),
        spec: crate::spawn::ProcessSpec::new(vec!["cat".into()]),
        name: "bench".into(),
    };
    let worker = tokio::spawn(crate::worker::run(opts, stop.clone()));
    let steps = 200;
    let local = per_step_us(b, "local", steps).await;
    let remote = per_step_us(b, "remote", steps).await;
    let queue = crate::spawn::queue_of(Some(&b.store), b.engine.board());
    assert!(
        wait(queue.waiting()).expect("the work queue").is_empty(),
        "bench serve: steps left on the queue"
    );
    stop.cancel();
    let _ = worker.await;
    line("serve", "cat_step_local_process_us", local, "us");
    line("serve", "cat_step_swarm_worker_us", remote, "us");
}
