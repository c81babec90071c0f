//! Which host variables and endpoints a blueprint may name. A blueprint
//! (perhaps one an LLM wrote) can ask for a host variable by name twice
//! over: an LLM agent's `api_key_env` (sent as a bearer token to the
//! blueprint's own `base_url`) and a process agent's `inherit`. Any name
//! would make every secret in the host's environment one line of Lua away,
//! so each is reachable only through an operator's allow-list, and the
//! host's own secrets never are:
//!
//! - `api_key_env` (and an MCP agent's `bearer_env`): `$SWARM_LLM_KEYS` (names, or `PREFIX*` / `*SUFFIX`;
//!   default `SWARM_LLM_API_KEY, *_API_KEY`), or `$SWARM_ALLOW_ENV`;
//! - `inherit`: `$SWARM_ALLOW_ENV` only (a process can send what it
//!   inherits anywhere, so nothing is allowed by default);
//! - `base_url`: any, unless `$SWARM_LLM_ALLOW` lists the URL prefixes a
//!   blueprint may send a key or a prompt to.
//!
//! (`$SWARM_LLM_API_KEY`, the key used when an agent names none,
//! `$SWARM_LLM_BASE_URL`, and the operator's own `swarm worker --inherit`
//! are the operator's choice, not a blueprint's.)

/// Variables no blueprint may reach, whatever an allow-list says: the
/// server's token secret, the worker token, and database passwords.
pub const NEVER: &[&str] = &["SWARM_SECRET", "SWARM_TOKEN", "PGPASSWORD"];

/// The API-key names allowed when `$SWARM_LLM_KEYS` is unset.
const DEFAULT_KEYS: &str = "SWARM_LLM_API_KEY,*_API_KEY";

/// Ok when a blueprint's `api_key_env` may name host variable `var`; else
/// why not, in words that say how to allow it.
pub fn may_name(var: &str) -> Result<(), String> {
    never(var)?;
    let keys = std::env::var("SWARM_LLM_KEYS").unwrap_or_else(|_| DEFAULT_KEYS.into());
    if listed(&keys, var) || listed(&env_list(), var) {
        return Ok(());
    }
    Err(format!(
        "${var} is not a variable the operator allows as an API key: API keys \
         are names in $SWARM_LLM_KEYS (default `{DEFAULT_KEYS}`) or \
         $SWARM_ALLOW_ENV"
    ))
}

/// Ok when a process agent may `inherit` host variable `var`.
pub fn may_inherit(var: &str) -> Result<(), String> {
    never(var)?;
    if listed(&env_list(), var) {
        return Ok(());
    }
    Err(format!(
        "${var} is not one the operator allows blueprints to read: add it to \
         $SWARM_ALLOW_ENV (names, or PREFIX*) to allow it"
    ))
}

/// Ok when a blueprint's `base_url` is one `$SWARM_LLM_ALLOW` permits (any,
/// when it is unset).
pub fn may_reach(url: &str) -> Result<(), String> {
    let Ok(list) = std::env::var("SWARM_LLM_ALLOW") else {
        return Ok(());
    };
    let ok = entries(&list).any(|prefix| {
        url.strip_prefix(prefix)
            // `http://a.example` must not admit `http://a.example.evil`.
            .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    });
    if ok {
        return Ok(());
    }
    Err(format!(
        "base_url {url} is not one the operator allows: $SWARM_LLM_ALLOW lists \
         the URL prefixes blueprints may call"
    ))
}

/// [`may_name`] (a key: fields `api_key_env` and an MCP agent's
/// `bearer_env`) or [`may_inherit`] (any other field) for each of `vars`,
/// naming the agent and the field.
pub fn check_all<'a>(
    agent: &str,
    field: &str,
    vars: impl IntoIterator<Item = &'a str>,
) -> Result<(), crate::engine::SpawnError> {
    let rule = if field == "api_key_env" || field == "bearer_env" {
        may_name
    } else {
        may_inherit
    };
    for var in vars {
        rule(var).map_err(|why| {
            crate::engine::SpawnError::BadSpec(format!("agent `{agent}`: {field}: {why}"))
        })?;
    }
    Ok(())
}

fn never(var: &str) -> Result<(), String> {
    if NEVER.contains(&var) {
        return Err(format!(
            "${var} is the host's own secret: no blueprint may read it"
        ));
    }
    Ok(())
}

fn env_list() -> String {
    std::env::var("SWARM_ALLOW_ENV").unwrap_or_default()
}

fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
}

/// `var` is in `list`: a name, a `PREFIX*` or a `*SUFFIX`.
fn listed(list: &str, var: &str) -> bool {
    entries(list).any(|e| {
        if let Some(prefix) = e.strip_suffix('*') {
            var.starts_with(prefix)
        } else if let Some(suffix) = e.strip_prefix('*') {
            var.ends_with(suffix) && var.len() > suffix.len()
        } else {
            e == var
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(listed("SWARM_LLM_API_KEY,*_API_KEY", "OPENAI_API_KEY"));
        assert!(!listed("SWARM_LLM_API_KEY,*_API_KEY", "_API_KEY"));
        assert!(!listed(
            "SWARM_LLM_API_KEY,*_API_KEY",
            "AWS_SECRET_ACCESS_KEY"
        ));
        assert!(listed("A_*", "A_B") && !listed("A_*", "B_A"));
        assert!(never("SWARM_SECRET").is_err() && never("OPENAI_API_KEY").is_ok());
    }
}
