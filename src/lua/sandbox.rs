//! The one function that builds every Lua VM, and what a VM offers.
//!
//! A VM gets: base (without `dofile`, `loadfile`, `warn`; `load` text-only
//! with a sandbox environment; `print` to the log; `collectgarbage("count")`
//! only; `rawset` refusing frozen tables; `pcall`/`xpcall` that cannot
//! swallow a tripped limit), `string` (no `dump`; budgeted patterns; guarded
//! `rep`), `table`, `math`, `utf8`, `coroutine`, a reduced `os` (`time`,
//! `clock`) and the `swarm` modules. No `io`, `debug`, `package` or binary
//! chunks. Every library table is frozen, and so is the string metatable.
//! Code runs in a per-run environment whose misses fall through to the
//! frozen base, so a pooled VM never carries one run's globals into another.

use super::ctx::{CURRENT, ERROR_MT, VmCtx};
use super::error::{find_raised, from_error_value, root_message};
use super::frozen::{freeze, install_frozen_metamethods, lock_metatable};
use super::limits::{self, LimitError, Limits, Tripped};
use super::stdlib::{install_guards, reduced_os, replace_base, replace_string, replace_table};
use super::{Host, LuaError, embedded, modules};
use crate::auth::CapToken;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, LuaSerdeExt, MultiValue, StdLib, Table, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Limits for a VM. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Bytes the VM may allocate (default 64 MiB).
    pub memory_limit: usize,
    /// Lua instructions one run may execute (default 1e9).
    pub instruction_budget: u64,
    /// Wall-clock limit of one run (default none).
    pub timeout: Option<Duration>,
    /// For a flow VM: the budgets of its whole run, every Lua VM working
    /// for it together (default [`super::RUN_INSTRUCTIONS`] instructions,
    /// [`super::RUN_MEMORY`] bytes).
    pub run_instructions: u64,
    pub run_memory: usize,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            memory_limit: 64 << 20,
            instruction_budget: 1_000_000_000,
            timeout: None,
            run_instructions: super::RUN_INSTRUCTIONS,
            run_memory: super::RUN_MEMORY,
        }
    }
}

/// A sandboxed Lua VM.
pub struct Vm {
    lua: Lua,
    limits: Arc<Limits>,
    base: Table,
    opts: VmOptions,
}

impl Vm {
    /// Builds a sandboxed VM: the only constructor of Lua states in the host.
    pub fn new(host: Host, opts: VmOptions) -> Result<Vm, LuaError> {
        build(host, opts).map_err(|e| LuaError::Setup(e.to_string()))
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Hands the VM its one token (or takes it away).
    pub fn set_token(&self, tok: Option<CapToken>) {
        let ctx = self.lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
        *ctx.token.lock().unwrap_or_else(|e| e.into_inner()) = tok;
    }

    /// Attaches the run's journal: journaled calls replay and record.
    pub fn set_journal(&self, journal: Option<Arc<crate::store::Journal>>) {
        let ctx = self.lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
        // The run's budget counts what its journal holds already: a run
        // resumed any number of times has one budget, not one each time.
        let used = journal
            .as_ref()
            .filter(|j| !j.is_check())
            .map_or((0, 0), |j| {
                let (n, bytes) = j.loaded();
                (n, bytes + n * super::modules::ENTRY_OVERHEAD)
            });
        *ctx.journal.lock().unwrap_or_else(|e| e.into_inner()) = journal;
        *ctx.journal_used.lock().unwrap_or_else(|e| e.into_inner()) = used;
    }

    /// Files this VM has `require`d from the blueprint's directory.
    pub fn required_files(&self) -> Vec<std::path::PathBuf> {
        let ctx = self.lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
        ctx.required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Turns off recording where blueprint constructors were called.
    pub fn skip_locations(&self) {
        let _ = modules::skip_locations(&self.lua);
    }

    /// The blueprint validator (`lua/swarm/validate.lua`).
    pub fn validator(&self) -> Result<Function, LuaError> {
        modules::validator(&self.lua).map_err(|e| self.classify(e))
    }

    /// Loads the parts of `swarm` built on first read (for walks of it
    /// from the host, such as REPL completion).
    pub fn load_library(&self) -> Result<(), LuaError> {
        let library = self.lua.named_registry_value(super::ctx::LIBRARY);
        library
            .and_then(|swarm| modules::load_all(&self.lua, &swarm))
            .map_err(|e| self.classify(e))
    }

    /// The blueprint's run-wide budgets, for the runs this (flow) VM
    /// starts from now on.
    pub fn set_run_limits(&self, limits: super::RunLimits) {
        let ctx = self.lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
        *ctx.run_limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Sets the default parent of tasks this VM starts: for a flow VM, the
    /// root of its run, which makes the VM the holder of the run's meter
    /// (the run-wide budgets its agents' VMs charge too).
    pub fn set_parent(&self, task: Option<crate::engine::TaskId>) {
        let ctx = self.lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
        *ctx.parent.lock().unwrap_or_else(|e| e.into_inner()) = task;
        let limits = *ctx.run_limits.lock().unwrap_or_else(|e| e.into_inner());
        let meter = task.map(|root| {
            let meter = Arc::new(super::RunMeter::new(
                limits.instructions.unwrap_or(self.opts.run_instructions),
                limits.memory.unwrap_or(self.opts.run_memory),
            ));
            ctx.host.runs.insert(root.0, &meter);
            meter
        });
        self.limits.join_run(meter);
    }

    /// Reseeds the PRNG from the host's CSPRNG (each task of a pooled VM).
    pub fn reseed(&self) -> mlua::Result<()> {
        match self.lua.app_data_ref::<VmCtx>() {
            Some(ctx) => ctx.reseed(),
            None => Ok(()),
        }
    }

    /// A fresh global environment for one run.
    pub fn env(&self) -> mlua::Result<Table> {
        let env = self.lua.create_table()?;
        let mt = self.lua.create_table()?;
        mt.raw_set("__index", &self.base)?;
        env.set_metatable(Some(mt))?;
        env.raw_set("_G", &env)?;
        begin_run(&self.lua, &env)?;
        Ok(env)
    }

    /// The per-task entry of Lua agents (`lua/swarm/entry.lua`), bound to
    /// this VM.
    pub(crate) fn agent_entry(&self) -> mlua::Result<Function> {
        let current: Table = self.lua.named_registry_value(CURRENT)?;
        let setmetatable: Function = self
            .lua
            .named_registry_value(super::ctx::RAW_SETMETATABLE)?;
        // SAFETY: plain C functions that only read and set upvalues of the
        // function they are given (see `reuse.rs`).
        let (reusable, rebind) = unsafe {
            (
                self.lua.create_c_function(super::reuse::reusable)?,
                self.lua.create_c_function(super::reuse::rebind)?,
            )
        };
        embedded::chunk(&self.lua, embedded::ENTRY)?.call((
            setmetatable,
            &self.base,
            current,
            reusable,
            rebind,
        ))
    }

    /// Compiles text `source` as chunk `@name` in `env`.
    pub fn load(&self, env: &Table, source: &str, name: &str) -> Result<Function, LuaError> {
        // Text mode refuses it anyway; Lua's message would not name the file.
        if source.starts_with('\x1b') {
            return Err(LuaError::Syntax {
                message: format!("{name}: a precompiled (binary) chunk; only Lua source is run"),
                incomplete: false,
            });
        }
        self.lua
            .load(source)
            .set_name(format!("@{name}"))
            .set_mode(ChunkMode::Text)
            .set_environment(env.clone())
            .into_function()
            .map_err(|e| self.classify(e))
    }

    /// Arms the limits for a new run.
    pub fn arm(&self, cancel: Option<tokio_util::sync::CancellationToken>) {
        self.limits
            .arm(self.opts.instruction_budget, self.opts.timeout, cancel);
    }

    /// Makes `f` the run's entry function: where errors that left no
    /// frame of their own are placed (see `location.rs`).
    pub fn set_entry(&self, f: &Function) {
        if let Some(ctx) = self.lua.app_data_ref::<VmCtx>() {
            *ctx.entry.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        }
    }

    /// Calls `f` on an async Lua thread: host verbs it calls may wait.
    /// `f` becomes the run's entry function for error locations.
    pub async fn call(
        &self,
        f: &Function,
        args: impl mlua::IntoLuaMulti,
    ) -> Result<MultiValue, LuaError> {
        self.set_entry(f);
        let call = TripOnDrop {
            call: Box::pin(call_protected(&self.lua, f, args)),
            limits: self.limits.clone(),
            done: false,
        };
        call.await.map_err(|e| self.classify(e))
    }

    /// Loads and runs `source` in a fresh environment with fresh limits.
    pub async fn exec(&self, source: &str, name: &str) -> Result<MultiValue, LuaError> {
        self.arm(None);
        let env = self.env().map_err(|e| self.classify(e))?;
        let f = self.load(&env, source, name)?;
        self.call(&f, ()).await
    }

    /// Where a limit stopped the VM: the hook's file:line, or for a limit
    /// the hook did not see (one allocation past the memory limit) the
    /// running entry function's place.
    fn limit_location(&self) -> String {
        match self.limits.tripped_at() {
            at if at != "?" => at,
            at => super::location::entry_location(&self.lua).unwrap_or(at),
        }
    }

    /// Turns an mlua error into the host's typed error.
    pub fn classify(&self, err: mlua::Error) -> LuaError {
        if let Some(limit) = find_limit(&err) {
            return LuaError::Limit(limit);
        }
        let raised = find_raised(&err);
        let memory = out_of_memory(&err) || self.limits.tripped() == Some(Tripped::Memory);
        if memory {
            self.limits.trip(Tripped::Memory);
            return LuaError::Limit(LimitError {
                kind: Tripped::Memory,
                what: format!("memory limit of {} bytes exceeded", self.opts.memory_limit),
                location: self.limit_location(),
            });
        }
        if let Some(t) = self.limits.tripped() {
            return LuaError::Limit(LimitError {
                kind: t,
                what: self.limits.describe(t),
                location: self.limit_location(),
            });
        }
        if let Some(r) = raised {
            return LuaError::Raised(Box::new(r));
        }
        match err {
            mlua::Error::SyntaxError {
                message,
                incomplete_input,
            } => LuaError::Syntax {
                message,
                incomplete: incomplete_input,
            },
            other => LuaError::Runtime(root_message(&other)),
        }
    }
}

/// Calls `f(args)` on a new async thread whose base is a pcall (see
/// `protect` in `lua/swarm/guards.lua`): the one way the host runs user
/// code that may wait.
pub(crate) async fn call_protected(
    lua: &Lua,
    f: &Function,
    args: impl mlua::IntoLuaMulti,
) -> mlua::Result<MultiValue> {
    let protect = lua
        .app_data_ref::<VmCtx>()
        .and_then(|ctx| ctx.protect.get().cloned())
        .ok_or_else(|| mlua::Error::RuntimeError("the VM has no guards installed".into()))?;
    let mut args = args.into_lua_multi(lua)?;
    args.push_front(Value::Function(f.clone()));
    let mut out = protect.call_async::<MultiValue>(args).await?;
    match out.pop_front() {
        Some(Value::Boolean(true)) => Ok(out),
        _ => Err(from_error_value(lua, out.pop_front().unwrap_or(Value::Nil))),
    }
}

/// A call into Lua that trips the VM's limits if it is dropped before it
/// finished (a cancelled task, a lost race). Dropping the call unwinds the
/// Lua thread, which runs pending `__close` handlers: they must find the VM
/// already stopped, so they end at their first hook check instead of
/// running unbounded after their task is gone.
struct TripOnDrop<F> {
    call: std::pin::Pin<Box<F>>,
    limits: Arc<Limits>,
    done: bool,
}

impl<F: std::future::Future> std::future::Future for TripOnDrop<F> {
    type Output = F::Output;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let out = this.call.as_mut().poll(cx);
        this.done = out.is_ready();
        out
    }
}

impl<F> Drop for TripOnDrop<F> {
    fn drop(&mut self) {
        // Runs before `call` is dropped.
        if !self.done {
            self.limits.trip(Tripped::Cancelled);
        }
    }
}

/// Makes `env` the current run's environment: the default of `load` and
/// the owner of a fresh `require` cache.
fn begin_run(lua: &Lua, env: &Table) -> mlua::Result<()> {
    if let Some(ctx) = lua.app_data_ref::<VmCtx>() {
        ctx.reseed()?;
    }
    let current: Table = lua.named_registry_value(CURRENT)?;
    current.raw_set("env", env)?;
    current.raw_set("loaded", lua.create_table()?)
}

fn find_limit(err: &mlua::Error) -> Option<LimitError> {
    match err {
        mlua::Error::ExternalError(e) => e.downcast_ref::<LimitError>().cloned(),
        mlua::Error::CallbackError { cause, .. } => find_limit(cause),
        mlua::Error::WithContext { cause, .. } => find_limit(cause),
        _ => None,
    }
}

/// Whether the allocator refused, anywhere down the error's causes (a
/// host function that built a value the limit did not allow raises it
/// wrapped as its callback's error).
fn out_of_memory(err: &mlua::Error) -> bool {
    match err {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => out_of_memory(cause),
        mlua::Error::WithContext { cause, .. } => out_of_memory(cause),
        _ => false,
    }
}

fn build(host: Host, opts: VmOptions) -> mlua::Result<Vm> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    // Up to 64 finished branch coroutines are kept for reuse (see
    // `modules/gather.rs`): a `map` no longer builds a thread and grows
    // its stack per item (12 % fewer instructions over 20,000 items).
    let lua = Lua::new_with(libs, LuaOptions::default().thread_pool_size(64))?;
    // Most of what a task allocates (its environment, the blueprint's
    // tables, the step values) dies with the task: a generational
    // collector finds it in young collections (a 100-step Lua-agent flow
    // executes ~4% fewer instructions). A full collection still runs
    // before an allocation fails against the memory limit. Switching
    // runs a full collection, so it happens while the state is empty.
    lua.gc_set_mode(mlua::state::GcMode::Generational(Default::default()));
    // Everything built here lives as long as the VM: collecting during
    // construction is wasted work.
    lua.gc_stop();
    let limits = Arc::new(Limits::new(opts.instruction_budget));
    lua.set_app_data(VmCtx {
        host,
        token: Mutex::new(None),
        parent: Mutex::new(None),
        entry: Mutex::new(None),
        journal: Mutex::new(None),
        journal_used: Mutex::new((0, 0)),
        run_limits: Mutex::new(Default::default()),
        required: Mutex::new(Vec::new()),
        limits: limits.clone(),
        memory_limit: opts.memory_limit,
        swarm: std::sync::OnceLock::new(),
        protect: std::sync::OnceLock::new(),
        randomseed: std::sync::OnceLock::new(),
    });
    install_error_metatable(&lua)?;
    install_frozen_metamethods(&lua)?;
    let g = lua.globals();
    for name in ["dofile", "loadfile", "warn"] {
        g.raw_set(name, Value::Nil)?;
    }
    replace_base(&lua, &g)?;
    replace_string(&lua, &g)?;
    if let Some(ctx) = lua.app_data_ref::<VmCtx>() {
        let math: Table = g.raw_get("math")?;
        let _ = ctx.randomseed.set(math.raw_get("randomseed")?);
    }
    g.raw_set("os", reduced_os(&lua)?)?;
    g.raw_set("swarm", modules::compose(&lua)?)?;
    install_guards(&lua, &g)?;
    // After the guards, which keep the stock `table.pack`/`unpack` for
    // their own bookkeeping (no charge, no user frame to blame).
    replace_table(&lua, &g)?;
    // The base library's `_G` points at the raw globals; each run's
    // environment sets its own `_G`, so the raw one must not be reachable.
    g.raw_set("_G", Value::Nil)?;
    lock_metatable(&lua, "json array", &lua.array_metatable())?;
    lock_metatable(&lua, "swarm.error", &super::error::error_metatable(&lua)?)?;
    // Freeze every library table, then the globals themselves.
    for name in [
        "string",
        "table",
        "math",
        "utf8",
        "coroutine",
        "os",
        "swarm",
    ] {
        let t: Table = g.raw_get(name)?;
        g.raw_set(name, freeze(&lua, name, t)?)?;
    }
    if let Some(string_mt) = lua.type_metatable::<mlua::LuaString>() {
        string_mt.raw_set("__metatable", "locked")?;
    }
    if let Some(ctx) = lua.app_data_ref::<VmCtx>() {
        let _ = ctx.swarm.set(g.raw_get("swarm")?);
    }
    let base = freeze(&lua, "_G", g)?;
    lua.gc_restart();
    lua.set_memory_limit(opts.memory_limit)?;
    limits::install(&lua, limits.clone(), opts.memory_limit / 10 * 9)?;
    Ok(Vm {
        lua,
        limits,
        base,
        opts,
    })
}

/// The shared metatable of error tables (created once per VM).
pub fn install_error_metatable(lua: &Lua) -> mlua::Result<()> {
    let mt: Table = super::embedded::chunk(lua, super::embedded::ERROR_MT)?.call(())?;
    lua.set_named_registry_value(ERROR_MT, mt)
}
