//! The systemd watchdog (`WatchdogSec=` in the unit): pinged only while the agent makes
//! progress, so that a wedged daemon is restarted: the buffer answers (a stuck SQLite lock
//! stops every capture) and the upload loop turns (it does at least every poll interval, also
//! while paused by a backoff). A camera that stops delivering is handled by its own task
//! (reopened), not by restarting the daemon.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use wiko_daemon::systemd::{self, Liveness};

use crate::buffer::Buffer;

/// Pings every third of `timeout` while [`progress`] holds.
pub async fn run(
    buffer: Arc<Buffer>,
    sync: Arc<Liveness>,
    timeout: Duration,
    stop: CancellationToken,
) {
    let every = timeout / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match progress(&buffer, &sync, timeout).await {
            Ok(()) => systemd::alive(),
            Err(why) => {
                warn!(%why, "not pinging the watchdog: systemd restarts the agent if this lasts")
            }
        }
    }
}

/// Whether the agent makes progress: the upload loop turned within half of `timeout` and the
/// buffer answers within a third of it.
pub async fn progress(
    buffer: &Arc<Buffer>,
    sync: &Liveness,
    timeout: Duration,
) -> Result<(), String> {
    let idle = sync.age();
    if idle > timeout / 2 {
        return Err(format!("the upload loop has not turned for {idle:?}"));
    }
    let buffer = buffer.clone();
    let read = tokio::time::timeout(
        timeout / 3,
        tokio::task::spawn_blocking(move || buffer.stats()),
    )
    .await;
    match read {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("the buffer cannot be read: {e}")),
        Ok(Err(e)) => Err(format!("the buffer read failed: {e}")),
        Err(_) => Err(format!(
            "the buffer did not answer within {:?}",
            timeout / 3
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::buffer::Limits;
    use crate::config::{Synchronous, WhenFull};

    #[tokio::test]
    async fn progress_needs_a_turning_upload_loop_and_an_answering_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_disk_bytes: 1 << 30,
            when_full: WhenFull::DropOldest,
            synchronous: Synchronous::Normal,
            min_free_bytes: 0,
        };
        let buffer = Arc::new(Buffer::open(&dir.path().join("b.db"), limits).unwrap().0);
        let sync = Liveness::default();
        sync.beat();
        let timeout = Duration::from_millis(400);
        assert_eq!(progress(&buffer, &sync, timeout).await, Ok(()));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stuck = progress(&buffer, &sync, timeout).await.unwrap_err();
        assert!(stuck.contains("upload loop"), "{stuck}");
        sync.beat();
        assert_eq!(progress(&buffer, &sync, timeout).await, Ok(()));
    }
}
