//! The `process` backend: any command as an agent.
//!
//! Contract with the process: stdin is one JSON document `{ task, attempt,
//! agent, input, profile }`; stdout is either one JSON value (the result) or
//! NDJSON events `{"event": "progress"|"partial"|"artifact", "data": ...}`
//! ending with `{"event": "final", "value": ..., "ok": true}`. Exit status 0
//! means pass, anything else blocked. Each stderr line becomes a `stderr`
//! event. The environment carries `SWARM_TASK_ID`, `SWARM_ATTEMPT`,
//! `SWARM_AGENT` and `SWARM_WORKER_HANDLE` (128 random bits, for processes
//! that call back later).
//!
//! The environment is clean: only the variables in [`ALLOWED_ENV`] pass
//! through from the host, plus the ones the blueprint names in `inherit`,
//! plus its own `env`, plus the `SWARM_*` task variables. The host's
//! secrets (`SWARM_SECRET`, API keys) never reach an agent unless a
//! blueprint asks for them by name.
//!
//! The process runs in its own process group: a timeout, a cancellation or
//! dropping the worker kills the whole group, and so does its exit once
//! what it wrote is read (a background child still holding its stdout is
//! given [`LEFTOVER_GRACE`], then killed). Only commands declared in a
//! blueprint run; Lua code cannot start processes.

use crate::engine::{Outcome, SpawnCtx, SpawnError, Spawner, Worker};
use crate::engine::{OutputKind, TaskId};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Host variables every process agent sees (when the host has them).
pub const ALLOWED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TERM",
    "TZ", "TMPDIR",
];

/// The process's whole environment, in one place (see the module doc).
fn environment(spec: &ProcessSpec) -> BTreeMap<String, String> {
    clean_env(&spec.inherit, &spec.env)
}

/// A started program's whole environment (process agents, MCP servers):
/// [`ALLOWED_ENV`] and `inherit` from the host, never its own secrets,
/// then `env`.
pub fn clean_env(inherit: &[String], env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = ALLOWED_ENV
        .iter()
        .copied()
        .chain(inherit.iter().map(String::as_str))
        // The host's own secrets never pass, whoever asked for them.
        .filter(|k| !super::secrets::NEVER.contains(k))
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect();
    out.extend(env.clone());
    out
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Program and arguments; no shell is involved.
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    /// Host variables passed through by name (e.g. `OPENAI_API_KEY`).
    pub inherit: Vec<String>,
    pub timeout: Option<Duration>,
    /// Bytes of stdout accepted before the process is killed.
    pub max_output: usize,
    /// The agent's profile (system prompt, model, ...), passed on stdin.
    pub profile: Value,
    /// Kill the process when the thread that started it dies, so a parent
    /// killed with SIGKILL (which runs no destructors) leaves none behind.
    /// It costs a `fork` instead of `posix_spawn` (ms in a large host), so
    /// only the small `swarm worker` process sets it.
    pub die_with_parent: bool,
}

impl ProcessSpec {
    pub fn new(argv: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            argv,
            cwd: None,
            env: BTreeMap::new(),
            inherit: Vec::new(),
            timeout: None,
            max_output: 16 << 20,
            profile: Value::Null,
            die_with_parent: false,
        }
    }
}

#[derive(Clone)]
pub struct ProcessAgent {
    spec: Arc<ProcessSpec>,
}

impl ProcessAgent {
    pub fn new(spec: ProcessSpec) -> ProcessAgent {
        ProcessAgent {
            spec: Arc::new(spec),
        }
    }
}

impl Spawner for ProcessAgent {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        Box::pin(run(self.spec.clone(), ctx))
    }
}

/// Kills the process group when dropped (timeout, cancel, abandoned worker,
/// or leftovers after a normal exit).
pub struct KillGroup(pub Option<u32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg has no memory-safety preconditions; a group that
            // is already gone yields ESRCH, which is fine to ignore.
            unsafe {
                libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

fn blocked(code: &str, error: String, extra: Value) -> Outcome {
    let mut v = json!({ "error": error, "code": code });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    Outcome::Blocked(v)
}

/// One attempt as its process sees it: the stdin document's fields and
/// the `SWARM_*` variables.
pub struct Job {
    pub task: TaskId,
    pub attempt: u32,
    pub agent: Arc<str>,
    pub input: Arc<Value>,
    pub profile: Value,
    /// `SWARM_WORKER_HANDLE`, for processes that call back later.
    pub handle: Option<String>,
}

/// Where a process's events (NDJSON lines, stderr lines) go.
pub type Sink = Arc<dyn Fn(OutputKind, Value) + Send + Sync>;

async fn run(spec: Arc<ProcessSpec>, ctx: SpawnCtx) -> Result<Outcome, SpawnError> {
    let handle = ctx.engine.worker_handle(&ctx.token)?;
    let job = Job {
        task: ctx.task,
        attempt: ctx.attempt,
        agent: ctx.agent.clone(),
        input: ctx.input.clone(),
        profile: spec.profile.clone(),
        handle: Some(handle),
    };
    let (engine, token) = (ctx.engine.clone(), ctx.token.clone());
    let sink: Sink = Arc::new(move |kind, data| {
        let _ = engine.emit(&token, kind, data);
    });
    execute(&spec, &job, &sink, &ctx.cancel).await
}

/// Runs `spec` for one attempt to its outcome: the process contract of the
/// module doc, here and in `swarm worker` alike. Cancelling `cancel` kills
/// the process group.
pub async fn execute(
    spec: &ProcessSpec,
    job: &Job,
    sink: &Sink,
    cancel: &CancellationToken,
) -> Result<Outcome, SpawnError> {
    let Some(program) = spec.argv.first() else {
        return Ok(blocked("spawn_failed", "empty command".into(), Value::Null));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(environment(spec))
        .env("SWARM_TASK_ID", job.task.0.to_string())
        .env("SWARM_ATTEMPT", job.attempt.to_string())
        .env("SWARM_AGENT", &*job.agent)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if spec.die_with_parent {
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only prctl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    if let Some(handle) = &job.handle {
        cmd.env("SWARM_WORKER_HANDLE", handle);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start `{program}`: {e}");
            return Ok(blocked("spawn_failed", msg, Value::Null));
        }
    };
    let _group = KillGroup(child.id());
    let stdin_doc = json!({
        "task": job.task.0, "attempt": job.attempt, "agent": &*job.agent,
        "input": &*job.input, "profile": job.profile,
    });
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = serde_json::to_vec(&stdin_doc).unwrap_or_default();
        // A process that never reads stdin must not block us.
        tokio::spawn(async move {
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let readers = async {
        tokio::join!(
            read_stdout(stdout, spec.max_output, sink),
            read_stderr(stderr, sink)
        )
    };
    let work = until_exit(&mut child, readers);
    let limit = spec.timeout.unwrap_or(Duration::MAX);
    let (out, err_tail, status) = tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => return Ok(Outcome::Cancelled),
        _ = tokio::time::sleep(limit) => return Ok(Outcome::Timeout),
    };
    let status = status.map_err(|e| SpawnError::Wait {
        program: program.to_string(),
        message: e.to_string(),
    })?;
    let stdout = match out {
        Some(Ok(o)) => o,
        Some(Err(too_big)) => return Ok(too_big),
        None => {
            let msg = "the process exited, but a process it started outside its group \
                       still holds its output open"
                .to_string();
            return Ok(blocked("output_held", msg, json!({ "stderr": err_tail })));
        }
    };
    Ok(outcome(status, stdout, err_tail))
}

/// How long output is still read after the process exited while something
/// it started holds its stdout or stderr open. Past that the group is killed
/// (what was written stays readable in the pipe); past [`ESCAPED_GRACE`]
/// after the kill (a holder that left the group), reading stops.
const LEFTOVER_GRACE: Duration = Duration::from_millis(500);
const ESCAPED_GRACE: Duration = Duration::from_secs(5);

/// Reads the process's output to its end, and waits for its exit. The
/// output ends at the latest [`LEFTOVER_GRACE`] after the exit: a process
/// that leaves a background child holding the pipes (`sleep 1000 &`) must
/// not hold the step until that child ends.
async fn until_exit<T>(
    child: &mut tokio::process::Child,
    readers: impl std::future::Future<Output = (T, String)>,
) -> (Option<T>, String, std::io::Result<std::process::ExitStatus>) {
    let pgid = child.id();
    tokio::pin!(readers);
    let status = tokio::select! {
        (out, err) = &mut readers => return (Some(out), err, child.wait().await),
        status = child.wait() => status,
    };
    if let Ok((out, err)) = tokio::time::timeout(LEFTOVER_GRACE, &mut readers).await {
        return (Some(out), err, status);
    }
    drop(KillGroup(pgid));
    match tokio::time::timeout(ESCAPED_GRACE, &mut readers).await {
        Ok((out, err)) => (Some(out), err, status),
        Err(_) => (None, String::new(), status),
    }
}

/// What stdout said: a final value from NDJSON events, or the whole text.
struct Stdout {
    final_value: Option<(Value, bool)>,
    plain: Vec<u8>,
}

async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    max: usize,
    sink: &Sink,
) -> Result<Stdout, Outcome> {
    let mut reader = BufReader::new(stdout);
    let mut out = Stdout {
        final_value: None,
        plain: Vec::new(),
    };
    let (mut line, mut total) = (Vec::new(), 0usize);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        if total > max {
            let msg = format!("stdout exceeded the output cap of {max} bytes");
            return Err(blocked("output_too_large", msg, Value::Null));
        }
        if !event_line(&line, sink, &mut out) {
            out.plain.extend_from_slice(&line);
        }
    }
    Ok(out)
}

/// Handles one NDJSON event line; false when the line is not an event.
fn event_line(line: &[u8], sink: &Sink, out: &mut Stdout) -> bool {
    let trimmed = line.trim_ascii();
    if !trimmed.starts_with(b"{") {
        return false;
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(trimmed) else {
        return false;
    };
    let Some(kind) = obj.get("event").and_then(Value::as_str) else {
        return false;
    };
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    match kind {
        "final" => {
            let ok = obj.get("ok").and_then(Value::as_bool).unwrap_or(true);
            let value = obj.get("value").cloned().unwrap_or(data);
            out.final_value = Some((value, ok));
        }
        other => match other.parse::<OutputKind>() {
            Ok(kind) => sink(kind, data),
            Err(_) => return false,
        },
    }
    true
}

/// Emits each stderr line as an event; returns the last few KiB. A line
/// longer than [`STDERR_LINE`] is cut into pieces of that size, so a
/// process that never writes a newline cannot grow the host's memory.
pub async fn read_stderr(stderr: impl AsyncRead + Unpin, sink: &Sink) -> String {
    const TAIL: usize = 4096;
    let mut reader = BufReader::new(stderr);
    let mut tail = String::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(STDERR_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        tail.push_str(&line);
        tail.push('\n');
        sink(OutputKind::Stderr, Value::String(line));
        if tail.len() > TAIL {
            let cut = tail.len() - TAIL;
            let cut = (cut..tail.len())
                .find(|&i| tail.is_char_boundary(i))
                .unwrap_or(0);
            tail.drain(..cut);
        }
    }
    tail
}

/// A bounded, quoted view of `bytes`: all of it when short, else its first
/// and last 120 bytes.
pub fn excerpt(bytes: &[u8]) -> String {
    const END: usize = 120;
    let text = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    if bytes.len() <= 2 * END + 20 {
        return text(bytes);
    }
    format!(
        "{} … ({} bytes) … {}",
        text(&bytes[..END]),
        bytes.len(),
        text(&bytes[bytes.len() - END..])
    )
}

/// Longest stderr line kept as one event.
const STDERR_LINE: usize = 8 << 10;

fn outcome(status: std::process::ExitStatus, stdout: Stdout, stderr: String) -> Outcome {
    let parsed = match stdout.final_value {
        Some(v) => Ok(v),
        None if stdout.plain.trim_ascii().is_empty() => Ok((Value::Null, true)),
        None => serde_json::from_slice::<Value>(stdout.plain.trim_ascii())
            .map(|v| (v, true))
            .map_err(|e| e.to_string()),
    };
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("process exited with status {c}"),
            None => format!("process was killed ({status})"),
        };
        let mut extra = json!({ "stderr": stderr });
        if let Ok((v, _)) = &parsed {
            extra["value"] = v.clone();
        }
        return blocked("exit_status", how, extra);
    }
    match parsed {
        Ok((v, true)) => Outcome::Pass(v),
        Ok((v, false)) => Outcome::Blocked(v),
        Err(e) => blocked(
            "bad_output",
            format!(
                "invalid JSON on stdout ({e}); stdout was: {}. stdout is reserved for the \
                 result (one JSON value, or NDJSON events): print diagnostics to stderr",
                excerpt(&stdout.plain)
            ),
            json!({ "stderr": stderr }),
        ),
    }
}
