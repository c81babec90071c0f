//! `swarm worker`: does the steps of remote agents for a `swarm serve`
//! elsewhere. Each of `concurrency` slots long-polls the server for a step
//! of its queue, runs the command with exactly the process-agent contract
//! (`spawn::process::execute`: stdin JSON, stdout JSON or NDJSON events,
//! stderr lines as events), streams the events back in order, and posts
//! the result.
//!
//! While a command runs, a heartbeat renews the claim's lease; the server
//! holds each heartbeat open until the claim ends or a third of the lease
//! has passed, so a cancelled step's command is killed at once. A claim
//! that ended (expired, cancelled), or a server no heartbeat has reached
//! for a whole lease, kills the command, and its result is not posted. The command dies with the worker (parent-death signal), so a
//! worker killed with SIGKILL leaves nothing running; its claims lapse and
//! other workers take the steps.

use crate::engine::Outcome;
use crate::engine::{OutputKind, TaskId};
use crate::spawn::ProcessSpec;
use crate::spawn::process::{self, Job, Sink};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long one claim request waits for a step on the server.
const CLAIM_WAIT: Duration = Duration::from_secs(20);
/// Events buffered while the server is slow; beyond it they are dropped.
const EVENT_BUFFER: usize = 4096;
/// Pause before trying an unreachable server again.
const BACKOFF: Duration = Duration::from_millis(500);

/// What a worker does, and where.
#[derive(Clone)]
pub struct WorkerOptions {
    /// The server's base URL, e.g. `http://127.0.0.1:7777`.
    pub server: String,
    pub queue: String,
    pub concurrency: usize,
    /// A worker-role bearer token (`swarm token --role worker`).
    pub token: Option<String>,
    /// The command; its `profile` comes with each step.
    pub spec: ProcessSpec,
    /// How the worker names itself in the run's events.
    pub name: String,
}

/// Why a worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the server refused the worker ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("bad --server URL `{0}`")]
    BadUrl(String),
}

/// A claimed step, as the server sends it.
#[derive(Deserialize)]
struct Claim {
    claim: String,
    task: u64,
    attempt: u32,
    agent: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    profile: Value,
    lease_ms: u64,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    opts: Arc<WorkerOptions>,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.opts.server.trim_end_matches('/'))
    }

    async fn post(&self, path: &str, body: &Value, wait: Duration) -> reqwest::Result<Reply> {
        let mut req = self
            .http
            .post(self.url(path))
            .json(body)
            .timeout(wait + Duration::from_secs(30));
        if let Some(t) = &self.opts.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?.to_vec();
        Ok(Reply { status, body })
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl Reply {
    fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// Works until a fatal refusal (bad token, wrong role) or `stop` fires.
pub async fn run(opts: WorkerOptions, stop: CancellationToken) -> Result<(), WorkerError> {
    if !opts.server.starts_with("http://") && !opts.server.starts_with("https://") {
        return Err(WorkerError::BadUrl(opts.server));
    }
    let client = Client {
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| WorkerError::BadUrl(e.to_string()))?,
        opts: Arc::new(opts),
    };
    let (fatal_tx, mut fatal) = mpsc::channel(1);
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..client.opts.concurrency.max(1) {
        let (c, stop, fatal_tx) = (client.clone(), stop.clone(), fatal_tx.clone());
        slots.spawn(async move {
            if let Err(e) = slot(&c, &stop).await {
                let _ = fatal_tx.send(e).await;
            }
        });
    }
    drop(fatal_tx);
    let outcome = tokio::select! {
        Some(e) = fatal.recv() => Err(e),
        _ = stop.cancelled() => Ok(()),
    };
    stop.cancel();
    slots.shutdown().await;
    outcome
}

/// One slot: claim, work, repeat.
async fn slot(c: &Client, stop: &CancellationToken) -> Result<(), WorkerError> {
    let path = format!("/v1/queues/{}/claim", c.opts.queue);
    let body = json!({ "worker": c.opts.name, "wait_ms": CLAIM_WAIT.as_millis() as u64 });
    loop {
        let reply = tokio::select! {
            r = c.post(&path, &body, CLAIM_WAIT) => r,
            _ = stop.cancelled() => return Ok(()),
        };
        match reply {
            Ok(r) if r.status == StatusCode::OK => match serde_json::from_slice::<Claim>(&r.body) {
                Ok(claim) => work(c, claim, stop).await,
                Err(e) => tracing::warn!("a claim the worker cannot read: {e}"),
            },
            Ok(r) if r.status == StatusCode::NO_CONTENT => {}
            Ok(r) if matches!(r.status.as_u16(), 400 | 401 | 403 | 404) => {
                return Err(WorkerError::Refused {
                    status: r.status.as_u16(),
                    message: r.message(),
                });
            }
            // Draining, restarting or unreachable: try again shortly.
            Ok(r) => {
                tracing::info!("server answered {}: {}", r.status, r.message());
                tokio::time::sleep(BACKOFF).await;
            }
            Err(e) => {
                tracing::info!("server unreachable: {e}");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Runs one claimed step and reports its result.
async fn work(c: &Client, claim: Claim, stop: &CancellationToken) {
    let cancel = stop.child_token();
    let lease = Duration::from_millis(claim.lease_ms.max(3));
    let beats = tokio::spawn(heartbeat(
        c.clone(),
        claim.claim.clone(),
        lease,
        cancel.clone(),
    ));
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let events = tokio::spawn(post_events(c.clone(), claim.claim.clone(), claim.task, rx));
    let sink: Sink = Arc::new(move |kind: OutputKind, data| {
        let _ = tx.try_send((kind, data));
    });
    let job = Job {
        task: TaskId(claim.task),
        attempt: claim.attempt,
        agent: claim.agent.into(),
        input: Arc::new(claim.input),
        profile: claim.profile,
        handle: None,
    };
    let outcome = process::execute(&c.opts.spec, &job, &sink, &cancel).await;
    drop(sink);
    let _ = events.await;
    beats.abort();
    let (value, ok) = match outcome {
        Ok(Outcome::Pass(v)) => (v, true),
        Ok(Outcome::Blocked(v)) => (v, false),
        Ok(Outcome::Cancelled | Outcome::Timeout | Outcome::Exited) => return,
        Err(e) => (json!({ "code": e.code(), "error": e.to_string() }), false),
    };
    let path = format!("/v1/claims/{}/result", claim.claim);
    let body = json!({ "task": claim.task, "ok": ok, "value": value });
    // Retried while the lease could still stand; the server fences a late one.
    let until = tokio::time::Instant::now() + lease;
    loop {
        match c.post(&path, &body, Duration::ZERO).await {
            Ok(r) if r.status.is_success() => return,
            Ok(r) if r.status.is_client_error() => {
                tracing::warn!("result of task {} refused: {}", claim.task, r.message());
                return;
            }
            _ if tokio::time::Instant::now() >= until => return,
            _ => tokio::time::sleep(BACKOFF.min(lease / 4)).await,
        }
    }
}

/// Renews the claim until it ends; cancels `cancel` (killing the command)
/// when the server says the claim is over, or when no heartbeat has got
/// through for a whole lease (the server is gone or unreachable: the
/// claim has lapsed there, and the step will be done again).
async fn heartbeat(c: Client, claim: String, lease: Duration, cancel: CancellationToken) {
    let path = format!("/v1/claims/{claim}/heartbeat");
    let wait = lease / 3;
    let body = json!({ "wait_ms": wait.as_millis() as u64 });
    let mut renewed = tokio::time::Instant::now();
    loop {
        let reply = tokio::time::timeout_at(renewed + lease, c.post(&path, &body, wait)).await;
        match reply {
            Ok(Ok(r)) if r.status.is_success() => renewed = tokio::time::Instant::now(),
            Ok(Ok(r)) if r.status.is_client_error() => {
                tracing::info!("claim {claim} ended: {}", r.message());
                break;
            }
            _ if renewed.elapsed() >= lease => {
                tracing::warn!("claim {claim}: no heartbeat got through for a lease; stopping");
                break;
            }
            _ => tokio::time::sleep(BACKOFF.min(wait)).await,
        }
    }
    cancel.cancel();
}

/// Sends the command's events in order, in batches.
async fn post_events(
    c: Client,
    claim: String,
    task: u64,
    mut rx: mpsc::Receiver<(OutputKind, Value)>,
) {
    let path = format!("/v1/claims/{claim}/events");
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let events: Vec<Value> = batch
            .drain(..)
            .map(|(kind, data)| json!({ "event": kind, "data": data }))
            .collect();
        let body = json!({ "task": task, "events": events });
        if let Ok(r) = c.post(&path, &body, Duration::ZERO).await
            && r.status.is_client_error()
        {
            // The claim is over: the rest has nowhere to go.
            return;
        }
    }
}
