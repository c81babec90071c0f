//! Who is calling: the bearer token of a request, verified with the
//! server's secret and turned into the run service's [`Authority`].
//!
//! The secret is `$SWARM_SECRET` when set, else a file `swarm.secret`
//! beside the journal, created with mode 0600 on first use; `swarm token`
//! and `swarm serve` on the same journal therefore agree without setup.
//! Wire tokens are stateless: signature, expiry, role and (optionally) the
//! one run they reach, in their claims.

use super::error::ApiError;
use crate::auth::{CapToken, Role, Signer, TokenClaims, nonce};
use crate::engine::now_ms;
use crate::run::service::Authority;
use axum::http::{HeaderMap, StatusCode, header};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Whether requests without a token are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every request carries a token.
    Tokens,
    /// A request without one acts as the local operator (`--no-auth`,
    /// allowed on loopback only).
    Open,
}

/// The scope that binds a token to one run.
const RUN_SCOPE: &str = "run:";

/// The secret file of the journal at `db`.
pub fn secret_file(db: &Path) -> PathBuf {
    db.parent()
        .unwrap_or_else(|| Path::new("."))
        .join("swarm.secret")
}

/// The server's signer: `$SWARM_SECRET`, else the secret file (made on
/// first use, readable by its owner only).
pub fn signer(db: &Path) -> Result<Signer, String> {
    if std::env::var("SWARM_SECRET").is_ok_and(|s| !s.is_empty()) {
        return Ok(Signer::from_env());
    }
    let path = secret_file(db);
    let say = |e: std::io::Error| format!("secret file {}: {e}", path.display());
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(Signer::new(&secret)),
        Ok(_) => return Err(say(std::io::Error::other("shorter than 32 bytes"))),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(say(e)),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(say)?;
    }
    let secret: String = (0..4).map(|_| format!("{:032x}", nonce())).collect();
    // Written whole under a temporary name, then linked into place: a
    // reader never sees half a secret, and of two processes racing, the
    // first link wins and both use it.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(say)?;
        f.write_all(secret.as_bytes()).map_err(say)?;
        f.sync_all().map_err(say)?;
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(say(e)),
    }
    std::fs::read(&path).map(|s| Signer::new(&s)).map_err(say)
}

/// A wire token for `role`, valid for `ttl`, reaching only `run` if given.
pub fn mint(signer: &Signer, role: Role, ttl: Duration, run: Option<&str>) -> String {
    let now = now_ms();
    let scopes: Vec<String> = run.map(|r| format!("{RUN_SCOPE}{r}")).into_iter().collect();
    signer
        .sign(TokenClaims {
            subject: Arc::from("swarm-token"),
            role,
            scopes: scopes.into(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
            max_uses: None,
            nonce: nonce(),
            task: None,
        })
        .to_wire()
}

/// The caller of a request, from its `Authorization: Bearer` header.
pub fn authority(
    signer: &Signer,
    access: Access,
    headers: &HeaderMap,
) -> Result<Authority, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return match access {
            Access::Open => Ok(Authority::local()),
            Access::Tokens => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_token",
                "this server needs `Authorization: Bearer TOKEN` (mint one with `swarm token`)",
            )),
        };
    };
    let text = value.to_str().ok().and_then(bearer).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the Authorization header must be `Bearer TOKEN`",
        )
    })?;
    verify(signer, text)
}

/// The token of a `Bearer` credential; the scheme is case-insensitive
/// (RFC 7235), so `bearer TOKEN` is accepted too.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
        .filter(|t| !t.is_empty())
}

/// Checks a wire token: form, signature, expiry.
pub fn verify(signer: &Signer, text: &str) -> Result<Authority, ApiError> {
    let token = CapToken::from_wire(text)?;
    signer.verify(&token)?;
    let (expires, now) = (token.claims.expires_at_ms, now_ms());
    if now >= expires {
        return Err(crate::auth::AuthError::Expired {
            expired_at_ms: expires,
            now_ms: now,
        }
        .into());
    }
    let run = token
        .claims
        .scopes
        .iter()
        .find_map(|s| s.strip_prefix(RUN_SCOPE))
        .map(str::to_string);
    Ok(Authority {
        role: token.claims.role,
        run,
    })
}
