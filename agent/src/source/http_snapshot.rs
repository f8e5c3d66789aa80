//! The `http_snapshot` camera: an IP camera's snapshot URL, one GET per part (HTTP basic auth
//! when configured; TLS through rustls). The body must be a JPEG; anything else is a failed
//! picture, like a non-2xx answer, and the camera is reopened (a new connection pool). Between
//! triggers a snapshot is fetched and discarded every `stall_timeout_ms`, so that a camera
//! that went away is reported before the next part needs it.

use std::time::Duration;

use async_trait::async_trait;
use tracing::debug;

use super::{Capture, Source, SourceError, redact};
use crate::config::{CameraConfig, SourceConfig};

/// Largest snapshot accepted: far above any camera's JPEG, far below a memory problem.
const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

pub struct HttpSnapshot {
    url: String,
    auth: Option<(String, Option<String>)>,
    timeout: Duration,
    client: Option<reqwest::Client>,
}

impl HttpSnapshot {
    pub fn new(cam: &CameraConfig) -> HttpSnapshot {
        let (url, auth) = match &cam.source {
            SourceConfig::HttpSnapshot {
                url,
                username,
                password,
                ..
            } => (url.clone(), username.clone().map(|u| (u, password.clone()))),
            _ => (String::new(), None),
        };
        HttpSnapshot {
            url,
            auth,
            timeout: Duration::from_millis(cam.stall_timeout_ms),
            client: None,
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, SourceError> {
        let client = self.client.as_ref().ok_or(SourceError::NotOpen)?;
        let mut request = client.get(&self.url);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password.as_ref());
        }
        let mut response = request.send().await.map_err(|e| {
            SourceError::Device(format!("GET {}: {}", redact(&self.url), e.without_url()))
        })?;
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
    }
}
