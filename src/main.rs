//! The `swarm` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    lua_swarm::cli::main()
}
