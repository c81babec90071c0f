//! Loading a blueprint: evaluate the file in a sandbox, validate it, and
//! read it into plain Rust values.
//!
//! Validation of shape and names is in Lua (`lua/swarm/blueprint.lua`,
//! which knows where each constructor was called); the gate's
//! never-widen rule is checked here with `RoleVerbGate::narrow`. All
//! problems are collected, none is fatal alone.

use super::kinds::{AgentKinds, Backend, Decl};
use crate::auth::{Role, RoleVerbGate, Verb};
use crate::lua::{LuaError, Vm};
use mlua::{LuaSerdeExt, Table, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One thing wrong with a blueprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: String,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}` {}", self.location, self.field, self.message)
    }
}

/// Why a blueprint could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlueprintError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error(transparent)]
    Lua(#[from] LuaError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl BlueprintError {
    /// A stable code: the file cannot be read, its Lua fails, or what it
    /// declares is invalid.
    pub fn code(&self) -> &'static str {
        match self {
            BlueprintError::Read { .. } => "blueprint_read",
            BlueprintError::Lua(_) => "blueprint_lua",
            BlueprintError::Invalid(_) => "blueprint_invalid",
        }
    }
}

/// A middleware layer named in `hints.layers` or an agent's `layers`.
#[derive(Debug, Clone)]
pub struct LayerUse {
    pub key: String,
    pub opts: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    /// What its kind read from the declaration (see `run::kinds`).
    pub backend: Arc<dyn Backend>,
    /// Layers of this agent alone, inside the blueprint's.
    pub layers: Vec<LayerUse>,
    pub profile: serde_json::Value,
}

/// A validated blueprint.
#[derive(Debug, Clone)]
pub struct Blueprint {
    pub name: String,
    pub path: PathBuf,
    /// The chunk name errors show (the path as given).
    pub chunk: String,
    pub source: Arc<str>,
    /// SHA-256 of the source, hex.
    pub hash: String,
    pub agents: Vec<AgentSpec>,
    /// Layers for every agent, outermost first.
    pub layers: Vec<LayerUse>,
    pub gate: Option<RoleVerbGate>,
    /// `limits.deadline`: wall-clock time a run may take (default none).
    pub deadline: Option<Duration>,
    /// `limits.tokens`: model tokens a run may spend (default none).
    pub tokens: Option<u64>,
    /// `input`: the JSON Schema a run's input must match (`run::input`).
    pub input: Option<serde_json::Value>,
    /// What the blueprint does, for those who list it (MCP clients).
    pub description: Option<String>,
    /// `limits.instructions`, `memory`, `journal_entries`, `journal_bytes`:
    /// the run-wide budgets of its Lua VMs and journal.
    pub budgets: crate::lua::RunLimits,
}

/// The directory of a blueprint file: where its process agents run and its
/// `require`d helpers live.
pub fn dir_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads the file at `path`.
pub fn read(path: &Path) -> Result<String, BlueprintError> {
    std::fs::read_to_string(path).map_err(|e| BlueprintError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Evaluates `source` in `vm` and validates it against the agent kinds of
/// `vm`'s host, then reads each agent with its kind from `kinds`. Returns
/// the blueprint and its Lua table (whose `spec.flow` and `spec.layers`
/// live in `vm`).
pub fn load(
    vm: &Vm,
    kinds: &AgentKinds,
    path: &Path,
    source: &str,
) -> Result<(Blueprint, Table), BlueprintError> {
    let chunk = path.display().to_string();
    let env = vm.env().map_err(|e| vm.classify(e))?;
    let f = vm.load(&env, source, &chunk)?;
    vm.arm(None);
    vm.set_entry(&f);
    let value: Value = f.call(()).map_err(|e| vm.classify(e))?;
    let validate = vm.validator()?;
    let problems: Vec<Problem> = validate
        .call::<Table>(value.clone())
        .and_then(|t| {
            t.sequence_values::<Table>()
                .map(|p| {
                    let p = p?;
                    let at: String = p.get("where")?;
                    let path: Vec<String> = match p.get::<Value>("needle")? {
                        Value::Table(t) => t.sequence_values().collect::<mlua::Result<_>>()?,
                        Value::String(w) => vec![w.to_str()?.to_string()],
                        _ => Vec::new(),
                    };
                    Ok(Problem {
                        // A problem with the file as a whole has no line.
                        location: if at == "?" {
                            chunk.clone()
                        } else {
                            own_line(&at, source, &path)
                        },
                        field: p.get("field")?,
                        message: p.get("message")?,
                    })
                })
                .collect()
        })
        .map_err(|e| vm.classify(e))?;
    if !problems.is_empty() {
        return Err(BlueprintError::Invalid(problems));
    }
    let Value::Table(bp) = value else {
        unreachable!("validate accepted a non-table");
    };
    let read = Reader {
        vm,
        kinds,
        dir: dir_of(path),
    };
    let blueprint = read.blueprint(&bp, path, &chunk, source)?;
    Ok((blueprint, bp))
}

struct Reader<'a> {
    vm: &'a Vm,
    kinds: &'a AgentKinds,
    dir: PathBuf,
}

fn err(location: &str, field: &str, message: impl Into<String>) -> BlueprintError {
    BlueprintError::Invalid(vec![Problem {
        location: location.into(),
        field: field.into(),
        message: message.into(),
    }])
}

impl Reader<'_> {
    fn lua_err(&self, e: mlua::Error) -> BlueprintError {
        BlueprintError::Lua(self.vm.classify(e))
    }

    fn blueprint(
        &self,
        bp: &Table,
        path: &Path,
        chunk: &str,
        source: &str,
    ) -> Result<Blueprint, BlueprintError> {
        let at: String = bp.get("where").map_err(|e| self.lua_err(e))?;
        let spec: Table = bp.get("spec").map_err(|e| self.lua_err(e))?;
        let mut agents = Vec::new();
        if let Some(list) = spec
            .get::<Option<Table>>("agents")
            .map_err(|e| self.lua_err(e))?
        {
            for pair in list.pairs::<String, Table>() {
                let (name, a) = pair.map_err(|e| self.lua_err(e))?;
                agents.push(self.agent(&name, &a)?);
            }
        }
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        let hints: Option<Table> = spec.get("hints").map_err(|e| self.lua_err(e))?;
        let layers = match hints {
            Some(h) => self.layers(h.get("layers").map_err(|e| self.lua_err(e))?)?,
            None => Vec::new(),
        };
        let gate = match spec
            .get::<Option<Table>>("gate")
            .map_err(|e| self.lua_err(e))?
        {
            Some(g) => Some(self.gate(&g, &at)?),
            None => None,
        };
        let mut budgets = crate::lua::RunLimits::default();
        let (deadline, tokens) = self.limits(&spec, &at, &mut budgets)?;
        budgets.tokens = tokens;
        let input = match spec.get::<Value>("input").map_err(|e| self.lua_err(e))? {
            Value::Nil => None,
            v => {
                let json = self.vm.lua().from_value(v).map_err(|e| self.lua_err(e))?;
                Some(super::input::declared(json).map_err(|m| err(&at, "input", m))?)
            }
        };
        Ok(Blueprint {
            deadline,
            tokens,
            input,
            budgets,
            description: spec.get("description").map_err(|e| self.lua_err(e))?,
            name: bp.get("name").map_err(|e| self.lua_err(e))?,
            path: path.to_path_buf(),
            chunk: chunk.to_string(),
            source: Arc::from(source),
            hash: hash(source),
            agents,
            layers,
            gate,
        })
    }

    /// `limits = { deadline = "1h", tokens = 100000 }`: the run's
    /// wall-clock deadline and token budget.
    fn limits(
        &self,
        spec: &Table,
        at: &str,
        budgets: &mut crate::lua::RunLimits,
    ) -> Result<(Option<Duration>, Option<u64>), BlueprintError> {
        let Some(limits) = spec
            .get::<Option<Table>>("limits")
            .map_err(|e| self.lua_err(e))?
        else {
            return Ok((None, None));
        };
        let (mut deadline, mut tokens) = (None, None);
        for pair in limits.pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| self.lua_err(e))?;
            match k.to_string().ok().as_deref() {
                Some("deadline") => match duration_ms(&v) {
                    Some(ms) if ms > 0.0 => deadline = Some(Duration::from_secs_f64(ms / 1000.0)),
                    _ => {
                        return Err(err(
                            at,
                            "limits.deadline",
                            "must be a positive duration such as \"30s\", \"10m\" or \"1h\"",
                        ));
                    }
                },
                Some("tokens") => match v {
                    Value::Integer(n) if n > 0 => tokens = Some(n as u64),
                    _ => {
                        return Err(err(
                            at,
                            "limits.tokens",
                            "must be a positive whole number of tokens",
                        ));
                    }
                },
                Some(name @ ("instructions" | "memory" | "journal_entries" | "journal_bytes")) => {
                    let Value::Integer(n @ 1..) = v else {
                        return Err(err(
                            at,
                            &format!("limits.{name}"),
                            "must be a positive whole number",
                        ));
                    };
                    match name {
                        "instructions" => budgets.instructions = Some(n as u64),
                        "memory" => budgets.memory = Some(n as usize),
                        "journal_entries" => budgets.journal_entries = Some(n as u64),
                        _ => budgets.journal_bytes = Some(n as u64),
                    }
                }
                other => {
                    return Err(err(
                        at,
                        &format!("limits.{}", other.unwrap_or("?")),
                        "unknown limit (known: deadline, tokens, instructions, memory, \
                         journal_entries, journal_bytes)",
                    ));
                }
            }
        }
        Ok((deadline, tokens))
    }

    fn layers(&self, list: Option<Table>) -> Result<Vec<LayerUse>, BlueprintError> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in list.sequence_values::<Value>() {
            match entry.map_err(|e| self.lua_err(e))? {
                Value::String(s) => out.push(LayerUse {
                    key: s.to_str().map_err(|e| self.lua_err(e))?.to_string(),
                    opts: serde_json::Value::Object(Default::default()),
                }),
                Value::Table(t) => {
                    let key: String = t.raw_get(1).map_err(|e| self.lua_err(e))?;
                    t.raw_set(1, Value::Nil).map_err(|e| self.lua_err(e))?;
                    let opts: serde_json::Value = self
                        .vm
                        .lua()
                        .from_value(Value::Table(t.clone()))
                        .map_err(|e| self.lua_err(e))?;
                    t.raw_set(1, key.as_str()).map_err(|e| self.lua_err(e))?;
                    out.push(LayerUse { key, opts });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn agent(&self, name: &str, a: &Table) -> Result<AgentSpec, BlueprintError> {
        let kind: String = a.get("__swarm").map_err(|e| self.lua_err(e))?;
        let at: String = a.get("where").map_err(|e| self.lua_err(e))?;
        let spec: Table = a.get("spec").map_err(|e| self.lua_err(e))?;
        let mut profile = serde_json::Map::new();
        for key in ["description", "system", "model", "tools", "params"] {
            let v: Value = spec.get(key).map_err(|e| self.lua_err(e))?;
            if !v.is_nil() {
                let json = self.vm.lua().from_value(v).map_err(|e| self.lua_err(e))?;
                profile.insert(key.to_string(), json);
            }
        }
        let Some(kind) = self.kinds.get(&kind) else {
            return Err(err(
                &at,
                &format!("agents.{name}"),
                format!(
                    "`{kind}` is not an agent kind (known: {})",
                    crate::spawn::kinds::constructors(&self.kinds.infos())
                ),
            ));
        };
        let profile = serde_json::Value::Object(profile);
        let backend = (kind.read)(&Decl {
            agent: name,
            at: &at,
            dir: &self.dir,
            profile: &profile,
            spec: &spec,
            vm: self.vm,
        })?;
        Ok(AgentSpec {
            name: name.to_string(),
            backend,
            layers: self.layers(spec.get("layers").map_err(|e| self.lua_err(e))?)?,
            profile,
        })
    }

    fn gate(&self, g: &Table, at: &str) -> Result<RoleVerbGate, BlueprintError> {
        let mut gate = RoleVerbGate::default();
        for pair in g.pairs::<String, Vec<String>>() {
            let (role, verbs) = pair.map_err(|e| self.lua_err(e))?;
            let field = format!("gate.{role}");
            let role: Role = role.parse().map_err(|m: String| err(at, &field, m))?;
            let verbs: Vec<Verb> = verbs
                .iter()
                .map(|v| v.parse())
                .collect::<Result<_, String>>()
                .map_err(|m| err(at, &field, m))?;
            gate = gate
                .narrow(role, &verbs)
                .map_err(|e| err(at, &field, format!("widens the default gate: {e}")))?;
        }
        Ok(gate)
    }
}

/// `location` (`chunk:line`, the line of the declaration a problem is
/// in) moved to the line of the problem's own entry: from that line on,
/// each of `path` (the names leading to it, e.g. `hints`, `layers`,
/// `retry`, `maxx`) is found as a whole word after the one before, outside
/// comments; the last one's line is the entry's. Unchanged when a name is
/// not found.
fn own_line(location: &str, source: &str, path: &[String]) -> String {
    let Some((chunk, line)) = location.rsplit_once(':') else {
        return location.to_string();
    };
    let Ok(from) = line.parse::<usize>() else {
        return location.to_string();
    };
    let mut at = source
        .split_inclusive('\n')
        .take(from.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    for word in path.iter().filter(|w| !w.is_empty()) {
        match find_word(source, at, word) {
            Some(i) => at = i,
            None => return location.to_string(),
        }
    }
    if path.is_empty() {
        return location.to_string();
    }
    let line = source[..at].matches('\n').count() + 1;
    format!("{chunk}:{line}")
}

/// The offset of the first whole-word `word` at or after `from`, not in a
/// `--` comment.
fn find_word(source: &str, from: usize, word: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    source[from..]
        .match_indices(word)
        .map(|(i, _)| from + i)
        .find(|&i| {
            let line_start = source[..i].rfind('\n').map_or(0, |n| n + 1);
            let before = source[..i].chars().next_back().is_none_or(|c| !ident(c));
            let after = source[i + word.len()..]
                .chars()
                .next()
                .is_none_or(|c| !ident(c));
            before && after && !source[line_start..i].contains("--")
        })
}

/// Milliseconds from a `duration` value: a number of ms, or text like
/// `"90s"` (one parser for Lua and Rust: `crate::duration`).
pub(super) fn duration_ms(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => crate::duration::parse_ms(&s.to_str().ok()?).ok(),
        _ => None,
    }
}

/// SHA-256 of a blueprint's source, hex.
pub fn hash(source: &str) -> String {
    hex(&Sha256::digest(source.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
