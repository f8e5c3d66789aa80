//! Image storage: [`BlobStore`], with the local-directory backend [`LocalDir`].

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreError;
use super::segments::SegmentLog;

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, durably, before returning. Keys are content-addressed, so
    /// writing a key again writes the same bytes.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Images below a directory: appended to the segment log in `segments/` (one sync for many
/// images; see [`SegmentLog`]). Images that earlier versions wrote as one file per key are
/// still read from there.
pub struct LocalDir {
    root: PathBuf,
    log: Arc<SegmentLog>,
}

impl LocalDir {
    pub fn new(root: PathBuf) -> Result<LocalDir, StoreError> {
        let log = SegmentLog::open(&root.join("segments"))
            .map_err(|e| StoreError::Blob(e.to_string()))?;
        Ok(LocalDir {
            root,
            log: Arc::new(log),
        })
    }

    /// The legacy one-file-per-key path; refuses keys that could leave the directory.
    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let ok = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if !ok {
            return Err(StoreError::Blob(format!("invalid key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

fn blocking_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Blob(format!("image store task: {e}"))
}

#[async_trait]
impl BlobStore for LocalDir {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.path(key)?;
        let (log, key) = (self.log.clone(), key.to_string());
        tokio::task::spawn_blocking(move || log.put(&key, &bytes))
            .await
            .map_err(blocking_error)?
            .map_err(|e| StoreError::Blob(e.to_string()))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let (log, key) = (self.log.clone(), key.to_string());
        let logged = tokio::task::spawn_blocking(move || log.get(&key))
            .await
            .map_err(blocking_error)?
            .map_err(|e| StoreError::Blob(e.to_string()))?;
        if let Some(data) = logged {
            return Ok(Bytes::from(data));
        }
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound),
            Err(e) => Err(StoreError::Blob(e.to_string())),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_get_returns_the_bytes_and_refuses_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path().to_path_buf()).unwrap();
        store
            .put("20261126/abc.jpg", Bytes::from_static(b"jpeg"))
            .await
            .unwrap();
        store
            .put("20261126/abc.jpg", Bytes::from_static(b"jpeg"))
            .await
            .unwrap();
        assert_eq!(
            store.get("20261126/abc.jpg").await.unwrap(),
            Bytes::from_static(b"jpeg")
        );
        assert!(matches!(
            store.get("20261126/none.jpg").await,
            Err(StoreError::NotFound)
        ));
        for bad in ["../x", "/etc/passwd", "a//b", "", "a/../b"] {
            assert!(store.put(bad, Bytes::new()).await.is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn images_written_one_file_per_key_by_earlier_versions_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("images/20261101")).unwrap();
        std::fs::write(dir.path().join("images/20261101/old.jpg"), b"old").unwrap();
        let store = LocalDir::new(dir.path().to_path_buf()).unwrap();
        assert_eq!(
            store.get("images/20261101/old.jpg").await.unwrap(),
            Bytes::from_static(b"old")
        );
    }
}
