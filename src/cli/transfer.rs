//! `swarm export RUN > run.json` and `swarm import run.json`: a run (its
//! record, journal and questions) as one JSON document, so a journal can
//! travel between stores and machines (see `run::transfer`).

use super::Db;
use super::runs::{fail, on_runs, store};
use crate::run::Exported;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExportArgs {
    /// The run to export (see `swarm runs`).
    run: String,
    #[command(flatten)]
    journal: Db,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The document `swarm export` wrote (`-` for stdin).
    file: PathBuf,
    /// Record it under this id instead of its own.
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    #[command(flatten)]
    journal: Db,
}

pub fn export(args: ExportArgs) -> ExitCode {
    let (s, _) = match store(&args.journal) {
        Ok(x) => x,
        Err(c) => return c,
    };
    match on_runs(&s, async |runs, who| runs.export(who, &args.run).await) {
        Ok(doc) => {
            outln!("{}", serde_json::to_string(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn import(args: ImportArgs) -> ExitCode {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&args.file)
    };
    let name = args.file.display();
    let text = match text {
        Ok(t) => t,
        Err(e) => return fail(format!("{name}: {e}")),
    };
    let doc: Exported = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => return fail(format!("{name} is not a `swarm export` document: {e}")),
    };
    let (s, _) = match args.journal.open_to_write(true) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let rename = args.run_id.as_deref();
    match on_runs(&s, async |runs, who| runs.import(who, doc, rename).await) {
        Ok(id) => {
            outln!("imported run {id}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
