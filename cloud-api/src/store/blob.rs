//! Image storage: [`BlobStore`], with the local-directory backend [`LocalDir`].

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreError;

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key`, durably, before returning. Keys are content-addressed, so
    /// writing a key again writes the same bytes.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Images as files below a directory: written to a temporary name, fsynced, renamed into place,
/// and the directory fsynced, so a file is either complete or absent after a crash.
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: PathBuf) -> Result<LocalDir, StoreError> {
        std::fs::create_dir_all(&root).map_err(|e| StoreError::Blob(e.to_string()))?;
        Ok(LocalDir { root })
    }

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

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for LocalDir {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
            .await
            .map_err(|e| StoreError::Blob(e.to_string()))?
            .map_err(|e| StoreError::Blob(e.to_string()))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
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
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("20261126"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
