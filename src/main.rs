//! The `swarm` binary: everything lives in the library's `cli` module.

/// The binary's allocator (see `Cargo.toml` for why mimalloc).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lua_swarm::cli::main()
}
