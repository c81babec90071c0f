//! What blueprint validation knows of an agent kind: its fields with their
//! types and the field it requires. The kinds themselves (fields and
//! factory together) are registered in `run::kinds`; the Lua host gets
//! their fields as a list of [`AgentKind`] (`Host::kinds`), makes the
//! `swarm.agent.<kind>` constructors from it and validates against it.

/// One agent kind's fields.
#[derive(Debug, Clone, Copy)]
pub struct AgentKind {
    /// `swarm.agent.<name>`.
    pub name: &'static str,
    /// What the constructor's doc says it declares.
    pub about: &'static str,
    /// Field → type (`string`, `number`, `boolean`, `table`, `function`, or
    /// `duration`: milliseconds or text like `90s`).
    pub fields: &'static [(&'static str, &'static str)],
    /// A declaration must have one of these fields (non-empty), and what
    /// the message says it is.
    pub requires: (&'static [&'static str], &'static str),
}

/// Fields every kind accepts: the agent's profile.
pub const PROFILE: &[(&str, &str)] = &[
    ("description", "string"),
    ("system", "string"),
    ("model", "string"),
    ("tools", "table"),
    ("layers", "table"),
    ("params", "table"),
];

/// `swarm.agent.lua{}, ... or swarm.agent.remote{}`, for messages.
pub fn constructors(kinds: &[AgentKind]) -> String {
    let all: Vec<String> = kinds
        .iter()
        .map(|k| format!("swarm.agent.{}{{}}", k.name))
        .collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.concat(),
    }
}
