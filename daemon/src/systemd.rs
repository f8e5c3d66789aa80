//! systemd supervision (`Type=notify`, `WatchdogSec=`): readiness, stopping, and the watchdog
//! ping, through the `sd-notify` crate. Outside systemd (no `NOTIFY_SOCKET`) every call is a
//! no-op, so the daemons run the same from a shell or a test.
//!
//! Each daemon decides what "making progress" means and pings only then; [`Liveness`] is the
//! stamp a loop leaves on each turn so a watchdog task can tell it still turns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Tells systemd the daemon is ready (the unit's start completes), with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog.
pub fn alive() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog's timeout (`WatchdogSec=`) when systemd watches this process.
pub fn watchdog_timeout() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "notifying systemd failed");
    }
}

/// When a loop last turned.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    /// Milliseconds from `origin` to the last turn.
    last_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// The loop turned.
    pub fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last turn (since creation before the first).
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_makes_the_age_small_again() {
        let l = Liveness::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(l.age() >= Duration::from_millis(30));
        l.beat();
        assert!(l.age() < Duration::from_millis(30));
    }

    #[test]
    fn outside_systemd_notifying_is_a_no_op() {
        // No NOTIFY_SOCKET in the test environment: nothing is sent, nothing fails.
        ready("test");
        alive();
        stopping();
    }
}
