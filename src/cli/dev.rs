//! `swarm dev DIR|FILE [--run NAME]`: hot-reload development.
//!
//! Loads every blueprint, then watches. One calm line per reload: name,
//! version, time taken; errors marked and the last good version kept. With
//! `--run NAME`, each successful reload of NAME runs its flow again (the
//! previous re-run is cancelled if still going) and prints the result.

use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig};
use crate::reload::{LiveBlueprints, Reload, Watch};
use crate::run::service::Authority;
use crate::run::{RunOptions, Runs};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct DevArgs {
    /// A directory of blueprints, or one blueprint file.
    target: PathBuf,
    /// Re-run this blueprint's flow after each successful reload.
    #[arg(long, value_name = "NAME")]
    run: Option<String>,
    /// Input for `--run`: JSON text, or @path to a JSON file.
    #[arg(long)]
    input: Option<String>,
    /// Debounce window in milliseconds.
    #[arg(long, default_value_t = 50)]
    debounce_ms: u64,
}

pub(super) fn say(r: &Reload) {
    match r {
        Reload::Loaded {
            name,
            path,
            version,
            ms,
        } => {
            errln!(
                "✓ {name} v{version} ({}) live in {ms:.1} ms",
                path.display()
            )
        }
        Reload::Failed { error, kept, .. } => {
            let kept = kept.map_or("nothing live".to_string(), |v| format!("keeping v{v}"));
            errln!("✗ {error} ({kept})");
        }
        Reload::Unloaded { name, path } => {
            errln!("– {name} unloaded ({} was deleted)", path.display())
        }
    }
}

pub fn run(args: DevArgs) -> ExitCode {
    let input = match super::run::parse_input(args.input.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            errln!("swarm dev: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.target.exists() {
        errln!("swarm dev: {} does not exist", args.target.display());
        return ExitCode::from(2);
    }
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::from_env());
        let opts = RunOptions {
            print: Some(Arc::new(|line: &str| errln!("{line}"))),
            ..RunOptions::default()
        };
        let runs = Runs::new(engine.clone(), None);
        let dev = Arc::new(LiveBlueprints::new(engine, opts));
        let mut rerun: Option<Rerun> = None;
        let initial = dev.scan(&args.target);
        initial.iter().for_each(say);
        let mut watch = match Watch::start(
            dev.clone(),
            &args.target,
            Duration::from_millis(args.debounce_ms),
        ) {
            Ok(w) => w,
            Err(e) => {
                errln!("swarm dev: {e}");
                return ExitCode::from(2);
            }
        };
        let wanted = match args.run.as_deref().map(|w| resolve(&dev, w)).transpose() {
            Ok(w) => w,
            Err(msg) => {
                errln!("swarm dev: {msg}");
                return ExitCode::from(2);
            }
        };
        errln!("watching {} (Ctrl-C to stop)", args.target.display());
        if let Some(name) = &wanted {
            rerun = Some(spawn_run(&runs, dev.clone(), name.clone(), input.clone()));
        }
        // One listener for the whole session: a Ctrl-C between two reloads
        // is not missed.
        let mut sigint =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        loop {
            tokio::select! {
                r = watch.reloads.recv() => {
                    let Some(r) = r else { break };
                    say(&r);
                    if let (Reload::Loaded { name, .. }, Some(want)) = (&r, &wanted)
                        && name == want
                    {
                        if let Some(old) = rerun.take() {
                            old.stop(&runs);
                        }
                        rerun = Some(spawn_run(&runs, dev.clone(), name.clone(), input.clone()));
                    }
                }
                Some(()) = async { sigint.as_mut()?.recv().await } => break,
            }
        }
        ExitCode::SUCCESS
    })
}

/// The blueprint `--run` means: a loaded blueprint's name, or the file it
/// was loaded from (`--run review.lua`). Anything else is refused with the
/// names that are loaded.
fn resolve(dev: &LiveBlueprints, want: &str) -> Result<String, String> {
    if dev.live(want).is_some() {
        return Ok(want.to_string());
    }
    let versions = dev.versions();
    let by_file = versions
        .iter()
        .find(|v| v.path.ends_with(want) || v.path.file_name().is_some_and(|f| f == want));
    if let Some(v) = by_file {
        return Ok(v.name.clone());
    }
    let mut names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    Err(format!(
        "--run {want}: no blueprint of that name or file is loaded (loaded: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// The run of the live version, while a newer version may replace it.
struct Rerun {
    key: Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Rerun {
    /// Stops the run (its steps are cancelled) and forgets its result.
    fn stop(self, runs: &Runs) {
        self.task.abort();
        if let Some(key) = self.key.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = runs.interrupt(&Authority::local(), &key);
        }
    }
}

/// Runs the live version of `name` and prints its result.
fn spawn_run(
    runs: &Arc<Runs>,
    dev: Arc<LiveBlueprints>,
    name: String,
    input: serde_json::Value,
) -> Rerun {
    let key = Arc::new(std::sync::Mutex::new(None));
    let (runs, slot) = (runs.clone(), key.clone());
    let task = tokio::spawn(async move {
        let version = dev.live(&name).map_or(0, |v| v.version);
        let who = Authority::local();
        let started = match dev.prepare(&name) {
            Ok(run) => runs.start_prepared(&who, run, input).await,
            Err(e) => Err(e),
        };
        let run = match started {
            Ok(h) => h,
            Err(e) => return errln!("✗ {e}"),
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(run.key.clone());
        match run.finished().await {
            Ok(report) => {
                let text = serde_json::to_string(&report.result).unwrap_or_default();
                outln!("{name} v{version} → {} {text}", report.status);
            }
            Err(e) => errln!("✗ {name} v{version}: {e}"),
        }
    });
    Rerun { key, task }
}
