//! The web page of `swarm serve` (`GET /` and its assets under `/page/`):
//! plain HTML, CSS and JavaScript modules embedded in the binary, so the
//! page needs no build step and no network beyond this server. Its code
//! lives in files of its own, not inline, so the page's policy can forbid
//! every inline script and style: a value the page shows (a run's output,
//! a question's text) can never become code.

use super::Server;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// What the page may do, said to the browser: scripts and styles from this
/// server only (no inline code), requests to this server only, never
/// inside another site's frame (its answer form must not be clickjacked),
/// no guessing of types.
const PAGE_POLICY: [(HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page's files: name, content type, body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("page/style.css"),
    ),
    ("app.js", JS, include_str!("page/app.js")),
    ("api.js", JS, include_str!("page/api.js")),
    ("dom.js", JS, include_str!("page/dom.js")),
    ("runs.js", JS, include_str!("page/runs.js")),
    ("run.js", JS, include_str!("page/run.js")),
    ("steps.js", JS, include_str!("page/steps.js")),
    ("mob.js", JS, include_str!("page/mob.js")),
    ("timeline.js", JS, include_str!("page/timeline.js")),
    ("forms.js", JS, include_str!("page/forms.js")),
];

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/", get(index))
        .route("/page/{file}", get(asset))
}

/// The page holds no data, so it needs no token; everything it shows comes
/// through the API with the user's token.
async fn index() -> Response {
    (PAGE_POLICY, Html(include_str!("page/index.html"))).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, kind, body)) => {
            (PAGE_POLICY, [(header::CONTENT_TYPE, *kind)], *body).into_response()
        }
        None => super::ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("the page has no file `{file}`"),
        )
        .into_response(),
    }
}
