//! The Lua library under `lua/`, compiled into the binary, and `require`.
//!
//! `require` resolves only the `swarm` modules and the embedded files listed
//! here; there is no search path and no C loader.
//!
//! Embedded chunks are loaded into each new VM as bytecode by the host (Lua
//! code itself can never load bytecode): parsing is the largest part of
//! building a VM otherwise. The bytecode is compiled at build time
//! (`build.rs`); if it does not load here (another Lua build), the source
//! is compiled once per process instead.

use super::frozen::freeze;
use super::location::caller_location;
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, StdLib, Table, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

pub const INIT: (&str, &str) = ("swarm/init.lua", include_str!("../../lua/swarm/init.lua"));
pub const GUARDS: (&str, &str) = (
    "swarm/guards.lua",
    include_str!("../../lua/swarm/guards.lua"),
);
pub const ERROR_MT: (&str, &str) = ("swarm/error.lua", include_str!("../../lua/swarm/error.lua"));
pub const FROZEN: (&str, &str) = (
    "swarm/frozen.lua",
    include_str!("../../lua/swarm/frozen.lua"),
);
pub const ENTRY: (&str, &str) = ("swarm/entry.lua", include_str!("../../lua/swarm/entry.lua"));
pub const FLOW: (&str, &str) = ("swarm/flow.lua", include_str!("../../lua/swarm/flow.lua"));
pub const MOB: (&str, &str) = ("swarm/mob.lua", include_str!("../../lua/swarm/mob.lua"));
pub const BLUEPRINT: (&str, &str) = (
    "swarm/blueprint.lua",
    include_str!("../../lua/swarm/blueprint.lua"),
);

pub const TABLELIB: (&str, &str) = (
    "swarm/tablelib.lua",
    include_str!("../../lua/swarm/tablelib.lua"),
);

pub const VALIDATE: (&str, &str) = (
    "swarm/validate.lua",
    include_str!("../../lua/swarm/validate.lua"),
);

/// The chunks every VM may load as bytecode.
const CHUNKS: [(&str, &str); 10] = [
    INIT, GUARDS, ERROR_MT, FROZEN, ENTRY, FLOW, MOB, BLUEPRINT, VALIDATE, TABLELIB,
];

/// Bytecode of the embedded chunk `name`: all of [`CHUNKS`] are compiled
/// together the first time any is needed, in one bare state used only to
/// compile trusted, embedded source (a state per chunk cost more than a
/// tenth of a one-step `swarm run`).
fn bytecode(name: &'static str) -> mlua::Result<&'static [u8]> {
    static CACHE: OnceLock<Result<HashMap<&'static str, Vec<u8>>, String>> = OnceLock::new();
    let compiled = CACHE.get_or_init(|| {
        let compiler =
            Lua::new_with(StdLib::NONE, mlua::LuaOptions::default()).map_err(|e| e.to_string())?;
        CHUNKS
            .iter()
            .map(|(name, src)| {
                let f = compiler
                    .load(*src)
                    .set_name(format!("@{name}"))
                    .set_mode(ChunkMode::Text)
                    .into_function()
                    .map_err(|e| e.to_string())?;
                Ok((*name, f.dump(false)))
            })
            .collect()
    });
    match compiled {
        Ok(map) => map
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| mlua::Error::RuntimeError(format!("{name} is not an embedded chunk"))),
        Err(e) => Err(mlua::Error::RuntimeError(format!(
            "compiling the embedded library: {e}"
        ))),
    }
}

/// Bytecode `build.rs` compiled, by chunk name.
const PREBUILT: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/bytecode.rs"));

/// An embedded chunk (one of the constants above) as a function of
/// `lua`, with `lua`'s globals as its environment.
pub fn chunk(lua: &Lua, (name, _): (&'static str, &'static str)) -> mlua::Result<Function> {
    let load = |code: &[u8]| {
        lua.load(code)
            .set_name(format!("@{name}"))
            .set_mode(ChunkMode::Binary)
            .into_function()
    };
    if let Some((_, code)) = PREBUILT.iter().find(|(n, _)| *n == name)
        && let Ok(f) = load(code)
    {
        return Ok(f);
    }
    load(bytecode(name)?)
}

/// Embedded modules a sandbox may `require`: (module name, chunk name, source).
const MODULES: &[(&str, &str, &str)] = &[(
    "swarm.pretty",
    "swarm/pretty.lua",
    include_str!("../../lua/swarm/pretty.lua"),
)];

/// Resolves `require(name)` inside a sandbox.
pub fn require(lua: &Lua, name: &str) -> mlua::Result<Value> {
    let swarm: Table = lua.globals().raw_get("swarm")?;
    if name == "swarm" {
        return Ok(Value::Table(swarm));
    }
    if let Some(sub) = name.strip_prefix("swarm.") {
        let v: Value = swarm.get(sub)?;
        if !v.is_nil() {
            return Ok(v);
        }
    }
    if let Some((_, chunk, src)) = MODULES.iter().find(|(n, ..)| *n == name) {
        let v: Value = lua
            .load(*src)
            .set_name(format!("@{chunk}"))
            .set_mode(ChunkMode::Text)
            .set_environment(lua.globals())
            .call(())?;
        return match v {
            Value::Table(t) => Ok(Value::Table(freeze(lua, name, t)?)),
            other => Ok(other),
        };
    }
    if let Some(v) = require_local(lua, name)? {
        return Ok(v);
    }
    Err(mlua::Error::RuntimeError(format!(
        "{}: module '{name}' not found: the sandbox can require only the swarm library \
         and Lua files next to the blueprint",
        caller_location(lua, 0)
    )))
}

/// `require "a.b"` → `<blueprint dir>/a/b.lua`, run in the current run's
/// environment. Names are plain identifiers separated by dots: no paths.
fn require_local(lua: &Lua, name: &str) -> mlua::Result<Option<Value>> {
    let dir = lua
        .app_data_ref::<super::ctx::VmCtx>()
        .and_then(|ctx| ctx.host.dir.clone());
    let Some(dir) = dir else { return Ok(None) };
    let plain = name.split('.').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !plain {
        return Ok(None);
    }
    let path = dir.join(format!("{}.lua", name.replace('.', "/")));
    let source = match read_helper(&dir, &path) {
        Ok(Some(source)) => source,
        Ok(None) => return Ok(None),
        Err(why) => {
            return Err(mlua::Error::RuntimeError(format!(
                "{}: module '{name}': {why}",
                caller_location(lua, 0)
            )));
        }
    };
    if let Some(ctx) = lua.app_data_ref::<super::ctx::VmCtx>() {
        ctx.required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
    }
    let env: Table = lua
        .named_registry_value::<Table>(super::ctx::CURRENT)?
        .raw_get("env")?;
    let v: Value = lua
        .load(source)
        .set_name(format!("@{}", path.display()))
        .set_mode(ChunkMode::Text)
        .set_environment(env)
        .call(())?;
    Ok(Some(if v.is_nil() { Value::Boolean(true) } else { v }))
}

/// The largest helper file `require` reads.
pub const MAX_HELPER: u64 = 4 << 20;

/// The text of helper `path`, read only when, with every link resolved, it
/// is a regular file inside blueprint root `dir` of at most
/// [`MAX_HELPER`] bytes; `None` when there is no such file. It is opened
/// without blocking (a FIFO cannot hold the run) and read through the open
/// handle it was checked on, so a swap after the check changes nothing.
fn read_helper(dir: &std::path::Path, path: &std::path::Path) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(real) = std::fs::canonicalize(path) else {
        return Ok(None);
    };
    let root = std::fs::canonicalize(dir).map_err(|e| format!("blueprint directory: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{} leads outside the blueprint directory (to {}): helpers must live inside it",
            path.display(),
            real.display()
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&real)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // A directory on the way swapped for a link after the check above
    // shows here, in what the open handle really is.
    use std::os::fd::AsRawFd;
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if opened.is_ok_and(|o| !o.starts_with(&root)) {
        return Err(format!(
            "{} moved outside the blueprint directory",
            path.display()
        ));
    }
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_HELPER {
        return Err(format!(
            "{} is {} bytes; a helper may be at most {MAX_HELPER}",
            path.display(),
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_HELPER + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_HELPER {
        return Err(format!(
            "{} grew past {MAX_HELPER} bytes while read",
            path.display()
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk has build-time bytecode that this Lua loads, and the
    /// fallback (compiling the source here) yields a chunk that loads too.
    #[test]
    fn every_chunk_loads_from_build_time_bytecode_and_from_source() {
        let lua = Lua::new_with(StdLib::NONE, mlua::LuaOptions::default()).unwrap();
        for (name, _) in CHUNKS {
            let (_, code) = PREBUILT
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no build-time bytecode for {name}"));
            for code in [*code, bytecode(name).unwrap()] {
                let f = lua
                    .load(code)
                    .set_mode(ChunkMode::Binary)
                    .into_function()
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(f.info().source.as_deref(), Some(&*format!("@{name}")));
            }
        }
    }
}
