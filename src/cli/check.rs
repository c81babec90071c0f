//! `swarm check FILE...`: validate blueprints without running them.
//! Every problem of every file is reported; exit status 2 if any.

use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig};
use crate::run::{self, BlueprintError, RunOptions};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct CheckArgs {
    /// Blueprint files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let rt = super::runtime();
    let _guard = rt.enter();
    let engine = Engine::new(EngineConfig::default(), Signer::random());
    let mut failed = 0;
    for file in &args.files {
        match run::prepare(&engine, file, RunOptions::default()) {
            Ok(r) => println!(
                "ok {} (blueprint `{}`, {} agents)",
                file.display(),
                r.blueprint.name,
                r.blueprint.agents.len()
            ),
            Err(run::RunError::Blueprint(BlueprintError::Invalid(problems))) => {
                failed += 1;
                for p in problems {
                    eprintln!("error: {p}");
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", file.display());
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} blueprints have errors", args.files.len());
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
