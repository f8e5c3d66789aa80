//! The cascade: the golden model is the gate, a remote model enriches.
//!
//! [`Gate`] wraps the local analyzer: its verdict decides OK/NG for every part, at no cost,
//! and is stored and published at once. A part the gate judged NG, or whose score lies within
//! the uncertain band of the threshold ([`sends`], per SKU `mode`; with `confident_ng_above`,
//! not an NG part whose score stands that far above the threshold and whose regions the gate
//! all typed: [`confident_ng`]), is stored `provisional` with a remote-stage job in the same
//! transaction. [`RemoteWorkers`] take those jobs, check
//! the budget (counted in the store, so it holds across replicas), ask the [`Remote`]
//! analyzer (which reads the part's image from the store only once the call has its place),
//! and [`enrichment`] folds its answer into the same result: the gate's regions get
//! the remote model's types and descriptions, the verdict is added to `verdicts`, a
//! disagreement on OK/NG is flagged and counted, and the result becomes `final` (its update
//! goes out on `…/result`). Whatever the remote model does, the part gets exactly one final
//! result: failures are the remote verdict's `error`. While the circuit breaker is open (the
//! service failed several parts in a row), or a 429 asked this replica to wait, no job is
//! taken: provisional results wait. A call the service (a 429 asking for longer than
//! `max_retry_wait_secs`) or the deployment's shared budget puts off is not an answer: its
//! job goes back to the queue until then, its result stays provisional, and it is enriched
//! later, once; unless then is more than `max_deferral_secs` after the part was taken in: the
//! enrichment is given up, and the result is final with the gate's verdict and a remote
//! verdict whose error says so (so is a part whose image the image store cannot read; never
//! one whose call the store cannot count in the deployment's budget: it is always put back).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{Datelike, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use wiko_inspect::Planes;
use wiko_wire::{Analysis, AnalysisStatus, Defect, DefectType, Verdict, VerdictErrorCode};

use super::remote::config::{Mode, RemoteSettings};
use super::remote::{Deferred, ImageSource, Part, Remote};
use super::{Analyzer, Frame, Judgement};
use crate::store::{Enrichment, ImageKey, Job, Stage, Storage, StoreError};
use crate::telemetry;

/// The local analyzer as the cascade's gate: marks the parts the remote model is to see.
pub struct Gate {
    pub local: Arc<dyn Analyzer>,
    pub remote: Arc<Remote>,
}

#[async_trait]
impl Analyzer for Gate {
    fn name(&self) -> &'static str {
        self.local.name()
    }

    fn version(&self) -> &'static str {
        self.local.version()
    }

    /// The local analyzer's: the remote model is sent the stored bytes, not this image.
    async fn planes(&self, sku: &str) -> Planes {
        self.local.planes(sku).await
    }

    async fn judge(&self, sku: &str, frame: Frame) -> Judgement {
        let mut judgement = self.local.judge(sku, frame).await;
        let settings = self.remote.settings();
        if sends(settings, sku, &judgement) {
            judgement.status = AnalysisStatus::Provisional;
        } else if settings.mode(sku) != Mode::Off && confident_ng(settings, &judgement) {
            metrics::counter!(telemetry::REMOTE_KEPT_LOCAL_TOTAL, "sku" => sku.to_string())
                .increment(1);
        }
        judgement
    }
}

/// Whether the gate judged a part NG at `confident_ng_above` times its threshold or more and
/// typed every region it found (none `other`): such a part is not sent in modes `ng` and
/// `ng_and_uncertain` (the gate's types and descriptions stand).
pub fn confident_ng(settings: &RemoteSettings, j: &Judgement) -> bool {
    let (Some(factor), Some(score), Some(threshold)) =
        (settings.confident_ng_above, j.score, j.score_threshold)
    else {
        return false;
    };
    j.defect_detected
        && score >= factor * threshold
        && !j.defects.is_empty()
        && j.defects.iter().all(|d| d.kind != DefectType::Other)
}

/// Whether a part the gate judged goes to the remote model.
pub fn sends(settings: &RemoteSettings, sku: &str, j: &Judgement) -> bool {
    if j.status != AnalysisStatus::Final {
        return false; // no verdict (not calibrated, failed): nothing to enrich
    }
    let uncertain = match (j.score, j.score_threshold) {
        (Some(score), Some(threshold)) => {
            (score - threshold).abs() <= settings.uncertain_band * threshold.abs()
        }
        _ => false,
    };
    let ng = j.defect_detected && !confident_ng(settings, j);
    match settings.mode(sku) {
        Mode::Off => false,
        Mode::Ng => ng,
        Mode::NgAndUncertain => ng || uncertain,
        Mode::All => true,
    }
}

/// What the remote verdict adds to a provisional result: each of the gate's regions takes the
/// type and description of the remote defect it overlaps most (the only one, if both found
/// one); the gate's boxes, severities and OK/NG stay.
pub fn enrichment(part: &Analysis, verdict: Verdict) -> Enrichment {
    let disagreement = verdict
        .defect_detected
        .is_some_and(|remote| remote != part.defect_detected);
    let one_each = part.defects.len() == 1 && verdict.defects.len() == 1;
    let defects = part
        .defects
        .iter()
        .map(|local| {
            let best = verdict
                .defects
                .iter()
                .map(|r| (overlap(local.bbox, r.bbox), r))
                .filter(|(o, _)| *o > 0.0 || one_each)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, r)| r);
            match best {
                Some(r) => Defect {
                    kind: if r.kind == DefectType::Other {
                        local.kind
                    } else {
                        r.kind
                    },
                    description: r.description.clone(),
                    ..local.clone()
                },
                None => local.clone(),
            }
        })
        .collect();
    Enrichment {
        verdict,
        defects,
        disagreement,
    }
}

/// Intersection over union of two `[x, y, w, h]` boxes.
fn overlap(a: [u32; 4], b: [u32; 4]) -> f64 {
    let span = |a0: u32, al: u32, b0: u32, bl: u32| {
        let lo = a0.max(b0);
        let hi = (a0 + al).min(b0 + bl);
        f64::from(hi.saturating_sub(lo))
    };
    let inter = span(a[0], a[2], b[0], b[2]) * span(a[1], a[3], b[1], b[3]);
    let area = |r: [u32; 4]| f64::from(r[2]) * f64::from(r[3]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// The workers that enrich provisional results, shared by a replica's remote worker tasks.
#[derive(Clone)]
pub struct RemoteWorkers {
    pub(crate) storage: Storage,
    pub(crate) remote: Arc<Remote>,
    pub(crate) outbox_wake: Arc<tokio::sync::Notify>,
}

/// A part's image in the image store.
struct Stored<'a> {
    storage: &'a Storage,
    key: &'a ImageKey,
}

#[async_trait]
impl ImageSource for Stored<'_> {
    async fn read(&self) -> Result<Bytes, StoreError> {
        self.storage.image(self.key).await
    }
}

impl RemoteWorkers {
    /// One worker loop; run `remote.workers` of them.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut idle = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            if self.work_once().await {
                idle = Duration::from_millis(50);
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.cancelled() => {}
            }
            idle = (idle * 2).min(Duration::from_secs(1));
        }
    }

    /// Enriches one provisional result (or puts it off), if one is waiting, the circuit is
    /// closed and no 429 asked to wait; whether one was taken.
    pub async fn work_once(&self) -> bool {
        if self.remote.circuit_open() || self.remote.paused() {
            return false;
        }
        let lease = self.remote.settings().job_lease;
        let jobs = match self
            .storage
            .records
            .claim_jobs(Stage::Remote, 1, lease)
            .await
        {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!(error = %e, "claiming remote jobs failed");
                return false;
            }
        };
        let Some(job) = jobs.into_iter().next() else {
            return false;
        };
        let span = info_span!("remote", analysis_id = %job.analysis_id, sku = %job.product_sku, attempt = job.attempts);
        if let Err(e) = self.process(&job).instrument(span).await {
            // The job stays leased; another worker takes it when the lease runs out.
            warn!(error = %e, analysis_id = %job.analysis_id, "remote enrichment not stored; retried after the lease");
        }
        true
    }

    async fn process(&self, job: &Job) -> Result<(), StoreError> {
        let part = self.storage.records.get(job.analysis_id).await?;
        if part.status != AnalysisStatus::Provisional {
            return Ok(()); // enriched already (enrich is a no-op then; nothing to pay for)
        }
        let verdict = match self.budget_spent().await? {
            Some(reason) => self
                .remote
                .failed(VerdictErrorCode::BudgetExhausted, reason),
            None => {
                // Read by the remote analyzer once the call has its place: a part put off
                // costs no blob read.
                let image = Stored {
                    storage: &self.storage,
                    key: &job.image,
                };
                let judged = self
                    .remote
                    .judge(&Part {
                        sku: &part.product_sku,
                        image: &image,
                        width: part.image_width,
                        height: part.image_height,
                        gate_ng: part.defect_detected,
                        score: part.score,
                        threshold: part.score_threshold,
                        regions: &part.defects,
                    })
                    .await;
                match judged {
                    Ok(verdict) => verdict,
                    Err(later) => return self.put_off(job, &part, later).await,
                }
            }
        };
        self.store(&part, verdict).await
    }

    /// A call put off: its job goes back to the queue until then, or, if then is more than
    /// `max_deferral_secs` after the part was taken in, the remote enrichment is given up and
    /// the result made final with the gate's verdict (never lost, never left provisional). A
    /// call put off because the store could not count the deployment's budget is always put
    /// back: it says nothing about the service. One the store put off (that, or the part's
    /// image not read) backs off from 1 s up to the job's lease.
    async fn put_off(
        &self,
        job: &Job,
        part: &Analysis,
        mut later: Deferred,
    ) -> Result<(), StoreError> {
        if later.cause.from_store() {
            // Backs off with the times the part was taken (at least 1 s, at most the lease):
            // a store that keeps failing is not asked again and again.
            later.retry_in = self.remote.store_backoff(job.attempts);
        }
        let name = self.remote.name();
        let cause = later.cause.as_str();
        let max_deferral = self.remote.settings().max_deferral;
        let age = (Utc::now() - part.created_at).to_std().unwrap_or_default();
        let give_up = later
            .cause
            .give_up_code()
            .filter(|_| age.saturating_add(later.retry_in) > max_deferral);
        let Some(code) = give_up else {
            metrics::counter!(telemetry::REMOTE_DEFERRED_TOTAL, "analyzer" => name, "cause" => cause)
                .increment(1);
            info!(retry_in_secs = later.retry_in.as_secs_f64(), reason = %later.reason, "remote call put off; the part waits in the queue");
            return self
                .storage
                .records
                .defer_job(job, &later.reason, later.retry_in)
                .await;
        };
        metrics::counter!(telemetry::REMOTE_GIVEN_UP_TOTAL, "analyzer" => name, "cause" => cause)
            .increment(1);
        warn!(age_secs = age.as_secs(), reason = %later.reason, "remote enrichment given up; the gate's verdict is final");
        let verdict = self.remote.given_up(
            code,
            format!(
                "remote enrichment given up: the call would be put off past {} s after the part \
                 was taken in (max_deferral_secs; {})",
                max_deferral.as_secs(),
                later.reason
            ),
        );
        self.store(part, verdict).await
    }

    async fn store(&self, part: &Analysis, verdict: Verdict) -> Result<(), StoreError> {
        let enriched = enrichment(part, verdict);
        if enriched.disagreement {
            metrics::counter!(telemetry::REMOTE_DISAGREEMENTS_TOTAL, "sku" => part.product_sku.clone())
                .increment(1);
        }
        self.storage.records.enrich(part.id, enriched).await?;
        self.outbox_wake.notify_one();
        Ok(())
    }

    /// Why no call may be made now: the daily or monthly budget is spent (every replica's
    /// calls count).
    async fn budget_spent(&self) -> Result<Option<String>, StoreError> {
        let s = self.remote.settings();
        let now = Utc::now();
        let name = self.remote.name();
        if let Some(daily) = s.daily_budget_usd {
            let spent = self.storage.records.remote_spent(name, now).await?;
            if spent >= daily {
                return Ok(Some(format!(
                    "the daily budget of {daily} USD is spent ({spent:.4} USD today, UTC)"
                )));
            }
        }
        if let Some(monthly) = s.monthly_budget_usd {
            let month_start = now.with_day(1).unwrap_or(now);
            let spent = self.storage.records.remote_spent(name, month_start).await?;
            if spent >= monthly {
                return Ok(Some(format!(
                    "the monthly budget of {monthly} USD is spent ({spent:.4} USD this month, UTC)"
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::analysis::remote::config::RemoteConfig;

    fn settings(extra: &str) -> RemoteSettings {
        toml::from_str::<RemoteConfig>(&format!(
            "kind = \"openai_compatible\"\nendpoint = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n{extra}"
        ))
        .unwrap()
        .validate()
        .unwrap()
    }

    fn judged(ng: bool, score: f32) -> Judgement {
        Judgement {
            status: AnalysisStatus::Final,
            defect_detected: ng,
            defects: Vec::new(),
            score: Some(score),
            score_threshold: Some(1.0),
            confidence: None,
            recommendation: String::new(),
            model_version: Some("v1".into()),
        }
    }

    #[test]
    fn only_ng_and_uncertain_parts_go_remote_by_default() {
        let s = settings("uncertain_band = 0.2");
        assert!(sends(&s, "A", &judged(true, 3.0)));
        assert!(sends(&s, "A", &judged(false, 0.85)), "uncertain");
        assert!(!sends(&s, "A", &judged(false, 0.5)), "clearly good");
        let mut none = judged(false, 0.9);
        none.status = AnalysisStatus::NotCalibrated;
        assert!(!sends(&s, "A", &none), "no verdict, nothing to enrich");
    }

    #[test]
    fn the_mode_is_set_per_sku() {
        let s = settings(
            "mode = \"ng\"\n[[skus]]\nsku = \"ALL\"\nmode = \"all\"\n[[skus]]\nsku = \"OFF\"\nmode = \"off\"\n",
        );
        assert!(!sends(&s, "A", &judged(false, 0.95)));
        assert!(sends(&s, "A", &judged(true, 3.0)));
        assert!(sends(&s, "ALL", &judged(false, 0.1)));
        assert!(!sends(&s, "OFF", &judged(true, 3.0)));
    }

    #[test]
    fn confident_ng_parts_stay_local_only_when_configured() {
        let typed = |ng, score, kind| Judgement {
            defects: vec![defect(kind, [10, 10, 20, 20], "gate")],
            ..judged(ng, score)
        };
        let default = settings("");
        assert!(sends(&default, "A", &typed(true, 5.0, DefectType::Rust)));
        let s = settings("confident_ng_above = 2.0\n[[skus]]\nsku = \"ALL\"\nmode = \"all\"\n");
        assert!(
            !sends(&s, "A", &typed(true, 2.0, DefectType::Rust)),
            "typed, 2x"
        );
        assert!(confident_ng(&s, &typed(true, 2.0, DefectType::Rust)));
        assert!(
            sends(&s, "A", &typed(true, 1.9, DefectType::Rust)),
            "below 2x"
        );
        assert!(
            sends(&s, "A", &typed(true, 5.0, DefectType::Other)),
            "a region the gate could not type"
        );
        assert!(sends(&s, "A", &judged(true, 5.0)), "no region");
        assert!(
            sends(&s, "ALL", &typed(true, 5.0, DefectType::Rust)),
            "mode all sends every part"
        );
        assert!(!confident_ng(&s, &typed(false, 5.0, DefectType::Rust)));
    }

    fn defect(kind: DefectType, bbox: [u32; 4], description: &str) -> Defect {
        Defect {
            kind,
            severity: "high".into(),
            confidence: 0.9,
            bbox,
            description: description.into(),
        }
    }

    #[test]
    fn the_gate_regions_take_the_remote_types_and_descriptions() {
        let part: Analysis = serde_json::from_value(serde_json::json!({
            "id": "0193a000-0000-7000-8000-000000000001", "defect_id": "DEF-0000000000000001",
            "timestamp": "2026-12-06T10:00:00Z", "facility": "f", "line": "l", "station": "s",
            "product_sku": "A", "part_id": null, "lot": null, "device_id": null, "frame_id": null,
            "seq": null, "status": "provisional", "defect_detected": true,
            "defects": [
                defect(DefectType::Scratch, [10, 10, 20, 20], "local a"),
                defect(DefectType::Pit, [200, 200, 5, 5], "local b")
            ],
            "score": 3.0, "score_threshold": 1.0, "confidence": 0.9, "recommendation": "reject",
            "analyzer": "golden", "analyzer_version": "1", "model_version": "v1",
            "latency_ms": 1.0, "image_width": 640, "image_height": 480, "image_url": "/x",
            "created_at": "2026-12-06T10:00:00Z", "analyzed_at": null
        }))
        .unwrap();
        let verdict = Verdict {
            source: wiko_wire::VerdictSource::Remote,
            analyzer: "openai_compatible".into(),
            model: Some("m".into()),
            defect_detected: Some(false),
            score: None,
            defects: vec![defect(DefectType::Rust, [12, 12, 20, 20], "a rust spot")],
            summary: Some("rust".into()),
            latency_ms: Some(5.0),
            usage: None,
            error: None,
            alerted: false,
        };
        let e = enrichment(&part, verdict);
        assert!(e.disagreement);
        assert_eq!(e.defects[0].kind, DefectType::Rust);
        assert_eq!(e.defects[0].description, "a rust spot");
        assert_eq!(e.defects[0].bbox, [10, 10, 20, 20], "the gate's box stays");
        assert_eq!(e.defects[1].description, "local b", "no overlap, unchanged");
    }
}
