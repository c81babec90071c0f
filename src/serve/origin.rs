//! Where a request comes from. A server without tokens (`--no-auth`,
//! loopback only) acts for whoever reaches it, so it must not be reachable
//! by way of a web page the operator happens to visit: such a page can send
//! a cross-origin `text/plain` POST (no preflight), and with DNS
//! rebinding its own host name can point at 127.0.0.1. Every request is
//! therefore checked here, before any handler, in both modes:
//!
//! - a body must be declared JSON (`Content-Type: application/json`):
//!   what a plain HTML form or a no-preflight `fetch` cannot send;
//! - the `Host` must be one this server knows itself by: a loopback name
//!   (`localhost`, `127.0.0.0/8`, `[::1]`) or a name given with
//!   `--allow-host` (`*` for any); with tokens also an IP address (a
//!   rebound name is never an address) and the machine's own host name;
//! - an `Origin`, when the browser sends one, must be that same host: a
//!   page of another origin may not act here.
//!
//! Tokens make the last two belt and braces (browsers send no bearer token
//! on their own), but a token-less server has nothing else.

use super::{Access, ApiError, Server};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// The host names a server answers to beyond loopback (`--allow-host`).
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    names: Vec<String>,
    any: bool,
}

impl Hosts {
    /// From `--allow-host` values (names, `name:port` is taken as `name`;
    /// `*` allows any host).
    pub fn new(names: &[String]) -> Hosts {
        Hosts {
            any: names.iter().any(|n| n == "*"),
            names: names.iter().map(|n| bare(n).to_ascii_lowercase()).collect(),
        }
    }

    fn allows(&self, access: Access, host: &str) -> bool {
        let name = bare(host);
        self.any
            || loopback_host(host)
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || (access != Access::Open
                && (name.parse::<IpAddr>().is_ok() || own_host_name().eq_ignore_ascii_case(name)))
    }
}

/// The middleware (see the module doc).
pub async fn guard(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    match check(s.access, s.hosts(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(access: Access, hosts: &Hosts, headers: &HeaderMap) -> Result<(), ApiError> {
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if has_body && !json_type(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "a request body must be JSON, sent with `Content-Type: application/json`",
        ));
    }
    let host = headers
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    // HTTP/1.0 clients send no Host; no browser omits it.
    let checked = host.or((access == Access::Open).then_some(""));
    if let Some(host) = checked
        && !hosts.allows(access, host)
    {
        let without = if access == Access::Open {
            "runs without tokens and "
        } else {
            ""
        };
        return Err(refused(format!(
            "this server {without}answers only to its own host names (localhost, 127.0.0.1, [::1], \
             or a name given with --allow-host), not `{host}`"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = host.is_some_and(|host| {
            ["http://", "https://"]
                .iter()
                .any(|scheme| origin.strip_prefix(scheme) == Some(host))
        });
        if !same {
            return Err(refused(format!(
                "a request from the page `{origin}` may not act on this server: only its own \
                 pages may"
            )));
        }
    }
    Ok(())
}

/// `host` without its port.
fn bare(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
}

/// This machine's host name (gethostname), read once.
fn own_host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if rc == 0 && end > 0 {
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            // Never matches a Host header.
            "\u{fffd}".into()
        }
    })
}

fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "cross_origin", message)
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn json_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// `localhost`, a loopback address, each with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = bare(host);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_nothing_else() {
        for ok in [
            "localhost",
            "LOCALHOST:7777",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:7777",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:7777",
            "10.0.0.1",
            "localhost.evil",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn hosts_by_mode_and_allow_list() {
        let none = Hosts::new(&[]);
        assert!(none.allows(Access::Open, "localhost:7777"));
        assert!(!none.allows(Access::Open, "10.0.0.1:7777"));
        assert!(none.allows(Access::Tokens, "10.0.0.1:7777"));
        assert!(!none.allows(Access::Tokens, "rebound.evil.example:7777"));
        let named = Hosts::new(&["swarm.lan".into()]);
        assert!(named.allows(Access::Open, "SWARM.lan:7777"));
        assert!(!named.allows(Access::Tokens, "swarm.lan.evil:7777"));
        assert!(Hosts::new(&["*".into()]).allows(Access::Open, "anything"));
    }
}
