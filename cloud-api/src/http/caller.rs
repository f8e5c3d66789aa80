//! [`Caller`]: who is calling, checked before a handler runs. The caller's address must be
//! under its rate and not blocked for failed key checks, the key in `X-API-Key` must be in
//! force, and the key under its rate; a handler then says what it needs
//! ([`Caller::may`], [`Caller::may_send_for`]). Every refusal is counted, logged with address,
//! method, route and key prefix, and audited.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath};
use axum::http::Method;
use axum::http::request::Parts;
use serde_json::json;
use tracing::warn;

use super::AppState;
use super::error::ApiError;
use crate::auth::audit::Audit;
use crate::auth::{Forbidden, Need, Principal, prefix_of};
use crate::telemetry;

pub(crate) struct Caller {
    pub principal: Principal,
    context: Context,
    audit: Audit,
}

/// Where a request came from and what it asked for: what a refusal is logged with (the
/// dashboard's sign-in takes it as an extractor).
#[derive(Clone)]
pub(crate) struct Context {
    address: Option<SocketAddr>,
    method: Method,
    route: String,
}

impl Context {
    fn of(parts: &Parts) -> Context {
        Context {
            address: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            method: parts.method.clone(),
            route: parts
                .extensions
                .get::<MatchedPath>()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
        }
    }

    /// The address the request came from (none when served without one, as in tests).
    pub(crate) fn address(&self) -> Option<SocketAddr> {
        self.address
    }

    /// Counts, logs and audits a refused request.
    pub(crate) fn refused(
        &self,
        audit: &Audit,
        actor: &str,
        reason: &str,
        key_prefix: Option<&str>,
    ) {
        metrics::counter!(telemetry::AUTH_FAILURES_TOTAL, "reason" => reason.to_string())
            .increment(1);
        let address = self.address.map(|a| a.ip().to_string());
        warn!(
            address = address.as_deref().unwrap_or("-"),
            method = %self.method,
            route = %self.route,
            key = key_prefix.unwrap_or("-"),
            actor,
            reason,
            "request refused"
        );
        audit.record(
            actor,
            "auth_failed",
            json!({
                "address": address,
                "method": self.method.as_str(),
                "route": self.route,
                "key_prefix": key_prefix,
                "reason": reason,
            }),
        );
    }
}

pub(crate) fn too_many(wait: std::time::Duration, what: &'static str) -> ApiError {
    metrics::counter!(telemetry::RATE_LIMITED_TOTAL, "limit" => what).increment(1);
    ApiError::TooManyRequests(wait.as_secs().max(1))
}

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Context, Self::Rejection> {
        Ok(Context::of(parts))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Caller, ApiError> {
        let context = Context::of(parts);
        if let Some(address) = context.address {
            s.limits
                .check_address(address.ip())
                .map_err(|wait| too_many(wait, "address"))?;
        }
        let presented = parts
            .headers
            .get(wiko_wire::API_KEY_HEADER)
            .and_then(|v| v.to_str().ok());
        let principal = match s.keyring.authenticate_or_reload(presented, s.store()).await {
            Ok(principal) => principal,
            Err(refusal) => {
                if let Some(address) = context.address {
                    s.limits.failed(address.ip());
                }
                let prefix = presented.and_then(prefix_of);
                context.refused(&s.audit, "-", refusal.as_str(), prefix);
                return Err(ApiError::Unauthorized);
            }
        };
        let limit_key = principal.prefix.as_deref().unwrap_or(&principal.name);
        s.limits
            .check_key(limit_key)
            .map_err(|wait| too_many(wait, "key"))?;
        Ok(Caller {
            principal,
            context,
            audit: s.audit.clone(),
        })
    }
}

impl Caller {
    /// This caller's key may do `need`.
    pub(crate) fn may(&self, need: Need) -> Result<&Principal, ApiError> {
        self.checked(self.principal.may(need), "scope")
    }

    /// This caller's key may send parts of `facility` (from `device_id`).
    pub(crate) fn may_send_for(
        &self,
        facility: &str,
        device_id: Option<&str>,
    ) -> Result<&Principal, ApiError> {
        self.checked(self.principal.may_send_for(facility, device_id), "binding")
    }

    fn checked(&self, check: Result<(), Forbidden>, reason: &str) -> Result<&Principal, ApiError> {
        check.map_err(|Forbidden(why)| {
            let p = &self.principal;
            self.context
                .refused(&self.audit, &p.name, reason, p.prefix.as_deref());
            ApiError::Forbidden(why)
        })?;
        Ok(&self.principal)
    }

    /// Audits an admin action by this caller.
    pub(crate) fn audit(&self, action: &str, mut detail: serde_json::Value) {
        if let Some(object) = detail.as_object_mut() {
            object.insert("key_prefix".into(), json!(self.principal.prefix));
            object.insert(
                "address".into(),
                json!(self.context.address.map(|a| a.ip().to_string())),
            );
        }
        self.audit.record(&self.principal.name, action, detail);
    }
}
