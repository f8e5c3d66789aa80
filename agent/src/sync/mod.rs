//! Sync: frames leave the buffer for the cloud, at least once.
//!
//! The uploader keeps up to `concurrency` uploads in flight, taking frames NG first then oldest
//! first. On an acknowledgement the frame is deleted; on a retryable failure every upload pauses
//! for a jittered, capped, exponential delay (the cloud is down or busy for everyone); on a
//! permanent rejection the frame moves to the dead-letter table. The cloud's ingest is idempotent
//! on `frame_id`, so a frame uploaded twice (e.g. the agent died between the cloud's answer and
//! the delete) is stored once.
//!
//! An acknowledged frame whose delete fails (a full disk) is not uploaded again: the buffer
//! remembers it, and its delete is retried with its own capped backoff until it succeeds.
//!
//! On shutdown no new upload starts; the ones in flight finish (each has a request deadline) and
//! their outcome is recorded.

pub mod backoff;
pub mod client;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;
use wiko_wire::{FrameMeta, IngestAck};

use wiko_daemon::systemd::Liveness;

use crate::buffer::{Buffer, Pending};
use crate::config::SyncConfig;
use crate::telemetry as names;
pub use backoff::Backoff;
pub use client::{Client, ModelDownload, UploadError};

/// Where frames go: the cloud's ingest ([`Client`]), or a stand-in in tests.
pub trait Uplink: Clone + Send + Sync + 'static {
    fn upload(
        &self,
        meta: &FrameMeta,
        jpeg: Vec<u8>,
    ) -> impl Future<Output = Result<IngestAck, UploadError>> + Send;
}

impl Uplink for Client {
    async fn upload(&self, meta: &FrameMeta, jpeg: Vec<u8>) -> Result<IngestAck, UploadError> {
        Client::upload(self, meta, jpeg).await
    }
}

/// The upload loop's moving parts.
pub struct Uploader<U: Uplink = Client> {
    buffer: Arc<Buffer>,
    client: U,
    concurrency: usize,
    poll_interval: Duration,
    backoff: Backoff,
    /// Between attempts to delete acknowledged frames whose delete failed.
    delete_backoff: Backoff,
    /// When to try those deletes again; `None` while there are none.
    delete_retry_at: Option<Instant>,
    /// Signalled by sources after each insert.
    wake: Arc<Notify>,
    /// Stamped on every turn of the loop (the watchdog checks it turns).
    liveness: Arc<Liveness>,
}

impl<U: Uplink> Uploader<U> {
    pub fn with_uplink(
        buffer: Arc<Buffer>,
        client: U,
        cfg: &SyncConfig,
        wake: Arc<Notify>,
    ) -> Uploader<U> {
        Uploader {
            buffer,
            client,
            concurrency: cfg.concurrency,
            poll_interval: cfg.poll_interval,
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            delete_backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            delete_retry_at: None,
            wake,
            liveness: Arc::default(),
        }
    }

    /// Stamped on every turn of the upload loop (at least every `poll_interval`).
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains the uploads in flight.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut in_flight: JoinSet<(Uuid, Result<IngestAck, UploadError>)> = JoinSet::new();
        // Which frame each upload task carries, so a task that panics frees exactly its frame.
        let mut in_flight_ids: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        let mut paused_until: Option<Instant> = None;
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        loop {
            self.liveness.beat();
            if self.delete_retry_at.is_some_and(|t| Instant::now() >= t) {
                self.retry_deletes(&mut rng).await;
            }
            let can_start = paused_until.is_none_or(|t| Instant::now() >= t);
            if can_start && !shutdown.is_cancelled() && in_flight.len() < self.concurrency {
                paused_until = None;
                let room = self.concurrency - in_flight.len();
                let exclude: Vec<Uuid> = in_flight_ids.values().copied().collect();
                match self.next_batch(room, &exclude).await {
                    Ok(batch) => {
                        for p in batch {
                            let frame_id = p.meta.frame_id;
                            let client = self.client.clone();
                            let span = info_span!("upload", frame_id = %p.meta.frame_id, camera = %p.camera, attempt = p.attempts + 1);
                            let task = in_flight.spawn(
                                async move {
                                    let started = std::time::Instant::now();
                                    let result = Uplink::upload(&client, &p.meta, p.jpeg).await;
                                    metrics::histogram!(names::SYNC_UPLOAD_SECONDS)
                                        .record(started.elapsed().as_secs_f64());
                                    (p.meta.frame_id, result)
                                }
                                .instrument(span),
                            );
                            in_flight_ids.insert(task.id(), frame_id);
                        }
                    }
                    Err(e) => warn!(error = %e, "reading the buffer for sync failed"),
                }
            }
            metrics::gauge!(names::SYNC_IN_FLIGHT).set(in_flight.len() as f64);
            if shutdown.is_cancelled() && in_flight.is_empty() {
                break;
            }
            // A long pause (a server's Retry-After) still turns the loop every poll interval.
            let next_poll = Instant::now() + self.poll_interval;
            let sleep_until = paused_until
                .map_or(next_poll, |t| t.min(next_poll))
                .min(self.delete_retry_at.unwrap_or(next_poll));
            tokio::select! {
                Some(done) = in_flight.join_next_with_id() => {
                    let (frame_id, result) = match done {
                        Ok((task, (frame_id, result))) => {
                            in_flight_ids.remove(&task);
                            (frame_id, result)
                        }
                        Err(e) => {
                            let frame_id = in_flight_ids.remove(&e.id());
                            warn!(?frame_id, "an upload task panicked; its frame stays buffered");
                            continue;
                        }
                    };
                    if let Some(delay) = self.settle(frame_id, result, &mut rng).await {
                        paused_until = Some(Instant::now() + delay);
                    }
                }
                _ = self.wake.notified(), if in_flight.len() < self.concurrency && paused_until.is_none() => {}
                _ = tokio::time::sleep_until(sleep_until) => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {
                    info!(in_flight = in_flight.len(), "sync stopping: finishing uploads in flight");
                }
            }
        }
        info!("sync stopped");
    }

    async fn next_batch(
        &self,
        room: usize,
        exclude: &[Uuid],
    ) -> Result<Vec<Pending>, crate::buffer::BufferError> {
        let buffer = self.buffer.clone();
        let exclude = exclude.to_vec();
        tokio::task::spawn_blocking(move || buffer.pending(room, &exclude))
            .await
            .unwrap_or_else(|e| Err(crate::buffer::BufferError::Io(std::io::Error::other(e))))
    }

    /// Deletes the acknowledged frames whose delete failed; backs off while some remain.
    async fn retry_deletes(&mut self, rng: &mut rand::rngs::StdRng) {
        let buffer = self.buffer.clone();
        let left = tokio::task::spawn_blocking(move || buffer.retry_acked())
            .await
            .ok();
        if left == Some(0) {
            info!("acknowledged frames deleted after earlier failures");
            self.delete_backoff.reset();
            self.delete_retry_at = None;
        } else {
            metrics::counter!(names::SYNC_DELETE_FAILURES_TOTAL).increment(1);
            let delay = self.delete_backoff.fail(None, rng);
            warn!(
                ?left,
                delay_ms = delay.as_millis() as u64,
                "acknowledged frames still cannot be deleted; retrying later"
            );
            self.delete_retry_at = Some(Instant::now() + delay);
        }
    }

    /// Records an upload's outcome; returns a pause when uploads should back off.
    async fn settle(
        &mut self,
        frame_id: Uuid,
        result: Result<IngestAck, UploadError>,
        rng: &mut rand::rngs::StdRng,
    ) -> Option<Duration> {
        let buffer = self.buffer.clone();
        match result {
            Ok(ack) => {
                self.backoff.reset();
                metrics::counter!(names::SYNC_UPLOADS_TOTAL, "outcome" => "acked").increment(1);
                debug!(%frame_id, outcome = ?ack.outcome, analysis_id = %ack.analysis_id, "frame acknowledged");
                let done = tokio::task::spawn_blocking(move || buffer.ack(frame_id)).await;
                if !matches!(done, Ok(Ok(_))) {
                    metrics::counter!(names::SYNC_DELETE_FAILURES_TOTAL).increment(1);
                    warn!(%frame_id, "deleting an acknowledged frame failed; it is not uploaded again, the delete is retried");
                    if self.delete_retry_at.is_none() {
                        self.delete_retry_at =
                            Some(Instant::now() + self.delete_backoff.fail(None, rng));
                    }
                }
                None
            }
            Err(UploadError::Retryable {
                reason,
                retry_after,
            }) => {
                metrics::counter!(names::SYNC_UPLOADS_TOTAL, "outcome" => "retry").increment(1);
                let delay = self.backoff.fail(retry_after, rng);
                warn!(%frame_id, %reason, delay_ms = delay.as_millis() as u64, failures = self.backoff.failures(), "upload failed; backing off");
                let _ =
                    tokio::task::spawn_blocking(move || buffer.record_failure(frame_id, &reason))
                        .await;
                Some(delay)
            }
            Err(UploadError::Rejected { status, reason }) => {
                metrics::counter!(names::SYNC_UPLOADS_TOTAL, "outcome" => "dead_letter")
                    .increment(1);
                warn!(%frame_id, status, %reason, "the cloud rejected the frame for good; moved to dead letters");
                let done = tokio::task::spawn_blocking(move || {
                    buffer.dead_letter(frame_id, status, &reason)
                })
                .await;
                if !matches!(done, Ok(Ok(()))) {
                    warn!(%frame_id, "moving a rejected frame to dead letters failed; it stays buffered");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
