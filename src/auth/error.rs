//! Typed authority errors.
//!
//! Verification runs in this order, each step with its own variant:
//! signature, expiry, revoked, role × verb, task ownership, spawn depth, uses
//! left. The first failing step is reported; later steps are not evaluated
//! (so an exhausted token is never charged for a call it was refused).

use super::{Role, Verb};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not a swarm token ({0}); mint one with `swarm token --role ROLE`")]
    Malformed(&'static str),
    #[error("token signature does not verify (forged or tampered token)")]
    BadSignature,
    #[error("token expired at {expired_at_ms} ms (now {now_ms} ms)")]
    Expired { expired_at_ms: u64, now_ms: u64 },
    #[error("token has been revoked")]
    Revoked,
    #[error("role `{role}` may not call `{verb}`")]
    Forbidden { role: Role, verb: Verb },
    #[error("worker token bound to task {bound} may not touch task {target}")]
    NotOwner { bound: u64, target: u64 },
    #[error("spawn depth {depth} exceeds the limit of {limit}")]
    DepthExceeded { depth: u32, limit: u32 },
    #[error("token has no uses left")]
    Exhausted,
    #[error("gate may only narrow the default table: role `{role}` cannot gain `{verb}`")]
    Widening { role: Role, verb: Verb },
}

impl AuthError {
    /// Stable machine-readable code, used by the Lua error tables.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "bad_token",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired { .. } => "expired",
            AuthError::Revoked => "revoked",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::NotOwner { .. } => "not_owner",
            AuthError::DepthExceeded { .. } => "depth_exceeded",
            AuthError::Exhausted => "exhausted",
            AuthError::Widening { .. } => "gate_widening",
        }
    }
}
