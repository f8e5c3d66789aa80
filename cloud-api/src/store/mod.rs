//! Storage: records (analyses, frames, jobs, outbox events, golden sets, models) behind
//! [`Store`], images behind [`BlobStore`], and [`Storage`], the two together, which is what the
//! rest of the cloud uses to take a part or a golden image in.
//!
//! One SQL store ([`sql`]) serves both backends: the embedded SQLite file (default) and
//! PostgreSQL (several replicas); they differ only in connection handling and dialect. Images
//! go to a local segment log ([`blob::LocalDir`]) or to S3 ([`s3::S3`]). Image keys are built
//! here ([`keys`]) and stay opaque outside ([`ImageKey`]).
//!
//! Invariants:
//! - Ingest is idempotent on `frame_id`: the same metadata and image again yields the existing
//!   analysis; a different one is [`StoreError::Conflict`].
//! - An analysis, its frame row and its job are written in one transaction, after the image is
//!   durable in the blob store: an acknowledged frame is never missing its image.
//! - Completing an analysis writes the result, deletes the job and queues a `result` event in
//!   the outbox in one transaction, and only once: completing a finished analysis is a no-op.
//!   What the event becomes on MQTT is `alert`'s business.
//! - A result judged provisional by the gate gets a remote-stage job in the same transaction;
//!   enriching it makes it final, counts its cost and queues its update, once.
//! - A job, and an outbox event, is leased to one worker (one replica) at a time; an expired
//!   lease hands it to another.

pub mod blob;
pub(crate) mod config;
mod keys;
pub mod s3;
pub(crate) mod segments;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use wiko_wire::{
    Analysis, AnalysisStatus, CostRow, Defect, DeviceAction, DeviceCommand, Feedback, FrameMeta,
    GoldenSample, Heartbeat, IngestOutcome, KeyInfo, StatsDimension, Verdict, VerdictSource,
};

pub use blob::BlobStore;
pub(crate) use sql::check_cursor;
pub use sql::{PgSettings, migrate_postgres, open_postgres, open_sqlite};

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
    /// A concurrent write of the same record (another replica's) won; trying again finds it.
    #[error("a concurrent write of the same record: {0}")]
    Concurrent(String),
    #[error("database: {0}")]
    Database(String),
    #[error("image store: {0}")]
    Blob(String),
}

/// Where an image lies in the blob store. Built by the store only; the rest of the cloud
/// hands it back to read the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKey(String);

/// Where a part comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// An agent's frame (`PUT /api/v1/frames/{id}`): idempotent on its frame id.
    Frame(FrameMeta),
    /// The prototype's synchronous call (`POST /api/v1/analyze`).
    Call(Call),
}

/// A part sent to `POST /api/v1/analyze`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub facility: String,
    pub line: String,
    pub station: String,
    pub product_sku: String,
    pub part_id: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl Origin {
    pub fn facility(&self) -> &str {
        match self {
            Origin::Frame(f) => &f.facility,
            Origin::Call(c) => &c.facility,
        }
    }

    pub fn line(&self) -> &str {
        match self {
            Origin::Frame(f) => &f.line,
            Origin::Call(c) => &c.line,
        }
    }

    pub fn station(&self) -> &str {
        match self {
            Origin::Frame(f) => &f.station,
            Origin::Call(c) => &c.station,
        }
    }

    pub fn sku(&self) -> &str {
        match self {
            Origin::Frame(f) => &f.sku,
            Origin::Call(c) => &c.product_sku,
        }
    }

    pub fn part_id(&self) -> Option<&str> {
        match self {
            Origin::Frame(f) => f.part_id.as_deref(),
            Origin::Call(c) => c.part_id.as_deref(),
        }
    }

    pub fn lot(&self) -> Option<&str> {
        match self {
            Origin::Frame(f) => f.lot.as_deref(),
            Origin::Call(_) => None,
        }
    }

    /// When the part was photographed (a frame) or received (a call).
    pub fn timestamp(&self) -> DateTime<Utc> {
        match self {
            Origin::Frame(f) => f.captured_at,
            Origin::Call(c) => c.received_at,
        }
    }

    pub fn frame(&self) -> Option<&FrameMeta> {
        match self {
            Origin::Frame(f) => Some(f),
            Origin::Call(_) => None,
        }
    }
}

/// An image as received: its bytes, BLAKE3 (hex) and size.
#[derive(Debug, Clone)]
pub struct Image {
    pub bytes: Bytes,
    pub blake3: String,
    pub width: u32,
    pub height: u32,
}

/// A part to record, its image already stored.
#[derive(Debug, Clone)]
pub struct NewAnalysis {
    pub origin: Origin,
    pub image_key: ImageKey,
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

impl Outcome {
    /// The local analyzer's verdict as the result lists it; `None` when it made none.
    pub fn verdict(&self) -> Option<Verdict> {
        let j = &self.judgement;
        matches!(
            j.status,
            AnalysisStatus::Final | AnalysisStatus::Provisional
        )
        .then(|| Verdict {
            source: VerdictSource::Cloud,
            analyzer: self.analyzer.clone(),
            model: j.model_version.clone(),
            defect_detected: Some(j.defect_detected),
            score: j.score,
            defects: j.defects.clone(),
            summary: None,
            latency_ms: Some(self.latency_ms),
            usage: None,
            error: None,
            alerted: false,
        })
    }
}

/// What a remote analyzer adds to a provisional result.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrichment {
    /// The remote verdict (or its error), with its usage.
    pub verdict: Verdict,
    /// The result's defects after enrichment (the gate's regions, typed and described).
    pub defects: Vec<Defect>,
    /// The remote verdict disagrees with the gate on OK/NG.
    pub disagreement: bool,
}

/// Which analyzer a job waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The local (golden) analyzer: every part.
    Local,
    /// The remote analyzer: provisional results only.
    Remote,
}

impl Stage {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Local => "local",
            Stage::Remote => "remote",
        }
    }
}

/// Which cost rows to list; days are UTC and inclusive.
#[derive(Debug, Clone)]
pub struct CostFilter {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub facility: Option<String>,
    pub product_sku: Option<String>,
}

/// A leased analysis job.
#[derive(Debug, Clone)]
pub struct Job {
    pub analysis_id: Uuid,
    pub product_sku: String,
    pub image: ImageKey,
    pub attempts: u32,
}

/// A remote call's reservation in its deployment's budget (shared by every replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowClaim {
    /// The deployment: the service's endpoint and model.
    pub deployment: String,
    /// The window, as its index since the Unix epoch.
    pub slot: i64,
    /// Tokens to reserve: the call's estimate (at most `max_tokens`).
    pub tokens: u64,
    /// The window's limits (`u64::MAX`: none).
    pub max_tokens: u64,
    pub max_requests: u64,
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
    /// The latest review of the result.
    pub feedback: Option<FeedbackFilter>,
}

/// Results by their latest review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackFilter {
    /// Not reviewed yet (a review queue).
    None,
    /// Reviewed, whatever the verdict.
    Any,
    Is(wiko_wire::FeedbackVerdict),
}

/// Which hourly counts to read (`GET /api/v1/stats`).
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// Capture hours from `since` until before `until` (both whole hours).
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// The listing's filters but `feedback`, `since` and `until`.
    pub filter: ListFilter,
    pub group_by: Vec<StatsDimension>,
    /// Whether whole UTC days may be read as one cell each (their `hour` the day's midnight):
    /// for a fold that needs no hour (one bucket, or days at UTC offset 0, and no shifts).
    pub days: bool,
}

/// Where counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsSource {
    /// The hourly aggregates kept with each result: what the API answers from.
    Aggregates,
    /// The results themselves, scanned: the same figures, slowly; to check the aggregates
    /// (tests, the benchmark).
    Results,
}

/// The counts of one capture hour (or day) of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsCell {
    /// The capture hour (a whole UTC day's midnight when [`StatsQuery::days`] let the store
    /// read the day as one cell).
    pub hour: DateTime<Utc>,
    /// The group's values, in the order of [`StatsQuery::group_by`], the shift left out (it is
    /// the hour's).
    pub group: Vec<String>,
    pub counts: CellCounts,
}

/// Completed results, of which judged, of which NG, and their defects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CellCounts {
    pub parts: u64,
    pub judged: u64,
    pub ng: u64,
    pub defects: u64,
}

/// What became of a review.
#[derive(Debug, Clone, PartialEq)]
pub enum Reviewed {
    /// Stored; the result with it as its latest.
    Recorded(Box<Analysis>),
    /// The result has no verdict to review (pending, failed, not calibrated).
    NotJudged(AnalysisStatus),
    /// `false_ng` of an OK result, or `false_ok` of an NG one.
    Mismatch { defect_detected: bool },
}

/// A result committed (completed or enriched), numbered for the live feed.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveResult {
    pub seq: i64,
    pub analysis: Analysis,
}

/// What happened, for the outside world to hear of (through `alert`).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An analysis was completed: its result as stored then.
    Result(Box<Analysis>),
    /// An MQTT message queued by a version before events (topic and payload as sent).
    Message { topic: String, payload: Vec<u8> },
}

/// An outbox event waiting to be published.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub event: Event,
}

/// A result event the broker acknowledged: the result as it was queued, and when.
#[derive(Debug, Clone)]
pub struct Published {
    pub result: Analysis,
    pub at: DateTime<Utc>,
}

/// The analysis queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Jobs not completed yet (runnable, leased or waiting for a retry).
    pub waiting: u64,
    /// How long the oldest of them has been due.
    pub oldest_due: Option<Duration>,
}

/// One image of a SKU's golden set, and where it lies.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenImage {
    pub sample: GoldenSample,
    pub key: ImageKey,
}

/// A stored per-SKU model.
#[derive(Debug, Clone)]
pub struct StoredModel {
    pub sku: String,
    pub version: String,
    pub body: Vec<u8>,
}

/// The records: every part of the store, one object.
pub trait Store: Parts + Models + Access + Fleet + Insight {}

impl<T: Parts + Models + Access + Fleet + Insight> Store for T {}

/// Parts: analyses, their jobs, and the outbox of events about them.
#[async_trait]
pub trait Parts: Send + Sync + 'static {
    /// Records a new part (analysis pending, job queued); idempotent on the frame id.
    async fn create(&self, new: NewAnalysis) -> Result<(IngestOutcome, Uuid), StoreError>;
    /// Writes an analyzer's outcome once, queueing its `result` event; returns the analysis.
    async fn complete(&self, id: Uuid, outcome: Outcome) -> Result<Analysis, StoreError>;
    /// Leases up to `limit` runnable jobs of `stage` for `lease`, in the order of their turn
    /// (fair between devices).
    async fn claim_jobs(
        &self,
        stage: Stage,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError>;
    /// Adds a remote verdict to a provisional result, makes it final, counts its cost and
    /// queues the update, once: a result no longer provisional is returned as it is.
    async fn enrich(&self, id: Uuid, enrichment: Enrichment) -> Result<Analysis, StoreError>;
    /// What `analyzer` cost from the UTC day of `since` on, in USD (every replica's calls).
    async fn remote_spent(&self, analyzer: &str, since: DateTime<Utc>) -> Result<f64, StoreError>;
    /// Remote analysis cost per day, analyzer, facility and SKU.
    async fn costs(&self, filter: &CostFilter) -> Result<Vec<CostRow>, StoreError>;
    /// Reserves a call (its tokens and one request) in its deployment's window if both still
    /// fit under the window's limits, in one statement, so that replicas sharing the store
    /// never reserve more than the limits together; whether it did.
    async fn reserve_remote(&self, claim: &WindowClaim) -> Result<bool, StoreError>;
    /// Corrects a reservation by `tokens` (the call's real usage less its estimate) and
    /// `requests` (-1: the call was never made, its request is given back).
    async fn settle_remote(
        &self,
        deployment: &str,
        slot: i64,
        tokens: i64,
        requests: i64,
    ) -> Result<(), StoreError>;
    /// Puts a leased remote job back, to be taken again after `retry_in` (the service or the
    /// budget asked to wait); the result stays provisional.
    async fn defer_job(
        &self,
        job: &Job,
        reason: &str,
        retry_in: Duration,
    ) -> Result<(), StoreError>;
    /// A job failed; it runs again after `retry_in`, or is marked failed after `max_attempts`.
    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Duration,
        max_attempts: u32,
    ) -> Result<(), StoreError>;
    async fn get(&self, id: Uuid) -> Result<Analysis, StoreError>;
    /// Newest first; `cursor` from the previous page.
    async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Analysis>, Option<String>), StoreError>;
    /// Where the image of an analysis lies.
    async fn image_key(&self, id: Uuid) -> Result<ImageKey, StoreError>;
    /// Up to `limit` events not published yet, oldest first. With several replicas on one
    /// store, each event goes to one replica at a time (leased); its publisher skips the ones
    /// it already has in flight.
    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError>;
    /// The broker acknowledged these events: they are published (and kept a while, see
    /// [`Parts::published_between`]; a result event also with its part, see
    /// [`Parts::published_for`]).
    async fn outbox_done(&self, ids: Vec<i64>) -> Result<(), StoreError>;
    /// Events published from `since` until before `until`, oldest first (to publish again,
    /// after the embedded broker restarted with the cloud, what was published before the start).
    async fn published_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>, StoreError>;
    /// The result events of part `id` the broker acknowledged, oldest first (kept with the
    /// part after the outbox forgot them); one whose payload no longer decodes is logged and
    /// left out.
    async fn published_for(&self, id: Uuid) -> Result<Vec<Published>, StoreError>;
    /// Forgets events published before `before`; how many.
    async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Forgets up to `limit` of the oldest events kept with their parts that were published
    /// before `before` (one short transaction); how many.
    async fn prune_published_events(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError>;
    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;
    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What the dashboard reads of the results: statistics, reviews, the live feed.
#[async_trait]
pub trait Insight: Send + Sync + 'static {
    /// Counts per capture hour and group, filtered, ordered by hour.
    async fn stats(
        &self,
        query: &StatsQuery,
        source: StatsSource,
    ) -> Result<Vec<StatsCell>, StoreError>;
    /// Records a review of a judged result (and audits nothing: the caller does).
    async fn review(&self, id: Uuid, feedback: Feedback) -> Result<Reviewed, StoreError>;
    /// Reviewed results of a SKU (of one model version, or all) by their latest review, per
    /// model version that judged them (`None`: judged without one), in version order:
    /// `[tp, fp, tn, fn, inconclusive]`, from capture time `since` on.
    async fn capability(
        &self,
        sku: &str,
        model_version: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(Option<String>, [u64; 5])>, StoreError>;
    /// The numbers of results committed after `seq` (`(seq, analysis id, defect_detected)`),
    /// at most `limit`, in order: what a replica's feed polls.
    async fn result_events_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Uuid, bool)>, StoreError>;
    /// The newest number given to a committed result (0: none yet).
    async fn last_result_event(&self) -> Result<i64, StoreError>;
    /// Results by id (those that exist), in no order.
    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Analysis>, StoreError>;
    /// Forgets the live feed's numbers of results committed before `before`; how many.
    async fn prune_result_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Golden sets and the models fitted from them.
#[async_trait]
pub trait Models: Send + Sync + 'static {
    /// Stores a model version, makes it the SKU's active one, and audits it.
    async fn save_model(&self, model: StoredModel) -> Result<(), StoreError>;
    /// The active model version of every calibrated SKU: (sku, version).
    async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// The active model of a SKU.
    async fn model(&self, sku: &str) -> Result<Option<StoredModel>, StoreError>;
    /// Version `version` of `sku`'s model, active or not.
    async fn model_version(
        &self,
        sku: &str,
        version: &str,
    ) -> Result<Option<StoredModel>, StoreError>;
    /// Adds an image (by digest and key) to a SKU's golden set; false if it was there.
    async fn add_golden(&self, sku: &str, digest: &str, key: &ImageKey)
    -> Result<bool, StoreError>;
    /// A SKU's golden set, oldest first.
    async fn golden(&self, sku: &str) -> Result<Vec<GoldenImage>, StoreError>;
    /// Every SKU with a golden set and how many images it holds, by SKU.
    async fn golden_sets(&self) -> Result<Vec<(String, usize)>, StoreError>;
    /// Takes an image (by digest) out of a SKU's golden set; false if it was not there. The
    /// image stays in the blob store (another SKU's set may hold the same bytes).
    async fn remove_golden(&self, sku: &str, digest: &str) -> Result<bool, StoreError>;
}

/// API keys and the audit log.
#[async_trait]
pub trait Access: Send + Sync + 'static {
    /// Stores a new key (its hash only).
    async fn create_key(&self, key: StoredKey) -> Result<(), StoreError>;
    /// Every key, revoked ones included, oldest first.
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Revokes the key with this prefix (from now on); the key as it is now, `None` if there
    /// is no such key. Revoking a revoked key changes nothing.
    async fn revoke_key(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError>;
    /// When keys were last used, by prefix.
    async fn touch_keys(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError>;
    /// Appends to the audit log.
    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;
    /// The newest `limit` audit entries, newest first.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Devices: their last heartbeats and the commands left for them.
#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// Keeps `heartbeat` as its device's last (registering a device not seen before), marks
    /// the commands it reports done; the device's commands still pending, oldest first.
    async fn heartbeat(
        &self,
        heartbeat: &Heartbeat,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<DeviceCommand>, StoreError>;
    /// Every device seen (by a frame or a heartbeat), by id.
    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;
    /// One device; `None` if it was never seen.
    async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// Leaves a command for a device (seen or not); the command as stored.
    async fn add_command(
        &self,
        device_id: &str,
        action: DeviceAction,
        created_by: &str,
    ) -> Result<DeviceCommand, StoreError>;
}

/// What the store knows of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub device_id: String,
    /// Where its first frame (or heartbeat) came from.
    pub facility: String,
    pub line: String,
    pub station: String,
    pub first_seen: DateTime<Utc>,
    pub last_frame_at: Option<DateTime<Utc>>,
    /// Its last heartbeat and when that arrived.
    pub heartbeat: Option<(DateTime<Utc>, Heartbeat)>,
    /// Commands it has not reported done, oldest first.
    pub pending: Vec<DeviceCommand>,
}

/// A stored API key: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub info: KeyInfo,
    pub sha256: [u8; 32],
}

/// One line of the audit log: who did what, with what detail (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The key's name, or `-` for a caller without a valid key.
    pub actor: String,
    /// What happened: `auth_failed`, `key_created`, `key_revoked`, `golden_added`, …
    pub action: String,
    pub detail: serde_json::Value,
}

/// Records and images together: the one way parts and golden images come in (image first,
/// then the record that names it), and images go out.
#[derive(Clone)]
pub struct Storage {
    pub records: Arc<dyn Store>,
    pub images: Arc<dyn BlobStore>,
}

impl Storage {
    /// Stores the image, then records the part and its job. Idempotent on a frame's id.
    pub async fn put_part(
        &self,
        origin: Origin,
        image: Image,
        run_after: Duration,
    ) -> Result<(IngestOutcome, Uuid), StoreError> {
        let key = keys::part(&image.blake3, origin.timestamp());
        self.images.put(&key.0, image.bytes).await?;
        self.records
            .create(NewAnalysis {
                origin,
                image_key: key,
                image_blake3: image.blake3,
                image_width: image.width,
                image_height: image.height,
                run_after,
            })
            .await
    }

    /// Stores the image, then adds it to the SKU's golden set: false if the set held it.
    pub async fn put_golden(&self, sku: &str, image: Image) -> Result<bool, StoreError> {
        let key = keys::golden(&image.blake3);
        self.images.put(&key.0, image.bytes).await?;
        self.records.add_golden(sku, &image.blake3, &key).await
    }

    /// The image behind a key the store handed out.
    pub async fn image(&self, key: &ImageKey) -> Result<Bytes, StoreError> {
        self.images.get(&key.0).await
    }

    /// Where an analysis's image and its thumbnail lie.
    pub async fn part_keys(&self, id: Uuid) -> Result<(ImageKey, ImageKey), StoreError> {
        let image = self.records.image_key(id).await?;
        let thumbnail = keys::thumbnail(&image);
        Ok((image, thumbnail))
    }

    /// Keeps a thumbnail under the key [`Storage::part_keys`] gave.
    pub async fn put_thumbnail(&self, key: &ImageKey, bytes: Bytes) -> Result<(), StoreError> {
        self.images.put(&key.0, bytes).await
    }

    /// The image of an analysis.
    pub async fn part_image(&self, id: Uuid) -> Result<Bytes, StoreError> {
        let key = self.records.image_key(id).await?;
        self.image(&key).await
    }
}
