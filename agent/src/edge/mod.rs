//! Edge analysis: each frame judged on the line PC, before it is buffered, with the model the
//! cloud fitted for its SKU, by `wiko-inspect` (the same code the cloud judges with).
//!
//! - [`Models`]: the model in use per SKU. Loaded at start from `edge.model_dir`, so the agent
//!   judges after a restart without the cloud; a model is replaced only by one that loads.
//! - [`pull_all`], [`run`]: pulls each SKU's model at start (before the cameras, waiting at
//!   most [`FIRST_PULL_WAIT`]) and every `edge.refresh_secs`
//!   (`GET /api/v1/skus/{sku}/model/file` with `If-None-Match`: an unchanged model is not sent
//!   again); a new one is written to disk (temporary file, fsync, rename) before it is used.
//!   A file that does not load is refused (logged, `wiko_agent_edge_models_refused_total`)
//!   and the previous model kept.
//! - [`Models::judge`]: a frame's [`EdgeVerdict`], or `None` while its SKU has no model (the
//!   frame goes unjudged, as without edge analysis) or when the image cannot be judged. CPU
//!   work: callers run it on the blocking pool.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wiko_inspect::{DecodeLimits, Model};
use wiko_wire::{Defect, EdgeVerdict, RegionFigures};

use crate::sync::{Client, ModelDownload};
use crate::telemetry as names;

/// Extension of a kept model file: a JSON header line ([`Header`]), then the model file.
const EXTENSION: &str = "model";

/// What a kept model file says about itself on its first line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Header {
    sku: String,
    version: String,
    etag: String,
}

/// A model in use.
struct Loaded {
    model: Model,
    version: String,
    etag: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model of {sku} ({version}) does not load: {reason}")]
    Refused {
        sku: String,
        version: String,
        reason: String,
    },
}

/// The models in use, per SKU.
pub struct Models {
    dir: PathBuf,
    limits: DecodeLimits,
    by_sku: RwLock<HashMap<String, Arc<Loaded>>>,
}

impl Models {
    /// Loads the models kept in `dir` (created if missing). A kept file that does not load is
    /// logged and skipped: the next pull replaces it.
    pub fn open(dir: &Path) -> Result<Models, EdgeError> {
        let io = |source| EdgeError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let models = Models {
            dir: dir.to_path_buf(),
            limits: DecodeLimits::default(),
            by_sku: RwLock::new(HashMap::new()),
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_none_or(|e| e != EXTENSION) {
                continue;
            }
            match read_kept(&path) {
                Ok((header, loaded)) => {
                    info!(sku = %header.sku, version = %loaded.version, "edge model loaded from disk");
                    models.put(header.sku, loaded);
                }
                Err(reason) => {
                    warn!(path = %path.display(), %reason, "kept edge model does not load; waiting for the cloud's");
                    metrics::counter!(names::EDGE_MODELS_REFUSED_TOTAL).increment(1);
                }
            }
        }
        Ok(models)
    }

    fn put(&self, sku: String, loaded: Loaded) {
        let mut by_sku = self.by_sku.write().unwrap_or_else(|p| p.into_inner());
        by_sku.insert(sku, Arc::new(loaded));
        metrics::gauge!(names::EDGE_MODELS).set(by_sku.len() as f64);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Loaded>>> {
        // Entries are replaced whole; a panic cannot leave the map half-written.
        self.by_sku.read().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, sku: &str) -> Option<Arc<Loaded>> {
        self.read().get(sku).cloned()
    }

    /// The version and entity tag of the SKU's model in use.
    pub fn current(&self, sku: &str) -> Option<(String, String)> {
        self.get(sku).map(|l| (l.version.clone(), l.etag.clone()))
    }

    /// The version in use per SKU (heartbeats report them), at most
    /// [`wiko_wire::fleet::Heartbeat::MAX_ENTRIES`].
    pub fn versions(&self) -> std::collections::BTreeMap<String, String> {
        self.read()
            .iter()
            .take(wiko_wire::fleet::Heartbeat::MAX_ENTRIES)
            .map(|(sku, l)| (sku.clone(), l.version.clone()))
            .collect()
    }

    /// Judges a frame of `sku`; `None` while the SKU has no model, or when the image cannot
    /// be judged (logged and counted). CPU work: run it on the blocking pool.
    pub fn judge(&self, sku: &str, jpeg: &[u8]) -> Option<EdgeVerdict> {
        let loaded = self.get(sku)?;
        let started = Instant::now();
        // Decoded as the model reads it: a knife's model, luma alone at its working scale.
        let scored = loaded.model.judge(jpeg, self.limits);
        let latency = started.elapsed();
        match scored {
            Ok(v) => {
                let outcome = if v.defect_detected { "ng" } else { "ok" };
                metrics::histogram!(names::EDGE_VERDICT_SECONDS).record(latency.as_secs_f64());
                metrics::counter!(names::EDGE_VERDICTS_TOTAL, "outcome" => outcome).increment(1);
                Some(EdgeVerdict {
                    defect_detected: v.defect_detected,
                    score: v.score,
                    score_threshold: v.threshold,
                    model_version: loaded.version.clone(),
                    defects: v
                        .regions
                        .iter()
                        .take(wiko_wire::frame::MAX_EDGE_DEFECTS)
                        .map(|r| {
                            Defect::from_region(
                                RegionFigures {
                                    kind: r.kind.as_str(),
                                    bbox: r.bbox,
                                    area: r.area,
                                    peak: r.peak,
                                    shift: r.shift,
                                },
                                v.threshold,
                            )
                        })
                        .collect(),
                    latency_ms: latency.as_secs_f64() * 1000.0,
                    // Set by the buffer when it queues the frame's alert.
                    alerted: false,
                })
            }
            Err(e) => {
                warn!(error = %e, %sku, "the frame cannot be judged at the edge; the cloud will judge it");
                metrics::counter!(names::EDGE_VERDICTS_TOTAL, "outcome" => "error").increment(1);
                None
            }
        }
    }

    /// Takes a downloaded model file: loaded, then kept on disk, then used. A file that does
    /// not load is refused and the model in use kept.
    pub fn install(
        &self,
        sku: &str,
        version: &str,
        etag: &str,
        body: &[u8],
    ) -> Result<(), EdgeError> {
        let model = Model::from_bytes(body).map_err(|e| {
            metrics::counter!(names::EDGE_MODELS_REFUSED_TOTAL).increment(1);
            EdgeError::Refused {
                sku: sku.to_string(),
                version: version.to_string(),
                reason: e.to_string(),
            }
        })?;
        let header = Header {
            sku: sku.to_string(),
            version: version.to_string(),
            etag: etag.to_string(),
        };
        self.keep(&header, body)?;
        info!(%sku, %version, method = model.kind(), "edge model in use");
        self.put(
            sku.to_string(),
            Loaded {
                model,
                version: header.version,
                etag: header.etag,
            },
        );
        Ok(())
    }

    /// Writes the model file of `header.sku`: a temporary file, synced, renamed over the old
    /// one, the directory synced; a crash leaves the old file or the new one, never half.
    fn keep(&self, header: &Header, body: &[u8]) -> Result<(), EdgeError> {
        let path = self.dir.join(format!("{}.{EXTENSION}", header.sku));
        let tmp = self.dir.join(format!("{}.{EXTENSION}.tmp", header.sku));
        let io = |source| EdgeError::Io {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(header).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&line).map_err(io)?;
        file.write_all(body).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

/// Reads a kept model file.
fn read_kept(path: &Path) -> Result<(Header, Loaded), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header: Header =
        serde_json::from_slice(&bytes[..newline]).map_err(|e| format!("header: {e}"))?;
    let model = Model::from_bytes(&bytes[newline + 1..]).map_err(|e| e.to_string())?;
    let loaded = Loaded {
        model,
        version: header.version.clone(),
        etag: header.etag.clone(),
    };
    Ok((header, loaded))
}

/// How long the start waits for the first pull of every SKU before the cameras start (a
/// cloud that does not answer must not hold the line: the refresh pulls again).
pub const FIRST_PULL_WAIT: Duration = Duration::from_secs(5);

/// Pulls the model of each of `skus`.
pub async fn pull_all(models: &Arc<Models>, client: &Client, skus: &[String]) {
    for sku in skus {
        pull(models, client, sku).await;
    }
}

/// Pulls the model of each of `skus` every `refresh`, and a SKU's at once when it comes out
/// of `announced` (the cloud announced a new model over MQTT), until `stop` (the first pull
/// is the start's, [`pull_all`]).
pub async fn run(
    models: Arc<Models>,
    client: Client,
    skus: Vec<String>,
    refresh: Duration,
    mut announced: tokio::sync::mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => pull_all(&models, &client, &skus).await,
            Some(sku) = announced.recv() => {
                if skus.contains(&sku) {
                    pull(&models, &client, &sku).await;
                }
            }
        }
    }
}

/// Asks the cloud for `sku`'s model; installs a new one.
pub async fn pull(models: &Arc<Models>, client: &Client, sku: &str) {
    let held = models.current(sku).map(|(_, etag)| etag);
    match client.model_file(sku, held.as_deref()).await {
        Ok(ModelDownload::Unchanged) => {}
        Ok(ModelDownload::NoModel) => {
            if held.is_none() {
                info!(%sku, "the cloud has no model for this SKU yet; frames stay unjudged");
            }
        }
        Ok(ModelDownload::New {
            version,
            etag,
            body,
        }) => {
            let (models, sku) = (models.clone(), sku.to_string());
            let installed =
                tokio::task::spawn_blocking(move || models.install(&sku, &version, &etag, &body))
                    .await;
            match installed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "new edge model refused; the previous one stays"),
                Err(e) => warn!(error = %e, "installing the edge model panicked"),
            }
        }
        Err(e) => {
            warn!(error = %e, %sku, "pulling the edge model failed; retrying at the next refresh")
        }
    }
}

#[cfg(test)]
mod tests;
