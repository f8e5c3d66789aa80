//! Images in S3 (or any S3-compatible server) through the `object_store` crate.
//!
//! Keys are content-addressed, so a put is a conditional create (`If-None-Match: *`): the key
//! existing already means the same bytes are there. Requests are retried briefly inside
//! `object_store`; past that, an unreachable server is [`StoreError::Unavailable`] (HTTP 503
//! with `Retry-After`), so ingest never acknowledges a frame whose image is not stored.
//!
//! `object_store` does not repeat a conditional create that timed out after it was sent (it
//! cannot know that repeating it is safe). Here it is: the key names the bytes, so a put that
//! timed out is tried again, [`PUT_ATTEMPTS`] times in all.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::StoreError;
use super::blob::BlobStore;

/// Tries of one put whose requests time out (see the module's doc).
const PUT_ATTEMPTS: u32 = 3;
/// The wait before the second try; doubled before each further one.
const PUT_RETRY_WAIT: Duration = Duration::from_millis(200);

/// Where the images go (see `[images.s3]` in `config/cloud.example.toml`).
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// `None`: AWS, from the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// Prefixed to every key (`site-a/`): several deployments can share a bucket.
    pub prefix: String,
    /// Bucket in the path (`host/bucket/key`) rather than the host name; local servers need it.
    pub path_style: bool,
    /// Plain HTTP endpoints (local servers).
    pub allow_http: bool,
    /// Credentials; when absent, the standard AWS environment and instance metadata apply.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// One request's time limit.
    pub request_timeout: Duration,
}

pub struct S3 {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3 {
    pub fn new(s: &S3Settings) -> Result<S3, StoreError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&s.bucket)
            .with_region(&s.region)
            .with_virtual_hosted_style_request(!s.path_style)
            .with_allow_http(s.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(5),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(s.allow_http)
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(s.request_timeout),
            );
        if let Some(endpoint) = &s.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &s.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &s.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| StoreError::Blob(format!("S3 settings: {e}")))?;
        Ok(S3 {
            store: Arc::new(store),
            prefix: s.prefix.clone(),
        })
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        Path::parse(format!("{}{key}", self.prefix))
            .map_err(|e| StoreError::Blob(format!("invalid key {key:?}: {e}")))
    }
}

/// Whether a request failed by timing out (or being cut off) rather than by an answer.
fn timed_out(e: &object_store::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(http) = cause.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            );
        }
        source = cause.source();
    }
    false
}

fn s3_error(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        other => StoreError::Unavailable(format!("object store: {other}")),
    }
}

#[async_trait]
impl BlobStore for S3 {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let payload = PutPayload::from(bytes);
        let (mut attempt, mut wait) = (1, PUT_RETRY_WAIT);
        loop {
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self.store.put_opts(&path, payload.clone(), options).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => return Ok(()),
                Err(e) if attempt < PUT_ATTEMPTS && timed_out(&e) => {
                    tracing::warn!(key, attempt, error = %e, "an image put timed out; trying again");
                    tokio::time::sleep(wait).await;
                    (attempt, wait) = (attempt + 1, wait * 2);
                }
                Err(e) => return Err(s3_error(e)),
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let found = self.store.get(&self.path(key)?).await.map_err(s3_error)?;
        found.bytes().await.map_err(s3_error)
    }

    /// Asks for a key that does not exist: "not found" proves the bucket answers.
    async fn ping(&self) -> Result<(), StoreError> {
        match self.store.head(&self.path(".wiko-ready-probe")?).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::put;

    use super::*;

    /// An S3 server on a local port whose first `stalls` puts hang past the client's time
    /// limit and whose later ones store; it counts the puts it received.
    async fn stalling_s3(stalls: usize) -> (S3, Arc<AtomicUsize>) {
        let puts = Arc::new(AtomicUsize::new(0));
        let counted = puts.clone();
        let app = Router::new().route(
            "/{*key}",
            put(move || {
                let puts = counted.clone();
                async move {
                    if puts.fetch_add(1, Ordering::SeqCst) < stalls {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    (StatusCode::OK, [(header::ETAG, "\"stored\"")]).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let s3 = S3::new(&S3Settings {
            bucket: "frames".into(),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            prefix: String::new(),
            path_style: true,
            allow_http: true,
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
            request_timeout: Duration::from_millis(300),
        })
        .unwrap();
        (s3, puts)
    }

    #[tokio::test]
    async fn a_put_that_timed_out_is_sent_again_and_stores() {
        let (s3, puts) = stalling_s3(1).await;
        s3.put("images/a.jpg", Bytes::from_static(b"jpeg"))
            .await
            .unwrap();
        assert_eq!(puts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_put_that_keeps_timing_out_is_unavailable_after_its_attempts() {
        let (s3, puts) = stalling_s3(usize::MAX).await;
        let outcome = s3.put("images/a.jpg", Bytes::from_static(b"jpeg")).await;
        assert!(
            matches!(outcome, Err(StoreError::Unavailable(_))),
            "{outcome:?}"
        );
        assert_eq!(puts.load(Ordering::SeqCst), PUT_ATTEMPTS as usize);
    }
}
