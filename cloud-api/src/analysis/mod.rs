//! Analysis: the [`Analyzer`] interface, and the workers that drain the job queue.
//!
//! A worker leases a job, reads the image, decodes it and asks the analyzer (CPU work runs on
//! the blocking pool), then completes the analysis in one store transaction that also queues the
//! MQTT messages. A job whose worker died is leased again when its lease runs out; completing
//! twice is a no-op, so a part never gets two results or two alerts.

pub mod golden;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};
use wiko_inspect::{DecodeLimits, Gray, InspectError};

pub use crate::store::Judgement;
use crate::store::blob::BlobStore;
use crate::store::{Job, Outcome, Store};
use crate::telemetry;

#[async_trait]
pub trait Analyzer: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    /// Judges one image of a part of `sku`.
    async fn judge(&self, sku: &str, image: Arc<Gray>) -> Judgement;
}

/// Decodes on the blocking pool.
pub async fn decode(bytes: Bytes, limits: DecodeLimits) -> Result<Gray, InspectError> {
    tokio::task::spawn_blocking(move || wiko_inspect::decode(&bytes, limits))
        .await
        .unwrap_or_else(|e| Err(InspectError::Decode(format!("decoder task: {e}"))))
}

/// Runs the analyzer and fills in name, version and latency.
pub async fn run(analyzer: &dyn Analyzer, sku: &str, image: Gray) -> Outcome {
    let started = Instant::now();
    let judgement = analyzer.judge(sku, Arc::new(image)).await;
    let latency = started.elapsed();
    metrics::histogram!(telemetry::ANALYSIS_SECONDS).record(latency.as_secs_f64());
    Outcome {
        judgement,
        analyzer: analyzer.name().to_string(),
        analyzer_version: analyzer.version().to_string(),
        latency_ms: latency.as_secs_f64() * 1000.0,
    }
}

/// An outcome for an image that cannot be analysed at all.
fn undecodable(analyzer: &dyn Analyzer, e: &InspectError) -> Outcome {
    Outcome {
        judgement: Judgement::failed(format!("the image could not be decoded: {e}"), None),
        analyzer: analyzer.name().to_string(),
        analyzer_version: analyzer.version().to_string(),
        latency_ms: 0.0,
    }
}

/// What the workers share.
#[derive(Clone)]
pub struct Workers {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub analyzer: Arc<dyn Analyzer>,
    pub limits: DecodeLimits,
    pub public_url: String,
    pub wake: Arc<Notify>,
    pub outbox_wake: Arc<Notify>,
    pub max_attempts: u32,
    /// How long a leased job is protected from other workers.
    pub lease: Duration,
}

impl Workers {
    /// One worker loop; run several for concurrency.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut idle = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            let jobs = match self.store.claim_jobs(1, self.lease).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    warn!(error = %e, "claiming analysis jobs failed");
                    Vec::new()
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(idle) => {}
                    _ = shutdown.cancelled() => {}
                }
                idle = (idle * 2).min(Duration::from_secs(1));
                continue;
            }
            idle = Duration::from_millis(50);
            for job in jobs {
                let span = info_span!("analysis", analysis_id = %job.analysis_id, sku = %job.product_sku, attempt = job.attempts);
                self.process(job).instrument(span).await;
            }
        }
    }

    async fn process(&self, job: Job) {
        let outcome = match self.blobs.get(&job.image_key).await {
            Ok(bytes) => match decode(bytes, self.limits).await {
                Ok(img) => run(self.analyzer.as_ref(), &job.product_sku, img).await,
                Err(e) => undecodable(self.analyzer.as_ref(), &e),
            },
            Err(e) => {
                let retry_in = Duration::from_secs(2u64.saturating_pow(job.attempts.min(8)));
                warn!(error = %e, ?retry_in, "reading the image failed; job retried");
                let failed = self
                    .store
                    .fail_job(
                        &job,
                        &e.to_string(),
                        retry_in,
                        self.max_attempts,
                        &self.public_url,
                    )
                    .await;
                match failed {
                    Err(e) => {
                        warn!(error = %e, "recording the job failure failed; its lease will expire")
                    }
                    Ok(()) if job.attempts >= self.max_attempts => {
                        warn!(
                            attempts = job.attempts,
                            "job given up: its analysis is failed"
                        );
                        metrics::counter!(telemetry::JOBS_DEAD_TOTAL).increment(1);
                    }
                    Ok(()) => metrics::counter!(telemetry::ANALYSES_TOTAL, "status" => "retry")
                        .increment(1),
                }
                return;
            }
        };
        let status = format!("{:?}", outcome.judgement.status).to_lowercase();
        match self
            .store
            .complete(job.analysis_id, outcome, &self.public_url)
            .await
        {
            Ok(_) => {
                metrics::counter!(telemetry::ANALYSES_TOTAL, "status" => status).increment(1);
                self.outbox_wake.notify_one();
            }
            Err(e) => warn!(error = %e, "storing the result failed; the job will run again"),
        }
    }
}
