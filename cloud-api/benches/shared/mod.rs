//! What more than one of the cloud's benches uses (each bench includes this as `mod shared`).

use async_trait::async_trait;
use bytes::Bytes;
use wiko_cloud::store::{BlobStore, StoreError};

/// An image store that keeps nothing: the records alone are timed.
pub struct NoImages;

#[async_trait]
impl BlobStore for NoImages {
    async fn put(&self, _key: &str, _bytes: Bytes) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, _key: &str) -> Result<Bytes, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
