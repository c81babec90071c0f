//! The wire form of a capability token, for HTTP `Authorization: Bearer`.
//!
//! `swarm1.<claims>.<signature>`: the canonical claim encoding (the very
//! bytes the HMAC covers, see [`TokenClaims::encode`]) and the signature,
//! each base64url without padding. Decoding parses the canonical encoding
//! strictly (every byte accounted for), so one token has one wire form.

use super::{AuthError, CapToken, Role, TokenClaims};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::sync::Arc;

/// The version tag of the wire form.
const PREFIX: &str = "swarm1";

impl CapToken {
    pub fn to_wire(&self) -> String {
        format!(
            "{PREFIX}.{}.{}",
            B64.encode(self.claims.encode()),
            B64.encode(self.signature)
        )
    }

    /// Parses a wire token. Only the form is checked here: the signature
    /// and expiry are the verifier's (see [`super::Signer::verify_wire`]).
    pub fn from_wire(text: &str) -> Result<CapToken, AuthError> {
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected swarm1.<claims>.<signature>"));
        };
        let claims = B64
            .decode(claims)
            .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
        let signature: [u8; 32] =
            B64.decode(sig)
                .ok()
                .and_then(|s| s.try_into().ok())
                .ok_or(AuthError::Malformed(
                    "the signature is not 32 base64url bytes",
                ))?;
        Ok(CapToken {
            claims: decode(&claims).ok_or(AuthError::Malformed("the claims do not parse"))?,
            signature,
        })
    }
}

/// The inverse of [`TokenClaims::encode`]; `None` unless every byte fits.
fn decode(bytes: &[u8]) -> Option<TokenClaims> {
    let mut r = Reader(bytes.strip_prefix(b"swarm-cap-v1")?);
    let subject = std::str::from_utf8(r.field()?).ok()?;
    let role: Role = std::str::from_utf8(r.field()?).ok()?.parse().ok()?;
    let n = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    let mut scopes = Vec::new();
    for _ in 0..n.min(64) {
        scopes.push(std::str::from_utf8(r.field()?).ok()?.to_string());
    }
    if n > 64 {
        return None;
    }
    let issued_at_ms = u64::from_be_bytes(r.field()?.try_into().ok()?);
    let expires_at_ms = u64::from_be_bytes(r.field()?.try_into().ok()?);
    let max_uses = match r.field()? {
        [] => None,
        b => Some(u32::from_be_bytes(b.try_into().ok()?)),
    };
    let nonce = u128::from_be_bytes(r.field()?.try_into().ok()?);
    let task = match r.field()? {
        [] => None,
        b => Some(u64::from_be_bytes(b.try_into().ok()?)),
    };
    r.0.is_empty().then(|| TokenClaims {
        subject: Arc::from(subject),
        role,
        scopes: scopes.into(),
        issued_at_ms,
        expires_at_ms,
        max_uses,
        nonce,
        task,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A 4-byte big-endian length, then that many bytes.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Signer;

    fn claims(scopes: &[&str]) -> TokenClaims {
        TokenClaims {
            subject: Arc::from("cli"),
            role: Role::Senior,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            issued_at_ms: 1,
            expires_at_ms: u64::MAX,
            max_uses: None,
            nonce: 7,
            task: Some(3),
        }
    }

    #[test]
    fn a_wire_token_round_trips_and_tampering_is_caught() {
        let signer = Signer::new(b"k");
        let tok = signer.sign(claims(&["run:a"]));
        let wire = tok.to_wire();
        assert!(wire.starts_with("swarm1."), "{wire}");
        let back = CapToken::from_wire(&wire).unwrap();
        assert_eq!(back, tok);
        assert!(signer.verify(&back).is_ok());
        // Another run in the claims, same signature: refused.
        let forged = CapToken {
            claims: claims(&["run:b"]),
            signature: tok.signature,
        };
        let forged = CapToken::from_wire(&forged.to_wire()).unwrap();
        assert_eq!(signer.verify(&forged), Err(AuthError::BadSignature));
        assert!(Signer::new(b"other").verify(&back).is_err());
    }

    #[test]
    fn malformed_wire_tokens_are_named_not_panicked_on() {
        for bad in [
            "",
            "swarm1",
            "swarm2.a.b",
            "swarm1.!!.AA",
            "swarm1.AA.AA",
            "swarm1.a.b.c",
        ] {
            assert!(
                matches!(CapToken::from_wire(bad), Err(AuthError::Malformed(_))),
                "{bad}"
            );
        }
        // Trailing bytes after the last field: not the canonical form.
        let mut enc = claims(&[]).encode();
        enc.push(0);
        let wire = format!("swarm1.{}.{}", B64.encode(enc), B64.encode([0u8; 32]));
        assert!(CapToken::from_wire(&wire).is_err());
    }
}
