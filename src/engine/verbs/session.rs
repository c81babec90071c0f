//! Session verbs: attach, detach, heartbeat, and the sweep that detaches
//! sessions which stopped heart-beating (their tasks stay).

use crate::auth::{CapToken, Role, RoleVerbGate, TokenClaims, Verb, nonce};
use crate::engine::events::EventKind;
use crate::engine::state::{Access, Session, TokenRecord};
use crate::engine::{Engine, EngineError, TaskId, now_ms};
use std::sync::Arc;
use std::time::Duration;

/// Who asks for a new session.
pub enum Caller<'a> {
    /// The host process itself (Rust code holding the `Engine`): the root of
    /// all authority, e.g. `swarm run` attaching its flow as operator.
    Host,
    /// A session whose role may call `attach`.
    Token(&'a CapToken),
}

/// What session to open.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    pub subject: String,
    pub role: Role,
    pub ttl: Duration,
    pub max_uses: Option<u32>,
    pub scopes: Vec<String>,
    /// A narrowed gate for this session (defaults to the default table).
    pub gate: Option<RoleVerbGate>,
    /// Binds the session to one task and its descendants (a run's root):
    /// every verb on any other task is refused, and only that task's events
    /// and questions are visible.
    pub task: Option<TaskId>,
    /// The session must heartbeat, or the sweep detaches it once silent
    /// for the engine's `heartbeat_timeout`: true for clients, which may
    /// vanish. The host's own sessions that outlive any one call (a
    /// prepared blueprint's) set it false and end with their holder.
    pub heartbeat: bool,
}

impl AttachOptions {
    pub fn new(subject: impl Into<String>, role: Role) -> AttachOptions {
        AttachOptions {
            subject: subject.into(),
            role,
            ttl: Duration::from_secs(24 * 3600),
            max_uses: None,
            scopes: Vec::new(),
            gate: None,
            task: None,
            heartbeat: true,
        }
    }
}

impl Engine {
    /// Opens a session and returns its token.
    pub fn attach(&self, caller: Caller<'_>, opts: AttachOptions) -> Result<CapToken, EngineError> {
        if opts.role == Role::Worker {
            return Err(EngineError::Invalid(
                "worker tokens are minted by dispatch, not attach".into(),
            ));
        }
        // The engine's clock for its tokens: issue and expiry are read
        // from the same one.
        let now = crate::engine::coarse_now_ms();
        let claims = TokenClaims {
            subject: Arc::from(opts.subject.as_str()),
            role: opts.role,
            scopes: opts.scopes.into(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(opts.ttl.as_millis() as u64),
            max_uses: opts.max_uses,
            nonce: nonce(),
            task: opts.task.map(|t| t.0),
        };
        let token = self.signer().sign(claims);
        let claims = &token.claims;
        self.with_state("attach", |s| {
            // A session hands out no more than its own table allows.
            let wider = match caller {
                Caller::Host => RoleVerbGate::default(),
                Caller::Token(tok) => {
                    // A bound session opens only sessions bound within its task.
                    if tok.claims.task.is_some() && opts.task.is_none() {
                        return Err(EngineError::Invalid(
                            "a session bound to a task can only open sessions bound within it"
                                .into(),
                        ));
                    }
                    s.authorize(
                        tok,
                        Access {
                            verb: Verb::Attach,
                            task: opts.task,
                            spawn_depth: None,
                        },
                    )?;
                    s.tokens
                        .get(&tok.claims.nonce)
                        .map(|r| r.gate)
                        .unwrap_or_default()
                }
            };
            let gate = opts.gate.unwrap_or(wider);
            gate.within(&wider)?;
            s.tokens
                .insert(claims.nonce, TokenRecord::new(token.clone(), gate));
            s.sessions.insert(
                claims.nonce,
                Session {
                    subject: claims.subject.clone(),
                    role: claims.role,
                    last_seen_ms: now,
                    heartbeat: opts.heartbeat,
                },
            );
            s.emit(
                None,
                EventKind::SessionAttached {
                    subject: claims.subject.clone(),
                    role: claims.role.as_str(),
                },
            );
            Ok::<_, EngineError>(())
        })?;
        Ok(token)
    }

    /// Closes the session and revokes its token. Its tasks stay.
    pub fn detach(&self, tok: &CapToken) -> Result<(), EngineError> {
        self.with_state("detach", |s| {
            s.authorize(tok, Access::verb(Verb::Detach))?;
            s.end_session(tok.claims.nonce, "detach");
            Ok(())
        })
    }

    /// Ends a session the host opened for itself, whatever verbs its gate
    /// allows (a blueprint's gate may leave out `detach`): the host is the
    /// authority over its own sessions.
    pub fn release(&self, tok: &CapToken) {
        self.with_state("release", |s| {
            if s.verify(tok).is_ok() {
                s.end_session(tok.claims.nonce, "released");
            }
        });
    }

    /// Tells the engine the session is alive.
    pub fn heartbeat(&self, tok: &CapToken) -> Result<(), EngineError> {
        self.with_state("heartbeat", |s| {
            s.authorize(tok, Access::verb(Verb::Heartbeat))?;
            if let Some(sess) = s.sessions.get_mut(&tok.claims.nonce) {
                sess.last_seen_ms = now_ms();
            }
            Ok(())
        })
    }

    /// The gate that applies to `tok` (its session's, possibly narrowed).
    pub fn gate_of(&self, tok: &CapToken) -> Result<RoleVerbGate, EngineError> {
        self.with_state("gate_of", |s| Ok(s.verify(tok)?.gate))
    }

    /// One pass of the background sweep.
    pub(crate) fn sweep_once(&self) {
        let now = now_ms();
        self.with_state("sweep", |s| {
            let timeout = s.config.heartbeat_timeout.as_millis() as u64;
            let silent: Vec<u128> = s
                .sessions
                .iter()
                .filter(|(_, sess)| {
                    sess.heartbeat && now.saturating_sub(sess.last_seen_ms) > timeout
                })
                .map(|(n, _)| *n)
                .collect();
            for n in silent {
                if let Some(sess) = s.sessions.get(&n) {
                    tracing::info!(subject = %sess.subject, role = %sess.role, "session detached: no heartbeat");
                }
                s.end_session(n, "heartbeat");
            }
            s.tokens.retain(|_, rec| rec.token.claims.expires_at_ms > now);
        });
    }
}
