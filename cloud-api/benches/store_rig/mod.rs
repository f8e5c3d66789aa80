//! What the store benches share (`queue.rs`, `stats.rs`), each including it as `mod store_rig`.

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
