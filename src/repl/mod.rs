//! `swarm repl`: a Lua session on a live engine.
//!
//! Behaves like the `lua` interpreter's REPL: a line is first tried as an
//! expression (`return <line>`), then as statements; an incomplete chunk
//! (the parser stopped at `<eof>`) gets a `>>` continuation prompt; every
//! returned value is pretty-printed (`swarm.pretty`), tab-separated. Errors
//! print with `stdin:N:` and the session goes on. Ctrl-C interrupts running
//! Lua (or a waiting flow) and returns to the prompt; at the prompt it only
//! clears the line, so it never kills background runs. Ctrl-D or `:quit`
//! leave (asking first when background runs are going).

/// `println!`/`eprintln!` with the line escaped for the terminal: values,
/// errors and `print` output come from Lua the user (or a model) wrote.
macro_rules! say {
    ($($arg:tt)*) => { println!("{}", $crate::text::for_terminal(&format!($($arg)*))) };
}
macro_rules! warn {
    ($($arg:tt)*) => { eprintln!("{}", $crate::text::for_terminal(&format!($($arg)*))) };
}

mod bg;
mod complete;

use crate::auth::{Role, Signer};
use crate::engine::{AttachOptions, Caller, Engine, EngineConfig};
use crate::lua::{Agents, Host, LuaError, Tripped, Vm, VmOptions};
use crate::run::{self, RunOptions};
use bg::Shared;
use complete::LuaHelper;
use mlua::{Function, MultiValue, Table};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor, ExternalPrinter};
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const HELP: &str = "\
Lua with the engine underneath. Expressions print their value; statements run.
  swarm.*                 the swarm library (engine, gate, json, log, time, step, ...)
  repl.run(name, input)   run a loaded blueprint's flow, return its result
  repl.spawn(name, input) run it in the background, return a run id
  repl.wait(id)           wait for a background run: result, status
  repl.blueprints()       names of the loaded blueprints
Meta-commands:
  :help          this text
  :load FILE     load (validate) a blueprint so repl.run can run it
  :reload        reload every loaded blueprint
  :runs          background runs and their status
  :events [N]    the last N engine events (default 20)
  :wait RUN      wait for a background run and print its result
  :quit          leave (Ctrl-D too)
Ctrl-C interrupts running Lua; at the prompt it clears the line.";

/// How to start a session.
pub struct Options {
    pub role: Role,
    pub blueprints: Vec<PathBuf>,
    /// History file; `None` disables history.
    pub history: Option<PathBuf>,
    /// The session's engine (its heartbeat timeout sets how often the REPL
    /// heart-beats its own session).
    pub engine: EngineConfig,
}

/// The default history file: `$SWARM_HISTORY`, else
/// `$XDG_DATA_HOME/swarm/repl_history`, else `~/.local/share/swarm/repl_history`.
pub fn default_history() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWARM_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("swarm").join("repl_history"))
}

/// What evaluating a chunk did.
pub enum Eval {
    /// The chunk is not finished: read another line.
    Incomplete,
    /// Printed values (possibly none).
    Values(Vec<String>),
    Error(String),
}

pub struct Session {
    rt: tokio::runtime::Runtime,
    vm: Vm,
    env: Table,
    pretty: Function,
    shared: Arc<Shared>,
    _agents: Agents,
    /// How many times the REPL had to re-attach its session.
    reattached: std::sync::atomic::AtomicU32,
}

impl Session {
    pub fn new(opts: &Options) -> Result<Session, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let _guard = rt.enter();
        let engine = Engine::new(opts.engine.clone(), Signer::from_env());
        let token = engine
            .attach(Caller::Host, AttachOptions::new("repl", opts.role))
            .map_err(|e| e.to_string())?;
        let agents = Agents::default();
        let mut host = Host::new(engine.clone(), &agents);
        host.print = Arc::new(|line: &str| say!("{line}"));
        host.kinds = crate::run::AgentKinds::shared_builtin().infos();
        let vm = Vm::new(host, VmOptions::default()).map_err(|e| e.to_string())?;
        // All of `swarm` now, so tab completion lists it whole.
        vm.load_library().map_err(|e| e.to_string())?;
        vm.set_token(Some(token.clone()));
        let env = vm.env().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared::new(engine, opts.role, token));
        // A live REPL keeps its session: idle at the prompt is not gone.
        // Beats come six times per timeout, far from the sweep's limit. A
        // session detached anyway (the machine slept, `detach()` was
        // called) is re-attached before the next evaluation.
        {
            let shared = shared.clone();
            let every = opts.engine.heartbeat_timeout / 6;
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let _ = shared.engine.heartbeat(&shared.token());
                }
            });
        }
        env.raw_set(
            "repl",
            bg::register(vm.lua(), shared.clone()).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let pretty: Function = vm
            .load(&env, "return require('swarm.pretty').pretty", "repl")
            .and_then(|f| f.call(()).map_err(|e| vm.classify(e)))
            .map_err(|e| e.to_string())?;
        shared.follow();
        let session = Session {
            rt,
            vm,
            env,
            pretty,
            shared,
            _agents: agents,
            reattached: Default::default(),
        };
        for bp in &opts.blueprints {
            say!("{}", session.load(bp)?);
        }
        Ok(session)
    }

    /// Validates the blueprint at `path` and makes it runnable by name.
    pub fn load(&self, path: &std::path::Path) -> Result<String, String> {
        let _guard = self.rt.enter();
        let r = run::prepare(&self.shared.engine, path, RunOptions::default())
            .map_err(|e| e.to_string())?;
        let name = r.blueprint.name.clone();
        let agents = r.blueprint.agents.len();
        self.shared
            .blueprints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), path.to_path_buf());
        Ok(format!(
            "loaded `{name}` from {} ({agents} agents)",
            path.display()
        ))
    }

    fn compile(&self, chunk: &str) -> Result<Function, LuaError> {
        self.vm
            .load(&self.env, &format!("return {chunk}"), "stdin")
            .or_else(|_| self.vm.load(&self.env, chunk, "stdin"))
    }

    /// Re-attaches the REPL when its session was detached (its token no
    /// longer answers a heartbeat), saying so; background runs go on.
    fn ensure_attached(&self) {
        let engine = &self.shared.engine;
        let Err(why) = engine.heartbeat(&self.shared.token()) else {
            return;
        };
        let _guard = self.rt.enter();
        match engine.attach(Caller::Host, AttachOptions::new("repl", self.shared.role)) {
            Ok(token) => {
                self.vm.set_token(Some(token.clone()));
                self.shared.set_token(token);
                self.reattached
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    "(the REPL's engine session was detached: {why}; re-attached as a new session)"
                );
            }
            Err(e) => {
                warn!("(the REPL's engine session was detached and re-attaching failed: {e})")
            }
        }
    }

    /// How many times the session was found detached and re-attached.
    pub fn reattached(&self) -> u32 {
        self.reattached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Evaluates one (possibly multi-line) chunk.
    pub fn eval(&self, chunk: &str) -> Eval {
        self.ensure_attached();
        let f = match self.compile(chunk) {
            Ok(f) => f,
            Err(LuaError::Syntax {
                incomplete: true, ..
            }) => return Eval::Incomplete,
            Err(e) => return Eval::Error(e.to_string()),
        };
        let cancel = CancellationToken::new();
        self.vm.arm(Some(cancel.clone()));
        // Ctrl-C is watched from a worker thread: Lua running a tight loop
        // holds this thread, and only the cancel flag (checked by the VM's
        // hook) can stop it.
        // The listener is registered here, before the Lua runs, so a Ctrl-C
        // that comes at once is seen (a listener created later misses it).
        let sigint = {
            let _rt = self.rt.enter();
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
        };
        let watcher = {
            let cancel = cancel.clone();
            self.rt.spawn(async move {
                if let Some(mut s) = sigint
                    && s.recv().await.is_some()
                {
                    cancel.cancel();
                }
            })
        };
        let out = self.rt.block_on(async {
            let call = self.vm.call(&f, ());
            tokio::pin!(call);
            tokio::select! {
                r = &mut call => r,
                _ = cancel.cancelled() => {
                    // A flow waiting on the engine is dropped (its steps
                    // are cancelled) if it does not stop by itself.
                    match tokio::time::timeout(Duration::from_millis(200), &mut call).await {
                        Ok(r) => r,
                        Err(_) => Err(LuaError::Runtime("interrupted".into())),
                    }
                }
            }
        });
        watcher.abort();
        match out {
            Ok(values) => Eval::Values(self.render(values)),
            Err(LuaError::Limit(l)) if l.kind == Tripped::Cancelled => {
                Eval::Error("interrupted".into())
            }
            Err(e) => Eval::Error(e.to_string()),
        }
    }

    fn render(&self, values: MultiValue) -> Vec<String> {
        values
            .into_iter()
            .map(|v| match self.pretty.call::<String>(v.clone()) {
                Ok(s) => s,
                Err(_) => v.to_string().unwrap_or_else(|_| "?".into()),
            })
            .collect()
    }

    /// Handles `:command args`; returns false for `:quit`.
    pub fn meta(&self, line: &str) -> bool {
        let mut words = line[1..].split_whitespace();
        let cmd = words.next().unwrap_or("");
        let arg = words.next();
        match cmd {
            "help" | "h" => say!("{HELP}"),
            "quit" | "q" => return false,
            "load" => match arg {
                Some(f) => match self.load(std::path::Path::new(f)) {
                    Ok(m) => say!("{m}"),
                    Err(e) => warn!("{e}"),
                },
                None => warn!(":load needs a file"),
            },
            "reload" => {
                let files: Vec<PathBuf> = self
                    .shared
                    .blueprints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for f in files {
                    match self.load(&f) {
                        Ok(m) => say!("re{m}"),
                        Err(e) => warn!("{e}"),
                    }
                }
            }
            "runs" => {
                let runs = self.shared.runs.lock().unwrap_or_else(|e| e.into_inner());
                if runs.is_empty() {
                    say!("no background runs (start one with repl.spawn(name, input))");
                }
                for (id, b) in runs.iter() {
                    let status = b
                        .done
                        .borrow()
                        .as_ref()
                        .map_or("running".to_string(), |(s, _)| s.to_string());
                    say!("{id:<5} {:<16} {status}", b.blueprint);
                }
            }
            "events" => self.events(arg.and_then(|n| n.parse().ok()).unwrap_or(20)),
            "wait" => match arg {
                Some(id) => match self.rt.block_on(self.shared.wait(id)) {
                    Ok((status, result)) => say!("{id} {status} {result}"),
                    Err(e) => warn!("{}", e.message),
                },
                None => warn!(":wait needs a run id (see :runs)"),
            },
            other => warn!("unknown command :{other} (try :help)"),
        }
        true
    }

    fn events(&self, n: u64) {
        let engine = &self.shared.engine;
        let after = engine.last_cursor().saturating_sub(n);
        self.ensure_attached();
        match engine.subscribe(&self.shared.token(), after) {
            Ok(mut sub) => {
                while let Ok(Some(ev)) = sub.try_next() {
                    let task = ev.task.map_or(String::new(), |t| t.to_string());
                    say!("#{:<6} {:<20} {task}", ev.cursor, ev.kind.name());
                }
            }
            Err(e) => warn!("{e}"),
        }
    }

    /// Leaves, cancelling background runs.
    pub fn close(self) {
        self.shared.cancel_all();
    }
}

/// Feeds one input line; returns false to quit.
fn feed(s: &Session, buffer: &mut Vec<String>, line: &str, mut on_chunk: impl FnMut(&str)) -> bool {
    if buffer.is_empty() && line.trim_start().starts_with(':') {
        // Meta-commands go to history like any other input.
        on_chunk(line.trim());
        return s.meta(line.trim());
    }
    buffer.push(line.to_string());
    let chunk = buffer.join("\n");
    match s.eval(&chunk) {
        Eval::Incomplete => return true,
        Eval::Values(v) => {
            if !v.is_empty() {
                say!("{}", v.join("\t"));
            }
        }
        Eval::Error(e) => warn!("{}", crate::lua::error::user_frames(&e)),
    }
    on_chunk(&chunk);
    buffer.clear();
    true
}

/// Runs the REPL on the terminal, or on piped stdin without prompts.
pub fn main(opts: Options) -> Result<(), String> {
    let session = Session::new(&opts)?;
    if std::io::stdin().is_terminal() {
        interactive(&session, &opts)?;
    } else {
        let mut buffer = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| e.to_string())?;
            if !feed(&session, &mut buffer, &line, |_| {}) {
                break;
            }
        }
        if !buffer.is_empty() {
            warn!("stdin: incomplete chunk at end of input");
        }
        // Let background runs finish when input ends.
        while session.shared.running() > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    session.close();
    Ok(())
}

fn interactive(session: &Session, opts: &Options) -> Result<(), String> {
    // List every completion at once (as shells do) instead of cycling.
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut ed: Editor<LuaHelper, DefaultHistory> =
        Editor::with_config(config).map_err(|e| e.to_string())?;
    ed.set_helper(Some(LuaHelper {
        env: session.env.clone(),
    }));
    if let Some(h) = &opts.history {
        let _ = ed.load_history(h);
    }
    if let Ok(mut p) = ed.create_external_printer() {
        session.shared.set_printer(Box::new(move |line| {
            let _ = p.print(format!("{line}\n"));
        }));
    }
    say!(
        "swarm repl — Lua 5.4 on a live engine as {}. :help for help.",
        session.shared.role
    );
    let mut buffer: Vec<String> = Vec::new();
    let mut warned = false;
    loop {
        let prompt = if buffer.is_empty() { "> " } else { ">> " };
        match ed.readline(prompt) {
            Ok(line) => {
                let mut chunk_done = None;
                let go_on = feed(session, &mut buffer, &line, |c| {
                    chunk_done = Some(c.to_string())
                });
                if let Some(chunk) = chunk_done {
                    let _ = ed.add_history_entry(chunk.as_str());
                    if let Some(h) = &opts.history {
                        if let Some(dir) = h.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        let _ = ed.save_history(h);
                    }
                }
                if !go_on {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
            }
            Err(ReadlineError::Eof) => {
                let n = session.shared.running();
                if n > 0 && !warned {
                    say!(
                        "{n} background run(s) still going; Ctrl-D again (or :quit) cancels them and leaves"
                    );
                    warned = true;
                    continue;
                }
                break;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
