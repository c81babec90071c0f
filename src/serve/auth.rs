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

/// `$SWARM_SECRET`'s signer, when it is set (at least 32 bytes).
fn env_signer() -> Result<Option<Signer>, String> {
    match std::env::var("SWARM_SECRET") {
        Ok(secret) if secret.len() >= SECRET_MIN => Ok(Some(Signer::from_env())),
        Ok(secret) if !secret.is_empty() => Err(format!(
            "$SWARM_SECRET is {} bytes; a secret must be at least {SECRET_MIN}",
            secret.len()
        )),
        _ => Ok(None),
    }
}

/// The signer of a store that has no file beside it to keep a secret in
/// (a database many nodes share): `$SWARM_SECRET`, set to the same value
/// on every node and for `swarm token`.
pub fn shared_signer(store: &dyn std::fmt::Display) -> Result<Signer, String> {
    env_signer()?.ok_or_else(|| {
        format!(
            "the store {store} keeps no secret file: set $SWARM_SECRET (at least \
             {SECRET_MIN} bytes) to one value on every node and for `swarm token`"
        )
    })
}

/// The shortest secret accepted, in bytes.
const SECRET_MIN: usize = 32;

/// The server's signer: `$SWARM_SECRET` (at least 32 bytes), else the
/// secret file (made on first use, readable by its owner only). A secret
/// file that is a symbolic link, is not owned by this user, or can be
/// read by others is refused: whoever planted or can read it could mint
/// tokens.
pub fn signer(db: &Path) -> Result<Signer, String> {
    if let Some(s) = env_signer()? {
        return Ok(s);
    }
    let path = secret_file(db);
    let say = |e: std::io::Error| format!("secret file {}: {e}", path.display());
    match read_private(&path) {
        Ok(secret) => return Ok(Signer::new(&secret)),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(say(e)),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(say)?;
    }
    let secret: String = (0..4).map(|_| format!("{:032x}", nonce())).collect();
    // Written whole under a fresh temporary name (created, never opened if
    // it exists, never through a link), then linked into place: a reader
    // never sees half a secret, and of two processes racing, the first
    // link wins and both use it.
    let tmp = path.with_extension(format!("{:016x}.tmp", nonce() as u64));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
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
    read_private(&path).map(|s| Signer::new(&s)).map_err(say)
}

/// The secret in the file at `path`, when it is safe to use: a regular
/// file (not followed through a link), this user's, unreadable by
/// others, and long enough.
fn read_private(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other(
                "it is a symbolic link; a secret file must be a plain file (remove the link)",
            ),
            _ => e,
        })?;
    let meta = f.metadata()?;
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "it is not a plain file owned by this user (uid {me}); remove it and a new one is made"
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "others may read it (mode {:o}); `chmod 600` it, or remove it and a new one is made",
            meta.mode() & 0o777
        )));
    }
    let mut secret = Vec::new();
    f.read_to_end(&mut secret)?;
    if secret.len() < SECRET_MIN {
        return Err(std::io::Error::other(format!(
            "shorter than {SECRET_MIN} bytes"
        )));
    }
    Ok(secret)
}

/// A wire token for `role`, valid for `ttl`, reaching only `run` if given.
pub fn mint(signer: &Signer, role: Role, ttl: Duration, run: Option<&str>) -> String {
    mint_scoped(signer, role, ttl, run.map(|r| format!("{RUN_SCOPE}{r}")))
}

/// A wire token reaching only the incarnation of run `run` created at
/// `created_ms`: once that run is pruned and its id taken again, the
/// token reaches nothing.
pub fn mint_for_run(
    signer: &Signer,
    role: Role,
    ttl: Duration,
    run: &str,
    created_ms: u64,
) -> String {
    mint_scoped(
        signer,
        role,
        ttl,
        Some(format!("{RUN_SCOPE}{run}@{created_ms}")),
    )
}

fn mint_scoped(signer: &Signer, role: Role, ttl: Duration, scope: Option<String>) -> String {
    let now = now_ms();
    let scopes: Vec<String> = scope.into_iter().collect();
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
    let scope = token
        .claims
        .scopes
        .iter()
        .find_map(|s| s.strip_prefix(RUN_SCOPE));
    // `run:ID`, or `run:ID@CREATED_MS`: bound to that incarnation of ID.
    let (run, incarnation) = match scope.map(|s| s.rsplit_once('@')) {
        Some(Some((id, created))) => (
            Some(id.to_string()),
            Some(created.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_token",
                    "the token's run scope is malformed",
                )
            })?),
        ),
        Some(None) => (scope.map(str::to_string), None),
        None => (None, None),
    };
    Ok(Authority {
        role: token.claims.role,
        run,
        incarnation,
    })
}
