//! `[analysis]`: the workers and the golden-sample models they judge with.

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AnalysisConfig {
    /// Analysis workers (jobs processed at once); 0 makes an ingest-only replica whose jobs
    /// another replica works off. Default: 2.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Kind of golden-sample model fitted for a SKU: `auto`, `aligned`, `fixed`, `texture` or
    /// `patch`.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "String"))]
    pub method: wiko_inspect::MethodChoice,
    /// Share of good parts a fitted model's threshold may reject. Default: 0.01.
    #[serde(default = "default_false_reject_rate")]
    pub false_reject_rate: f32,
    /// A job that keeps failing is retried this many times, then marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long a worker holds a job before it is presumed dead and another worker (of any
    /// replica) takes the job, in seconds. Longer than the slowest analysis.
    #[serde(default = "default_job_lease_secs")]
    pub job_lease_secs: u64,
    /// Memory that image work (decoding and judging parts, verifying large images at ingest,
    /// fitting golden sets) may use at once, in bytes; work waits for its share, and work that
    /// could never fit is refused. 0: half of the machine's memory.
    #[serde(default)]
    pub memory_budget_bytes: u64,
    /// Frames over this many pixels are decoded once at ingest (within the budget) before they
    /// are acknowledged, so the queue holds only images the workers can judge; smaller ones
    /// are checked from their headers only. Default: 4000000
    #[serde(default = "default_verify_at_ingest_pixels")]
    pub verify_at_ingest_pixels: u64,
}

fn default_workers() -> usize {
    2
}
fn default_false_reject_rate() -> f32 {
    0.01
}
fn default_max_attempts() -> u32 {
    5
}
fn default_job_lease_secs() -> u64 {
    60
}
fn default_verify_at_ingest_pixels() -> u64 {
    4_000_000
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            workers: default_workers(),
            method: wiko_inspect::MethodChoice::default(),
            false_reject_rate: default_false_reject_rate(),
            max_attempts: default_max_attempts(),
            job_lease_secs: default_job_lease_secs(),
            memory_budget_bytes: 0,
            verify_at_ingest_pixels: default_verify_at_ingest_pixels(),
        }
    }
}

impl AnalysisConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > 64 {
            return Err(invalid("analysis.workers", "must be 0 to 64"));
        }
        if self.job_lease_secs == 0 {
            return Err(invalid("analysis.job_lease_secs", "must be above zero"));
        }
        if self.memory_budget_bytes != 0 && self.memory_budget_bytes < super::budget::MIN_BUDGET {
            return Err(invalid(
                "analysis.memory_budget_bytes",
                format!(
                    "must be 0 (automatic) or at least {}",
                    super::budget::MIN_BUDGET
                ),
            ));
        }
        if !(self.false_reject_rate > 0.0 && self.false_reject_rate < 0.5) {
            return Err(invalid(
                "analysis.false_reject_rate",
                "must be above 0 and below 0.5",
            ));
        }
        Ok(())
    }
}

impl AnalysisConfig {
    /// The memory budget in bytes: the configured one, or half of the machine's memory.
    pub(crate) fn budget_bytes(&self) -> u64 {
        match self.memory_budget_bytes {
            0 => super::budget::default_bytes(),
            bytes => bytes,
        }
    }
}
