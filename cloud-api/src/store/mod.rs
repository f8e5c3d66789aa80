//! Storage behind one interface: [`Store`] for records (analyses, frames, jobs, outbox, models)
//! and [`blob::BlobStore`] for images. The embedded backend ([`sqlite::SqliteStore`] plus
//! [`blob::LocalDir`]) is the default; production is [`postgres::PgStore`] plus [`s3::S3`],
//! shared by several replicas. No SQL, path or object key leaves this module.
//!
//! Invariants:
//! - Ingest is idempotent on `frame_id`: the same metadata and image again yields the existing
//!   analysis; a different one is [`StoreError::Conflict`].
//! - An analysis, its frame row and its job are written in one transaction, after the image is
//!   durable in the blob store: an acknowledged frame is never missing its image.
//! - Completing an analysis writes the result, deletes the job and queues the MQTT messages
//!   (outbox) in one transaction, and only once: completing a finished analysis is a no-op.
//! - A job, and an outbox message, is leased to one worker (one replica) at a time; an expired
//!   lease hands it to another.

pub mod blob;
pub mod postgres;
mod record;
pub mod s3;
pub mod segments;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use wiko_wire::{Analysis, AnalysisStatus, Defect, FrameMeta, IngestOutcome};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("frame {0} exists with other content")]
    Conflict(Uuid),
    #[error("not found")]
    NotFound,
    #[error("bad cursor")]
    BadCursor,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(String),
    #[error("image store: {0}")]
    Blob(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// A part to store: where it comes from, and its image (already in the blob store).
#[derive(Debug, Clone)]
pub struct NewAnalysis {
    pub facility: String,
    pub line: String,
    pub station: String,
    pub product_sku: String,
    pub part_id: Option<String>,
    pub lot: Option<String>,
    pub timestamp: DateTime<Utc>,
    /// Present for agent frames (idempotency key), absent for `POST /analyze`.
    pub frame: Option<FrameMeta>,
    pub image_key: String,
    pub image_blake3: String,
    pub image_width: u32,
    pub image_height: u32,
    /// When the job becomes runnable: now for queued analysis, later for a synchronous call
    /// (the job only runs if the synchronous path died).
    pub run_after: Duration,
}

/// An analyzer's verdict on one part.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub status: AnalysisStatus,
    pub defect_detected: bool,
    pub defects: Vec<Defect>,
    pub score: Option<f32>,
    pub score_threshold: Option<f32>,
    pub confidence: Option<f32>,
    pub recommendation: String,
    pub model_version: Option<String>,
}

impl Judgement {
    /// No verdict could be made; `reason` says why.
    pub fn failed(reason: impl std::fmt::Display, model_version: Option<String>) -> Judgement {
        Judgement {
            status: AnalysisStatus::Failed,
            defect_detected: false,
            defects: Vec::new(),
            score: None,
            score_threshold: None,
            confidence: None,
            recommendation: format!("no verdict: {reason}"),
            model_version,
        }
    }
}

/// A judgement with who made it and how long it took: what gets stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub judgement: Judgement,
    pub analyzer: String,
    pub analyzer_version: String,
    pub latency_ms: f64,
}

/// A leased analysis job.
#[derive(Debug, Clone)]
pub struct Job {
    pub analysis_id: Uuid,
    pub product_sku: String,
    pub image_key: String,
    pub attempts: u32,
}

/// Filters of the results listing; all optional.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub facility: Option<String>,
    pub line: Option<String>,
    pub station: Option<String>,
    pub product_sku: Option<String>,
    pub device_id: Option<String>,
    pub defect_detected: Option<bool>,
    pub defect_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One MQTT message waiting to be published.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The analysis queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Jobs not completed yet (runnable, leased or waiting for a retry).
    pub waiting: u64,
    /// How long the oldest of them has been due.
    pub oldest_due: Option<Duration>,
}

/// One image of a SKU's golden set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GoldenSample {
    /// BLAKE3 of the image bytes (hex): the image's name in the API.
    pub digest: String,
    /// Where the image lies in the blob store.
    #[serde(skip)]
    pub image_key: String,
    pub added_at: DateTime<Utc>,
}

/// A stored per-SKU model.
#[derive(Debug, Clone)]
pub struct StoredModel {
    pub sku: String,
    pub version: String,
    pub body: Vec<u8>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new part (analysis pending, job queued); idempotent on the frame id.
    async fn create(&self, new: NewAnalysis) -> Result<(IngestOutcome, Uuid), StoreError>;
    /// Writes an analyzer's outcome once, queueing the MQTT messages; returns the analysis.
    async fn complete(
        &self,
        id: Uuid,
        outcome: Outcome,
        public_url: &str,
    ) -> Result<Analysis, StoreError>;
    /// Leases up to `limit` runnable jobs for `lease`.
    async fn claim_jobs(&self, limit: usize, lease: Duration) -> Result<Vec<Job>, StoreError>;
    /// A job failed; it runs again after `retry_in`, or is marked failed after `max_attempts`.
    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Duration,
        max_attempts: u32,
        public_url: &str,
    ) -> Result<(), StoreError>;
    async fn get(&self, id: Uuid) -> Result<Analysis, StoreError>;
    /// Newest first; `cursor` from the previous page.
    async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Analysis>, Option<String>), StoreError>;
    /// The image key of an analysis.
    async fn image_key(&self, id: Uuid) -> Result<String, StoreError>;
    /// Up to `limit` messages to publish, oldest first. With several replicas on one store,
    /// each message goes to one replica at a time (leased); its publisher skips the ones it
    /// already has in flight.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError>;
    async fn outbox_done(&self, ids: Vec<i64>) -> Result<(), StoreError>;
    async fn save_model(&self, model: StoredModel) -> Result<(), StoreError>;
    /// The active model version of every calibrated SKU: (sku, version).
    async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// The active model of a SKU.
    async fn model(&self, sku: &str) -> Result<Option<StoredModel>, StoreError>;
    /// Adds an image (by digest and blob key) to a SKU's golden set; false if it was there.
    async fn add_golden(
        &self,
        sku: &str,
        digest: &str,
        image_key: &str,
    ) -> Result<bool, StoreError>;
    /// A SKU's golden set, oldest first.
    async fn golden(&self, sku: &str) -> Result<Vec<GoldenSample>, StoreError>;
    /// Every SKU with a golden set and how many images it holds, by SKU.
    async fn golden_sets(&self) -> Result<Vec<(String, usize)>, StoreError>;
    /// Takes an image (by digest) out of a SKU's golden set; false if it was not there. The
    /// image stays in the blob store (another SKU's set may hold the same bytes).
    async fn remove_golden(&self, sku: &str, digest: &str) -> Result<bool, StoreError>;
    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
