//! `swarm serve [DIR]` and `swarm token`: the HTTP server over the
//! journal, and the bearer tokens it accepts.
//!
//! Binds loopback by default. Every request needs a token minted with the
//! server's secret (`swarm token`), unless `--no-auth`, which is refused
//! on any address but loopback. TLS is left to a reverse proxy.

use super::Db;
use super::dev::say;
use crate::auth::{Role, Signer};
use crate::engine::{Engine, EngineConfig};
use crate::reload::{LiveBlueprints, Watch};
use crate::run::RunOptions;
use crate::serve::{Access, Server, auth};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// The directory of blueprints to serve.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7777")]
    listen: SocketAddr,
    /// Reload blueprints when their files change (as `swarm dev`).
    #[arg(long)]
    watch: bool,
    /// Serve requests without a token as the local operator (loopback only).
    #[arg(long)]
    no_auth: bool,
    /// How long a remote worker's claim on a step stands without a
    /// heartbeat before the step is offered again.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    lease: Duration,
    /// On SIGTERM or SIGINT, how long to wait for the running runs to
    /// stop (interrupted, resumable) before exiting anyway; every request
    /// meanwhile is answered `503 draining`.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    drain: Duration,
    /// Connections open at once; one past it is closed on accept.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// How long a client may take to send a request's headers.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::parse_duration)]
    header_timeout: Duration,
    /// A host name this server answers to beyond loopback names (and, with
    /// tokens, IP addresses and this machine's name); repeatable; `*` for
    /// any. Requests naming another `Host`, or from another page's
    /// `Origin`, are refused 403 (DNS rebinding, cross-site requests).
    #[arg(long, value_name = "NAME")]
    allow_host: Vec<String>,
    #[command(flatten)]
    journal: Db,
}

#[derive(Args)]
pub struct TokenArgs {
    /// What the bearer may do: operator (everything), observer (read and
    /// watch), senior (answer and read), worker.
    #[arg(long, value_parser = ["operator", "observer", "senior", "worker"])]
    role: String,
    /// How long it is valid (e.g. 10m, 8h, 30d).
    #[arg(long, default_value = "8h", value_parser = super::parse_duration)]
    ttl: Duration,
    /// Reach this run only.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    #[command(flatten)]
    journal: Db,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    errln!("swarm serve: {message}");
    ExitCode::from(2)
}

/// The signer of the journal `db` names: the secret file beside a
/// SQLite journal (created when missing), `$SWARM_SECRET` for a shared
/// database.
fn signer(db: &Db) -> Result<Signer, String> {
    let at = db.resolve(true).map_err(|e| e.to_string())?;
    match at.sqlite_path() {
        Some(path) => auth::signer(path),
        None if at == crate::store::Location::Memory => Err(db
            .locate(true)
            .map_err(|e| e.to_string())
            .err()
            .unwrap_or_default()),
        None => auth::shared_signer(&at),
    }
}

pub fn token(args: TokenArgs) -> ExitCode {
    let role: Role = args.role.parse().expect("clap checked the role");
    let s = match signer(&args.journal) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let Some(id) = args.run.as_deref() else {
        outln!("{}", auth::mint(&s, role, args.ttl, None));
        return ExitCode::SUCCESS;
    };
    // Bound to the run as it is now: once it is pruned and its id taken
    // again, the token reaches nothing.
    let record = args
        .journal
        .open()
        .map_err(|e| e.to_string())
        .and_then(|(store, _)| crate::store::wait(store.run(id)).map_err(|e| e.to_string()));
    match record {
        Ok(Some(r)) => {
            outln!(
                "{}",
                auth::mint_for_run(&s, role, args.ttl, id, r.created_ms)
            );
            ExitCode::SUCCESS
        }
        Ok(None) => fail(format!(
            "no run `{id}`: a token is bound to a run that exists (start it first)"
        )),
        Err(e) => fail(e),
    }
}

pub fn serve(args: ServeArgs) -> ExitCode {
    if args.no_auth && !args.listen.ip().is_loopback() {
        return fail(format!(
            "--no-auth on {} would let anyone on the network run agents; \
             drop --no-auth (clients send `swarm token` tokens) or listen on loopback",
            args.listen
        ));
    }
    if !args.dir.is_dir() {
        return fail(format!("{} is not a directory", args.dir.display()));
    }
    let (store, at) = match args.journal.open_to_write(true) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    // Tokens are signed with the secret kept beside a SQLite journal, so
    // `swarm token` in another process mints ones this server accepts. A
    // journal in memory has no such place: it is served without tokens.
    let signer = match (at.sqlite_path(), args.no_auth) {
        (Some(path), _) => match auth::signer(path) {
            Ok(s) => s,
            Err(e) => return fail(e),
        },
        (None, true) => Signer::random(),
        (None, false) if at != crate::store::Location::Memory => match auth::shared_signer(&at) {
            Ok(s) => s,
            Err(e) => return fail(e),
        },
        (None, false) => {
            return fail(format!(
                "a journal in `{at}` keeps no secret for `swarm token` to sign with: \
                 serve it with --no-auth (loopback only), or use a sqlite: journal"
            ));
        }
    };
    super::runtime().block_on(async move {
        let engine = Engine::new(EngineConfig::default(), Signer::random());
        let opts = RunOptions {
            store: Some(store.clone()),
            wait_for_answers: true,
            print: Some(Arc::new(|line: &str| errln!("{line}"))),
            ..RunOptions::default()
        };
        let dev = Arc::new(LiveBlueprints::new(engine.clone(), opts.clone()));
        dev.scan(&args.dir).iter().for_each(say);
        let watch = match args.watch {
            true => match Watch::start(dev.clone(), &args.dir, Duration::from_millis(50)) {
                Ok(w) => Some(w),
                Err(e) => return fail(e),
            },
            false => None,
        };
        let access = if args.no_auth {
            Access::Open
        } else {
            Access::Tokens
        };
        engine.board().open(args.lease);
        let server = Server::new(engine, store, dev, signer, access, opts);
        server.allow_hosts(&args.allow_host);
        for id in server.resume_interrupted().await {
            errln!("resumed run {id}");
        }
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {}: {e}", args.listen)),
        };
        let addr = listener.local_addr().map_or(args.listen, |a| a);
        errln!("swarm serve: listening on http://{addr} (journal {at})");
        server.start_sweep();
        let bounds = crate::serve::listen::Bounds {
            connections: args.max_connections,
            header_timeout: args.header_timeout,
        };
        serve_until_drained(&server, listener, bounds, watch, args.drain).await
    })
}

/// Serves until SIGTERM or SIGINT, then drains: the listener stays open,
/// answering every request `503 draining`, until the runs have stopped
/// (at most `limit`; a second signal stops waiting).
async fn serve_until_drained(
    server: &Arc<Server>,
    listener: tokio::net::TcpListener,
    bounds: crate::serve::listen::Bounds,
    watch: Option<Watch>,
    limit: Duration,
) -> ExitCode {
    let http = crate::serve::listen::serve(listener, server.router(), bounds);
    let drained = async {
        let sig = stop_signal(watch).await;
        errln!("swarm serve: {sig}: draining (running runs stop interrupted, resumable)");
        tokio::select! {
            left = server.drain(limit) => left,
            again = stop_signal(None) => {
                errln!("swarm serve: {again} again: exiting now");
                Vec::new()
            }
        }
    };
    tokio::select! {
        () = http => {}
        left = drained => for id in left {
            errln!(
                "swarm serve: run {id} had not stopped after --drain {limit:?}; it is \
                 resumable once its lease lapses"
            );
        },
    }
    errln!("swarm serve: exiting");
    ExitCode::SUCCESS
}

/// Waits for SIGTERM or SIGINT, printing reloads meanwhile.
async fn stop_signal(mut watch: Option<Watch>) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "terminated",
            _ = int.recv() => return "interrupted",
            Some(r) = async { watch.as_mut()?.reloads.recv().await } => say(&r),
        }
    }
}
