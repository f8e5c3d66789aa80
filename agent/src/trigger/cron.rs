//! The `cron` trigger: a part at each time of a cron schedule read in the plant's local time
//! (an IANA time zone), e.g. a reference part photographed at the start of every shift.
//!
//! Daylight saving time follows Vixie cron (the `croner` crate): a fixed time in the hour
//! skipped in spring fires once, right after the gap; a fixed time in the hour repeated in
//! autumn fires once, on its first pass; a wildcard or step schedule (`*/10`) fires in real
//! time, so no occurrence is doubled or skipped either way. Each next time is computed from
//! the previous one in UTC. The task sleeps at most [`RECHECK`] at a time and reads the wall
//! clock again, so a clock that was set (NTP) is followed within that; times missed while the
//! agent was down, or passed by a clock set forward, are not made up.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wiko_wire::TriggerRequest;

use super::{Station, Trigger};

/// Longest sleep between two readings of the wall clock.
pub const RECHECK: Duration = Duration::from_secs(60);

/// A cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: chrono_tz::Tz,
}

impl Schedule {
    /// `expression`: five fields (minute granularity) or six (seconds first), or an alias
    /// (`@daily`); `zone`: an IANA name such as `Europe/Berlin`.
    pub fn parse(expression: &str, zone: &str) -> Result<Schedule, String> {
        let zone = chrono_tz::Tz::from_str(zone)
            .map_err(|_| format!("`{zone}` is not an IANA time zone (e.g. Europe/Berlin)"))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| format!("`{expression}`: {e}"))?;
        Ok(Schedule { cron, zone })
    }

    /// The first time of the schedule strictly after `after`; `None` when there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Fires `request` (its SKU and lot go into each frame) at every time of `schedule` until
/// `shutdown`. `clock` is the wall clock (`Utc::now`; the tests' follows paused tokio time).
pub async fn run(
    station: Arc<Station>,
    schedule: Schedule,
    request: TriggerRequest,
    clock: impl Fn() -> DateTime<Utc>,
    shutdown: CancellationToken,
) {
    let mut after = clock();
    loop {
        let Some(next) = schedule.next_after(after) else {
            warn!(
                camera = station.camera(),
                "the cron schedule has no time left; no more parts"
            );
            return;
        };
        loop {
            let left = (next - clock()).to_std().unwrap_or(Duration::ZERO);
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(left.min(RECHECK)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        debug!(camera = station.camera(), at = %next, "cron trigger");
        station.fire(Trigger::new("cron", request.clone(), None));
        // From the later of the time served and now: a clock set forward skips what it passed.
        after = next.max(clock());
    }
}

#[cfg(test)]
mod tests;
