//! `swarm export RUN > run.json` and `swarm import run.json`: a run (its
//! record, journal and questions) as one JSON document, so a journal can
//! travel between stores and machines (see `run::transfer`).

use super::Db;
use super::runs::{fail, on_runs, store};
use crate::run::{Exported, MAX_IMPORT_BYTES};
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
    let name = args.file.display();
    let text = match read_bounded(&args.file) {
        Ok(t) => t,
        Err(e) => return fail(format!("{name}: {e}")),
    };
    let doc: Exported = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => {
            return fail(format!(
                "import_invalid: {name} is not a `swarm export` document: {e}"
            ));
        }
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
        Err(e) => fail(format!("{}: {e}", e.code())),
    }
}

/// The document at `file` (`-`: stdin), refused past
/// [`MAX_IMPORT_BYTES`] without reading more than one byte beyond it.
fn read_bounded(file: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let input: Box<dyn Read> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| e.to_string())?)
    };
    let mut text = String::new();
    input
        .take(MAX_IMPORT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_IMPORT_BYTES {
        return Err(format!(
            "import_invalid: larger than {} MiB, the most `swarm import` reads",
            MAX_IMPORT_BYTES / (1024 * 1024)
        ));
    }
    Ok(text)
}
