//! `swarm repl [BLUEPRINT...] [--role operator|observer]`.

use crate::auth::Role;
use crate::repl::{self, Options};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ReplArgs {
    /// Blueprints to load (run them with `repl.run(name, input)`).
    blueprints: Vec<PathBuf>,
    /// The session's role.
    #[arg(long, default_value = "operator", value_parser = ["operator", "observer"])]
    role: String,
    /// Do not read or write the history file.
    #[arg(long)]
    no_history: bool,
}

pub fn run(args: ReplArgs) -> ExitCode {
    let role: Role = args.role.parse().expect("clap checked the role");
    let opts = Options {
        role,
        blueprints: args.blueprints,
        history: if args.no_history {
            None
        } else {
            repl::default_history()
        },
        engine: crate::engine::EngineConfig::default(),
    };
    match repl::main(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("swarm repl: {e}");
            ExitCode::from(2)
        }
    }
}
