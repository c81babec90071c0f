//! `swarm send RUN TOPIC VALUE`: a message into a run, for the flow's
//! `swarm.recv(topic)`. Through the run service, as `swarm answer` is:
//! the message is stored once (a retry with the same `--id` adds
//! nothing), and the run's owner, in this process or another, reads it.

use super::Db;
use super::runs::{fail, journaled_run, on_runs};
use crate::run;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct SendArgs {
    /// The run's id (see `swarm runs`).
    run: String,
    /// The topic the flow receives on (`swarm.recv(topic)`).
    topic: String,
    /// The message: JSON, or plain text (sent as a string).
    value: String,
    /// Your own id for this message: sending again with the same id adds
    /// nothing (safe retries).
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Print what was done as one line of JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    journal: Db,
}

pub fn send(args: SendArgs) -> ExitCode {
    let (s, r) = match journaled_run(&args.journal, &args.run) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let value = run::parse_answer(&args.value);
    let sent = on_runs(&s, async |runs, who| {
        runs.send(who, &r.id, &args.topic, value, args.id.as_deref())
            .await
    });
    let sent = match sent {
        Ok(sent) => sent,
        Err(e) => return fail(format!("{e} [{}]", e.code())),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&sent).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let what = if sent.duplicate {
        format!(
            "already sent as message {} (same --id); nothing new",
            sent.seq
        )
    } else {
        format!("sent as message {}", sent.seq)
    };
    if sent.resume_needed {
        outln!("{what}; continue the run with `swarm resume {}`", r.id);
    } else {
        outln!("{what}; run {} receives it", r.id);
    }
    ExitCode::SUCCESS
}
