//! The `http_snapshot` camera: an IP camera's snapshot URL, one GET per part (HTTP basic or
//! digest auth when configured; TLS through rustls). The body must be a JPEG; anything else is
//! a failed picture, like a non-2xx answer, and the camera is reopened (a new connection pool).
//! Between triggers a snapshot is fetched and discarded every `stall_timeout_ms`, so that a
//! camera that went away is reported before the next part needs it.
//!
//! Digest auth (RFC 7616: MD5, SHA-256, SHA-512-256, `qop=auth`; the `digest_auth` crate): the
//! first GET is sent without credentials, the camera's 401 names a nonce, and the GET is sent
//! again with the answer. The challenge is kept, so the next snapshots answer it at once (the
//! nonce count going up) until the camera asks again (a new or stale nonce): one round trip per
//! part, not two. Of several challenges the strongest algorithm is taken.

use std::time::Duration;

use async_trait::async_trait;
use digest_auth::{AlgorithmType, AuthContext, WwwAuthenticateHeader};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use tracing::debug;

use super::{Capture, Source, SourceError, redact};
use crate::config::{CameraConfig, HttpAuth, SourceConfig};

/// Largest snapshot accepted: far above any camera's JPEG, far below a memory problem.
const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

struct Credentials {
    scheme: HttpAuth,
    user: String,
    password: String,
}

pub struct HttpSnapshot {
    url: String,
    /// The URL's path and query: the `uri` a digest answer names.
    uri: String,
    credentials: Option<Credentials>,
    timeout: Duration,
    client: Option<reqwest::Client>,
    /// The camera's last digest challenge, answered by each request until it sends a new one.
    challenge: Option<WwwAuthenticateHeader>,
}

impl HttpSnapshot {
    pub fn new(cam: &CameraConfig) -> HttpSnapshot {
        let (url, credentials) = match &cam.source {
            SourceConfig::HttpSnapshot {
                url,
                username,
                password,
                auth,
                ..
            } => (
                url.clone(),
                username.clone().map(|user| Credentials {
                    scheme: *auth,
                    user,
                    password: password.clone().unwrap_or_default(),
                }),
            ),
            _ => (String::new(), None),
        };
        let uri = reqwest::Url::parse(&url).map_or_else(
            |_| "/".to_string(),
            |u| match u.query() {
                Some(query) => format!("{}?{query}", u.path()),
                None => u.path().to_string(),
            },
        );
        HttpSnapshot {
            url,
            uri,
            credentials,
            timeout: Duration::from_millis(cam.stall_timeout_ms),
            client: None,
            challenge: None,
        }
    }

    /// One GET with the credentials as they stand (basic, or the answer to the kept challenge).
    async fn get(&mut self) -> Result<reqwest::Response, SourceError> {
        let client = self.client.as_ref().ok_or(SourceError::NotOpen)?;
        let mut request = client.get(&self.url);
        match (&self.credentials, &mut self.challenge) {
            (Some(c), _) if c.scheme == HttpAuth::Basic => {
                request = request.basic_auth(&c.user, Some(&c.password));
            }
            (Some(c), Some(challenge)) => {
                let context = AuthContext::new(c.user.as_str(), c.password.as_str(), &self.uri);
                let answer = challenge.respond(&context).map_err(|e| {
                    SourceError::Device(format!("answering the digest challenge: {e}"))
                })?;
                request = request.header(AUTHORIZATION, answer.to_header_string());
            }
            _ => {}
        }
        request.send().await.map_err(|e| {
            SourceError::Device(format!("GET {}: {}", redact(&self.url), e.without_url()))
        })
    }

    async fn fetch(&mut self) -> Result<Vec<u8>, SourceError> {
        let mut response = self.get().await?;
        let digest = self
            .credentials
            .as_ref()
            .is_some_and(|c| c.scheme == HttpAuth::Digest);
        if digest && response.status() == StatusCode::UNAUTHORIZED {
            self.challenge = Some(strongest_challenge(&response).ok_or_else(|| {
                SourceError::Device(format!(
                    "GET {} answered 401 without a digest challenge we can answer",
                    redact(&self.url)
                ))
            })?);
            response = self.get().await?;
        }
        if !response.status().is_success() {
            return Err(SourceError::Device(format!(
                "GET {} answered {}",
                redact(&self.url),
                response.status()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| SourceError::Device(format!("reading the snapshot: {e}")))?
        {
            if body.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                return Err(SourceError::Device(format!(
                    "the snapshot is larger than {MAX_SNAPSHOT_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !body.starts_with(&[0xFF, 0xD8]) || wiko_inspect::decode::is_truncated_jpeg(&body) {
            return Err(SourceError::Device(
                "the snapshot is not a complete JPEG".into(),
            ));
        }
        debug!(bytes = body.len(), "snapshot taken");
        Ok(body)
    }
}

/// The digest challenge of a 401 with the strongest algorithm, of those that parse.
fn strongest_challenge(response: &reqwest::Response) -> Option<WwwAuthenticateHeader> {
    let strength = |c: &WwwAuthenticateHeader| match c.algorithm.algo {
        AlgorithmType::MD5 => 0,
        AlgorithmType::SHA2_256 => 1,
        AlgorithmType::SHA2_512_256 => 2,
    };
    response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter(|value| {
            value
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("digest "))
        })
        .filter_map(|value| digest_auth::parse(value).ok())
        .max_by_key(strength)
}

#[async_trait]
impl Source for HttpSnapshot {
    /// A new client, then one snapshot to prove the camera answers.
    async fn open(&mut self) -> Result<(), SourceError> {
        self.client = Some(
            reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.timeout)
                .build()
                .map_err(|e| SourceError::Device(format!("building the HTTP client: {e}")))?,
        );
        self.fetch().await.map(drop)
    }

    async fn grab(&mut self) -> Result<Capture, SourceError> {
        Ok(Capture::jpeg(self.fetch().await?))
    }

    /// One snapshot, discarded: a camera that went away is seen between triggers too.
    async fn check(&mut self) -> Result<(), SourceError> {
        self.fetch().await.map(drop)
    }

    fn close(&mut self) {
        self.client = None;
        self.challenge = None;
    }
}

#[cfg(test)]
mod tests;
