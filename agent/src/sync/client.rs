//! One upload: `PUT /api/v1/frames/{frame_id}` and what its answer means for the frame.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use wiko_wire::frame::{IMAGE_FIELD, META_FIELD};
use wiko_wire::{API_KEY_HEADER, ErrorBody, FrameMeta, Heartbeat, HeartbeatAck, IngestAck};

/// What went wrong with an upload, and so what to do with the frame.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Try again later: network errors, timeouts, 408, 429, 5xx, and 401/403 (a key being
    /// rotated is fixed by the operator, not by dropping frames).
    #[error("retryable: {reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The cloud will never accept this frame: it goes to the dead-letter table.
    #[error("rejected with {status}: {reason}")]
    Rejected { status: u16, reason: String },
}

/// The HTTP side of sync.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    api_key: String,
}

impl Client {
    pub fn new(endpoint: &str, api_key: &str, timeout: Duration) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("wiko-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
        })
    }

    pub async fn upload(&self, meta: &FrameMeta, jpeg: Vec<u8>) -> Result<IngestAck, UploadError> {
        let meta_json = serde_json::to_string(meta).map_err(|e| UploadError::Rejected {
            status: 0,
            reason: format!("metadata does not serialise: {e}"),
        })?;
        let form = Form::new()
            .part(
                META_FIELD,
                Part::text(meta_json)
                    .mime_str("application/json")
                    .map_err(retryable)?,
            )
            .part(
                IMAGE_FIELD,
                Part::bytes(jpeg)
                    .file_name("frame.jpg")
                    .mime_str("image/jpeg")
                    .map_err(retryable)?,
            );
        let url = format!("{}/api/v1/frames/{}", self.endpoint, meta.frame_id);
        let response = self
            .http
            .put(url)
            .header(API_KEY_HEADER, &self.api_key)
            .multipart(form)
            .send()
            .await
            .map_err(retryable)?;
        let status = response.status();
        if status.is_success() {
            let ack: IngestAck = response.json().await.map_err(retryable)?;
            if ack.frame_id != meta.frame_id {
                return Err(UploadError::Retryable {
                    reason: format!("ack for {} while uploading {}", ack.frame_id, meta.frame_id),
                    retry_after: None,
                });
            }
            return Ok(ack);
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        Err(classify(status, error_reason(response).await, retry_after))
    }
}

impl Client {
    /// Sends a heartbeat; the cloud's answer carries the commands left for this device.
    pub async fn heartbeat(&self, report: &Heartbeat) -> Result<HeartbeatAck, UploadError> {
        let response = self
            .http
            .post(format!("{}/api/v1/heartbeats", self.endpoint))
            .header(API_KEY_HEADER, &self.api_key)
            .json(report)
            .send()
            .await
            .map_err(retryable)?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(retryable);
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        Err(classify(status, error_reason(response).await, retry_after))
    }
}

/// The answer to a model pull.
#[derive(Debug)]
pub enum ModelDownload {
    /// The model held is the active one.
    Unchanged,
    /// The SKU has no model yet.
    NoModel,
    New {
        version: String,
        etag: String,
        body: bytes::Bytes,
    },
}

impl Client {
    /// The active model file of `sku` (edge analysis), unless `etag` names it already.
    pub async fn model_file(
        &self,
        sku: &str,
        etag: Option<&str>,
    ) -> Result<ModelDownload, UploadError> {
        let mut request = self
            .http
            .get(format!("{}/api/v1/skus/{sku}/model/file", self.endpoint))
            .header(API_KEY_HEADER, &self.api_key);
        if let Some(etag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(retryable)?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match status {
            StatusCode::NOT_MODIFIED => Ok(ModelDownload::Unchanged),
            StatusCode::NOT_FOUND => Ok(ModelDownload::NoModel),
            StatusCode::OK => {
                let (Some(version), Some(etag)) = (
                    header(wiko_wire::golden::MODEL_VERSION_HEADER),
                    header(reqwest::header::ETAG.as_str()),
                ) else {
                    return Err(retryable("the model file came without its version or ETag"));
                };
                let body = response.bytes().await.map_err(retryable)?;
                Ok(ModelDownload::New {
                    version,
                    etag,
                    body,
                })
            }
            _ => {
                let retry_after = retry_after(response.headers(), SystemTime::now());
                Err(classify(status, error_reason(response).await, retry_after))
            }
        }
    }
}

/// The error code and message of a refusal, or its status.
async fn error_reason(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        Ok(body) => format!("{}: {}", body.error.code, body.error.message),
        Err(_) => status.to_string(),
    }
}

/// Sorts a non-success status into retry or dead letter.
pub fn classify(status: StatusCode, reason: String, retry_after: Option<Duration>) -> UploadError {
    let retry = status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
        );
    if retry {
        UploadError::Retryable {
            reason: format!("{status}: {reason}"),
            retry_after,
        }
    } else {
        UploadError::Rejected {
            status: status.as_u16(),
            reason,
        }
    }
}

/// The wait the cloud asked for: `Retry-After` (seconds or an HTTP date) or `retry-after-ms`.
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok();
    wiko_wire::retry::retry_after(text("retry-after-ms"), text("retry-after"), now)
}

fn retryable(e: impl std::fmt::Display) -> UploadError {
    UploadError::Retryable {
        reason: e.to_string(),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn server_errors_throttling_and_auth_are_retried() {
        for code in [500u16, 502, 503, 408, 429, 401, 403] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify(status, "x".into(), None),
                    UploadError::Retryable { .. }
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn other_client_errors_are_dead_lettered() {
        for code in [400u16, 404, 409, 413, 415, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(status, "x".into(), None), UploadError::Rejected { status, .. } if status == code),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_http_dates() {
        let now = SystemTime::now();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        let mut h = reqwest::header::HeaderMap::new();
        let date = httpdate::fmt_http_date(now + Duration::from_secs(20));
        h.insert("retry-after", date.parse().unwrap());
        let wait = retry_after(&h, now).unwrap();
        assert!(wait > Duration::from_secs(18), "{wait:?}");
    }
}
