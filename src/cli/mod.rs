//! The `swarm` command line. Flags are parsed here (clap) and each
//! subcommand lives in its own file.

mod bench;
mod check;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "swarm", version, about = "Host agent swarms scripted in Lua")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a blueprint's flow to the end.
    Run(run::RunArgs),
    /// Validate blueprints without running them.
    Check(check::CheckArgs),
    /// Print performance figures: `bench <workload> <figure> <value> <unit>`.
    Bench(bench::BenchArgs),
}

pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Logs go to stderr, filtered by `SWARM_LOG` (default `warn`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-thread tokio runtime for commands that need one.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
