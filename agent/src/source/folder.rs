//! The hot folder: an industrial camera writes one image file per part into a directory.
//!
//! A file is taken once its size and modification time stayed the same for `settle_ms` (the
//! camera finished writing it); a JPEG still lacking its end-of-image marker is left alone for
//! up to `incomplete_grace_secs` of no change, then rejected as truncated. A taken file is committed to the buffer first and moved to
//! `done_dir` after, so a crash in between captures it twice rather than never. A file that
//! does not decode is moved to `reject_dir`, logged and counted, never retried in a loop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use image::codecs::jpeg::JpegEncoder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wiko_inspect::DecodeLimits;

use super::{Capture, Context, store};
use crate::config::{CameraConfig, SourceConfig};
use crate::telemetry as names;

const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"];

/// What became of a ready file.
enum Taken {
    /// Buffered and moved to the done folder.
    Done,
    /// Buffered, but moving it failed: it must not be taken again.
    Stuck,
    /// Moved to the reject folder.
    Rejected,
    /// Not complete yet, or the buffer refused it: look again at the next poll.
    Later,
}

pub async fn run(cam: &CameraConfig, ctx: &Arc<Context>, shutdown: CancellationToken) {
    let SourceConfig::Folder {
        path,
        done_dir,
        reject_dir,
        settle_ms,
        poll_interval_ms,
        incomplete_grace_secs,
    } = &cam.source
    else {
        return;
    };
    let done = done_dir.clone().unwrap_or_else(|| path.join("done"));
    let rejected = reject_dir.clone().unwrap_or_else(|| path.join("rejected"));
    for dir in [path, &done, &rejected] {
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            warn!(dir = %dir.display(), error = %e, "cannot create the folder; retrying on each poll");
        }
    }
    let settle = Duration::from_millis(*settle_ms);
    let grace = Duration::from_secs(*incomplete_grace_secs);
    let mut seen: HashMap<PathBuf, (u64, SystemTime, std::time::Instant)> = HashMap::new();
    let mut stuck: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(*poll_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(path = %path.display(), "watching hot folder");
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let ready = match scan(path, &mut seen, settle).await {
            Ok(ready) => ready,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "listing the hot folder failed");
                continue;
            }
        };
        stuck.retain(|p| seen.contains_key(p));
        for (file, unchanged_for) in ready {
            if shutdown.is_cancelled() {
                return;
            }
            if stuck.contains(&file) {
                continue;
            }
            if let Taken::Stuck =
                take(cam, ctx, &file, &done, &rejected, unchanged_for >= grace).await
            {
                stuck.insert(file);
            }
        }
    }
}

/// Image files whose size and mtime have not changed for `settle`, with how long they have not.
async fn scan(
    dir: &Path,
    seen: &mut HashMap<PathBuf, (u64, SystemTime, std::time::Instant)>,
    settle: Duration,
) -> std::io::Result<Vec<(PathBuf, Duration)>> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut present = std::collections::HashSet::new();
    let mut ready = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        if !is_image || !meta.is_file() {
            continue;
        }
        let stamp = (
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        present.insert(path.clone());
        match seen.get(&path) {
            Some((len, mtime, since)) if (*len, *mtime) == stamp => {
                if since.elapsed() >= settle {
                    ready.push((path, since.elapsed()));
                }
            }
            _ => {
                seen.insert(path, (stamp.0, stamp.1, std::time::Instant::now()));
            }
        }
    }
    seen.retain(|p, _| present.contains(p));
    ready.sort();
    Ok(ready)
}

/// Reads, checks and buffers one file, then moves it aside. `stale` says the file has been
/// unchanged for the whole grace period, so an incomplete JPEG is given up on.
async fn take(
    cam: &CameraConfig,
    ctx: &Arc<Context>,
    file: &Path,
    done: &Path,
    rejected: &Path,
    stale: bool,
) -> Taken {
    let bytes = match tokio::fs::read(file).await {
        Ok(b) => b,
        Err(e) => {
            warn!(file = %file.display(), error = %e, "reading a hot-folder file failed; will retry");
            return Taken::Later;
        }
    };
    if !stale && wiko_inspect::decode::is_truncated_jpeg(&bytes) {
        debug!(file = %file.display(), "JPEG not complete yet; waiting");
        return Taken::Later;
    }
    let checked = tokio::task::spawn_blocking(move || to_jpeg(bytes)).await;
    let jpeg = match checked {
        Ok(Ok(jpeg)) => jpeg,
        Ok(Err(reason)) => {
            metrics::counter!(names::FILES_REJECTED_TOTAL, "camera" => cam.name.clone())
                .increment(1);
            warn!(file = %file.display(), %reason, "unreadable image moved to the reject folder");
            return if move_into(file, rejected).await {
                Taken::Rejected
            } else {
                Taken::Stuck
            };
        }
        Err(e) => {
            warn!(file = %file.display(), error = %e, "checking a hot-folder file panicked");
            return if move_into(file, rejected).await {
                Taken::Rejected
            } else {
                Taken::Stuck
            };
        }
    };
    let part_id = file
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string);
    let part_id = part_id.filter(|p| wiko_wire::frame::validate_id("part_id", p).is_ok());
    if store(
        cam,
        ctx,
        Capture {
            part_id,
            ..Capture::jpeg(jpeg)
        },
    )
    .await
    .is_err()
    {
        return Taken::Later;
    }
    if move_into(file, done).await {
        Taken::Done
    } else {
        Taken::Stuck
    }
}

/// Quality of a JPEG re-encoded from another format.
const JPEG_QUALITY: u8 = 90;

/// JPEG bytes pass as they are (after a full decode check); other formats are re-encoded.
fn to_jpeg(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let limits = DecodeLimits::default();
    wiko_inspect::decode(&bytes, limits).map_err(|e| e.to_string())?;
    if image::guess_format(&bytes).is_ok_and(|f| f == image::ImageFormat::Jpeg) {
        return Ok(bytes);
    }
    let img = image::load_from_memory(&bytes)
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let mut jpeg = Vec::new();
    img.write_with_encoder(JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY))
        .map_err(|e| e.to_string())?;
    Ok(jpeg)
}

/// Moves a file into `dir`; false (logged) when that failed.
async fn move_into(file: &Path, dir: &Path) -> bool {
    let Some(name) = file.file_name() else {
        return false;
    };
    let target = dir.join(name);
    match tokio::fs::rename(file, &target).await {
        Ok(()) => true,
        Err(e) => {
            warn!(file = %file.display(), to = %target.display(), error = %e, "moving a hot-folder file failed; it will not be taken again");
            false
        }
    }
}
