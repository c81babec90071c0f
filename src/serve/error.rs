//! Errors over HTTP: every failure is JSON `{ code, message }` with the
//! status its code calls for. The codes are the typed errors' own (see
//! `RunError::code`), so a client sees the same codes the CLI reports.

use crate::auth::AuthError;
use crate::run::RunError;
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// The server is shutting down: every request gets this until it exits.
    pub fn draining() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the server is shutting down: its running runs are stopping (interrupted, \
             resumable) and it takes no requests",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        let status = match &e {
            RunError::UnknownRun(_)
            | RunError::UnknownBlueprint { .. }
            | RunError::UnknownQuestion { .. }
            | RunError::UnknownMob(_) => StatusCode::NOT_FOUND,
            RunError::Forbidden { .. } | RunError::Bound(_) => StatusCode::FORBIDDEN,
            RunError::Refused(_) | RunError::Finished { .. } => StatusCode::CONFLICT,
            RunError::BadRunId(_)
            | RunError::Input(_)
            | RunError::Fork(_)
            | RunError::Import(_)
            | RunError::BadMessage(_) => StatusCode::BAD_REQUEST,
            RunError::Blueprint(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RunError::Store(s) => match s.code() {
                "run_owned" | "run_fenced" | "store_exists" => StatusCode::CONFLICT,
                "store_locked" | "store_write" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            RunError::Engine(_) | RunError::Spawn(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RunError::Draining => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        RunError::Store(e).into()
    }
}

/// A JSON request body, read now and parsed when the handler asks
/// ([`Body::parse`]): after it has checked who may call it, so a caller
/// whose role may not use a route learns nothing from the body's errors
/// (403 comes before 400). Unreadable or oversized bodies are 400 / 413
/// `body_too_large`; an empty body reads as `{}`.
pub struct Body<T>(axum::body::Bytes, std::marker::PhantomData<fn() -> T>);

impl<T: DeserializeOwned> Body<T> {
    /// The body as a `T`, or 400 `bad_request` saying what is wrong.
    pub fn parse(&self) -> Result<T, ApiError> {
        let bytes = if self.0.is_empty() {
            &b"{}"[..]
        } else {
            &self.0[..]
        };
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not the JSON expected: {e}")))
    }
}

impl<S: Send + Sync, T> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "bad_request"
                };
                ApiError::new(r.status(), code, r.body_text())
            })?;
        Ok(Body(bytes, std::marker::PhantomData))
    }
}

/// A query string whose rejection is an [`ApiError`] (400 `bad_request`
/// naming the parameter), like [`Body`]'s.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|r| ApiError::bad_request(format!("the query string: {}", r.body_text())))
    }
}
