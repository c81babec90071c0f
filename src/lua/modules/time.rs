//! `swarm.time`: the clock, and `sleep`, which waits through the async host
//! function `wait` (the coroutine yields to tokio).

use crate::lua::error::HostError;
use mlua::{Lua, Table};
use std::time::Duration;

pub fn register(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set(
        "now",
        lua.create_function(|_, ()| Ok((true, crate::engine::now_ms())))?,
    )?;
    Ok(t)
}

pub async fn sleep(ms: f64) -> Result<(), HostError> {
    if !(0.0..=86_400_000.0).contains(&ms) {
        return Err(HostError::new(
            "bad_argument",
            format!("sleep: {ms} ms is out of range"),
        ));
    }
    tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
    Ok(())
}
