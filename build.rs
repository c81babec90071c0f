//! Compiles the embedded Lua library (`lua/swarm/*.lua`) to bytecode at
//! build time, so a `swarm` process does not parse it at start-up (that was
//! a third of a one-step `swarm run`'s instructions). A syntax error in the
//! library fails the build. `src/lua/embedded.rs` falls back to compiling
//! the source if this bytecode does not load (another Lua build).

use std::path::PathBuf;

/// The chunks `src/lua/embedded.rs` loads as bytecode.
const CHUNKS: &[&str] = &[
    "init",
    "guards",
    "error",
    "frozen",
    "entry",
    "flow",
    "blueprint",
    "validate",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lua = mlua::Lua::new_with(mlua::StdLib::NONE, mlua::LuaOptions::default())
        .expect("a bare Lua state");
    let mut table = String::from("&[\n");
    for name in CHUNKS {
        let path = format!("lua/swarm/{name}.lua");
        println!("cargo:rerun-if-changed={path}");
        let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let f = lua
            .load(&src)
            .set_name(format!("@swarm/{name}.lua"))
            .set_mode(mlua::chunk::ChunkMode::Text)
            .into_function()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let file = out.join(format!("{name}.luac"));
        std::fs::write(&file, f.dump(false)).expect("writing bytecode to OUT_DIR");
        table.push_str(&format!(
            "    (\"swarm/{name}.lua\", include_bytes!({:?}).as_slice()),\n",
            file.display().to_string()
        ));
    }
    table.push_str("]\n");
    std::fs::write(out.join("bytecode.rs"), table).expect("writing the bytecode table");
}
