//! Images in S3 (or any S3-compatible server) through the `object_store` crate.
//!
//! Keys are content-addressed, so a put is a conditional create (`If-None-Match: *`): the key
//! existing already means the same bytes are there. Requests are retried briefly inside
//! `object_store`; past that, an unreachable server is [`StoreError::Unavailable`] (HTTP 503
//! with `Retry-After`), so ingest never acknowledges a frame whose image is not stored.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use super::StoreError;
use super::blob::BlobStore;

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

fn s3_error(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound,
        other => StoreError::Unavailable(format!("object store: {other}")),
    }
}

#[async_trait]
impl BlobStore for S3 {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&self.path(key)?, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
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
