//! The built-in agent kinds. Each is one [`Kind`]: the fields validation
//! checks, a reader from the declaration and a [`Backend`] that builds the
//! agent's spawner. [`KINDS`] is the table of contents, in the order
//! `swarm check` and error messages list them.

use super::{Backend, Decl, Kind};
use crate::engine::{SpawnError, Spawner};
use crate::lua::LuaAgent;
use crate::run::agents::Build;
use crate::run::blueprint::BlueprintError;
use crate::spawn::kinds::AgentKind;
use crate::spawn::{ProcessAgent, ProcessSpec, RemoteAgent, RemoteSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub(super) const KINDS: &[Kind] = &[LUA, PROCESS, RUST, LLM, REMOTE, super::mcp::MCP];

// lua ------------------------------------------------------------------

const LUA: Kind = Kind {
    info: AgentKind {
        name: "lua",
        about: "an agent whose body is `run = function(task) ... end`, in its own sandbox",
        fields: &[("run", "function")],
        requires: (&["run"], "is required (function(task))"),
    },
    read: |_| Ok(Arc::new(Lua)),
};

/// Runs the declaration's `run` function in the blueprint's chunk,
/// evaluated in a Lua-agent VM of its own.
#[derive(Debug)]
struct Lua;

impl Backend for Lua {
    fn build(&self, b: &Build<'_>, agent: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        Ok(Arc::new(LuaAgent::for_blueprint(
            b.host.clone(),
            &b.blueprint.source,
            &b.blueprint.chunk,
            agent,
            b.vm.clone(),
        )))
    }
}

// process --------------------------------------------------------------

const PROCESS: Kind = Kind {
    info: AgentKind {
        name: "process",
        about: "a command: `cmd = { argv... }` (no shell) or `shell = \"...\"`",
        fields: &[
            ("cmd", "table"),
            ("shell", "string"),
            ("cwd", "string"),
            ("env", "table"),
            ("inherit", "table"),
            ("timeout", "duration"),
            ("max_output", "number"),
        ],
        requires: (&["cmd", "shell"], "is required (a list: program, args...)"),
    },
    read: read_process,
};

fn read_process(d: &Decl<'_>) -> Result<Arc<dyn Backend>, BlueprintError> {
    #[derive(Deserialize)]
    struct Raw {
        cmd: Option<Vec<String>>,
        shell: Option<String>,
        cwd: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        inherit: Vec<String>,
        max_output: Option<f64>,
    }
    // Validation checked every field's type; profile fields are ignored.
    let raw = Raw::deserialize(d.json()?).map_err(|e| d.problem("", e.to_string()))?;
    let argv = match (raw.cmd, raw.shell) {
        (Some(cmd), _) if !cmd.is_empty() => cmd,
        (_, Some(sh)) => vec!["sh".into(), "-c".into(), sh],
        _ => return Err(d.problem("cmd", "must name a program")),
    };
    let mut p = ProcessSpec::new(argv);
    p.cwd = Some(match raw.cwd {
        Some(c) => d.dir.join(c),
        None => d.dir.to_path_buf(),
    });
    p.env = raw.env;
    p.inherit = raw.inherit;
    p.timeout = d.duration("timeout")?;
    if let Some(max) = raw.max_output {
        p.max_output = max as usize;
    }
    p.profile = d.profile.clone();
    Ok(Arc::new(Process(p)))
}

#[derive(Debug)]
struct Process(ProcessSpec);

impl Backend for Process {
    fn build(&self, _: &Build<'_>, agent: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        let inherit = self.0.inherit.iter().map(String::as_str);
        crate::spawn::secrets::check_all(agent, "inherit", inherit)?;
        Ok(Arc::new(ProcessAgent::new(self.0.clone())))
    }

    /// The program is neither on PATH nor a file.
    fn preflight(&self, agent: &str, dir: &Path) -> Vec<String> {
        let dir = self.0.cwd.as_deref().unwrap_or(dir);
        super::program_missing(agent, self.0.argv.first(), dir)
    }
}

// rust -----------------------------------------------------------------

const RUST: Kind = Kind {
    info: AgentKind {
        name: "rust",
        about: "a Rust function registered with the host under `name`",
        fields: &[("name", "string")],
        requires: (&["name"], "is required"),
    },
    read: |d| Ok(Arc::new(Rust(d.get("name")?))),
};

/// A function of `RunOptions::rust`, by name.
#[derive(Debug)]
struct Rust(String);

impl Backend for Rust {
    fn build(&self, b: &Build<'_>, agent: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        let f = b
            .rust
            .get(&self.0)
            .ok_or_else(|| SpawnError::UnknownRustAgent {
                agent: agent.to_string(),
                name: self.0.clone(),
            })?;
        Ok(Arc::new(f.clone()))
    }
}

// llm ------------------------------------------------------------------

const LLM: Kind = Kind {
    info: AgentKind {
        name: "llm",
        about: "a model behind an OpenAI-compatible chat-completions endpoint",
        fields: &[
            ("base_url", "string"),
            ("api_key_env", "string"),
            ("schema", "table"),
            ("max_turns", "number"),
            ("temperature", "number"),
            ("max_tokens", "number"),
            ("headers", "table"),
            ("extra", "table"),
            ("timeout", "duration"),
            ("turn_timeout", "duration"),
            ("stream", "boolean"),
            ("retries", "number"),
        ],
        requires: (&[], ""),
    },
    read: read_llm,
};

fn read_llm(d: &Decl<'_>) -> Result<Arc<dyn Backend>, BlueprintError> {
    let mut json = d.json()?;
    // An empty Lua table decodes as an object; `tools` is a list.
    if let Some(o) = json.as_object_mut()
        && o.get("tools")
            .is_some_and(|t| t.as_object().is_some_and(|m| m.is_empty()))
    {
        o.insert("tools".into(), serde_json::json!([]));
    }
    let spec: crate::llm::LlmSpec =
        serde_json::from_value(json).map_err(|e| d.problem("", e.to_string()))?;
    Ok(Arc::new(Llm(spec)))
}

#[derive(Debug)]
struct Llm(crate::llm::LlmSpec);

impl Backend for Llm {
    fn build(&self, b: &Build<'_>, agent: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        let named = self.0.api_key_env.as_deref();
        crate::spawn::secrets::check_all(agent, "api_key_env", named)?;
        if let Some(url) = &self.0.base_url {
            crate::spawn::secrets::may_reach(url)
                .map_err(|why| SpawnError::BadSpec(format!("agent `{agent}`: {why}")))?;
        }
        let side = crate::llm::RunSide {
            tools: Arc::new(crate::run::llm::RunTools::new(
                b.host.agents.clone(),
                &b.blueprint.agents,
                b.catalogs.clone(),
            )),
            log: Arc::new(crate::run::llm::RunLog {
                journal: b.journal.clone(),
                stop: b.stop.clone(),
            }),
            meter: b.meter.clone(),
            mail: Some(Arc::new(crate::run::llm::RunMail {
                journal: b.journal.clone(),
            })),
        };
        Ok(Arc::new(crate::llm::LlmAgent::new(
            agent,
            self.0.clone(),
            side,
        )))
    }

    /// The API key's variable is not set here, or no model is named.
    fn preflight(&self, agent: &str, _: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(var) = &self.0.api_key_env {
            if let Err(why) = crate::spawn::secrets::may_name(var) {
                out.push(format!("agent `{agent}`: api_key_env names ${var}: {why}"));
            } else if std::env::var_os(var).is_none() {
                out.push(format!(
                    "agent `{agent}`: api_key_env names ${var}, which is not set"
                ));
            }
        }
        if let Some(Err(why)) = self
            .0
            .base_url
            .as_deref()
            .map(crate::spawn::secrets::may_reach)
        {
            out.push(format!("agent `{agent}`: {why}"));
        }
        if self.0.model.is_none() && std::env::var_os("SWARM_LLM_MODEL").is_none() {
            out.push(format!(
                "agent `{agent}`: no model (set `model` or $SWARM_LLM_MODEL)"
            ));
        }
        out
    }
}

// remote ---------------------------------------------------------------

const REMOTE: Kind = Kind {
    info: AgentKind {
        name: "remote",
        about: "a step done by `swarm worker --queue <queue>` through `swarm serve`",
        fields: &[("queue", "string"), ("timeout", "duration")],
        requires: (&["queue"], "is required (the queue workers claim from)"),
    },
    read: |d| {
        Ok(Arc::new(Remote(RemoteSpec {
            queue: d.get::<String>("queue")?.into(),
            timeout: d.duration("timeout")?,
            profile: d.profile.clone(),
        })))
    },
};

#[derive(Debug)]
struct Remote(RemoteSpec);

impl Backend for Remote {
    fn build(&self, b: &Build<'_>, _: &str) -> Result<Arc<dyn Spawner>, SpawnError> {
        // The run's journal: its store's queue, shared by every server on
        // it; workers bound to a run claim only its steps.
        let journal = b.journal.clone();
        let run = Arc::new(move || {
            let j = journal.lock().unwrap_or_else(|e| e.into_inner());
            j.as_ref().map(|j| (j.run().to_string(), j.store().clone()))
        });
        Ok(Arc::new(RemoteAgent::new(self.0.clone(), run)))
    }
}
