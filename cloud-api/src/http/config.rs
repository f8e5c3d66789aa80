//! `[http]`: what one connection and one request may cost, and who may call from a browser.

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct HttpConfig {
    /// Connections open at once; more wait in the kernel's backlog. Each is an open file: the
    /// process raises its open-files limit to the hard limit at start (`LimitNOFILE` in the
    /// unit).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest a client may take to send a request's headers, in milliseconds; also how long an
    /// idle keep-alive connection stays open.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Longest wait for the next piece of a request body, in milliseconds.
    #[serde(default = "default_body_idle_timeout_ms")]
    pub body_idle_timeout_ms: u64,
    /// Longest a request may take from its headers to its answer, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Speak HTTP/2 without TLS (h2c) as well as HTTP/1.1.
    #[serde(default)]
    pub h2c: bool,
    /// Origins a browser may call the API from (CORS), e.g. `https://dashboard.example.com`.
    /// Empty: no cross-origin calls.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

fn default_max_connections() -> usize {
    10_000
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_body_idle_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    60_000
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_idle_timeout_ms: default_body_idle_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            h2c: false,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl HttpConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be above zero"));
        }
        for (key, ms) in [
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
            ("http.body_idle_timeout_ms", self.body_idle_timeout_ms),
            ("http.request_timeout_ms", self.request_timeout_ms),
        ] {
            if ms == 0 {
                return Err(invalid(key, "must be above zero"));
            }
        }
        for origin in &self.cors_allowed_origins {
            let parsed = axum::http::HeaderValue::from_str(origin).is_ok()
                && (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/');
            if !parsed {
                return Err(invalid(
                    "http.cors_allowed_origins",
                    format!("{origin:?} is not an origin like https://host[:port]"),
                ));
            }
        }
        Ok(())
    }
}
