//! `wiko-cloud backup` and `restore` for the embedded backend (the SQLite file and the image
//! directory). PostgreSQL and S3 are backed up with their own tools (README: pg_dump or PITR,
//! bucket versioning).
//!
//! Backup runs beside a serving cloud. The database is copied first, as one consistent
//! snapshot (`VACUUM INTO`); the images after. Every image is durable before the row that names
//! it commits, so every image the snapshot names is in the files copied after it; a record
//! being appended while a segment is copied is cut off as a torn tail when the copy is opened.
//! Both commands end by checking that every image the database names is present.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;
use serde::Serialize;
use tracing::info;

use crate::store::segments::SegmentLog;

const DB: &str = "wiko.db";
const SEGMENTS: &str = "segments";
/// Images that versions before the segment log wrote one file per key (their keys start with
/// this directory's name).
const LEGACY_IMAGES: &str = "images";
const MANIFEST: &str = "backup.json";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not empty: back up into a new directory, restore into an empty data_dir")]
    NotEmpty(PathBuf),
    #[error("{0} holds no embedded store (no {DB})")]
    NoStore(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("{missing} of {total} images named by the database are missing, first: {first}")]
    Incomplete {
        missing: usize,
        total: usize,
        first: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a backup or restore holds, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub analyses: u64,
    pub golden_samples: u64,
    pub images: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Copies the embedded store in `data_dir` into the new directory `out`.
pub fn backup(data_dir: &Path, out: &Path) -> Result<Summary, BackupError> {
    let started = Instant::now();
    let db = data_dir.join(DB);
    if !db.exists() {
        return Err(BackupError::NoStore(data_dir.to_path_buf()));
    }
    prepare_empty(out)?;
    let conn = Connection::open(&db)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let snapshot = out.join(DB);
    conn.execute("VACUUM INTO ?1", [snapshot.to_string_lossy()])?;
    info!(path = %snapshot.display(), "database snapshot written");
    let bytes = copy_images(data_dir, out)?;
    let summary = check(out, started, bytes)?;
    let manifest = out.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other);
    std::fs::write(&manifest, text.map_err(io(&manifest))?).map_err(io(&manifest))?;
    Ok(summary)
}

/// Copies a backup into `data_dir`, which must hold no store yet; the cloud must be stopped.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Summary, BackupError> {
    let started = Instant::now();
    if !from.join(DB).exists() {
        return Err(BackupError::NoStore(from.to_path_buf()));
    }
    if data_dir.join(DB).exists() {
        return Err(BackupError::NotEmpty(data_dir.to_path_buf()));
    }
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let bytes = copy_images(from, data_dir)?;
    // The database last: a restore cut short leaves no database naming missing images.
    let db = data_dir.join(DB);
    let partial = data_dir.join("wiko.db.restoring");
    std::fs::copy(from.join(DB), &partial).map_err(io(&partial))?;
    sync(&partial)?;
    std::fs::rename(&partial, &db).map_err(io(&db))?;
    check(data_dir, started, bytes)
}

fn prepare_empty(dir: &Path) -> Result<(), BackupError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(dir.to_path_buf()));
        }
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

fn sync(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Copies the segment files and the legacy image tree; returns the bytes copied.
fn copy_images(from: &Path, to: &Path) -> Result<u64, BackupError> {
    let mut bytes = 0;
    for sub in [SEGMENTS, LEGACY_IMAGES] {
        let src = from.join(sub);
        if src.exists() {
            bytes += copy_tree(&src, &to.join(sub))?;
        }
    }
    Ok(bytes)
}

fn copy_tree(src: &Path, dst: &Path) -> Result<u64, BackupError> {
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(io(src))?
        .collect::<Result<_, _>>()
        .map_err(io(src))?;
    entries.sort_by_key(|e| e.file_name());
    let mut bytes = 0;
    for entry in entries {
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry.file_type().map_err(io(&from))?.is_dir() {
            bytes += copy_tree(&from, &to)?;
        } else {
            let n = std::fs::copy(&from, &to).map_err(io(&from))?;
            sync(&to)?;
            info!(file = %to.display(), bytes = n, "copied");
            bytes += n;
        }
    }
    Ok(bytes)
}

/// Checks that every image the database in `dir` names is in its image directory (a
/// segment-log record only if its data matches its digest).
fn check(dir: &Path, started: Instant, bytes: u64) -> Result<Summary, BackupError> {
    let conn = Connection::open(dir.join(DB))?;
    let count = |table: &str| -> Result<u64, rusqlite::Error> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
    };
    let segments = dir.join(SEGMENTS);
    let log = SegmentLog::open(&segments).map_err(io(&segments))?;
    // Streamed: a store's keys are not all held in memory at once.
    let (mut total, mut missing, mut first) = (0usize, 0usize, None);
    let mut stmt =
        conn.prepare("SELECT image_key FROM analyses UNION SELECT image_key FROM golden_samples")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        total += 1;
        if !log.contains(&key).map_err(io(&segments))? && !dir.join(&key).is_file() {
            missing += 1;
            first.get_or_insert(key);
        }
    }
    if let Some(first) = first {
        return Err(BackupError::Incomplete {
            missing,
            total,
            first,
        });
    }
    Ok(Summary {
        analyses: count("analyses")?,
        golden_samples: count("golden_samples")?,
        images: total,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
