//! `swarm worker --server URL --queue Q [--concurrency N] -- CMD ARGS…`:
//! does the steps of `swarm.agent.remote { queue = Q }` agents for a
//! server (see `crate::worker`). Stops on SIGTERM or SIGINT, killing the
//! commands it runs (their claims lapse and the steps are claimed again).

use crate::spawn::ProcessSpec;
use crate::worker::{self, WorkerOptions};
use clap::Args;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct WorkerArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7777")]
    server: String,
    /// The queue to claim steps from (an agent's `queue`).
    #[arg(long)]
    queue: String,
    /// Steps worked on at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// A worker token (`swarm token --role worker`); default $SWARM_TOKEN.
    #[arg(long)]
    token: Option<String>,
    /// Host variables the command may see besides the basic ones (PATH,
    /// HOME, LANG, ...), e.g. `--inherit OPENAI_API_KEY`. Repeatable.
    #[arg(long, value_name = "NAME")]
    inherit: Vec<String>,
    /// The command and its arguments (no shell), after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

pub fn run(args: WorkerArgs) -> ExitCode {
    let mut spec = ProcessSpec::new(args.cmd);
    spec.inherit = args.inherit;
    spec.die_with_parent = true;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    let opts = WorkerOptions {
        server: args.server,
        queue: args.queue,
        concurrency: args.concurrency.into(),
        token: args
            .token
            .or_else(|| std::env::var("SWARM_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        spec,
        name: format!("{host}:{}", std::process::id()),
    };
    super::runtime().block_on(async move {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                on_signal.cancel();
            }
        });
        errln!(
            "swarm worker: claiming from queue `{}` at {} ({} at a time)",
            opts.queue,
            opts.server,
            opts.concurrency
        );
        match worker::run(opts, stop).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                errln!("swarm worker: {e}");
                ExitCode::from(2)
            }
        }
    })
}
