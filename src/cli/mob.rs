//! `swarm mob list` and `swarm mob show NAME`: the mobs of the journal,
//! each member's status, incarnation, labels, token use and last reply.

use super::Db;
use super::runs::{fail, on_runs, store};
use crate::run::MobShown;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args)]
pub struct MobArgs {
    #[command(subcommand)]
    command: MobCommand,
}

#[derive(Subcommand)]
enum MobCommand {
    /// Every mob, with its members.
    List {
        /// Print the mobs as one JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: Db,
    },
    /// One mob: each member's status, incarnation, labels, tokens, last reply.
    Show {
        name: String,
        /// Print the mob as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        journal: Db,
    },
}

pub fn run(args: MobArgs) -> ExitCode {
    match args.command {
        MobCommand::List { json, journal } => {
            let s = match store(&journal) {
                Ok((s, _)) => s,
                Err(c) => return c,
            };
            match on_runs(&s, async |runs, who| runs.mobs(who).await) {
                Ok(mobs) if json => outln!("{}", serde_json::to_string(&mobs).unwrap_or_default()),
                Ok(mobs) => {
                    outln!(
                        "{:<24} {:>7} {:>7} {:>9}",
                        "MOB",
                        "MEMBERS",
                        "LIVE",
                        "TOKENS"
                    );
                    for m in mobs {
                        let live = m.members.iter().filter(|v| v.status == "live").count();
                        let tokens: u64 = m.members.iter().map(|v| v.tokens).sum();
                        outln!(
                            "{:<24} {:>7} {:>7} {:>9}",
                            m.name,
                            m.members.len(),
                            live,
                            tokens
                        );
                    }
                }
                Err(e) => return fail(e),
            }
        }
        MobCommand::Show {
            name,
            json,
            journal,
        } => {
            let s = match store(&journal) {
                Ok((s, _)) => s,
                Err(c) => return c,
            };
            match on_runs(&s, async |runs, who| runs.mob(who, &name).await) {
                Ok(m) if json => outln!("{}", serde_json::to_string(&m).unwrap_or_default()),
                Ok(m) => print_mob(&m),
                Err(e) => return fail(format!("{e} [{}]", e.code())),
            }
        }
    }
    ExitCode::SUCCESS
}

fn print_mob(m: &MobShown) {
    outln!("mob {} (version {})", m.name, m.version);
    outln!(
        "{:<16} {:<10} {:>4} {:<8} {:>6} {:>8}  {:<20} LAST REPLY",
        "MEMBER",
        "AGENT",
        "INC",
        "STATUS",
        "TURNS",
        "TOKENS",
        "LABELS"
    );
    for v in &m.members {
        let labels: Vec<String> = v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
        let last = match &v.last_reply {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "-".into(),
        };
        let last: String = last.lines().next().unwrap_or("").chars().take(60).collect();
        outln!(
            "{:<16} {:<10} {:>4} {:<8} {:>6} {:>8}  {:<20} {}",
            v.id,
            v.agent,
            v.incarnation,
            v.status,
            v.turns,
            v.tokens,
            labels.join(","),
            last
        );
    }
}
