//! The stdio transport of an MCP server: its child process and pipes.
//!
//! The server starts like a process agent (`spawn::process`): no shell, a
//! clean environment (`clean_env`: the allowed host variables, the ones the
//! blueprint inherits by name, its own `env`), its own process group,
//! killed as a group when the connection is dropped. Its stderr lines
//! become `stderr` events. Its stdout passes through a guard before the
//! SDK reads it: the SDK drops a line that is not JSON or is too long and
//! waits on, so a server that talks garbage would hang every call until
//! its timeout. The guard instead reports the first such line as a fault
//! (`mcp_protocol`, `too_large`), kills the server and ends the stream, so
//! the call in flight fails at once with that fault.

use super::{Fault, McpSpec};
use crate::engine::OutputKind;
use crate::spawn::process::{KillGroup, Sink, clean_env, excerpt, read_stderr};
use serde::de::IgnoredAny;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::watch;

/// A started server: the pipes the SDK speaks over, and the fault the
/// guard saw, if any.
pub(super) struct Pipes {
    pub reader: DuplexStream,
    pub writer: ChildStdin,
    pub faults: watch::Receiver<Option<Fault>>,
    pub child: ChildGuard,
}

/// Owns the child: dropping it kills the server's process group.
pub(super) struct ChildGuard {
    _group: KillGroup,
    _child: tokio::process::Child,
}

/// Starts the server of `spec`; its stderr lines go to `stderr`.
pub(super) fn start(spec: &McpSpec, stderr: Sink) -> Result<Pipes, Fault> {
    let Some(program) = spec.command.first() else {
        return Err(Fault::Start("empty command".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&spec.command[1..])
        .env_clear()
        .envs(clean_env(&spec.inherit, &spec.env))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Fault::Start(format!("cannot start `{program}`: {e}")))?;
    let group = KillGroup(child.id());
    let (stdout, writer, err) = match (child.stdout.take(), child.stdin.take(), child.stderr.take())
    {
        (Some(o), Some(i), Some(e)) => (o, i, e),
        _ => return Err(Fault::Start("the server's pipes are missing".into())),
    };
    tokio::spawn(async move { read_stderr(err, &stderr).await });
    let (to_sdk, reader) = tokio::io::duplex(64 << 10);
    let (tx, faults) = watch::channel(None);
    tokio::spawn(guard(stdout, to_sdk, spec.max_message, tx, child.id()));
    Ok(Pipes {
        reader,
        writer,
        faults,
        child: ChildGuard {
            _group: group,
            _child: child,
        },
    })
}

/// Passes the server's stdout on line by line while each line is JSON of
/// at most `max` bytes; at the first that is not, records the fault, kills
/// the server and ends the stream.
async fn guard(
    stdout: ChildStdout,
    mut to_sdk: DuplexStream,
    max: usize,
    faults: watch::Sender<Option<Fault>>,
    pgid: Option<u32>,
) {
    let mut reader = BufReader::with_capacity(64 << 10, stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(max as u64 + 2)
            .read_until(b'\n', &mut line)
            .await;
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
        let body = line.trim_ascii_end();
        let fault = if body.len() > max {
            Some(Fault::TooLarge(max))
        } else if body.trim_ascii_start().is_empty() {
            continue;
        } else if serde_json::from_slice::<IgnoredAny>(body).is_err() {
            let what = excerpt(body);
            Some(Fault::Protocol(format!(
                "a line on stdout is not a JSON-RPC message: {what} (stdout carries the \
                 protocol only; a server prints its diagnostics to stderr)"
            )))
        } else {
            None
        };
        if let Some(f) = fault {
            faults.send_replace(Some(f));
            drop(KillGroup(pgid));
            return;
        }
        let sent = async {
            to_sdk.write_all(body).await?;
            to_sdk.write_all(b"\n").await
        };
        if sent.await.is_err() {
            return;
        }
    }
}

/// Where a server's stderr lines go: the events of the step that called
/// it last, or the log when no step has.
pub(super) fn stderr_sink(route: Arc<dyn Fn() -> Option<Sink> + Send + Sync>, agent: &str) -> Sink {
    let agent = agent.to_string();
    Arc::new(move |kind: OutputKind, data| match route() {
        Some(sink) => sink(kind, data),
        None => tracing::debug!(agent = %agent, "mcp server stderr: {data}"),
    })
}
