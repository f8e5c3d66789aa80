//! The buffer's file system and what goes wrong on it: free space against the
//! `buffer.min_free_bytes` watermark, the last failed write, and acknowledged frames whose
//! delete failed. Together they make the agent `degraded` (see [`Faults::reasons`]).
//!
//! The watermark is what keeps a full disk from failing writes: under it the buffer does not
//! grow its file (frames are evicted by `when_full` to make room inside it), even when the
//! accounted size is far below `max_disk_bytes`. Pages freed inside the file count as room:
//! the disk is low when the free space plus those is under the watermark, or when the last
//! frame had to evict (or was refused) for it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

/// Free space and faults of one buffer.
pub struct Faults {
    dir: PathBuf,
    min_free_bytes: u64,
    /// Why the last insert failed; `None` once one succeeds.
    write_failure: Mutex<Option<String>>,
    /// The last insert had to evict or refuse because of the watermark.
    disk_limited: AtomicBool,
    /// Frames the cloud acknowledged whose delete failed: never uploaded again, deleted later.
    acked: Mutex<HashSet<Uuid>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one insert, remove or copy: a panic cannot leave it half done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// Watches the file system holding `dir`.
    pub fn new(dir: &Path, min_free_bytes: u64) -> Faults {
        Faults {
            dir: dir.to_path_buf(),
            min_free_bytes,
            write_failure: Mutex::new(None),
            disk_limited: AtomicBool::new(false),
            acked: Mutex::new(HashSet::new()),
        }
    }

    /// Free bytes on the file system (for an unprivileged process: `statvfs`'s `f_bavail`).
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        fs4::available_space(&self.dir)
    }

    /// How many bytes the buffer may still add to the file system: the free space above the
    /// watermark plus `reusable` (pages free inside the database file).
    pub fn room(&self, reusable: u64) -> std::io::Result<u64> {
        Ok((self.free_bytes()? + reusable).saturating_sub(self.min_free_bytes))
    }

    /// What the last insert did: `Ok(disk_limited)`, or why it failed.
    pub fn record_insert(&self, outcome: Result<bool, (bool, String)>) {
        let (limited, failure) = match outcome {
            Ok(limited) => (limited, None),
            Err((limited, e)) => (limited, Some(e)),
        };
        self.disk_limited.store(limited, Ordering::Relaxed);
        *lock(&self.write_failure) = failure;
    }

    pub fn remember_acked(&self, frame_id: Uuid) {
        lock(&self.acked).insert(frame_id);
    }

    /// A frame left the buffer: room was made in its file.
    pub fn deleted(&self, frame_id: Uuid) {
        self.disk_limited.store(false, Ordering::Relaxed);
        lock(&self.acked).remove(&frame_id);
    }

    /// Acknowledged frames still in the buffer.
    pub fn acked(&self) -> Vec<Uuid> {
        lock(&self.acked).iter().copied().collect()
    }

    /// Why the buffer is degraded, one line per reason, each starting with a stable code;
    /// empty when all is well. Checks the free space again; `reusable` is the room inside the
    /// buffer's file.
    pub fn reasons(&self, reusable: u64) -> Vec<String> {
        let mut out = Vec::new();
        match self.free_bytes() {
            Ok(free)
                if free + reusable < self.min_free_bytes
                    || self.disk_limited.load(Ordering::Relaxed) =>
            {
                out.push(format!(
                    "disk_low: {free} bytes free (and {reusable} inside the buffer), buffer.min_free_bytes is {}; frames are evicted or refused",
                    self.min_free_bytes
                ))
            }
            Ok(_) => {}
            Err(e) => out.push(format!("disk_low: free space unknown: {e}")),
        }
        if let Some(e) = lock(&self.write_failure).as_ref() {
            out.push(format!(
                "buffer_write_failed: the last capture was not buffered: {e}"
            ));
        }
        let acked = lock(&self.acked).len();
        if acked > 0 {
            out.push(format!(
                "acks_not_deleted: {acked} acknowledged frames could not be deleted yet; retried with backoff, never uploaded again"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_free_space_above_the_watermark_plus_what_the_file_can_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let free = Faults::new(dir.path(), 0).free_bytes().unwrap();
        assert!(free > 0);
        let under = Faults::new(dir.path(), u64::MAX);
        assert_eq!(under.room(1000).unwrap(), 0);
        assert!(under.reasons(0)[0].starts_with("disk_low:"));
        let some = Faults::new(dir.path(), free / 2);
        let room = some.room(10).unwrap();
        // Other processes write too: the free space moves a little between the two calls.
        assert!(room > free / 4 && room < free, "{room} of {free}");
        assert!(some.reasons(0).is_empty());
    }

    #[test]
    fn a_failed_write_and_undeleted_acks_degrade_until_they_clear() {
        let dir = tempfile::tempdir().unwrap();
        let f = Faults::new(dir.path(), 0);
        f.record_insert(Err((false, "database or disk is full".into())));
        let id = Uuid::now_v7();
        f.remember_acked(id);
        let reasons = f.reasons(0);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].starts_with("buffer_write_failed:"));
        assert!(reasons[1].starts_with("acks_not_deleted: 1 "));
        assert_eq!(f.acked(), [id]);
        f.record_insert(Ok(true));
        assert!(
            f.reasons(0)[0].starts_with("disk_low:"),
            "evicting for the disk"
        );
        f.deleted(id);
        assert!(f.reasons(0).is_empty());
    }
}
