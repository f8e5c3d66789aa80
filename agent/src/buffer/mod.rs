//! The frame buffer: a SQLite database in WAL mode, the agent's source of truth.
//!
//! Invariants:
//! - A frame row is written in one transaction (metadata and JPEG together) before the capture
//!   counts; with `synchronous = "full"` the commit is fsynced.
//! - A row is deleted only by [`Buffer::ack`] (the cloud acknowledged that `frame_id`), by
//!   [`Buffer::dead_letter`] (the cloud rejected it for good: the row moves to `dead_letters`,
//!   still on disk and counted), by [`Buffer::pending`] for a row that cannot be read back (also
//!   to `dead_letters`, so a damaged row never blocks the ones behind it), or by eviction when
//!   full (counted and logged). [`Buffer::requeue`] moves a dead letter back, under its own
//!   `frame_id` and `seq`, when an operator asks (a command from the cloud), under the same
//!   limits as a new frame.
//! - The accounted size (`JPEG bytes + ROW_OVERHEAD` per row) stays at most `max_disk_bytes`,
//!   and the file does not grow while the file system's free space is under `min_free_bytes`
//!   ([`disk`]). When a frame does not fit, `when_full` decides: `drop_oldest` evicts unsynced
//!   frames, OK and unjudged ones first, then NG frames whose alert the broker acknowledged,
//!   oldest first; `reject_new` refuses the new frame.
//! - No NG part is lost to both the operator and the cloud: an NG frame is `unalerted` from its
//!   insert until the broker acknowledges its alert ([`Buffer::ack_alert`]), and an unalerted
//!   frame is never evicted (without alerts, or with its alert dropped, the cloud is the one to
//!   alert the part, so it must get the frame). When only such frames would make room, the new
//!   frame is refused ([`BufferError::NgUnalerted`]: the trigger is answered `not_stored` and
//!   counted, the refusal logged and counted by reason, the agent degraded), never an NG part
//!   nobody heard of dropped.
//! - An acknowledged frame whose delete failed (a full disk) is remembered in memory, never
//!   returned by [`Buffer::pending`] again, and deleted by [`Buffer::retry_acked`] later.
//! - `seq` is the per-device sequence number: `AUTOINCREMENT` never reuses a value, even after
//!   the rows holding the highest ones were deleted.
//! - An NG frame's alert (when the agent publishes alerts) is written in the frame's own
//!   transaction to the `alerts` outbox and deleted only when the broker acknowledged it or
//!   the outbox's bounds dropped it ([`alerts`]); a start frees every lease, so an alert in
//!   flight when the agent stopped is sent again. The frame's verdict is stored with
//!   `alerted = false`; the broker's acknowledgement sets it in the transaction that deletes the
//!   alert ([`Buffer::ack_alert`], in `frames` or `dead_letters`), so a dropped alert never
//!   leaves a mark. [`Buffer::pending`] holds an NG frame whose alert is still queued for at
//!   most [`ALERT_GRACE`] after its insert, so that in the normal case the upload says
//!   `alerted` and the cloud does not alert the part again; after the grace it goes up
//!   without the mark and the cloud alerts that part too (at worst twice under one
//!   `result_id`, never lost).
//! - The schema's version (`PRAGMA user_version`, [`SCHEMA_VERSION`]) names the one-time steps
//!   done on a buffer written by an earlier version ([`migrate`]).
//! - A database that fails to open or its quick integrity check is moved aside (quarantined,
//!   with a timestamp) and a fresh one is created, so a corrupt file never crash-loops the agent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;
use wiko_wire::{EdgeVerdict, FrameMeta};

use crate::config::{Synchronous, WhenFull};
pub use alerts::{AlertOutbox, Dropped, QueuedAlert};
pub use disk::Faults;

pub mod alerts;
pub mod disk;

/// Bytes accounted per row on top of the JPEG: metadata, indexes, page slack.
pub const ROW_OVERHEAD: u64 = 512;

/// How long [`Buffer::pending`] holds an NG frame whose alert is still in the outbox after the
/// frame's insert: the broker's acknowledgement usually comes well within it, so the upload
/// says `alerted` and the part is alerted once. After it the frame goes up unmarked (the
/// cloud alerts the part too).
pub const ALERT_GRACE: Duration = Duration::from_secs(2);

/// The buffer's schema version (`PRAGMA user_version`): 1, the `alerted` mark is set by the
/// alert's acknowledgement (before, by its queueing); 2, an NG frame not alerted is marked
/// `unalerted` and never evicted.
pub const SCHEMA_VERSION: i64 = 2;

/// The share of `max_disk_bytes` past which the NG frames nobody has alerted yet (never
/// evicted) make the agent degraded (`ng_unalerted`) and are logged as a warning: the early
/// sign that the buffer is filling with frames it will not evict, before it refuses every new
/// frame ([`BufferError::NgUnalerted`]).
pub const UNALERTED_WARN_SHARE: f64 = 0.5;

/// How often the warning of [`UNALERTED_WARN_SHARE`] is logged at most (Unix ms).
const UNALERTED_WARN_EVERY_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("buffer file: {0}")]
    Io(#[from] std::io::Error),
    #[error("edge verdict: {0}")]
    Json(#[from] serde_json::Error),
    #[error("buffer full: a frame of {needed} bytes does not fit in {max} bytes")]
    Full { needed: u64, max: u64 },
    #[error(
        "disk low: a frame of {needed} bytes does not fit in the {room} bytes above buffer.min_free_bytes"
    )]
    DiskLow { needed: u64, room: u64 },
    /// Making room would evict an NG frame nobody has alerted yet (its alert not acknowledged
    /// by a broker, its upload not acknowledged by the cloud): never done, the new frame is
    /// refused instead.
    #[error(
        "buffer full of NG parts nobody has alerted yet ({frames} frames, {bytes} bytes, kept until their alert or upload is acknowledged): a frame of {needed} bytes is refused"
    )]
    NgUnalerted {
        needed: u64,
        frames: u64,
        bytes: u64,
    },
}

/// Size policy of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_disk_bytes: u64,
    /// Free space the buffer leaves on its file system.
    pub min_free_bytes: u64,
    pub when_full: WhenFull,
    pub synchronous: Synchronous,
}

/// A captured frame before it has a sequence number.
#[derive(Debug, Clone)]
pub struct NewFrame {
    pub frame_id: Uuid,
    pub camera: String,
    pub device_id: String,
    pub facility: String,
    pub line: String,
    pub station: String,
    pub sku: String,
    pub part_id: Option<String>,
    pub lot: Option<String>,
    pub captured_at: DateTime<Utc>,
    pub jpeg: Vec<u8>,
    /// The verdict of edge analysis, when the SKU had a model: NG frames are synced first,
    /// evicted last; it travels with the upload.
    pub edge: Option<EdgeVerdict>,
}

impl NewFrame {
    /// The frame's metadata once buffered as `seq`, its image's digest `image_blake3`.
    pub fn meta(&self, seq: u64, image_blake3: String) -> FrameMeta {
        FrameMeta {
            frame_id: self.frame_id,
            device_id: self.device_id.clone(),
            facility: self.facility.clone(),
            line: self.line.clone(),
            station: self.station.clone(),
            sku: self.sku.clone(),
            part_id: self.part_id.clone(),
            lot: self.lot.clone(),
            captured_at: self.captured_at,
            seq,
            image_blake3,
            edge: self.edge.clone(),
        }
    }
}

/// A frame waiting for upload.
#[derive(Debug, Clone)]
pub struct Pending {
    pub meta: FrameMeta,
    pub camera: String,
    pub jpeg: Vec<u8>,
    pub attempts: u32,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub seq: u64,
    /// Frames evicted to make room.
    pub evicted: u64,
    /// They were evicted because the file system's free space is under `min_free_bytes`.
    pub disk_low: bool,
    /// The frame's alert was queued (an NG verdict, alerts on).
    pub alerted: bool,
}

/// What making room for a row did.
#[derive(Debug, Default)]
struct Room {
    /// Frames evicted.
    evicted: u64,
    /// They were evicted because the file system's free space is under `min_free_bytes`.
    disk_low: bool,
}

/// A frame the cloud refused for good, as listed in heartbeats.
pub type DeadLetter = wiko_wire::fleet::DeadLetter;

/// A snapshot of the buffer for metrics and health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub frames: u64,
    pub bytes: u64,
    pub oldest_captured_at: Option<DateTime<Utc>>,
    pub dead_letters: u64,
    pub evicted_total: u64,
    /// Unsynced frames per camera, by camera name.
    pub by_camera: Vec<(String, u64)>,
    /// NG alerts waiting for the broker.
    pub alerts_queued: u64,
    /// Alerts dropped from the full or late outbox, since the buffer was created.
    pub alerts_dropped_total: u64,
    /// NG frames nobody has alerted yet (never evicted), and their accounted bytes.
    pub unalerted_frames: u64,
    pub unalerted_bytes: u64,
}

pub struct Buffer {
    conn: Mutex<Connection>,
    limits: Limits,
    path: PathBuf,
    faults: Faults,
    /// Alerts dropped since the outbox was last empty (0: not dropping).
    alert_drops: AtomicU64,
    /// When the unalerted NG frames were last logged past [`UNALERTED_WARN_SHARE`] (Unix ms;
    /// 0: never).
    unalerted_warned_ms: AtomicI64,
}

const SCHEMA: &str = include_str!("schema.sql");

impl Buffer {
    /// Opens (or creates) the buffer at `path`, quarantining a corrupt file.
    /// Returns the buffer and the path a corrupt file was moved to, if any.
    pub fn open(path: &Path, limits: Limits) -> Result<(Buffer, Option<PathBuf>), BufferError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match Self::open_checked(path, limits) {
            Ok(buffer) => Ok((buffer, None)),
            Err(BufferError::Sqlite(e)) if is_corruption(&e) => {
                let aside = quarantine(path)?;
                Ok((Self::open_checked(path, limits)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(path: &Path, limits: Limits) -> Result<Buffer, BufferError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match limits.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(BufferError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(check),
            )));
        }
        conn.execute_batch(SCHEMA)?;
        add_edge_columns(&conn)?;
        migrate(&mut conn)?;
        // The previous run's connection is gone: its leased alerts are sent again.
        conn.execute("UPDATE alerts SET leased_until = NULL", [])?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(Buffer {
            conn: Mutex::new(conn),
            limits,
            path: path.to_path_buf(),
            faults: Faults::new(dir, limits.min_free_bytes),
            alert_drops: AtomicU64::new(0),
            unalerted_warned_ms: AtomicI64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Free space and what failed.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Why the agent is degraded (see [`Faults::reasons`]); empty when all is well. Also
    /// `ng_unalerted` while the NG frames nobody has alerted yet (never evicted) take more
    /// than half of `max_disk_bytes` ([`UNALERTED_WARN_SHARE`]).
    pub fn degraded(&self) -> Vec<String> {
        let conn = self.conn();
        let reusable = Self::reusable(&conn).unwrap_or(0);
        let unalerted = Self::unalerted(&conn);
        drop(conn);
        let mut reasons = self.faults.reasons(reusable);
        match unalerted {
            Ok((frames, bytes)) => {
                if let Some(reason) = self.unalerted_reason(frames, bytes) {
                    reasons.push(reason);
                }
            }
            Err(e) => reasons.push(format!("ng_unalerted: unknown: {e}")),
        }
        reasons
    }

    /// The `ng_unalerted` degraded reason when `bytes` of unalerted NG frames are past
    /// [`UNALERTED_WARN_SHARE`] of `max_disk_bytes`.
    fn unalerted_reason(&self, frames: u64, bytes: u64) -> Option<String> {
        let max = self.limits.max_disk_bytes;
        (bytes as f64 > max as f64 * UNALERTED_WARN_SHARE).then(|| {
            format!(
                "ng_unalerted: {frames} NG frames nobody has alerted yet take {bytes} of the {max} bytes of buffer.max_disk_bytes; they are never evicted (kept until the broker acknowledges their alert or the cloud their upload): once they fill the buffer every new frame is refused"
            )
        })
    }

    /// The NG frames nobody has alerted yet (never evicted): how many, and their accounted
    /// bytes.
    fn unalerted(conn: &Connection) -> Result<(u64, u64), rusqlite::Error> {
        let (frames, bytes): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(bytes), 0) FROM frames WHERE unalerted = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((frames.max(0) as u64, bytes.max(0) as u64))
    }

    /// Bytes of the pages freed by deletes: reused before the file grows.
    fn reusable(conn: &Connection) -> Result<u64, rusqlite::Error> {
        let bytes: i64 = conn.query_row(
            "SELECT freelist_count * page_size FROM pragma_freelist_count, pragma_page_size",
            [],
            |r| r.get(0),
        )?;
        Ok(bytes.max(0) as u64)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half transaction behind (SQLite rolls
        // back an unfinished one), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a frame, making room first according to `when_full`. A failure is kept for
    /// [`Faults::reasons`] until an insert succeeds.
    pub fn insert(&self, f: &NewFrame) -> Result<Inserted, BufferError> {
        self.insert_alerting(f, None)
    }

    /// [`Buffer::insert`], and with `outbox` an NG frame's alert is queued in the same
    /// transaction (its image named under the cloud's URL; the oldest alerts past the outbox's
    /// limit dropped).
    pub fn insert_alerting(
        &self,
        f: &NewFrame,
        outbox: Option<&AlertOutbox>,
    ) -> Result<Inserted, BufferError> {
        let result = self.insert_frame(f, outbox);
        self.faults.record_insert(match &result {
            Ok(inserted) => Ok(inserted.disk_low),
            Err(e) => Err((matches!(e, BufferError::DiskLow { .. }), e.to_string())),
        });
        result
    }

    fn insert_frame(
        &self,
        f: &NewFrame,
        outbox: Option<&AlertOutbox>,
    ) -> Result<Inserted, BufferError> {
        let needed = f.jpeg.len() as u64 + ROW_OVERHEAD;
        let max = self.limits.max_disk_bytes;
        if needed > max {
            return Err(BufferError::Full { needed, max });
        }
        let digest = wiko_wire::frame::image_digest(&f.jpeg);
        // An NG frame's alert is queued below when alerts are on; its verdict says `alerted`
        // only once the broker acknowledged the alert (`ack_alert`), so the cloud does not
        // alert the part again.
        let mut verdict = f.edge.clone();
        if let Some(e) = verdict.as_mut() {
            e.alerted = false;
        }
        let edge = verdict.as_ref().map(serde_json::to_string).transpose()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let room = self.make_room(&tx, needed, 0)?;
        tx.execute(
            "INSERT INTO frames (frame_id, camera, device_id, facility, line, station, sku, part_id,
                                 lot, captured_at, image_blake3, jpeg, bytes, ng, edge, inserted_ms,
                                 unalerted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?14)",
            params![
                f.frame_id.to_string(),
                f.camera,
                f.device_id,
                f.facility,
                f.line,
                f.station,
                f.sku,
                f.part_id,
                f.lot,
                f.captured_at.to_rfc3339(),
                digest,
                f.jpeg,
                needed as i64,
                f.edge.as_ref().is_some_and(|e| e.defect_detected),
                edge,
                Utc::now().timestamp_millis(),
            ],
        )?;
        let seq = tx.last_insert_rowid() as u64;
        // Only an NG frame has an alert: an OK one (most frames) builds no message.
        let ng = f.edge.as_ref().is_some_and(|e| e.defect_detected);
        let (alerted, alerts_dropped) = match outbox {
            Some(outbox) if ng => alerts::queue(&tx, &f.meta(seq, digest), outbox)?,
            _ => (false, 0),
        };
        tx.commit()?;
        // An NG frame is inserted unalerted: the early warning before they fill the buffer.
        let unalerted = if ng {
            Self::unalerted(&conn).ok()
        } else {
            None
        };
        drop(conn);
        self.alerts_dropped(alerts_dropped);
        if let Some((frames, bytes)) = unalerted {
            self.warn_unalerted(frames, bytes);
        }
        Ok(Inserted {
            seq,
            evicted: room.evicted,
            disk_low: room.disk_low,
            alerted,
        })
    }

    /// Logs a warning (at most once per minute) while the unalerted NG frames are past
    /// [`UNALERTED_WARN_SHARE`] of `max_disk_bytes`.
    fn warn_unalerted(&self, frames: u64, bytes: u64) {
        let Some(reason) = self.unalerted_reason(frames, bytes) else {
            return;
        };
        let now = Utc::now().timestamp_millis();
        let last = self.unalerted_warned_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < UNALERTED_WARN_EVERY_MS
            || self
                .unalerted_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        tracing::warn!(
            frames,
            bytes,
            max_disk_bytes = self.limits.max_disk_bytes,
            "{reason} (the alerts are off or the broker is away, and the cloud is unreachable; \
             logged at most once a minute)"
        );
    }

    /// Makes room in `tx` for a row of `needed` accounted bytes according to `when_full`:
    /// within `max_disk_bytes`, and within the file system's free space above
    /// `min_free_bytes` plus the free pages of the file and `freed` bytes the same transaction
    /// releases. `drop_oldest` evicts unsynced frames, OK and unjudged before NG, oldest first,
    /// but never an `unalerted` one: when only those would make room, the frame is refused.
    fn make_room(&self, tx: &Connection, needed: u64, freed: u64) -> Result<Room, BufferError> {
        let max = self.limits.max_disk_bytes;
        let used: i64 = tx.query_row("SELECT bytes FROM usage", [], |r| r.get(0))?;
        let room = self.faults.room(Self::reusable(tx)? + freed)?;
        let limit = max.min(used as u64 + room);
        if used as u64 + needed <= limit {
            return Ok(Room::default());
        }
        let refused = || {
            if limit < max {
                BufferError::DiskLow { needed, room }
            } else {
                BufferError::Full { needed, max }
            }
        };
        if self.limits.when_full == WhenFull::RejectNew {
            return Err(refused());
        }
        let mut free = limit as i64 - used;
        let mut victims = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, bytes FROM frames WHERE unalerted = 0 ORDER BY ng ASC, seq ASC",
            )?;
            let mut rows = stmt.query([])?;
            while free < needed as i64 {
                let Some(row) = rows.next()? else { break };
                victims.push(row.get::<_, i64>(0)?);
                free += row.get::<_, i64>(1)?;
            }
        }
        if free < needed as i64 {
            let (frames, bytes) = Self::unalerted(tx)?;
            return Err(refusal(needed, free, frames, bytes, refused));
        }
        for seq in &victims {
            tx.execute("DELETE FROM frames WHERE seq = ?1", [seq])?;
        }
        let evicted = victims.len() as u64;
        tx.execute(
            "UPDATE counters SET value = value + ?1 WHERE name = 'evicted'",
            [evicted as i64],
        )?;
        Ok(Room {
            evicted,
            disk_low: evicted > 0 && limit < max,
        })
    }

    /// Up to `limit` frames to upload, NG first then oldest first, skipping `exclude`. An NG
    /// frame whose alert is still in the outbox is held for [`ALERT_GRACE`] after its insert;
    /// its verdict says `alerted` only if the broker has acknowledged the alert
    /// ([`Buffer::ack_alert`] set the mark); otherwise the cloud alerts that part as well (at
    /// worst a second alert under one `result_id`, never none). A retry is built anew, so it
    /// may say `alerted` where an earlier attempt did not (the cloud takes it as the same
    /// frame). A row that cannot be read back (a damaged file) is moved to the dead letters
    /// with the reason, so that it never blocks the frames behind it.
    pub fn pending(&self, limit: usize, exclude: &[Uuid]) -> Result<Vec<Pending>, BufferError> {
        self.pending_with_grace(limit, exclude, ALERT_GRACE)
    }

    /// [`Buffer::pending`] holding an NG frame whose alert is queued for `grace` (tests).
    pub(crate) fn pending_with_grace(
        &self,
        limit: usize,
        exclude: &[Uuid],
        grace: Duration,
    ) -> Result<Vec<Pending>, BufferError> {
        // Acknowledged frames still here (their delete failed) are never uploaded again.
        // A set: on a full disk with the cloud up, every buffered frame may be in it.
        let exclude: HashSet<Uuid> = exclude.iter().copied().chain(self.faults.acked()).collect();
        let mut conn = self.conn();
        let mut unreadable = Vec::new();
        let now = Utc::now().timestamp_millis();
        let held_after = now.saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let out = Self::read_pending(&conn, limit, &exclude, (held_after, now), &mut unreadable)?;
        for (seq, reason) in unreadable {
            tracing::error!(seq, %reason, "unreadable buffer row moved to dead letters");
            move_to_dead_letters(&mut conn, seq, 0, &format!("unreadable row: {reason}"))?;
        }
        Ok(out)
    }

    fn read_pending(
        conn: &Connection,
        limit: usize,
        exclude: &HashSet<Uuid>,
        (held_after, now): (i64, i64),
        unreadable: &mut Vec<(i64, String)>,
    ) -> Result<Vec<Pending>, BufferError> {
        // Held: inserted after `held_after` and not after `now` (Unix ms; a frame stamped in
        // the future was stamped before the clock was set back: not held) with its alert
        // still queued.
        let mut stmt = conn.prepare_cached(
            "SELECT seq, frame_id, camera, device_id, facility, line, station, sku, part_id, lot,
                    captured_at, image_blake3, jpeg, attempts, edge
             FROM frames
             WHERE NOT (coalesce(inserted_ms, 0) > ?1 AND inserted_ms <= ?2
                        AND EXISTS (SELECT 1 FROM alerts WHERE alerts.frame_id = frames.frame_id))
             ORDER BY ng DESC, seq ASC",
        )?;
        let mut rows = stmt.query([held_after, now])?;
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let Some(row) = rows.next()? else { break };
            let seq: i64 = row.get(0)?;
            let frame_id: String = row.get(1)?;
            let captured_at: String = row.get(10)?;
            let edge: Option<String> = row.get(14)?;
            let parsed = Uuid::parse_str(&frame_id)
                .map_err(|e| format!("frame_id {frame_id:?}: {e}"))
                .and_then(|id| {
                    DateTime::parse_from_rfc3339(&captured_at)
                        .map(|t| (id, t.with_timezone(&Utc)))
                        .map_err(|e| format!("captured_at {captured_at:?}: {e}"))
                })
                .and_then(|(id, at)| {
                    edge.as_deref()
                        .map(serde_json::from_str::<EdgeVerdict>)
                        .transpose()
                        .map(|edge| (id, at, edge))
                        .map_err(|e| format!("edge verdict: {e}"))
                });
            let (frame_id, captured_at, edge) = match parsed {
                Ok(p) => p,
                Err(reason) => {
                    unreadable.push((seq, reason));
                    continue;
                }
            };
            if exclude.contains(&frame_id) {
                continue;
            }
            // `alerted` in the buffer: the broker acknowledged its alert (`ack_alert`).
            out.push(Pending {
                meta: FrameMeta {
                    frame_id,
                    device_id: row.get(3)?,
                    facility: row.get(4)?,
                    line: row.get(5)?,
                    station: row.get(6)?,
                    sku: row.get(7)?,
                    part_id: row.get(8)?,
                    lot: row.get(9)?,
                    captured_at,
                    seq: seq as u64,
                    image_blake3: row.get(11)?,
                    edge,
                },
                camera: row.get(2)?,
                jpeg: row.get(12)?,
                attempts: row.get(13)?,
            });
        }
        Ok(out)
    }

    /// The cloud acknowledged `frame_id`: the frame leaves the buffer. Returns whether it was
    /// still there (an ack may arrive twice). When the delete fails the frame is remembered as
    /// acknowledged: [`Buffer::pending`] skips it and [`Buffer::retry_acked`] deletes it later.
    pub fn ack(&self, frame_id: Uuid) -> Result<bool, BufferError> {
        let deleted = self.conn().execute(
            "DELETE FROM frames WHERE frame_id = ?1",
            [frame_id.to_string()],
        );
        match deleted {
            Ok(n) => {
                self.faults.deleted(frame_id);
                Ok(n > 0)
            }
            Err(e) => {
                self.faults.remember_acked(frame_id);
                Err(e.into())
            }
        }
    }

    /// Deletes the acknowledged frames whose delete failed before; returns how many are
    /// still there.
    pub fn retry_acked(&self) -> usize {
        self.faults
            .acked()
            .into_iter()
            .filter(|id| self.ack(*id).is_err())
            .count()
    }

    /// A retryable failure: counts the attempt and keeps the reason for the fleet view.
    pub fn record_failure(&self, frame_id: Uuid, reason: &str) -> Result<(), BufferError> {
        self.conn().execute(
            "UPDATE frames SET attempts = attempts + 1, last_error = ?2 WHERE frame_id = ?1",
            params![frame_id.to_string(), reason],
        )?;
        Ok(())
    }

    /// A permanent rejection: the frame moves to `dead_letters`, kept with the reason.
    pub fn dead_letter(
        &self,
        frame_id: Uuid,
        status: u16,
        reason: &str,
    ) -> Result<(), BufferError> {
        let mut conn = self.conn();
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM frames WHERE frame_id = ?1",
                [frame_id.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        match seq {
            Some(seq) => move_to_dead_letters(&mut conn, seq, status, reason),
            None => Ok(()),
        }
    }

    /// The newest `limit` dead letters, newest first (the fleet view lists them).
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BufferError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT frame_id, seq, camera, status, reason, length(jpeg), rejected_at
             FROM dead_letters ORDER BY rejected_at DESC, seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            let frame_id: String = r.get(0)?;
            let at: String = r.get(6)?;
            Ok(DeadLetter {
                // Written by this module from a Uuid and `to_rfc3339`; a damaged row still
                // lists, with the nil id or the epoch.
                frame_id: Uuid::parse_str(&frame_id).unwrap_or_default(),
                seq: r.get::<_, i64>(1)? as u64,
                camera_id: r.get(2)?,
                status: r.get(3)?,
                reason: r.get(4)?,
                bytes: r.get::<_, i64>(5)? as u64,
                at: DateTime::parse_from_rfc3339(&at)
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a dead letter back into the upload queue, under its own `frame_id` and `seq`
    /// (an operator fixed what the cloud refused). Whether it was there.
    pub fn requeue(&self, frame_id: Uuid) -> Result<bool, BufferError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(jpeg_bytes) = tx
            .query_row(
                "SELECT length(jpeg) FROM dead_letters WHERE frame_id = ?1",
                [frame_id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
        else {
            return Ok(false);
        };
        // Back under the buffer's limits like a new frame (a full buffer evicts or refuses);
        // the dead letter's own pages are freed in the same transaction.
        let needed = jpeg_bytes.max(0) as u64 + ROW_OVERHEAD;
        let room = self.make_room(&tx, needed, needed)?;
        tx.execute(
            "INSERT INTO frames (seq, frame_id, camera, device_id, facility, line, station, sku,
                                 part_id, lot, captured_at, image_blake3, jpeg, bytes, ng, edge,
                                 inserted_ms, unalerted)
             SELECT seq, frame_id, camera, meta_json ->> 'device_id', meta_json ->> 'facility',
                    meta_json ->> 'line', meta_json ->> 'station', meta_json ->> 'sku',
                    meta_json ->> 'part_id', meta_json ->> 'lot', meta_json ->> 'captured_at',
                    meta_json ->> 'image_blake3', jpeg, ?2,
                    coalesce(meta_json ->> '$.edge.defect_detected', 0), meta_json ->> 'edge', ?3,
                    coalesce(meta_json ->> '$.edge.defect_detected', 0)
                        AND NOT coalesce(meta_json ->> '$.edge.alerted', 0)
             FROM dead_letters WHERE frame_id = ?1",
            params![
                frame_id.to_string(),
                needed as i64,
                Utc::now().timestamp_millis()
            ],
        )?;
        tx.execute(
            "DELETE FROM dead_letters WHERE frame_id = ?1",
            [frame_id.to_string()],
        )?;
        tx.commit()?;
        if room.evicted > 0 {
            tracing::warn!(%frame_id, evicted = room.evicted, "frames evicted to requeue a dead letter");
        }
        Ok(true)
    }

    pub fn stats(&self) -> Result<Stats, BufferError> {
        let conn = self.conn();
        let (frames, bytes): (i64, i64) =
            conn.query_row("SELECT frames, bytes FROM usage", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let oldest: Option<String> = conn
            .query_row(
                "SELECT captured_at FROM frames ORDER BY seq ASC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let dead_letters: i64 =
            conn.query_row("SELECT count(*) FROM dead_letters", [], |r| r.get(0))?;
        let counter = |name: &str| {
            conn.query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                r.get::<_, i64>(0)
            })
        };
        let evicted_total = counter("evicted")?;
        let alerts_dropped_total = counter("alerts_dropped")?;
        let alerts_queued: i64 = conn.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))?;
        let (unalerted_frames, unalerted_bytes) = Self::unalerted(&conn)?;
        let mut stmt = conn.prepare_cached(
            "SELECT camera, count(*) FROM frames GROUP BY camera ORDER BY camera",
        )?;
        let by_camera = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?
            .collect::<Result<_, _>>()?;
        Ok(Stats {
            frames: frames as u64,
            bytes: bytes as u64,
            oldest_captured_at: oldest
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc)),
            dead_letters: dead_letters as u64,
            evicted_total: evicted_total as u64,
            by_camera,
            alerts_queued: alerts_queued as u64,
            alerts_dropped_total: alerts_dropped_total as u64,
            unalerted_frames,
            unalerted_bytes,
        })
    }
}

/// Why a frame of `needed` bytes is refused when evicting every evictable frame leaves `free`
/// bytes: the NG frames nobody has alerted (`frames` of them, `bytes`) when evicting them
/// would have made room, otherwise `refused` (the buffer or the disk is too small for it
/// whatever is evicted).
fn refusal(
    needed: u64,
    free: i64,
    frames: u64,
    bytes: u64,
    refused: impl FnOnce() -> BufferError,
) -> BufferError {
    if frames > 0 && free.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX)) >= needed as i64
    {
        BufferError::NgUnalerted {
            needed,
            frames,
            bytes,
        }
    } else {
        refused()
    }
}

/// Moves row `seq` from `frames` to `dead_letters` in one transaction.
fn move_to_dead_letters(
    conn: &mut Connection,
    seq: i64,
    status: u16,
    reason: &str,
) -> Result<(), BufferError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO dead_letters (frame_id, seq, camera, meta_json, jpeg, status, reason, rejected_at)
         SELECT frame_id, seq, camera,
                json_object('device_id', device_id, 'facility', facility, 'line', line,
                            'station', station, 'sku', sku, 'part_id', part_id, 'lot', lot,
                            'captured_at', captured_at, 'image_blake3', image_blake3,
                            'edge', json(edge)),
                jpeg, ?2, ?3, ?4
         FROM frames WHERE seq = ?1",
        params![seq, status, reason, Utc::now().to_rfc3339()],
    )?;
    tx.execute("DELETE FROM frames WHERE seq = ?1", [seq])?;
    tx.commit()?;
    Ok(())
}

/// Adds the `edge`, `inserted_ms` and `unalerted` columns to a buffer written before edge
/// analysis, the alert's grace or the unalerted mark (the schema file creates them in a new
/// one).
fn add_edge_columns(conn: &Connection) -> Result<(), rusqlite::Error> {
    for (column, ty) in [
        ("edge", "TEXT"),
        ("inserted_ms", "INTEGER"),
        ("unalerted", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        let has: bool = conn.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('frames') WHERE name = ?1",
            [column],
            |r| r.get(0),
        )?;
        if !has {
            conn.execute(&format!("ALTER TABLE frames ADD COLUMN {column} {ty}"), [])?;
        }
    }
    Ok(())
}

/// The one-time steps up to [`SCHEMA_VERSION`], in one transaction. To 1: the `alerted` mark
/// was set when the alert was queued, it is now set by its acknowledgement, so a frame whose
/// alert is still queued loses it, and so does every dead letter (whether its alert was
/// acknowledged or dropped is not known: the cloud alerts the part, at worst a duplicate).
/// To 2: an NG frame not marked `alerted` is marked `unalerted` (never evicted), and eviction
/// reads the evictable frames in its order from an index.
fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if version < 1 {
        tx.execute(
            "UPDATE frames SET edge = json_set(edge, '$.alerted', json('false'))
             WHERE edge IS NOT NULL AND frame_id IN (SELECT frame_id FROM alerts)",
            [],
        )?;
        tx.execute(
            "UPDATE dead_letters SET meta_json = json_set(meta_json, '$.edge.alerted', json('false'))
             WHERE json_type(meta_json, '$.edge') = 'object'",
            [],
        )?;
    }
    if version < 2 {
        tx.execute(
            "UPDATE frames SET unalerted = 1
             WHERE ng = 1 AND NOT coalesce(edge ->> '$.alerted', 0)",
            [],
        )?;
        tx.execute(
            "CREATE INDEX IF NOT EXISTS frames_eviction ON frames (unalerted, ng, seq, bytes)",
            [],
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Moves a corrupt database (and its WAL and shared-memory files) aside.
fn quarantine(path: &Path) -> Result<PathBuf, BufferError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S");
    let aside = path.with_extension(format!("corrupt-{stamp}"));
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if side.exists() {
            let mut to = aside.as_os_str().to_owned();
            to.push(suffix);
            std::fs::rename(&side, PathBuf::from(to))?;
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests;
