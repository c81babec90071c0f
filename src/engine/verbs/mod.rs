//! Engine verbs, one file per group. Each verb checks the caller's token
//! (signature and expiry outside the lock, the rest inside) and emits events.

pub mod dispatch;
pub mod observe;
pub mod senior;
pub mod session;
pub mod task;
pub mod worker;
