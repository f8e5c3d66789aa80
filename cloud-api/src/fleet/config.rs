//! `[fleet]`: when the cloud calls a device behind or silent.

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FleetConfig {
    /// A device whose oldest unsynced frame is older than this many seconds is `behind`.
    /// Default: 300.
    #[serde(default = "default_behind_after_secs")]
    pub behind_after_secs: u64,
    /// A device is `silent` after this many of its heartbeat intervals without one. Default: 3.
    #[serde(default = "default_silent_after_missed")]
    pub silent_after_missed: u32,
    /// How often each replica refreshes the per-device Prometheus gauges, in seconds.
    /// Default: 15.
    #[serde(default = "default_gauge_interval_secs")]
    pub gauge_interval_secs: u64,
}

fn default_behind_after_secs() -> u64 {
    300
}
fn default_silent_after_missed() -> u32 {
    3
}
fn default_gauge_interval_secs() -> u64 {
    15
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            behind_after_secs: default_behind_after_secs(),
            silent_after_missed: default_silent_after_missed(),
            gauge_interval_secs: default_gauge_interval_secs(),
        }
    }
}

impl FleetConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.silent_after_missed == 0 {
            return Err(invalid("fleet.silent_after_missed", "must be above zero"));
        }
        if self.gauge_interval_secs == 0 {
            return Err(invalid("fleet.gauge_interval_secs", "must be above zero"));
        }
        Ok(())
    }
}
