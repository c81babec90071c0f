//! The `swarm` command line. Flags are parsed here (clap) and each
//! subcommand lives in its own file.

/// `println!` for command output: when the reader has gone (`swarm runs |
/// head`), the command ends quietly, as other command-line tools do.
macro_rules! outln {
    () => { $crate::cli::write_out(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*)) };
}

mod bench;
mod check;
mod dev;
mod repl;
mod run;
mod runs;

use crate::store::{SqliteStore, Store, default_path};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Hot-reload development: watch blueprints, keep the last good version live.
    Dev(dev::DevArgs),
    /// An interactive Lua session on a live engine.
    Repl(repl::ReplArgs),
    /// List journaled runs.
    Runs(runs::RunsArgs),
    /// Show one run: its journal and events.
    Show(runs::ShowArgs),
    /// Continue an interrupted or waiting run from its journal.
    Resume(run::ResumeArgs),
    /// Answer a run's pending senior question.
    Answer(runs::AnswerArgs),
    /// Cancel a run.
    Cancel(runs::CancelArgs),
    /// Print performance figures: `bench <workload> <figure> <value> <unit>`.
    Bench(bench::BenchArgs),
}

/// Where the journal is (`--db`, else `$SWARM_DB`, else `.swarm/swarm.db`).
#[derive(Args, Clone)]
pub struct Journaling {
    /// The journal database.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Run in memory only: nothing is journaled, nothing can be resumed.
    #[arg(long)]
    no_journal: bool,
}

/// Opens the journal (unless `--no-journal`) and marks runs whose process
/// is gone as interrupted.
pub(crate) fn open_store(
    j: &Journaling,
) -> Result<Option<Arc<dyn Store>>, crate::store::StoreError> {
    if j.no_journal {
        return Ok(None);
    }
    let path = j.db.clone().unwrap_or_else(default_path);
    let store = SqliteStore::open(&path)?;
    for id in store.mark_interrupted()? {
        eprintln!(
            "note: run {id} was interrupted (its process is gone); `swarm resume {id}` continues it"
        );
    }
    Ok(Some(Arc::new(store)))
}

pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Repl(args) => repl::run(args),
        Command::Runs(args) => runs::list(args),
        Command::Show(args) => runs::show(args),
        Command::Resume(args) => run::resume(args),
        Command::Answer(args) => runs::answer(args),
        Command::Cancel(args) => runs::cancel(args),
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

/// Writes one line of command output (see `outln!`).
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing output: {e}");
            std::process::exit(1);
        }
    }
}

/// A multi-thread tokio runtime for commands that need one.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
