//! The role × verb gate.
//!
//! The default table is written once, in [`RoleVerbGate::default`]. A
//! blueprint may narrow it with [`RoleVerbGate::narrow`]; widening is refused.

use super::{AuthError, Role, Verb};
use std::collections::BTreeMap;

/// Which verbs each role may call. One bit mask per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleVerbGate {
    masks: [u32; 4],
}

fn mask(verbs: &[Verb]) -> u32 {
    verbs.iter().fold(0, |m, v| m | v.bit())
}

impl Default for RoleVerbGate {
    /// The one default table.
    fn default() -> Self {
        use Verb::*;
        let reads = [ReadTask, PollTask];
        let operator = mask(&[
            Attach,
            Detach,
            Heartbeat,
            StartTask,
            ReadTask,
            CancelTask,
            PollTask,
            Dispatch,
            QuerySenior,
            AwaitResume,
            Subscribe,
        ]);
        let worker = mask(&[
            FetchPrompt,
            Emit,
            PostResult,
            StartTask,
            Dispatch,
            ReadTask,
            PollTask,
            CancelTask,
            Heartbeat,
        ]);
        let senior = mask(&reads) | mask(&[Resume, Heartbeat, Detach, Subscribe]);
        let observer = mask(&reads) | mask(&[Subscribe, Heartbeat, Detach]);
        let mut masks = [0; 4];
        masks[Role::Operator.index()] = operator;
        masks[Role::Worker.index()] = worker;
        masks[Role::Senior.index()] = senior;
        masks[Role::Observer.index()] = observer;
        RoleVerbGate { masks }
    }
}

impl RoleVerbGate {
    pub fn allows(&self, role: Role, verb: Verb) -> bool {
        self.masks[role.index()] & verb.bit() != 0
    }

    /// Checks `role` may call `verb`, as a typed error.
    pub fn check(&self, role: Role, verb: Verb) -> Result<(), AuthError> {
        if self.allows(role, verb) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { role, verb })
        }
    }

    /// Returns a gate where `role` may call exactly `verbs`, which must be a
    /// subset of what this gate already allows.
    pub fn narrow(&self, role: Role, verbs: &[Verb]) -> Result<RoleVerbGate, AuthError> {
        if let Some(&verb) = verbs.iter().find(|v| !self.allows(role, **v)) {
            return Err(AuthError::Widening { role, verb });
        }
        let mut out = *self;
        out.masks[role.index()] = mask(verbs);
        Ok(out)
    }

    /// Checks every role of this gate allows no more than `wider` does.
    pub fn within(&self, wider: &RoleVerbGate) -> Result<(), AuthError> {
        for role in Role::ALL {
            let extra = self.masks[role.index()] & !wider.masks[role.index()];
            if let Some(&verb) = Verb::ALL.iter().find(|v| extra & v.bit() != 0) {
                return Err(AuthError::Widening { role, verb });
            }
        }
        Ok(())
    }

    /// The verbs `role` may call, in declaration order.
    pub fn verbs(&self, role: Role) -> Vec<Verb> {
        Verb::ALL
            .iter()
            .copied()
            .filter(|v| self.allows(role, *v))
            .collect()
    }

    /// The whole table, role name → verb names.
    pub fn table(&self) -> BTreeMap<&'static str, Vec<&'static str>> {
        Role::ALL
            .into_iter()
            .map(|r| {
                (
                    r.as_str(),
                    self.verbs(r).into_iter().map(Verb::as_str).collect(),
                )
            })
            .collect()
    }
}
