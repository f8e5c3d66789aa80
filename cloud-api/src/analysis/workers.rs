//! The workers that drain the job queue.
//!
//! A worker leases a job, reads the image, decodes it and asks the analyzer (CPU work runs on
//! the blocking pool), then completes the analysis in one store transaction that also queues
//! its `result` event. A job whose worker died is leased again when its lease runs out;
//! completing twice is a no-op, so a part never gets two results or two alerts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};
use wiko_inspect::DecodeLimits;
use wiko_wire::VerdictSource;

use bytes::Bytes;

use super::budget::Budget;
use super::{Analyzer, Frame, run, undecodable};
use crate::store::Outcome;
use crate::store::{Job, Stage, Storage};
use crate::telemetry;

/// What the workers share.
#[derive(Clone)]
pub(crate) struct Workers {
    pub storage: Storage,
    pub analyzer: Arc<dyn Analyzer>,
    pub limits: DecodeLimits,
    /// The memory budget a worker's decoding and judging is counted in.
    pub budget: Budget,
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
            let jobs = match self
                .storage
                .records
                .claim_jobs(Stage::Local, 1, self.lease)
                .await
            {
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
        let outcome = match self.storage.image(&job.image).await {
            Ok(bytes) => self.judge(bytes, &job.product_sku).await,
            Err(e) => {
                let retry_in = Duration::from_secs(2u64.saturating_pow(job.attempts.min(8)));
                warn!(error = %e, ?retry_in, "reading the image failed; job retried");
                let failed = self
                    .storage
                    .records
                    .fail_job(&job, &e.to_string(), retry_in, self.max_attempts)
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
            .storage
            .records
            .complete(job.analysis_id, outcome)
            .await
        {
            Ok(done) => {
                metrics::counter!(telemetry::ANALYSES_TOTAL, "status" => status).increment(1);
                if done.disagreement
                    && done
                        .verdicts
                        .iter()
                        .any(|v| v.source == VerdictSource::Edge)
                {
                    warn!(
                        defect_detected = done.defect_detected,
                        "the agent's verdict differs from the cloud's"
                    );
                    metrics::counter!(telemetry::EDGE_DISAGREEMENTS_TOTAL, "sku" => done.product_sku)
                        .increment(1);
                }
                self.outbox_wake.notify_one();
            }
            Err(e) => warn!(error = %e, "storing the result failed; the job will run again"),
        }
    }

    /// Decodes and judges an image, its memory reserved first (waiting for the budget).
    async fn judge(&self, bytes: Bytes, sku: &str) -> Outcome {
        let analyzer = self.analyzer.as_ref();
        let (width, height) = match wiko_inspect::decode::dimensions(&bytes, self.limits) {
            Ok(size) => size,
            Err(e) => return undecodable(analyzer, &e),
        };
        let _memory = match self.budget.reserve(Budget::judging(width, height)).await {
            Ok(memory) => memory,
            Err(e) => return super::too_large(analyzer, &e),
        };
        match Frame::decode(bytes, self.limits, analyzer.planes(sku).await).await {
            Ok(frame) => run(analyzer, sku, frame).await,
            Err(e) => undecodable(analyzer, &e),
        }
    }
}
