//! The `repl` table inside the REPL: run loaded blueprints in the
//! foreground (`repl.run`) or in the background (`repl.spawn`, `repl.wait`),
//! with background progress printed above the prompt.

use crate::auth::{CapToken, Role};
use crate::engine::{Engine, EventKind, TaskStatus};
use crate::lua::{HostError, to_json, to_lua};
use crate::run::service::Authority;
use crate::run::{RunOptions, Runs};
use mlua::{Lua, Table, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where background output goes: above the prompt on a terminal, stdout
/// otherwise.
pub type Printer = Box<dyn FnMut(String) + Send>;

pub struct Shared {
    pub engine: Engine,
    /// Where the REPL's runs execute.
    pub exec: Arc<Runs>,
    pub role: Role,
    /// The REPL's session; replaced when the REPL re-attaches.
    token: Mutex<CapToken>,
    pub blueprints: Mutex<BTreeMap<String, PathBuf>>,
    pub runs: Mutex<BTreeMap<String, Bg>>,
    next: AtomicU32,
    printer: Mutex<Option<Printer>>,
}

/// A background run this REPL started: its key in [`Runs`], and its
/// outcome once it has one.
pub struct Bg {
    pub blueprint: String,
    pub done: watch::Receiver<Option<(TaskStatus, serde_json::Value)>>,
    key: Arc<Mutex<Option<String>>>,
}

impl Shared {
    pub fn new(engine: Engine, role: Role, token: CapToken) -> Shared {
        Shared {
            exec: Runs::new(engine.clone(), None),
            engine,
            role,
            token: Mutex::new(token),
            blueprints: Mutex::default(),
            runs: Mutex::default(),
            next: AtomicU32::new(1),
            printer: Mutex::new(None),
        }
    }

    /// The REPL's current session token.
    pub fn token(&self) -> CapToken {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_token(&self, token: CapToken) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }

    pub fn set_printer(&self, p: Printer) {
        *self.printer.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    /// Prints a line without garbling the one being typed.
    pub fn say(&self, line: String) {
        match self
            .printer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(p) => p(crate::text::for_terminal(&line).into_owned()),
            None => say!("{line}"),
        }
    }

    /// Background runs still going.
    pub fn running(&self) -> usize {
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|b| b.done.borrow().is_none())
            .count()
    }

    fn path_of(&self, name: &str) -> Result<PathBuf, HostError> {
        if self.role != Role::Operator {
            return Err(HostError::new(
                "forbidden",
                format!("role `{}` may not run flows", self.role),
            ));
        }
        let bps = self.blueprints.lock().unwrap_or_else(|e| e.into_inner());
        bps.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = bps.keys().map(String::as_str).collect();
            HostError::new(
                "unknown_blueprint",
                format!(
                    "no blueprint `{name}` loaded (loaded: {}); use :load FILE",
                    known.join(", ")
                ),
            )
        })
    }

    /// Starts a background run of `name`; returns its id.
    pub fn spawn(
        self: &Arc<Self>,
        name: &str,
        input: serde_json::Value,
    ) -> Result<String, HostError> {
        let path = self.path_of(name)?;
        let id = format!("r{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = watch::channel(None);
        let key = Arc::new(Mutex::new(None));
        let (me, run_id, bp, slot) = (self.clone(), id.clone(), name.to_string(), key.clone());
        tokio::spawn(async move {
            let who = Authority::local();
            let out = match me
                .exec
                .start(&who, &path, input, RunOptions::default())
                .await
            {
                Ok(h) => {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(h.key.clone());
                    h.finished().await.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let (status, result) = match out {
                Ok(r) => (r.status, r.result),
                Err(e) => (TaskStatus::Blocked, serde_json::json!({ "error": e })),
            };
            me.say(format!("[{run_id}] {bp} → {status} {result}"));
            let _ = tx.send(Some((status, result)));
        });
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id.clone(),
            Bg {
                blueprint: name.to_string(),
                done: rx,
                key,
            },
        );
        Ok(id)
    }

    /// Waits for background run `id`.
    pub async fn wait(&self, id: &str) -> Result<(TaskStatus, serde_json::Value), HostError> {
        let mut rx = {
            let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
            runs.get(id)
                .map(|b| b.done.clone())
                .ok_or_else(|| HostError::new("unknown_run", format!("no background run `{id}`")))?
        };
        let done = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| HostError::new("unknown_run", format!("run `{id}` vanished")))?;
        Ok(done.clone().expect("waited for Some"))
    }

    /// Cancels every background run (on exit).
    pub fn cancel_all(&self) {
        let who = Authority::local();
        for b in self.runs.lock().unwrap_or_else(|e| e.into_inner()).values() {
            if let Some(key) = b.key.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
                let _ = self.exec.interrupt(&who, key);
            }
        }
    }

    /// Prints a line per settled step while background runs are going.
    pub fn follow(self: &Arc<Self>) {
        let Ok(mut sub) = self
            .engine
            .subscribe(&self.token(), self.engine.last_cursor())
        else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(ev) = sub.next().await {
                if let (EventKind::AttemptCompleted { status, us, .. }, Some(task)) =
                    (&ev.kind, ev.task)
                    && me.running() > 0
                    && let Ok(view) = me.engine.read_task(&me.token(), task)
                    && view.parent.is_some()
                {
                    me.say(format!(
                        "  · {task} {} {status} ({} ms)",
                        view.agent,
                        us / 1000
                    ));
                }
            }
        });
    }
}

fn raise(lua: &Lua, e: HostError) -> mlua::Error {
    let msg = format!(
        "{}: {} [{}]",
        crate::lua::caller_location(lua, 0),
        e.message,
        e.code
    );
    mlua::Error::RuntimeError(msg)
}

/// The `repl` table.
pub fn register(lua: &Lua, shared: Arc<Shared>) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let s = shared.clone();
    t.raw_set(
        "run",
        lua.create_async_function(move |lua, (name, input): (String, Value)| {
            let s = s.clone();
            async move {
                let input = to_json(&lua, input, "repl.run input").map_err(|e| raise(&lua, e))?;
                let path = s.path_of(&name).map_err(|e| raise(&lua, e))?;
                let who = Authority::local();
                let started = s
                    .exec
                    .start(&who, &path, input, RunOptions::default())
                    .await
                    .map_err(|e| raise(&lua, HostError::new(e.code(), e.to_string())))?;
                let report = started
                    .finished()
                    .await
                    .map_err(|e| raise(&lua, HostError::new("run", e.to_string())))?;
                if report.status != TaskStatus::Pass {
                    // The chain of causes, as `swarm run` prints it.
                    let chain = crate::run::error_chain(&report.result);
                    let chain = chain.strip_prefix("error: ").unwrap_or(&chain);
                    let msg = format!("flow {}: {chain}\n", report.status);
                    return Err(raise(&lua, HostError::new("flow_failed", msg)));
                }
                to_lua(&lua, &report.result)
            }
        })?,
    )?;
    let s = shared.clone();
    t.raw_set(
        "spawn",
        lua.create_function(move |lua, (name, input): (String, Value)| {
            let input = to_json(lua, input, "repl.spawn input").map_err(|e| raise(lua, e))?;
            s.spawn(&name, input).map_err(|e| raise(lua, e))
        })?,
    )?;
    let s = shared.clone();
    t.raw_set(
        "wait",
        lua.create_async_function(move |lua, id: String| {
            let s = s.clone();
            async move {
                let (status, result) = s.wait(&id).await.map_err(|e| raise(&lua, e))?;
                Ok((to_lua(&lua, &result)?, status.as_str()))
            }
        })?,
    )?;
    let s = shared;
    t.raw_set(
        "blueprints",
        lua.create_function(move |_, ()| {
            Ok(s.blueprints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect::<Vec<_>>())
        })?,
    )?;
    Ok(t)
}
