//! Which host variables a blueprint may name. A blueprint (perhaps one an
//! LLM wrote) can ask for a host variable by name twice over: an LLM
//! agent's `api_key_env` (sent as a bearer token to the blueprint's own
//! `base_url`) and a process agent's `inherit`. Any name would make every
//! secret in the host's environment one line of Lua away, so a name is
//! reachable only when the operator allows it in `$SWARM_ALLOW_ENV`
//! (names, or `PREFIX*`, separated by commas or spaces), and the host's
//! own secrets never are. (`$SWARM_LLM_API_KEY`, the key used when an
//! agent names none, and the operator's own `swarm worker --inherit`
//! are the operator's choice, not a blueprint's.)

/// Variables no blueprint may reach, whatever the allow-list says: the
/// server's token secret, and database passwords.
pub const NEVER: &[&str] = &["SWARM_SECRET", "PGPASSWORD"];

/// Ok when a blueprint may read host variable `var`; else why not, in
/// words that say how to allow it.
pub fn may_name(var: &str) -> Result<(), String> {
    if NEVER.contains(&var) {
        return Err(format!(
            "${var} is the host's own secret: no blueprint may read it"
        ));
    }
    let list = std::env::var("SWARM_ALLOW_ENV").unwrap_or_default();
    let allowed = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .any(|e| match e.strip_suffix('*') {
            Some(prefix) => var.starts_with(prefix),
            None => e == var,
        });
    if allowed {
        return Ok(());
    }
    Err(format!(
        "${var} is not one the operator allows blueprints to read: add it to \
         $SWARM_ALLOW_ENV (names, or PREFIX*) to allow it"
    ))
}

/// [`may_name`] for each of `vars`, naming the agent and the field.
pub fn check_all<'a>(
    agent: &str,
    field: &str,
    vars: impl IntoIterator<Item = &'a str>,
) -> Result<(), crate::engine::SpawnError> {
    for var in vars {
        may_name(var).map_err(|why| {
            crate::engine::SpawnError::BadSpec(format!("agent `{agent}`: {field}: {why}"))
        })?;
    }
    Ok(())
}
