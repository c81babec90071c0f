//! The `lua` backend: an agent body is a Lua function run in a sandboxed VM
//! that holds a worker token for the task.
//!
//! The agent's source is a chunk that returns `function(task) ... end`, or a
//! blueprint file whose `agents[name]` is `swarm.agent.lua { run = ... }`. VMs
//! are pooled, but each task gets a new environment and a body that holds
//! no state of its own (`reuse.rs`) or one built by running the chunk
//! afresh, so globals, upvalues and metatables of one task never reach the
//! next. A VM whose limits tripped, or whose task was abandoned mid-run, is
//! dropped.
//!
//! A task waits for a VM slot at its depth first (see [`super::VmSlots`]),
//! so the number of agent VMs running at once is capped.
//!
//! Results: `return value` → pass; `return nil, err` → blocked with `err`;
//! an error → blocked with `{ error, code }`; returning nothing leaves the
//! outcome to `swarm.worker.result(value, ok)`.

use super::{Host, LuaError, Vm, VmOptions, modules};
use crate::engine::{Outcome, SpawnCtx, SpawnError, Spawner, Worker};
use mlua::{Function, LuaString, Value};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// Idle VMs kept per agent.
const POOL_MAX: usize = 64;

pub struct LuaAgent {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    chunk: String,
    /// For a blueprint: which agent's `run` to call.
    select: Option<String>,
    host: Host,
    opts: VmOptions,
    pool: Mutex<Vec<PooledVm>>,
}

struct PooledVm {
    vm: Vm,
    chunk: Function,
    /// `lua/swarm/entry.lua` bound to this VM.
    entry: Function,
    /// The names handed to the entry, made into Lua strings once per VM
    /// (making one is a protected call): `select`, and the last task's
    /// agent name.
    select: Option<LuaString>,
    agent: Option<(Arc<str>, LuaString)>,
}

impl PooledVm {
    /// The task's agent name as a Lua string, reused while it repeats.
    fn agent_name(&mut self, agent: &Arc<str>) -> mlua::Result<LuaString> {
        match &self.agent {
            Some((name, s)) if name == agent => Ok(s.clone()),
            _ => {
                let s = self.vm.lua().create_string(&**agent)?;
                self.agent = Some((agent.clone(), s.clone()));
                Ok(s)
            }
        }
    }
}

impl LuaAgent {
    /// An agent whose body is `source` (a chunk returning a function),
    /// reported in errors as `chunk` (e.g. `agents/review.lua`).
    pub fn new(host: Host, source: &str, chunk: &str, opts: VmOptions) -> LuaAgent {
        LuaAgent {
            inner: Arc::new(Inner {
                source: source.to_string(),
                chunk: chunk.to_string(),
                select: None,
                host,
                opts,
                pool: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The agent `name` of the blueprint whose source is `source`: each task
    /// calls `agents[name].run` of the blueprint (evaluated afresh unless
    /// that body is kept, see `reuse.rs`).
    pub fn for_blueprint(
        host: Host,
        source: &str,
        chunk: &str,
        name: &str,
        opts: VmOptions,
    ) -> LuaAgent {
        let mut agent = LuaAgent::new(host, source, chunk, opts);
        Arc::get_mut(&mut agent.inner).expect("fresh").select = Some(name.to_string());
        agent
    }

    /// VMs currently idle in the pool.
    pub fn pooled(&self) -> usize {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Inner {
    fn checkout(&self) -> Result<PooledVm, LuaError> {
        if let Some(vm) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(vm);
        }
        let vm = Vm::new(self.host.clone(), self.opts.clone())?;
        vm.skip_locations();
        // `local _ENV = ...` on the chunk's first line: each call gets the
        // environment it is passed, and line numbers stay the user's.
        let wrapped = format!("local _ENV = ...; {}", self.source);
        let placeholder = vm.env().map_err(|e| vm.classify(e))?;
        let chunk = vm.load(&placeholder, &wrapped, &self.chunk)?;
        let entry = vm.agent_entry().map_err(|e| vm.classify(e))?;
        let select = match &self.select {
            Some(name) => Some(vm.lua().create_string(name).map_err(|e| vm.classify(e))?),
            None => None,
        };
        Ok(PooledVm {
            vm,
            chunk,
            entry,
            select,
            agent: None,
        })
    }

    fn checkin(&self, pooled: PooledVm) {
        pooled.vm.set_token(None);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(pooled);
        }
    }

    async fn run(self: Arc<Self>, ctx: SpawnCtx) -> Result<Outcome, SpawnError> {
        let slots = self.host.vm_slots.clone();
        let _slot = tokio::select! {
            slot = slots.acquire(ctx.depth) => slot,
            _ = ctx.cancel.cancelled() => return Ok(Outcome::Cancelled),
        };
        let mut pooled = self
            .checkout()
            .map_err(|e| SpawnError::VmSetup(e.to_string()))?;
        let agent = pooled
            .agent_name(&ctx.agent)
            .map_err(|e| SpawnError::VmSetup(e.to_string()))?;
        let vm = &pooled.vm;
        vm.set_token(Some(ctx.token.clone()));
        vm.arm(Some(ctx.cancel.clone()));
        vm.reseed()
            .map_err(|e| SpawnError::VmSetup(e.to_string()))?;
        // The task's run's meter: this VM charges the run-wide budgets too.
        vm.limits().join_run(self.host.runs.get(ctx.root.0));
        let result = async {
            // One call: fresh environment, the chunk's top level (it only
            // defines, so it runs synchronously), the body, the task table.
            let input = modules::input_to_lua(vm.lua(), &ctx.input).map_err(|e| vm.classify(e))?;
            let (body, task): (Value, Value) = pooled
                .entry
                .call((
                    &pooled.chunk,
                    pooled.select.clone(),
                    ctx.task.0,
                    ctx.attempt,
                    ctx.retry,
                    agent,
                    input,
                ))
                .map_err(|e| vm.classify(e))?;
            let Value::Function(f) = body else {
                return Err(LuaError::Runtime(format!(
                    "{}: the agent chunk must return a function(task)",
                    self.chunk
                )));
            };
            vm.call(&f, task).await
        }
        .await;
        let outcome = match result {
            Ok(values) => {
                let mut it = values.into_iter();
                let (first, second) = (it.next().unwrap_or(Value::Nil), it.next());
                let json = |v: Value| modules::returned_to_json(vm.lua(), v, "the agent's result");
                match (first, second) {
                    (Value::Nil, Some(err)) if !err.is_nil() => json(err).map(Outcome::Blocked),
                    (Value::Nil, _) => Ok(Outcome::Exited),
                    (v, _) => json(v).map(Outcome::Pass),
                }
                .unwrap_or_else(|e| {
                    Outcome::Blocked(json!({"error": e.to_string(), "code": e.code}))
                })
            }
            Err(e) => Outcome::Blocked(e.to_result()),
        };
        vm.limits().join_run(None);
        if vm.limits().tripped().is_none() {
            self.checkin(pooled);
        }
        Ok(outcome)
    }
}

impl Spawner for LuaAgent {
    fn spawn(&self, ctx: SpawnCtx) -> Worker {
        Box::pin(self.inner.clone().run(ctx))
    }
}
