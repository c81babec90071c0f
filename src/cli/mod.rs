//! The `swarm` command line. Flags are parsed here (clap) and each
//! subcommand lives in its own file.

/// `println!` for command output: when the reader has gone (`swarm runs |
/// head`), the command ends quietly, as other command-line tools do.
/// Every line passes through `text::for_terminal`: agents, models and flows
/// control much of what is printed, and none of it may move the cursor.
macro_rules! outln {
    () => { $crate::cli::write_out(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::write_out(format_args!($($arg)*)) };
}

/// `eprintln!` with the line escaped for the terminal (see `outln!`).
macro_rules! errln {
    ($($arg:tt)*) => {
        eprintln!("{}", $crate::text::for_terminal(&format!($($arg)*)))
    };
}

mod bench;
mod check;
mod dev;
mod doctor;
mod fork;
mod init;
mod mcp;
mod mob;
mod repl;
mod replay;
mod run;
mod runs;
mod send;
mod serve;
mod show;
mod transfer;
mod upgrade;
mod worker;

use crate::store::{Location, Store, StoreError};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "swarm",
    version,
    about = "Host agent swarms scripted in Lua",
    after_help = STORES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Write the host's own diagnostics here (level: $SWARM_LOG, default
    /// warn). Without it they are shown only when $SWARM_LOG is set.
    #[arg(long, global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
}

/// How every command that opens a journal finds it (`swarm --help`).
const STORES: &str = "\
Stores: every command that reads or writes runs opens one store, named by
  --store URL      sqlite:PATH (a bare path is one too), or memory: (this
                   process only: nothing survives it, nothing to resume)
                   or postgres://user@host:port/db (many hosts, one database)
  --db PATH        shorthand for --store sqlite:PATH
  $SWARM_STORE     a URL, used when neither flag is given
  $SWARM_DB        a path, used when none of the above is
and otherwise the nearest .swarm/swarm.db from the current directory
upward (`swarm run` creates ./.swarm/swarm.db when there is none).";

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
    Show(show::ShowArgs),
    /// Continue an interrupted or waiting run from its journal.
    Resume(run::ResumeArgs),
    /// A new run from any step of a recorded one, reusing what is unchanged.
    Fork(fork::ForkArgs),
    /// Check journals against a blueprint, dispatching nothing.
    Replay(replay::ReplayArgs),
    /// Print a run (record, journal, questions) as one JSON document.
    Export(transfer::ExportArgs),
    /// Record a run that `swarm export` wrote.
    Import(transfer::ImportArgs),
    /// Move stopped runs to their blueprint as it is now, when replay allows.
    Upgrade(upgrade::UpgradeArgs),
    /// Answer a run's pending senior question.
    Answer(runs::AnswerArgs),
    /// Cancel a run.
    Cancel(runs::CancelArgs),
    /// Send a message into a run (the flow's `swarm.recv(topic)`).
    Send(send::SendArgs),
    /// Mobs (`swarm.mob`): `list`, `show NAME`.
    Mob(mob::MobArgs),
    /// Delete finished runs (default: older than 30 days) and reclaim space.
    Prune(runs::PruneArgs),
    /// Check the journal's health and say what to do about problems.
    Doctor(doctor::DoctorArgs),
    /// Serve runs over HTTP: start, watch (SSE), answer, cancel, resume.
    Serve(serve::ServeArgs),
    /// Serve runs to MCP clients over stdio (`claude mcp add swarm -- swarm mcp DIR`).
    Mcp(mcp::McpArgs),
    /// Mint a bearer token for `swarm serve`.
    Token(serve::TokenArgs),
    /// Do remote agents' steps for a server: `swarm worker --queue Q -- CMD`.
    Worker(worker::WorkerArgs),
    /// Print performance figures: `bench <workload> <figure> <value> <unit>`.
    Bench(bench::BenchArgs),
    /// Start a project: a starter blueprint, a sample agent, editor setup.
    Init(init::InitArgs),
    /// Write the LuaLS type stubs for editors and print where.
    Stubs(init::StubsArgs),
}

/// Which store to open: the one place that answers which flag or
/// variable wins (`--store`, `--db`, `$SWARM_STORE`, `$SWARM_DB`, then
/// the nearest `.swarm/swarm.db` upward). See [`Db::resolve`].
#[derive(Args, Clone)]
pub struct Db {
    /// The store: `sqlite:PATH` (a bare path is one too), `memory:` or
    /// `postgres://user@host:port/db`.
    /// Without it: --db, else $SWARM_STORE, else $SWARM_DB, else the
    /// nearest .swarm/swarm.db from here upward.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The journal database file (shorthand for --store sqlite:PATH).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

/// How `run` and `resume` journal: as [`Db`], or not at all.
#[derive(Args, Clone)]
pub struct Journaling {
    #[command(flatten)]
    db: Db,
    /// Run in memory only: nothing is journaled, nothing can be resumed.
    #[arg(long)]
    no_journal: bool,
}

/// A variable's value, unset when empty (`SWARM_STORE= swarm runs`).
fn env_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

impl Db {
    /// Where the store is: `--store`, else `--db`, else `$SWARM_STORE`,
    /// else `$SWARM_DB`, else the nearest `.swarm/swarm.db` from the
    /// current directory upward (as git finds `.git`). With `create`, a
    /// missing journal is to be made in `./.swarm/` (only `swarm run`
    /// creates one); without, none found is an error saying where it
    /// looked.
    pub(crate) fn resolve(&self, create: bool) -> Result<Location, StoreError> {
        if let Some(url) = &self.store {
            return Location::parse(url);
        }
        if let Some(p) = &self.db {
            return Ok(Location::Sqlite(p.clone()));
        }
        if let Some(url) = env_var("SWARM_STORE") {
            return Location::parse(&url.to_string_lossy()).map_err(|e| match e {
                StoreError::Unsupported { url, message } => StoreError::Unsupported {
                    url,
                    message: format!("{message} (from $SWARM_STORE)"),
                },
                e => e,
            });
        }
        if let Some(p) = env_var("SWARM_DB") {
            return Ok(Location::Sqlite(PathBuf::from(p)));
        }
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let found = here
            .ancestors()
            .map(|d| d.join(".swarm").join("swarm.db"))
            .find(|p| p.is_file());
        match found {
            Some(p) => Ok(Location::Sqlite(p)),
            None if create => Ok(Location::Sqlite(PathBuf::from(".swarm/swarm.db"))),
            None => Err(StoreError::Open {
                path: here.join(".swarm").display().to_string(),
                message: "no journal here or in any parent directory (`swarm run` creates \
                          one in ./.swarm/; --store, --db, $SWARM_STORE or $SWARM_DB name another)"
                    .into(),
            }),
        }
    }

    /// The SQLite journal's file, for what needs one (the server's
    /// signing key lives beside it): a store that is not SQLite is an
    /// error saying so.
    pub(crate) fn locate(&self, create: bool) -> Result<PathBuf, StoreError> {
        let at = self.resolve(create)?;
        match at.sqlite_path() {
            Some(p) => Ok(p.to_path_buf()),
            None => Err(StoreError::Open {
                path: format!("`{at}`"),
                message: "this command needs a SQLite journal file \
                          (--store sqlite:PATH or --db PATH)"
                    .into(),
            }),
        }
    }

    /// Opens the store of runs that exist: read-write, or read-only
    /// where a SQLite file cannot be written (then `runs` and `show`
    /// still work). Runs whose owner is gone are marked interrupted.
    pub(crate) fn open(&self) -> Result<(Arc<dyn Store>, Location), StoreError> {
        let at = self.resolve(false)?;
        let (store, read_only) = at.open_for_reading()?;
        if !read_only {
            sweep(&*store)?;
        }
        Ok((store, at))
    }

    /// Opens the store to execute runs in (`run`, `serve`): read-write,
    /// made when `create` and none is found; runs whose owner is gone
    /// are marked interrupted.
    pub(crate) fn open_to_write(
        &self,
        create: bool,
    ) -> Result<(Arc<dyn Store>, Location), StoreError> {
        let at = self.resolve(create)?;
        Ok((opened(at.open()?)?, at))
    }
}

/// Opens the journal for `run`/`resume` (unless `--no-journal`); `create`
/// makes one when none is found.
pub(crate) fn open_store(
    j: &Journaling,
    create: bool,
) -> Result<Option<Arc<dyn Store>>, StoreError> {
    if j.no_journal {
        return Ok(None);
    }
    Ok(Some(j.db.open_to_write(create)?.0))
}

/// A duration flag: `250ms`, `90s`, `10m`, `1h`, `30d`. A unit is required
/// here, so `--lease 30` is not read as 30 milliseconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if !s.trim().ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("`{s}`: give a unit: ms, s, m, h or d"));
    }
    let ms = crate::duration::parse_ms(s)?;
    Ok(std::time::Duration::from_secs_f64(ms / 1000.0))
}

/// `store`, once runs whose owner is gone are marked interrupted.
fn opened(store: Arc<dyn Store>) -> Result<Arc<dyn Store>, StoreError> {
    sweep(&*store)?;
    Ok(store)
}

fn sweep(store: &dyn Store) -> Result<(), StoreError> {
    for id in crate::store::wait(store.mark_interrupted())? {
        errln!(
            "note: run {id} was interrupted (its owner is gone); `swarm resume {id}` continues it"
        );
    }
    Ok(())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing(cli.log_file.as_deref()) {
        errln!("error: --log-file: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Token(args) => serve::token(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Repl(args) => repl::run(args),
        Command::Runs(args) => runs::list(args),
        Command::Show(args) => show::show(args),
        Command::Resume(args) => run::resume(args),
        Command::Fork(args) => fork::fork(args),
        Command::Replay(args) => replay::replay(args),
        Command::Export(args) => transfer::export(args),
        Command::Import(args) => transfer::import(args),
        Command::Upgrade(args) => upgrade::upgrade(args),
        Command::Answer(args) => runs::answer(args),
        Command::Cancel(args) => runs::cancel(args),
        Command::Send(args) => send::send(args),
        Command::Mob(args) => mob::run(args),
        Command::Prune(args) => runs::prune(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Init(args) => init::init(args),
        Command::Stubs(args) => init::stubs(args),
    }
}

/// The host's diagnostics (lock-hold warnings, swept sessions) are for
/// whoever runs the host, not for the user's terminal: they go to
/// `--log-file` (level `$SWARM_LOG`, default `warn`), or to stderr only when
/// `$SWARM_LOG` is set. So they never land in the middle of `swarm run`'s
/// progress line or its output.
fn init_tracing(file: Option<&std::path::Path>) -> std::io::Result<()> {
    let level = std::env::var("SWARM_LOG").ok();
    let filter = |default: &str| {
        tracing_subscriber::EnvFilter::try_new(level.as_deref().unwrap_or(default))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    let builder = tracing_subscriber::fmt();
    let _ = match (file, &level) {
        (Some(path), _) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            builder
                .with_env_filter(filter("warn"))
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
        }
        (None, Some(_)) => builder
            .with_env_filter(filter("warn"))
            .with_writer(std::io::stderr)
            .try_init(),
        (None, None) => return Ok(()),
    };
    Ok(())
}

/// Prints a run's error on stderr the one way every command does: each
/// blueprint problem on its own `error:` line, anything else as one.
pub(crate) fn report_error(e: &crate::run::RunError) {
    use crate::run::{BlueprintError, RunError};
    match e {
        RunError::Blueprint(BlueprintError::Invalid(problems)) => {
            for p in problems {
                errln!("error: {p}");
            }
        }
        other => errln!("error: {other}"),
    }
}

/// Writes one line of command output (see `outln!`).
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = args.to_string();
    let line = crate::text::for_terminal(&line);
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"));
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            errln!("error: writing output: {e}");
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
