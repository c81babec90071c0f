//! `swarm mcp [DIR]`: this host as an MCP server over stdio, for a coding
//! agent to register in one line (`claude mcp add swarm -- swarm mcp
//! ./blueprints`). The caller is whoever started the process, so it acts
//! as the local operator. stdout carries the protocol only: everything
//! else (reloads, Lua `print`, notes) goes to stderr.

use super::Db;
use super::dev::say;
use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig};
use crate::reload::{LiveBlueprints, Watch};
use crate::run::{RunOptions, Runs};
use crate::serve::mcp::{McpFace, serve_stdio};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct McpArgs {
    /// The directory of blueprints offered as `run_<name>` tools.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Reload blueprints when their files change (as `swarm dev`).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    journal: Db,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("swarm mcp: {message}");
    ExitCode::from(2)
}

pub fn run(args: McpArgs) -> ExitCode {
    if !args.dir.is_dir() {
        return fail(format!("{} is not a directory", args.dir.display()));
    }
    let (store, at) = match args.journal.open_to_write(true) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::random());
        let opts = RunOptions {
            store: Some(store.clone()),
            wait_for_answers: true,
            print: Some(Arc::new(|line: &str| eprintln!("{line}"))),
            ..RunOptions::default()
        };
        let live = Arc::new(LiveBlueprints::new(engine.clone(), opts.clone()));
        live.scan(&args.dir).iter().for_each(say);
        let mut watch = match args.watch {
            true => match Watch::start(live.clone(), &args.dir, Duration::from_millis(50)) {
                Ok(w) => Some(w),
                Err(e) => return fail(e),
            },
            false => None,
        };
        let runs = Runs::releasing(engine, Some(store));
        eprintln!(
            "swarm mcp: serving {} over stdio (journal {at})",
            args.dir.display()
        );
        let face = McpFace::new(runs.clone(), live, opts);
        let reloads = async {
            loop {
                match watch.as_mut() {
                    Some(w) => match w.reloads.recv().await {
                        Some(r) => say(&r),
                        None => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            }
        };
        let served = tokio::select! {
            r = serve_stdio(face) => r,
            () = reloads => Ok(()),
        };
        // The client is gone: runs still executing stop resumable.
        let left = runs.drain(Duration::from_secs(10)).await;
        for id in left {
            eprintln!("swarm mcp: run {id} had not stopped; it is resumable once its lease lapses");
        }
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}
