//! `swarm init [DIR]` and `swarm stubs [DIR]`: a starter project, and the
//! LuaLS type stubs wired into the editor.
//!
//! `init` writes a starter blueprint, a sample process agent, the stubs
//! under `.swarm/types/` and a `.luarc.json` pointing LuaLS at them. It
//! never overwrites a file that exists.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The LuaLS stubs, compiled into the binary.
const STUBS: &[(&str, &str)] = &[
    ("swarm.lua", include_str!("../../lua/types/swarm.lua")),
    ("engine.lua", include_str!("../../lua/types/engine.lua")),
    ("flow.lua", include_str!("../../lua/types/flow.lua")),
    ("mob.lua", include_str!("../../lua/types/mob.lua")),
    ("modules.lua", include_str!("../../lua/types/modules.lua")),
];

const STARTER: &str = r#"-- A starter blueprint: a Lua agent, a process agent, and a flow calling
-- both. Run it with:
--
--   swarm run hello.lua --input '{"name":"you"}'
local swarm = require "swarm"

return swarm.blueprint "hello" {
  agents = {
    greeter = swarm.agent.lua {
      run = function(task)
        local name = task.input and task.input.name or "world"
        return "Hello, " .. name .. "!"
      end,
    },
    -- Any program: JSON on stdin, the result as JSON on stdout,
    -- diagnostics on stderr.
    echo = swarm.agent.process { cmd = { "sh", "agents/echo.sh" } },
  },
  flow = function(input)
    local greeting = swarm.step("greeter", input)
    return swarm.step("echo", { greeting = greeting })
  end,
}
"#;

const AGENT: &str = r#"#!/bin/sh
# A process agent. stdin: one JSON document { task, attempt, agent, input,
# profile }. stdout: the result, as JSON. stderr: anything else (it shows
# up as `stderr` events).
read -r doc
echo "echo agent got: $doc" >&2
printf '{"received": %s}\n' "$doc"
"#;

const LUARC: &str = r#"{
  "runtime.version": "Lua 5.4",
  "workspace.library": [".swarm/types"],
  "diagnostics.globals": ["swarm"]
}
"#;

#[derive(Args)]
pub struct InitArgs {
    /// Where to create the project (default: the current directory).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

#[derive(Args)]
pub struct StubsArgs {
    /// Where to write the stubs (default: .swarm/types).
    #[arg(default_value = ".swarm/types")]
    dir: PathBuf,
}

/// Writes `body` to `path` unless it exists; says which.
fn write_new(path: &Path, body: &str) -> std::io::Result<()> {
    if path.exists() {
        errln!("  kept     {} (exists)", path.display());
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, body)?;
    errln!("  created  {}", path.display());
    Ok(())
}

fn write_stubs(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, body) in STUBS {
        // Stubs follow the binary's version: always rewritten.
        std::fs::write(dir.join(name), body)?;
    }
    Ok(())
}

pub fn init(args: InitArgs) -> ExitCode {
    let d = &args.dir;
    let made = (|| {
        write_new(&d.join("hello.lua"), STARTER)?;
        write_new(&d.join("agents/echo.sh"), AGENT)?;
        write_new(&d.join(".luarc.json"), LUARC)?;
        write_stubs(&d.join(".swarm/types"))?;
        errln!(
            "  wrote    {} (LuaLS stubs)",
            d.join(".swarm/types").display()
        );
        Ok::<_, std::io::Error>(())
    })();
    match made {
        Ok(()) => {
            outln!(
                "ready: cd {} && swarm run hello.lua --input '{{\"name\":\"you\"}}'",
                d.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: swarm init {}: {e}", d.display());
            ExitCode::from(2)
        }
    }
}

pub fn stubs(args: StubsArgs) -> ExitCode {
    match write_stubs(&args.dir) {
        Ok(()) => {
            outln!("{}", args.dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("error: swarm stubs {}: {e}", args.dir.display());
            ExitCode::from(2)
        }
    }
}
