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

use super::error::{caller_location, install_error_metatable};
use super::limits::{self, LimitError, Limits, Tripped};
use super::{Host, LuaError, embedded, modules, pattern};
use crate::auth::CapToken;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value, Variadic};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits for a VM. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Bytes the VM may allocate (default 64 MiB).
    pub memory_limit: usize,
    /// Lua instructions one run may execute (default 1e9).
    pub instruction_budget: u64,
    /// Wall-clock limit of one run (default none).
    pub timeout: Option<Duration>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            memory_limit: 64 << 20,
            instruction_budget: 1_000_000_000,
            timeout: None,
        }
    }
}

/// Per-VM host data, stored with `set_app_data`.
pub(crate) struct VmCtx {
    pub host: Host,
    pub token: Mutex<Option<CapToken>>,
    /// The default parent of tasks this VM starts (a run's root task).
    pub parent: Mutex<Option<crate::engine::TaskId>>,
    /// The running entry function (flow, agent body), for error locations.
    pub entry: Mutex<Option<Function>>,
    /// Files `require`d from the blueprint's directory (hot reload watches them).
    pub required: Mutex<Vec<std::path::PathBuf>>,
    /// The run's journal, for flow VMs of durable runs.
    pub journal: Mutex<Option<Arc<crate::store::Journal>>>,
    pub limits: Arc<Limits>,
    pub memory_limit: usize,
}

impl VmCtx {
    pub fn token(&self) -> Option<CapToken> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn parent(&self) -> Option<crate::engine::TaskId> {
        *self.parent.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn journal(&self) -> Option<Arc<crate::store::Journal>> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn entry_location(&self) -> Option<String> {
        let f = self.entry.lock().unwrap_or_else(|e| e.into_inner()).clone();
        super::error::defined_at(&f?)
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
        *ctx.journal.lock().unwrap_or_else(|e| e.into_inner()) = journal;
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
        if let Ok(f) = self
            .lua
            .named_registry_value::<Function>(super::modules::LOCATING)
        {
            let _ = f.call::<()>(false);
        }
    }

    /// Sets the default parent of tasks this VM starts.
    pub fn set_parent(&self, task: Option<crate::engine::TaskId>) {
        let ctx = self.lua.app_data_ref::<VmCtx>().expect("VmCtx installed");
        *ctx.parent.lock().unwrap_or_else(|e| e.into_inner()) = task;
    }

    /// A fresh global environment for one run.
    pub fn env(&self) -> mlua::Result<Table> {
        let env = self.lua.create_table()?;
        let mt = self.lua.create_table()?;
        mt.raw_set("__index", &self.base)?;
        env.set_metatable(Some(mt))?;
        env.raw_set("_G", &env)?;
        self.lua.set_named_registry_value(CURRENT_ENV, &env)?;
        self.lua
            .set_named_registry_value(CURRENT_LOADED, self.lua.create_table()?)?;
        Ok(env)
    }

    /// The per-task entry of Lua agents (`lua/swarm/entry.lua`), bound to
    /// this VM.
    pub(crate) fn agent_entry(&self) -> mlua::Result<Function> {
        let begin = self.lua.create_function(|lua, env: Table| {
            lua.set_named_registry_value(CURRENT_ENV, &env)?;
            lua.set_named_registry_value(CURRENT_LOADED, lua.create_table()?)
        })?;
        let setmetatable: Function = self.lua.globals().raw_get("setmetatable")?;
        embedded::chunk(&self.lua, embedded::ENTRY)?.call((setmetatable, &self.base, begin))
    }

    /// Compiles text `source` as chunk `@name` in `env`.
    pub fn load(&self, env: &Table, source: &str, name: &str) -> Result<Function, LuaError> {
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

    /// Calls `f` on an async Lua thread: host verbs it calls may wait.
    /// `f` becomes the run's entry function for error locations.
    pub async fn call(
        &self,
        f: &Function,
        args: impl mlua::IntoLuaMulti,
    ) -> Result<MultiValue, LuaError> {
        if let Some(ctx) = self.lua.app_data_ref::<VmCtx>() {
            *ctx.entry.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        }
        f.call_async::<MultiValue>(args)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Loads and runs `source` in a fresh environment with fresh limits.
    pub async fn exec(&self, source: &str, name: &str) -> Result<MultiValue, LuaError> {
        self.arm(None);
        let env = self.env().map_err(|e| self.classify(e))?;
        let f = self.load(&env, source, name)?;
        self.call(&f, ()).await
    }

    /// Turns an mlua error into the host's typed error.
    pub fn classify(&self, err: mlua::Error) -> LuaError {
        if let Some(limit) = find_limit(&err) {
            return LuaError::Limit(limit);
        }
        let memory = matches!(err, mlua::Error::MemoryError(_))
            || self.limits.tripped() == Some(Tripped::Memory);
        if memory {
            self.limits.trip(Tripped::Memory);
            return LuaError::Limit(LimitError {
                kind: Tripped::Memory,
                what: format!("memory limit of {} bytes exceeded", self.opts.memory_limit),
                location: "?".into(),
            });
        }
        if let Some(t) = self.limits.tripped() {
            return LuaError::Limit(LimitError {
                kind: t,
                what: self.limits.describe(t),
                location: "?".into(),
            });
        }
        match err {
            mlua::Error::SyntaxError { message, .. } => LuaError::Syntax(message),
            other => LuaError::Runtime(root_message(&other)),
        }
    }
}

fn find_limit(err: &mlua::Error) -> Option<LimitError> {
    match err {
        mlua::Error::ExternalError(e) => e.downcast_ref::<LimitError>().cloned(),
        mlua::Error::CallbackError { cause, .. } => find_limit(cause),
        mlua::Error::WithContext { cause, .. } => find_limit(cause),
        _ => None,
    }
}

/// The innermost message, without mlua's traceback decoration.
fn root_message(err: &mlua::Error) -> String {
    match err {
        mlua::Error::CallbackError { cause, .. } => root_message(cause),
        mlua::Error::WithContext { cause, .. } => root_message(cause),
        mlua::Error::RuntimeError(m) => m.clone(),
        other => other.to_string(),
    }
}

fn build(host: Host, opts: VmOptions) -> mlua::Result<Vm> {
    let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
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
        required: Mutex::new(Vec::new()),
        limits: limits.clone(),
        memory_limit: opts.memory_limit,
    });
    install_error_metatable(&lua)?;
    install_frozen_metamethods(&lua)?;
    let g = lua.globals();
    for name in ["dofile", "loadfile", "warn"] {
        g.raw_set(name, Value::Nil)?;
    }
    replace_base(&lua, &g)?;
    replace_string(&lua, &g)?;
    g.raw_set("os", reduced_os(&lua)?)?;
    g.raw_set("swarm", modules::compose(&lua)?)?;
    install_guards(&lua, &g)?;
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

/// A read-only view of `t`: reads fall through, writes raise, the metatable
/// is hidden, `pairs` walks the original. Nested tables of the `swarm`
/// library are frozen too.
pub(crate) fn freeze(lua: &Lua, name: &str, t: Table) -> mlua::Result<Table> {
    if name.starts_with("swarm") {
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            if let (Value::String(key), Value::Table(inner)) = (&k, &v)
                && inner.metatable().is_none()
            {
                let child = format!("{name}.{}", key.to_str()?);
                t.raw_set(k.clone(), freeze(lua, &child, inner.clone())?)?;
            }
        }
    }
    let shared: Table = lua.named_registry_value(FROZEN_MT)?;
    let mt = lua.create_table_with_capacity(0, 6)?;
    for key in ["__newindex", "__pairs", "__metatable", "__frozen"] {
        mt.raw_set(key, shared.raw_get::<Value>(key)?)?;
    }
    mt.raw_set("__index", t)?;
    mt.raw_set("__label", name)?;
    let proxy = lua.create_table()?;
    proxy.set_metatable(Some(mt))?;
    Ok(proxy)
}

const FROZEN_MT: &str = "swarm.frozen_mt";

/// The metamethods every frozen table shares, created once per VM.
fn install_frozen_metamethods(lua: &Lua) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    shared.raw_set(
        "__newindex",
        lua.create_function(|lua, (t, k): (Table, Value)| {
            let label: String = t
                .metatable()
                .and_then(|mt| mt.raw_get("__label").ok())
                .unwrap_or_default();
            Err::<(), _>(mlua::Error::RuntimeError(format!(
                "{}: attempt to modify read-only table '{label}' (field '{}')",
                caller_location(lua, 0),
                k.to_string().unwrap_or_default()
            )))
        })?,
    )?;
    let next: Function = lua.globals().raw_get("next")?;
    shared.raw_set(
        "__pairs",
        lua.create_function(move |_, t: Table| {
            let original: Value = t
                .metatable()
                .map(|mt| mt.raw_get("__index"))
                .transpose()?
                .unwrap_or(Value::Nil);
            Ok((next.clone(), original, Value::Nil))
        })?,
    )?;
    shared.raw_set("__metatable", "locked")?;
    shared.raw_set("__frozen", true)?;
    lua.set_named_registry_value(FROZEN_MT, shared)
}

fn is_frozen(t: &Table) -> bool {
    t.metatable()
        .is_some_and(|mt| mt.raw_get::<bool>("__frozen").unwrap_or(false))
}

fn ctx_limits(lua: &Lua) -> Arc<Limits> {
    lua.app_data_ref::<VmCtx>().expect("VmCtx").limits.clone()
}

fn replace_base(lua: &Lua, g: &Table) -> mlua::Result<()> {
    g.raw_set(
        "print",
        lua.create_function(|lua, args: Variadic<Value>| {
            let parts: Vec<String> = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| "?".into()))
                .collect();
            let line = parts.join("\t");
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            (ctx.host.print)(&line);
            Ok(())
        })?,
    )?;
    g.raw_set(
        "collectgarbage",
        lua.create_function(|lua, opt: Option<String>| match opt.as_deref() {
            None | Some("count") => Ok(lua.used_memory() as f64 / 1024.0),
            Some(other) => Err(mlua::Error::RuntimeError(format!(
                "{}: collectgarbage(\"{other}\") is not available in the sandbox (only \"count\")",
                caller_location(lua, 0)
            ))),
        })?,
    )?;
    g.raw_set(
        "rawset",
        lua.create_function(|lua, (t, k, v): (Table, Value, Value)| {
            if is_frozen(&t) {
                return Err(mlua::Error::RuntimeError(format!(
                    "{}: attempt to modify a read-only table with rawset",
                    caller_location(lua, 0)
                )));
            }
            t.raw_set(k, v)?;
            Ok(t)
        })?,
    )?;
    g.raw_set("load", sandboxed_load(lua)?)?;
    lua.set_named_registry_value(CURRENT_LOADED, lua.create_table()?)?;
    g.raw_set(
        "require",
        lua.create_function(move |lua, name: String| {
            if name == "swarm" {
                return lua.globals().raw_get::<Value>("swarm");
            }
            let loaded: Table = lua.named_registry_value(CURRENT_LOADED)?;
            if let Some(v) = loaded.raw_get::<Option<Value>>(name.as_str())? {
                return Ok(v);
            }
            let v = embedded::require(lua, &name)?;
            loaded.raw_set(name.as_str(), v.clone())?;
            Ok(v)
        })?,
    )?;
    Ok(())
}

/// Registry slot of the environment of the run in progress.
const CURRENT_ENV: &str = "swarm.current_env";
/// Registry slot of the run's `require` cache (fresh per run, so modules'
/// state never crosses runs in a pooled VM).
pub(crate) const CURRENT_LOADED: &str = "swarm.current_loaded";

/// `load`: text chunks only; the default environment is the current run's.
fn sandboxed_load(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(
        move |lua, (chunk, name, mode, e): (Value, Option<String>, Option<String>, Option<Table>)| {
            let Value::String(src) = chunk else {
                return Err(mlua::Error::RuntimeError(format!(
                    "{}: load: only string chunks are allowed in the sandbox",
                    caller_location(lua, 0)
                )));
            };
            let bytes = src.as_bytes();
            if mode.as_deref().is_some_and(|m| !m.contains('t')) || bytes.first() == Some(&0x1b) {
                return Ok((Value::Nil, Value::String(lua.create_string(
                    "attempt to load a binary chunk (binary chunks are not allowed in the sandbox)",
                )?)));
            }
            let f = lua
                .load(&bytes[..])
                .set_name(name.unwrap_or_else(|| "=(load)".into()))
                .set_mode(ChunkMode::Text)
                .set_environment(match e {
                    Some(e) => e,
                    None => lua.named_registry_value(CURRENT_ENV)?,
                })
                .into_function();
            match f {
                Ok(f) => Ok((Value::Function(f), Value::Nil)),
                Err(err) => Ok((Value::Nil, Value::String(lua.create_string(root_message(&err))?))),
            }
        },
    )
}

fn replace_string(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let s: Table = g.raw_get("string")?;
    s.raw_set("dump", Value::Nil)?;
    fn charge(lua: &Lua) -> impl Fn(u64) -> mlua::Result<()> + '_ {
        let limits = ctx_limits(lua);
        move |n: u64| limits.charge(n).map_err(|t| limits.error(lua, t))
    }
    s.raw_set(
        "find",
        lua.create_function(move |lua, args| {
            let c = charge(lua);
            pattern::find(lua, args, true, &c)
        })?,
    )?;
    s.raw_set(
        "match",
        lua.create_function(
            move |lua, (a, b, c): (mlua::LuaString, mlua::LuaString, Option<i64>)| {
                let ch = charge(lua);
                pattern::find(lua, (a, b, c, None), false, &ch)
            },
        )?,
    )?;
    s.raw_set(
        "gsub",
        lua.create_function(move |lua, args| {
            let c = charge(lua);
            pattern::gsub(lua, args, &c)
        })?,
    )?;
    s.raw_set(
        "gmatch",
        lua.create_function(
            move |lua, (src, pat, init): (mlua::LuaString, mlua::LuaString, Option<i64>)| {
                let mut pos = pattern::gmatch_start(init, src.as_bytes().len());
                let mut last = None;
                lua.create_function_mut(move |lua, ()| {
                    let c = charge(lua);
                    pattern::gmatch_next(
                        lua,
                        &src.as_bytes(),
                        &pat.as_bytes(),
                        &mut pos,
                        &mut last,
                        &c,
                    )
                })
            },
        )?,
    )?;
    s.raw_set(
        "rep",
        lua.create_function(|lua, (s, n, sep): (mlua::LuaString, i64, Option<mlua::LuaString>)| {
            if n <= 0 {
                return lua.create_string("");
            }
            let (s, sep) = (s.as_bytes(), sep.as_ref().map(|x| x.as_bytes()));
            let sep_len = sep.as_ref().map_or(0, |x| x.len());
            let total = (s.len() as u128 + sep_len as u128) * n as u128;
            let ctx = lua.app_data_ref::<VmCtx>().expect("VmCtx");
            if total > ctx.memory_limit as u128 {
                ctx.limits.trip(Tripped::Memory);
                return Err(mlua::Error::external(LimitError {
                    kind: Tripped::Memory,
                    what: format!(
                        "string.rep would build {total} bytes, over the VM memory limit of {} bytes",
                        ctx.memory_limit
                    ),
                    location: caller_location(lua, 0),
                }));
            }
            ctx.limits
                .charge(total as u64 / 64)
                .map_err(|t| ctx.limits.error(lua, t))?;
            let mut out = Vec::with_capacity(total as usize);
            for i in 0..n {
                if i > 0
                    && let Some(sep) = &sep {
                        out.extend_from_slice(sep);
                    }
                out.extend_from_slice(&s);
            }
            lua.create_string(&out)
        })?,
    )?;
    Ok(())
}

fn reduced_os(lua: &Lua) -> mlua::Result<Table> {
    let os = lua.create_table()?;
    os.raw_set(
        "time",
        lua.create_function(|lua, t: Option<Value>| {
            if t.is_some() {
                return Err(mlua::Error::RuntimeError(format!(
                    "{}: os.time(table) is not available in the sandbox",
                    caller_location(lua, 0)
                )));
            }
            Ok(crate::engine::now_ms() / 1000)
        })?,
    )?;
    let start = Instant::now();
    os.raw_set(
        "clock",
        lua.create_function(move |_, ()| Ok(start.elapsed().as_secs_f64()))?,
    )?;
    Ok(os)
}

/// `pcall`, `xpcall` and `coroutine.resume` that re-raise a tripped limit.
fn install_guards(lua: &Lua, g: &Table) -> mlua::Result<()> {
    let tripped = lua.create_function(|lua, err: Value| {
        let limits = ctx_limits(lua);
        if let Value::String(s) = &err
            && s.as_bytes().as_ref() == b"not enough memory"
        {
            limits.trip(Tripped::Memory);
        }
        Ok(limits.tripped().is_some())
    })?;
    let co: Table = g.raw_get("coroutine")?;
    let guards: Table = embedded::chunk(lua, embedded::GUARDS)?.call((
        g.raw_get::<Function>("pcall")?,
        g.raw_get::<Function>("xpcall")?,
        co.raw_get::<Function>("resume")?,
        tripped,
    ))?;
    g.raw_set("pcall", guards.raw_get::<Function>("pcall")?)?;
    g.raw_set("xpcall", guards.raw_get::<Function>("xpcall")?)?;
    co.raw_set("resume", guards.raw_get::<Function>("resume")?)?;
    Ok(())
}
