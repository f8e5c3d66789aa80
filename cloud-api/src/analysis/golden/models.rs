//! The models in use: the active version of each SKU, loaded from the store and kept in
//! memory, and the stored models that cannot be used (of an older file format after an
//! upgrade, or damaged) until they are refitted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use tracing::{info, warn};
use wiko_inspect::{Model, ModelFileError, Planes};
use wiko_wire::ModelInfo;

use crate::store::{Store, StoreError, StoredModel};

/// A stored model that cannot be used: of an older format, or damaged.
struct Unusable {
    version: String,
    /// Whether a refit was tried (a failed refit is not retried until another version is
    /// stored).
    tried: bool,
}

/// The active model of a SKU.
struct Active {
    model: Arc<Model>,
    /// The model file and its version, as devices download it.
    file: ModelFile,
}

/// The model file of a SKU's active version, as served to devices.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub version: String,
    /// A strong HTTP entity tag: the file's BLAKE3, quoted.
    pub etag: String,
    pub body: bytes::Bytes,
}

impl ModelFile {
    fn new(version: &str, body: Vec<u8>) -> ModelFile {
        ModelFile {
            version: version.to_string(),
            etag: format!("\"{}\"", blake3::hash(&body).to_hex()),
            body: body.into(),
        }
    }
}

pub(super) struct Models {
    store: Arc<dyn Store>,
    active: RwLock<HashMap<String, Active>>,
    unusable: Mutex<HashMap<String, Unusable>>,
}

impl Models {
    pub(super) fn new(store: Arc<dyn Store>) -> Models {
        Models {
            store,
            active: RwLock::new(HashMap::new()),
            unusable: Mutex::new(HashMap::new()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Active>> {
        // Entries are replaced whole; a panic cannot leave the map half-written.
        self.active.read().unwrap_or_else(|p| p.into_inner())
    }

    fn unusable(&self) -> MutexGuard<'_, HashMap<String, Unusable>> {
        // Entries are replaced whole; a panic cannot leave the map half-written.
        self.unusable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The active model of a SKU, as a quality engineer sees it.
    pub(super) fn info(&self, sku: &str) -> Option<ModelInfo> {
        self.read()
            .get(sku)
            .map(|a| model_info(sku, &a.file.version, &a.model))
    }

    /// The file of the active model of a SKU.
    pub(super) fn file(&self, sku: &str) -> Option<ModelFile> {
        self.read().get(sku).map(|a| a.file.clone())
    }

    /// The planes the active model of a SKU reads, if one is loaded here: read before every
    /// decode, so it never goes to the store.
    pub(super) fn planes(&self, sku: &str) -> Option<Planes> {
        self.read().get(sku).map(|a| a.model.planes())
    }

    /// The model to judge a part of `sku` with, and its version: the active one, else the
    /// stored one (another replica may have fitted it since the last refresh). `None` when the
    /// SKU has none, or only one known to be unusable (not read again for every part: the
    /// refresh finds its successor).
    pub(super) async fn for_part(
        &self,
        sku: &str,
    ) -> Result<Option<(Arc<Model>, String)>, StoreError> {
        let cached = self
            .read()
            .get(sku)
            .map(|a| (a.model.clone(), a.file.version.clone()));
        match cached {
            Some(active) => Ok(Some(active)),
            None if self.unusable().contains_key(sku) => Ok(None),
            None => self.load(sku).await,
        }
    }

    /// Loads every stored model whose version differs from the active one: models that
    /// another replica fitted become active here too.
    pub(super) async fn refresh(&self) -> Result<(), StoreError> {
        for (sku, version) in self.store.model_versions().await? {
            let known_unusable = self.unusable().get(&sku).map(|o| o.version.clone());
            if self
                .read()
                .get(&sku)
                .is_some_and(|a| a.file.version == version)
                || known_unusable.is_some_and(|v| v == version)
            {
                continue;
            }
            self.load(&sku).await?;
        }
        Ok(())
    }

    /// Loads and activates the stored model of `sku`; `None` if it has none, or an unusable one
    /// (logged once, and noted for a refit).
    async fn load(&self, sku: &str) -> Result<Option<(Arc<Model>, String)>, StoreError> {
        let Some(m) = self.store.model(sku).await? else {
            return Ok(None);
        };
        match Model::from_bytes(&m.body) {
            Ok(model) => {
                info!(sku = %m.sku, version = %m.version, method = model.kind(), "model loaded");
                let model = Arc::new(model);
                let file = ModelFile::new(&m.version, m.body);
                self.activate(m.sku, model.clone(), file);
                Ok(Some((model, m.version)))
            }
            Err(e) => {
                let mut unusable = self.unusable();
                // Parts of this SKU land here until the refit: note it (and log) once.
                if unusable.get(&m.sku).is_none_or(|o| o.version != m.version) {
                    match e {
                        ModelFileError::Format { found } => {
                            info!(sku = %m.sku, version = %m.version, format = found,
                                  "stored model of an older format: refitting it from its golden set");
                        }
                        e => {
                            warn!(sku = %m.sku, version = %m.version, error = %e,
                                  "stored model damaged: refitting it from its golden set");
                        }
                    }
                    let entry = Unusable {
                        version: m.version,
                        tried: false,
                    };
                    unusable.insert(m.sku, entry);
                }
                Ok(None)
            }
        }
    }

    /// The SKUs whose stored model cannot be used and was not tried yet, with its version.
    pub(super) fn to_refit(&self) -> Vec<(String, String)> {
        self.unusable()
            .iter()
            .filter(|(_, o)| !o.tried)
            .map(|(sku, o)| (sku.clone(), o.version.clone()))
            .collect()
    }

    /// Whether `sku`'s unusable `version` still waits for a refit (an upload may have fitted a
    /// new version meanwhile).
    pub(super) fn still_to_refit(&self, sku: &str, version: &str) -> bool {
        self.unusable()
            .get(sku)
            .is_some_and(|o| !o.tried && o.version == version)
    }

    /// A refit of `sku` failed: it is not tried again until another version is stored.
    pub(super) fn refit_failed(&self, sku: &str) {
        if let Some(o) = self.unusable().get_mut(sku) {
            o.tried = true;
        }
    }

    /// Stores `model` as the SKU's next version and makes it active. Another replica may have
    /// fitted a version since this one's last refresh: the number follows the stored one.
    pub(super) async fn publish(&self, sku: &str, model: Model) -> Result<ModelInfo, StoreError> {
        self.refresh().await?;
        let current = self.read().get(sku).map(|a| a.file.version.clone());
        let stored = current.or_else(|| self.unusable().get(sku).map(|o| o.version.clone()));
        self.save_and_activate(sku, after(stored.as_deref().unwrap_or("v0")), model)
            .await
    }

    /// Stores a model refitted for an unusable `stored` version, as the version after it.
    pub(super) async fn replace(
        &self,
        sku: &str,
        stored: &str,
        model: Model,
    ) -> Result<ModelInfo, StoreError> {
        self.save_and_activate(sku, after(stored), model).await
    }

    /// Stores a fitted model as `version` of its SKU and makes it the active one.
    async fn save_and_activate(
        &self,
        sku: &str,
        version: String,
        model: Model,
    ) -> Result<ModelInfo, StoreError> {
        let body = model.to_bytes();
        self.store
            .save_model(StoredModel {
                sku: sku.to_string(),
                version: version.clone(),
                body: body.clone(),
            })
            .await?;
        let info = model_info(sku, &version, &model);
        self.activate(
            sku.to_string(),
            Arc::new(model),
            ModelFile::new(&version, body),
        );
        Ok(info)
    }

    /// Makes `model` the SKU's active one; an unusable stored model it replaces is forgotten.
    fn activate(&self, sku: String, model: Arc<Model>, file: ModelFile) {
        self.unusable().remove(&sku);
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sku, Active { model, file });
    }
}

/// `v1`, `v2`, …: the version after `version` (`v1` after anything unnumbered).
fn after(version: &str) -> String {
    let n = version
        .strip_prefix('v')
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    format!("v{}", n + 1)
}

fn model_info(sku: &str, version: &str, m: &Model) -> ModelInfo {
    ModelInfo {
        sku: sku.to_string(),
        version: version.to_string(),
        method: m.kind().to_string(),
        threshold: m.threshold,
        false_reject_rate: m.false_reject_rate,
        trained_on: m.trained_on,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_the_stored_one() {
        assert_eq!(after("v0"), "v1");
        assert_eq!(after("v9"), "v10");
        assert_eq!(after("x"), "v1");
    }
}
