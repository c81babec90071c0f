//! HMAC-signed capability tokens.
//!
//! A [`CapToken`] carries its claims in the clear and an HMAC-SHA256 over an
//! unambiguous encoding of them: every field is written as a 4-byte big-endian
//! length followed by its bytes, in a fixed order, behind a version tag. No
//! delimiter-joined strings, so no two claim sets share an encoding.
//! Signatures are compared in constant time (`Mac::verify_slice`).
//!
//! The secret comes from `SWARM_SECRET` (hex or any string, hashed to 32 bytes)
//! or is drawn at random per process, in which case tokens die with the process.

use super::{AuthError, Role};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// What a token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub subject: Arc<str>,
    pub role: Role,
    pub scopes: Arc<[String]>,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    pub max_uses: Option<u32>,
    /// 128 random bits; also the key of the server-side record.
    pub nonce: u128,
    /// For worker tokens: the one task this token may act on (and its children).
    pub task: Option<u64>,
}

/// Claims plus their signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapToken {
    pub claims: TokenClaims,
    pub signature: [u8; 32],
}

/// Holds the signing secret; never handed to Lua.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<secret>)")
    }
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

impl TokenClaims {
    /// The canonical, length-prefixed signing input.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(128 + self.subject.len());
        buf.extend_from_slice(b"swarm-cap-v1");
        put(&mut buf, self.subject.as_bytes());
        put(&mut buf, self.role.as_str().as_bytes());
        buf.extend_from_slice(&(self.scopes.len() as u32).to_be_bytes());
        for s in self.scopes.iter() {
            put(&mut buf, s.as_bytes());
        }
        put(&mut buf, &self.issued_at_ms.to_be_bytes());
        put(&mut buf, &self.expires_at_ms.to_be_bytes());
        match self.max_uses {
            Some(n) => put(&mut buf, &n.to_be_bytes()),
            None => put(&mut buf, &[]),
        }
        put(&mut buf, &self.nonce.to_be_bytes());
        match self.task {
            Some(t) => put(&mut buf, &t.to_be_bytes()),
            None => put(&mut buf, &[]),
        }
        buf
    }
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        let keyed = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
        Signer { keyed }
    }

    /// A random 256-bit secret: tokens are valid only inside this process.
    pub fn random() -> Signer {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Signer::new(&secret)
    }

    /// `SWARM_SECRET` if set (hashed to 32 bytes), otherwise random.
    pub fn from_env() -> Signer {
        match std::env::var("SWARM_SECRET") {
            Ok(s) if !s.is_empty() => Signer::new(&Sha256::digest(s.as_bytes())),
            _ => Signer::random(),
        }
    }

    pub fn sign(&self, claims: TokenClaims) -> CapToken {
        let mut mac = self.keyed.clone();
        mac.update(&claims.encode());
        let signature = mac.finalize().into_bytes().into();
        CapToken { claims, signature }
    }

    /// Signature check in constant time.
    pub fn verify(&self, token: &CapToken) -> Result<(), AuthError> {
        let mut mac = self.keyed.clone();
        mac.update(&token.claims.encode());
        mac.verify_slice(&token.signature)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// 128 random bits from the thread-local CSPRNG.
pub fn nonce() -> u128 {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    u128::from_be_bytes(b)
}
