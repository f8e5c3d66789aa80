//! The fleet: what the cloud makes of each device's last heartbeat ([`describe`]), and the
//! per-device gauges every replica keeps for Prometheus ([`gauges`]).
//!
//! A device is `silent` when its last heartbeat is older than
//! `fleet.silent_after_missed` of its own intervals (or it never sent one), else
//! `camera_failed` when a camera is failed, stalled or hung (a camera being reopened after a
//! stall counts as working until that open fails), else `degraded` when the agent says so
//! (disk low, buffer writes failing), else `behind` when its oldest unsynced frame is older
//! than `fleet.behind_after_secs`, else `ok`.

pub(crate) mod config;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use wiko_wire::{CameraStatus, Device, DeviceState, Heartbeat};

pub use config::FleetConfig;

use crate::store::{DeviceRecord, Store};
use crate::telemetry as names;

/// The state of a device whose last heartbeat (if any) arrived at `at`.
pub fn state(
    last: Option<(DateTime<Utc>, &Heartbeat)>,
    now: DateTime<Utc>,
    cfg: &FleetConfig,
) -> DeviceState {
    let Some((at, hb)) = last else {
        return DeviceState::Silent;
    };
    let silent_after = f64::from(hb.interval_seconds.max(1)) * f64::from(cfg.silent_after_missed);
    if seconds(now - at) > silent_after {
        return DeviceState::Silent;
    }
    if hb.cameras.iter().any(|c| {
        matches!(
            c.status,
            CameraStatus::Failed
                | CameraStatus::Stalled
                | CameraStatus::Hung
                | CameraStatus::Unknown
        )
    }) {
        return DeviceState::CameraFailed;
    }
    if !hb.degraded.is_empty() {
        return DeviceState::Degraded;
    }
    if hb.buffer.oldest_unsynced_seconds > cfg.behind_after_secs as f64 {
        return DeviceState::Behind;
    }
    DeviceState::Ok
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// A device as the API shows it.
pub fn describe(r: DeviceRecord, now: DateTime<Utc>, cfg: &FleetConfig) -> Device {
    let state = state(r.heartbeat.as_ref().map(|(at, hb)| (*at, hb)), now, cfg);
    let (facility, line, station) = match &r.heartbeat {
        Some((_, hb)) => (hb.facility.clone(), hb.line.clone(), hb.station.clone()),
        None => (r.facility, r.line, r.station),
    };
    Device {
        device_id: r.device_id,
        facility,
        line,
        station,
        state,
        first_seen: r.first_seen,
        last_frame_at: r.last_frame_at,
        last_heartbeat_at: r.heartbeat.as_ref().map(|(at, _)| *at),
        heartbeat_age_seconds: r.heartbeat.as_ref().map(|(at, _)| seconds(now - *at)),
        clock_offset_seconds: r
            .heartbeat
            .as_ref()
            .map(|(at, hb)| seconds(*at - hb.sent_at)),
        heartbeat: r.heartbeat.map(|(_, hb)| hb),
        pending_commands: r.pending,
    }
}

/// Keeps the per-device gauges (state, heartbeat age, backlog, dead letters) and the count of
/// devices per state, from the store every `fleet.gauge_interval_secs`, until `stop`.
pub(crate) async fn gauges(store: Arc<dyn Store>, cfg: FleetConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.gauge_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.devices().await {
            Ok(records) => {
                let now = Utc::now();
                let devices: Vec<Device> = records
                    .into_iter()
                    .map(|r| describe(r, now, &cfg))
                    .collect();
                record(&devices);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the fleet for its gauges"),
        }
    }
}

fn record(devices: &[Device]) {
    for s in DeviceState::ALL {
        let n = devices.iter().filter(|d| d.state == s).count();
        metrics::gauge!(names::DEVICES, "state" => s.as_str()).set(n as f64);
    }
    for d in devices {
        let id = d.device_id.clone();
        for s in DeviceState::ALL {
            let on = if d.state == s { 1.0 } else { 0.0 };
            metrics::gauge!(names::DEVICE_STATE, "device_id" => id.clone(), "state" => s.as_str())
                .set(on);
        }
        if let Some(age) = d.heartbeat_age_seconds {
            metrics::gauge!(names::DEVICE_HEARTBEAT_AGE_SECONDS, "device_id" => id.clone())
                .set(age);
        }
        if let Some(hb) = &d.heartbeat {
            let b = &hb.buffer;
            metrics::gauge!(names::DEVICE_BUFFER_FRAMES, "device_id" => id.clone())
                .set(b.frames as f64);
            metrics::gauge!(names::DEVICE_OLDEST_UNSYNCED_SECONDS, "device_id" => id.clone())
                .set(b.oldest_unsynced_seconds);
            metrics::gauge!(names::DEVICE_DEAD_LETTERS, "device_id" => id)
                .set(b.dead_letters as f64);
        }
    }
}

#[cfg(test)]
mod tests;
