//! The stylesheet and the script, embedded in the binary. The stylesheet is served to anyone
//! (the sign-in page needs it); the script only in a session.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::SignedIn;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// Kept by the browser for an hour: a new build's assets are fetched within the hour.
const CACHE: &str = "private, max-age=3600";

pub(super) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        STYLE,
    )
        .into_response()
}

pub(super) async fn script(_: SignedIn) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, CACHE),
        ],
        SCRIPT,
    )
        .into_response()
}
