//! The `interval` trigger: a part every `interval_ms`, optionally `max_parts` of them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;
use wiko_wire::TriggerRequest;

use super::{Station, Trigger};

/// Fires every `interval` until `shutdown`, or until the camera took `max_parts` triggers.
pub async fn run(
    station: Arc<Station>,
    interval: Duration,
    max_parts: Option<u64>,
    shutdown: CancellationToken,
) {
    // The first part one interval after the start: the camera opens meanwhile.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut taken = 0u64;
    while max_parts.is_none_or(|max| taken < max) {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if station.fire(Trigger::new("interval", TriggerRequest::default(), None)) {
            taken += 1;
        }
    }
    info!(
        camera = station.camera(),
        parts = taken,
        "max_parts reached"
    );
}
