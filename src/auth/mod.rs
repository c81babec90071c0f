//! Authority: who may call which engine verb.
//!
//! Everything that decides "may this caller do that" lives here and nowhere
//! else: the [`Role`] and [`Verb`] vocabularies, the [`RoleVerbGate`] table and
//! the HMAC-signed [`CapToken`]. The engine keeps the server-side half of each
//! token (uses left, revocation, bound task) in its state; the checks run in the
//! fixed order documented on [`AuthError`].

mod error;
mod gate;
mod role;
mod token;
mod wire;

pub use error::AuthError;
pub use gate::RoleVerbGate;
pub use role::{Role, Verb};
pub use token::{CapToken, Signer, TokenClaims, nonce};
