//! The role and verb vocabularies.
//!
//! `Verb` has one variant per engine verb; its discriminant is a bit index so
//! a role's allowed verbs fit in one `u32` and a gate check is a mask test.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Worker,
    Senior,
    Observer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Operator, Role::Worker, Role::Senior, Role::Observer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Worker => "worker",
            Role::Senior => "senior",
            Role::Observer => "observer",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (operator, worker, senior, observer)"))
    }
}

macro_rules! verbs {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// One variant per engine verb.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Verb { $($variant),+ }

        impl Verb {
            pub const ALL: &'static [Verb] = &[$(Verb::$variant),+];

            /// The verb's name as Lua and the CLI spell it.
            pub fn as_str(self) -> &'static str {
                match self { $(Verb::$variant => $name),+ }
            }
        }
    };
}

verbs! {
    Attach => "attach",
    Detach => "detach",
    Heartbeat => "heartbeat",
    StartTask => "start_task",
    ReadTask => "read_task",
    CancelTask => "cancel_task",
    PollTask => "poll_task",
    Dispatch => "dispatch",
    FetchPrompt => "fetch_prompt",
    Emit => "emit",
    PostResult => "post_result",
    QuerySenior => "query_senior",
    Resume => "resume",
    AwaitResume => "await_resume",
    Subscribe => "subscribe",
}

impl Verb {
    pub(crate) fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Verb::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown verb `{s}`"))
    }
}
