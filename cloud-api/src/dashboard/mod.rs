//! The dashboard quality engineers work in, served at `/` by every replica: HTML rendered here
//! with `maud`, a stylesheet and a little JavaScript embedded in the binary (`assets`), no
//! third-party code.
//!
//! - `session`: sign-in with a viewer or admin key gives an HMAC-signed cookie naming the key
//!   (not its secret); each request checks the key in the keyring again. Every form carries the
//!   session's CSRF token.
//! - `pages`: the handlers, thin over the same functions the API's handlers call; `views`: the
//!   HTML; `overview` the Overview's ranges in plant time and its page, `charts` its SVG.
//!
//! Nothing but the sign-in page and the stylesheet is served without a session. The API and
//! its `X-API-Key` are untouched: the pages read the store directly.

mod assets;
mod charts;
pub(crate) mod config;
mod overview;
mod pages;
pub(crate) mod session;
mod views;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;

use crate::auth::{Need, Principal};
use crate::http::AppState;
use crate::http::caller::too_many;
use session::{SESSION_COOKIE, cookie_value};

pub use overview::Plant;
pub use session::Sessions;

/// The pages, their forms and assets.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/overview", get(pages::overview))
        .route("/live", get(pages::live))
        .route("/live/events", get(pages::live_events))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/results", get(pages::results))
        .route("/results/export.csv", get(pages::export))
        .route("/results/feedback", post(pages::bulk_feedback))
        .route("/results/{id}", get(pages::detail))
        .route("/results/{id}/image", get(pages::part_image))
        .route("/results/{id}/thumbnail", get(pages::thumbnail))
        .route("/results/{id}/heatmap", get(pages::heatmap))
        .route("/results/{id}/feedback", post(pages::feedback))
        .route("/results/{id}/golden", post(pages::add_to_golden))
        .route("/capability", get(pages::capability))
        .route("/golden", get(pages::golden_index))
        .route(
            "/golden/{sku}",
            get(pages::golden_set).post(pages::golden_upload),
        )
        .route("/golden/{sku}/{digest}", get(pages::golden_image))
        .route("/golden/{sku}/{digest}/remove", post(pages::golden_remove))
        .route("/fleet", get(pages::fleet))
        .route("/assets/style.css", get(assets::style))
        .route("/assets/app.js", get(assets::script))
}

/// A person signed in: the key of the session, checked again on this request, and the CSRF
/// token of its forms.
pub(crate) struct SignedIn {
    pub principal: Principal,
    cookie: String,
    pub csrf: String,
}

impl SignedIn {
    /// Whether `token` is this session's CSRF token.
    fn csrf_ok(&self, s: &AppState, token: &str) -> bool {
        s.sessions.csrf_ok(&self.cookie, token)
    }
}

/// Where a request without a session goes.
pub(crate) struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/signin").into_response()
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<SignedIn, Response> {
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|h| cookie_value(h, SESSION_COOKIE))
            .filter(|c| !c.is_empty())
            .ok_or_else(|| SignInFirst.into_response())?
            .to_string();
        let session = s.sessions.open(&cookie, Utc::now()).map_err(|e| {
            tracing::debug!(error = %e, "session refused");
            SignInFirst.into_response()
        })?;
        let principal = s
            .keyring
            .by_reference(&session.reference)
            .map_err(|refusal| {
                tracing::info!(key = %session.reference, reason = refusal.as_str(), "session ended: its key is no longer in force");
                SignInFirst.into_response()
            })?;
        if principal.may(Need::Read).is_err() {
            return Err(SignInFirst.into_response());
        }
        let limit_key = principal.prefix.as_deref().unwrap_or(&principal.name);
        s.limits
            .check_key(limit_key)
            .map_err(|wait| too_many(wait, "key").into_response())?;
        Ok(SignedIn {
            principal,
            csrf: s.sessions.csrf_token(&cookie),
            cookie,
        })
    }
}
