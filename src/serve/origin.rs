//! Where a request comes from. A server without tokens (`--no-auth`,
//! loopback only) acts for whoever reaches it, so it must not be reachable
//! by way of a web page the operator happens to visit: such a page can send
//! a cross-origin `text/plain` POST (no preflight), and with DNS
//! rebinding its own host name can point at 127.0.0.1. Every request is
//! therefore checked here, before any handler:
//!
//! - a body must be declared JSON (`Content-Type: application/json`):
//!   what a plain HTML form or a no-preflight `fetch` cannot send;
//! - without tokens, the `Host` must be a loopback name (`localhost`,
//!   `127.0.0.0/8`, `[::1]`), and an `Origin`, when the browser sends one,
//!   must be that same host.
//!
//! With tokens none of this grants anything (browsers send no bearer token
//! on their own), but the content type is still required.

use super::{Access, ApiError, Server};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// The middleware (see the module doc).
pub async fn guard(State(s): State<Arc<Server>>, req: Request, next: Next) -> Response {
    match check(s.access, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check(access: Access, headers: &HeaderMap) -> Result<(), ApiError> {
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
    if access == Access::Open {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            return Err(refused(format!(
                "this server runs without tokens and answers only to a loopback host name \
                 (localhost, 127.0.0.1, [::1]), not `{host}`"
            )));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let same = ["http://", "https://"]
                .iter()
                .any(|scheme| origin.strip_prefix(scheme) == Some(host));
            if !same {
                return Err(refused(format!(
                    "a request from the page `{origin}` may not act on this server, which runs \
                     without tokens"
                )));
            }
        }
    }
    Ok(())
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
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
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
}
