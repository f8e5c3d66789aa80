//! Sessions without server-side state, so that any replica sharing the secret accepts them.
//!
//! - The session cookie is `base64url(payload).base64url(HMAC-SHA256(secret, payload))`, the
//!   payload `v1|<key reference>|<expiry, unix seconds>`. The key reference
//!   ([`crate::auth::Principal::reference`]) names the key without its secret; each request
//!   looks it up in the keyring again, so a revoked key ends its sessions within a second.
//! - A form's CSRF token is `HMAC(secret, "csrf|" + cookie)`: bound to the session, so another
//!   site can neither read nor forge it. The sign-in form, before any session, binds its token
//!   to a random nonce in a short-lived cookie of its own (a double-submitted token).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use super::config::Dashboard;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "wiko_session";
/// The sign-in form's nonce cookie.
pub const SIGNIN_COOKIE: &str = "wiko_signin";
/// How long a sign-in form may stay open, in seconds.
const SIGNIN_TTL_SECS: u64 = 3600;

/// Signs and checks session cookies and form tokens.
#[derive(Clone)]
pub struct Sessions {
    mac: Hmac<Sha256>,
    ttl_secs: u64,
    secure: bool,
}

/// A cookie that verified and has not expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The key it was opened with.
    pub reference: String,
    pub expires_at: i64,
}

/// Why a cookie is not a session (the person signs in again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed session cookie")]
    Malformed,
    #[error("session cookie with a wrong signature")]
    Forged,
    #[error("session expired")]
    Expired,
}

impl Sessions {
    /// Sessions signed with the configured secret, or a random one (logged: sessions then end
    /// at a restart and are not shared between replicas).
    pub fn new(config: &Dashboard) -> Sessions {
        let secret = match &config.session_secret {
            Some(secret) => secret.clone(),
            None => {
                tracing::warn!(
                    "dashboard.session_secret is not set: a random one is used, so sign-ins end \
                     at a restart and hold on this replica only"
                );
                rand::rng().random::<[u8; 32]>().to_vec()
            }
        };
        Sessions {
            // HMAC takes a key of any length.
            mac: Hmac::new_from_slice(&secret).unwrap_or_else(|_| unreachable!()),
            ttl_secs: config.session_ttl_secs,
            secure: config.secure_cookies,
        }
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }

    /// A session cookie's value for the key named `reference`, from `now` for the TTL.
    pub fn issue(&self, reference: &str, now: DateTime<Utc>) -> String {
        let expires_at = now.timestamp().saturating_add_unsigned(self.ttl_secs);
        let payload = format!("v1|{reference}|{expires_at}");
        format!(
            "{}.{}",
            B64.encode(&payload),
            B64.encode(self.sign(payload.as_bytes()))
        )
    }

    /// The session a cookie's value carries, if it is one this secret signed and it holds at
    /// `now`.
    pub fn open(&self, cookie: &str, now: DateTime<Utc>) -> Result<Session, SessionError> {
        let (payload, tag) = cookie.split_once('.').ok_or(SessionError::Malformed)?;
        let payload = B64.decode(payload).map_err(|_| SessionError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| SessionError::Malformed)?;
        if !self.verify(&payload, &tag) {
            return Err(SessionError::Forged);
        }
        let payload = String::from_utf8(payload).map_err(|_| SessionError::Malformed)?;
        let rest = payload.strip_prefix("v1|").ok_or(SessionError::Malformed)?;
        let (reference, expires_at) = rest.rsplit_once('|').ok_or(SessionError::Malformed)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| SessionError::Malformed)?;
        if expires_at <= now.timestamp() {
            return Err(SessionError::Expired);
        }
        Ok(Session {
            reference: reference.to_string(),
            expires_at,
        })
    }

    /// The CSRF token of the forms of the session (or sign-in nonce) `cookie`.
    pub fn csrf_token(&self, cookie: &str) -> String {
        B64.encode(self.sign(format!("csrf|{cookie}").as_bytes()))
    }

    /// Whether `token` is the CSRF token of `cookie` (compared in constant time).
    pub fn csrf_ok(&self, cookie: &str, token: &str) -> bool {
        B64.decode(token)
            .is_ok_and(|tag| self.verify(format!("csrf|{cookie}").as_bytes(), &tag))
    }

    /// A random nonce for a sign-in form.
    pub fn signin_nonce() -> String {
        hex::encode(rand::rng().random::<[u8; 16]>())
    }

    /// The `Set-Cookie` value that sets `name` to `value` for `max_age_secs` (0: removes it).
    fn cookie(&self, name: &str, value: &str, path: &str, max_age_secs: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
        )
    }

    /// `Set-Cookie` for a new session.
    pub fn session_cookie(&self, value: &str) -> String {
        self.cookie(SESSION_COOKIE, value, "/", self.ttl_secs)
    }

    /// `Set-Cookie` that ends the session.
    pub fn clear_session_cookie(&self) -> String {
        self.cookie(SESSION_COOKIE, "", "/", 0)
    }

    /// `Set-Cookie` that removes the sign-in form's nonce.
    pub fn clear_signin_cookie(&self) -> String {
        self.cookie(SIGNIN_COOKIE, "", "/signin", 0)
    }

    /// `Set-Cookie` for a sign-in form's nonce.
    pub fn signin_cookie(&self, nonce: &str) -> String {
        self.cookie(SIGNIN_COOKIE, nonce, "/signin", SIGNIN_TTL_SECS)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sessions(secret: &str, secure: bool) -> Sessions {
        Sessions::new(&Dashboard {
            session_secret: Some(secret.as_bytes().to_vec()),
            session_ttl_secs: 3600,
            secure_cookies: secure,
            plant: crate::dashboard::overview::Plant {
                utc_offset_minutes: 0,
                shift_starts: Vec::new(),
            },
        })
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_session_opens_on_every_replica_with_the_secret_until_it_expires() {
        let now = Utc::now();
        let cookie = sessions(SECRET, false).issue("config:quality", now);
        let other_replica = sessions(SECRET, false);
        let session = other_replica.open(&cookie, now).unwrap();
        assert_eq!(session.reference, "config:quality");
        assert_eq!(session.expires_at, now.timestamp() + 3600);
        let later = now + chrono::Duration::seconds(3600);
        assert_eq!(
            other_replica.open(&cookie, later),
            Err(SessionError::Expired)
        );
        let elsewhere = sessions("another secret of thirty-two chars", false);
        assert_eq!(elsewhere.open(&cookie, now), Err(SessionError::Forged));
    }

    #[test]
    fn a_changed_cookie_is_refused() {
        let s = sessions(SECRET, false);
        let now = Utc::now();
        let cookie = s.issue("key:0123abcd", now);
        let (_, tag) = cookie.split_once('.').unwrap();
        let forged = format!("{}.{tag}", B64.encode("v1|config:admin|99999999999"));
        assert_eq!(s.open(&forged, now), Err(SessionError::Forged));
        assert_eq!(s.open("garbage", now), Err(SessionError::Malformed));
        assert_eq!(s.open("a.b", now), Err(SessionError::Malformed));
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let s = sessions(SECRET, false);
        let now = Utc::now();
        let one = s.issue("config:a", now);
        let two = s.issue("config:b", now);
        let token = s.csrf_token(&one);
        assert!(s.csrf_ok(&one, &token));
        assert!(!s.csrf_ok(&two, &token));
        assert!(!s.csrf_ok(&one, ""));
        assert!(!s.csrf_ok(&one, "not base64!"));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_when_configured() {
        let plain = sessions(SECRET, false).session_cookie("v");
        assert_eq!(
            plain,
            "wiko_session=v; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict"
        );
        let secure = sessions(SECRET, true).clear_session_cookie();
        assert!(secure.ends_with("Max-Age=0; HttpOnly; SameSite=Strict; Secure"));
        assert_eq!(
            cookie_value("a=1; wiko_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("a=1", SESSION_COOKIE), None);
    }
}
