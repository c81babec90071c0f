//! The agent kinds a blueprint may declare, in one table: each kind's
//! fields with the type blueprint validation checks, and the field it
//! requires. `swarm.agent.<kind>` constructors are made from this table and
//! `lua/swarm/blueprint.lua` validates against it through the host, so a
//! kind's fields are written down once, here.

/// One agent kind.
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

/// Every kind, in the order `swarm check` and error messages list them.
pub const KINDS: &[AgentKind] = &[
    AgentKind {
        name: "lua",
        about: "an agent whose body is `run = function(task) ... end`, in its own sandbox",
        fields: &[("run", "function")],
        requires: (&["run"], "is required (function(task))"),
    },
    AgentKind {
        name: "process",
        about: "a command: `cmd = { argv... }` (no shell) or `shell = \"...\"`",
        fields: &[
            ("cmd", "table"),
            ("shell", "string"),
            ("cwd", "string"),
            ("env", "table"),
            ("inherit", "table"),
            ("timeout", "duration"),
            ("max_output", "number"),
        ],
        requires: (&["cmd", "shell"], "is required (a list: program, args...)"),
    },
    AgentKind {
        name: "rust",
        about: "a Rust function registered with the host under `name`",
        fields: &[("name", "string")],
        requires: (&["name"], "is required"),
    },
    AgentKind {
        name: "llm",
        about: "a model behind an OpenAI-compatible chat-completions endpoint",
        fields: &[
            ("base_url", "string"),
            ("api_key_env", "string"),
            ("schema", "table"),
            ("max_turns", "number"),
            ("temperature", "number"),
            ("max_tokens", "number"),
            ("headers", "table"),
            ("extra", "table"),
            ("timeout", "duration"),
            ("stream", "boolean"),
            ("retries", "number"),
        ],
        requires: (&[], ""),
    },
    AgentKind {
        name: "remote",
        about: "a step done by `swarm worker --queue <queue>` through `swarm serve`",
        fields: &[("queue", "string"), ("timeout", "duration")],
        requires: (&["queue"], "is required (the queue workers claim from)"),
    },
];

/// The kind named `name` (`lua`, or its marker `agent.lua`).
pub fn kind(name: &str) -> Option<&'static AgentKind> {
    let name = name.strip_prefix("agent.").unwrap_or(name);
    KINDS.iter().find(|k| k.name == name)
}

/// `swarm.agent.lua{}, ... or swarm.agent.remote{}`, for messages.
pub fn constructors() -> String {
    let all: Vec<String> = KINDS
        .iter()
        .map(|k| format!("swarm.agent.{}{{}}", k.name))
        .collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.concat(),
    }
}
