//! `swarm fork RUN`: a new run from any step of a recorded one. The new
//! run replays the source's journal up to a position (optionally with
//! results edited), runs live from there on the blueprint as it is now,
//! and reuses the source's results past it where a call asks exactly what
//! the source recorded (see `run::fork`). Prints and exits as `swarm run`.

use super::Db;
use super::run::{Output, execute, options, parse_input};
use crate::auth::Signer;
use crate::engine::{Engine, EngineConfig};
use crate::run::service::Authority;
use crate::run::{ForkRequest, Runs};
use clap::{Args, ValueEnum};
use std::process::ExitCode;

#[derive(Args)]
pub struct ForkArgs {
    /// The run to fork (see `swarm runs`).
    run: String,
    /// The journal position to run live from, as `swarm show` prints it
    /// (`12`, `3/2:1`). Default: the first failed step or where the run
    /// diverged, else its end; with --input, the start.
    #[arg(long, value_name = "POS")]
    at: Option<String>,
    /// Id for the new run (default: <blueprint>-<8 hex>).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// A new input for the flow: JSON text, or @path to a JSON file.
    #[arg(long)]
    input: Option<String>,
    /// Replace the recorded result at a position before the fork point:
    /// POS=VALUE (VALUE is JSON or text). Repeatable.
    #[arg(long = "set", value_name = "POS=JSON")]
    set: Vec<String>,
    /// Past the fork point, reuse a recorded result whose request (agent
    /// and input; an LLM turn's whole request) is unchanged, or run
    /// everything again.
    #[arg(long, value_enum, default_value_t = Reuse::Unchanged)]
    reuse: Reuse,
    #[command(flatten)]
    out: Output,
    #[command(flatten)]
    journal: Db,
}

#[derive(Clone, Copy, ValueEnum)]
enum Reuse {
    Unchanged,
    None,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    errln!("error: {message}");
    ExitCode::from(2)
}

/// The request the flags make, or why they do not make one.
fn request(args: &ForkArgs) -> Result<ForkRequest, String> {
    let input = match &args.input {
        Some(text) => Some(parse_input(Some(text))?),
        None => None,
    };
    let set = args
        .set
        .iter()
        .map(|s| match s.split_once('=') {
            Some((pos, value)) => Ok((pos.to_string(), crate::run::parse_answer(value))),
            None => Err(format!("--set `{s}`: expected POS=JSON")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ForkRequest {
        source: args.run.clone(),
        at: args.at.clone(),
        run_id: args.run_id.clone(),
        input,
        set,
        reuse: matches!(args.reuse, Reuse::Unchanged),
    })
}

pub fn fork(args: ForkArgs) -> ExitCode {
    let req = match request(&args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (store, _) = match args.journal.open_to_write(false) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let opts = match options(&args.out, None) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::from_env());
        let runs = Runs::new(engine, Some(store));
        match runs.fork(&Authority::local(), &req, opts).await {
            Ok(h) => {
                if let Some(id) = &h.id {
                    errln!("forked {} into {id}", req.source);
                }
                execute(&runs, h, &args.out).await
            }
            Err(e) => {
                super::report_error(&e);
                ExitCode::from(2)
            }
        }
    })
}
