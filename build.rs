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
    "mob",
    "blueprint",
    "validate",
    "tablelib",
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
        let code = without_local_names(&f.dump(false)).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(&file, code).expect("writing bytecode to OUT_DIR");
        table.push_str(&format!(
            "    (\"swarm/{name}.lua\", include_bytes!({:?}).as_slice()),\n",
            file.display().to_string()
        ));
    }
    table.push_str("]\n");
    std::fs::write(out.join("bytecode.rs"), table).expect("writing the bytecode table");
}

/// `code` without the names of local variables and upvalues (but `_ENV`),
/// which only debuggers and error messages read: each is a string every
/// new VM interned as it loaded the library (together ~12 % of building
/// one). Source names and line numbers stay, so errors still point at
/// `swarm/<file>.lua:line` and library frames are still recognised.
/// The format is Lua 5.4's `ldump.c`; anything unexpected fails the build.
fn without_local_names(code: &[u8]) -> Result<Vec<u8>, String> {
    // Signature, version, format, LUAC_DATA, three sizes, LUAC_INT,
    // LUAC_NUM, then the main function's upvalue count.
    const HEADER: usize = 4 + 1 + 1 + 6 + 3 + 8 + 8 + 1;
    if code.len() < HEADER || &code[..4] != b"\x1bLua" || code[4] != 0x54 {
        return Err("not Lua 5.4 bytecode".into());
    }
    let mut r = Reader { code, at: HEADER };
    let mut out = code[..HEADER].to_vec();
    function(&mut r, &mut out)?;
    if r.at != code.len() {
        return Err("trailing bytes after the main function".into());
    }
    Ok(out)
}

struct Reader<'a> {
    code: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.code.len());
        let end = end.ok_or("bytecode ends early")?;
        let b = &self.code[self.at..end];
        self.at = end;
        Ok(b)
    }

    /// A `dumpSize`: 7 bits per byte, most significant first, the last
    /// byte marked with 0x80.
    fn size(&mut self) -> Result<usize, String> {
        let mut x = 0usize;
        loop {
            let b = self.bytes(1)?[0];
            x = x.checked_mul(128).ok_or("size overflows")? | (b & 0x7f) as usize;
            if b & 0x80 != 0 {
                return Ok(x);
            }
        }
    }

    /// Copies `n` bytes to `out`.
    fn copy(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(self.bytes(n)?);
        Ok(())
    }

    /// Copies a size and returns it.
    fn copy_size(&mut self, out: &mut Vec<u8>) -> Result<usize, String> {
        let start = self.at;
        let n = self.size()?;
        out.extend_from_slice(&self.code[start..self.at]);
        Ok(n)
    }

    /// Copies a string (size + 1, then the bytes; 0 for none).
    fn copy_string(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let n = self.copy_size(out)?;
        self.copy(n.saturating_sub(1), out)
    }
}

fn function(r: &mut Reader, out: &mut Vec<u8>) -> Result<(), String> {
    r.copy_string(out)?; // source
    r.copy_size(out)?; // linedefined
    r.copy_size(out)?; // lastlinedefined
    r.copy(3, out)?; // numparams, is_vararg, maxstacksize
    let code = r.copy_size(out)?;
    r.copy(code * 4, out)?;
    for _ in 0..r.copy_size(out)? {
        let tag = r.bytes(1)?[0];
        out.push(tag);
        match tag {
            0x13 | 0x03 => r.copy(8, out)?,     // float, integer
            0x04 | 0x14 => r.copy_string(out)?, // short, long string
            0x00 | 0x01 | 0x11 => {}            // nil, false, true
            t => return Err(format!("unknown constant tag {t:#x}")),
        }
    }
    let upvalues = r.copy_size(out)?;
    r.copy(upvalues * 3, out)?;
    for _ in 0..r.copy_size(out)? {
        function(r, out)?;
    }
    let lines = r.copy_size(out)?;
    r.copy(lines, out)?;
    for _ in 0..r.copy_size(out)? {
        r.copy_size(out)?; // pc
        r.copy_size(out)?; // line
    }
    // Local variables: each a name, a start pc and an end pc; none kept.
    for _ in 0..r.size()? {
        let name = r.size()?;
        r.bytes(name.saturating_sub(1))?;
        r.size()?;
        r.size()?;
    }
    out.push(0x80);
    // Upvalue names: only `_ENV` is kept (it makes "global 'x'" in error
    // messages); the others are written as none.
    for _ in 0..r.copy_size(out)? {
        let start = r.at;
        let n = r.size()?;
        let name = r.bytes(n.saturating_sub(1))?;
        if name == b"_ENV" {
            out.extend_from_slice(&r.code[start..r.at]);
        } else {
            out.push(0x80);
        }
    }
    Ok(())
}
