//! Buffer write throughput: `cargo bench -p wiko-agent --bench buffer [-- --frames N]`
//!
//! In one run, for 200 KB frames: `Buffer::insert` (BLAKE3 of the JPEG, size check, insert,
//! usage trigger, commit) next to a raw rusqlite insert of the same blob into a one-table
//! database with the same pragmas, one transaction per frame in both, for `synchronous` FULL
//! (fsync per frame) and NORMAL.

use std::time::Instant;

use chrono::Utc;
use rusqlite::{Connection, params};
use uuid::Uuid;
use wiko_agent::buffer::{Buffer, Limits, NewFrame};
use wiko_agent::config::{Synchronous, WhenFull};

const FRAME_BYTES: usize = 200 * 1024;

#[derive(clap::Parser)]
struct Args {
    /// Frames written per run.
    #[arg(long, default_value_t = 1000)]
    frames: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn blob(i: usize) -> Vec<u8> {
    let mut b = vec![0u8; FRAME_BYTES];
    let mut s = i as u64 | 1;
    for chunk in b.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let bytes = s.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    b
}

fn raw(dir: &std::path::Path, sync: &str, blobs: &[Vec<u8>]) -> f64 {
    let conn = Connection::open(dir.join(format!("raw-{sync}.db"))).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", sync).expect("sync");
    conn.execute_batch("CREATE TABLE frames (seq INTEGER PRIMARY KEY AUTOINCREMENT, frame_id TEXT NOT NULL UNIQUE, jpeg BLOB NOT NULL)")
        .expect("schema");
    let start = Instant::now();
    for b in blobs {
        conn.execute(
            "INSERT INTO frames (frame_id, jpeg) VALUES (?1, ?2)",
            params![Uuid::now_v7().to_string(), b],
        )
        .expect("insert");
    }
    blobs.len() as f64 / start.elapsed().as_secs_f64()
}

fn buffer(dir: &std::path::Path, sync: Synchronous, blobs: &[Vec<u8>]) -> f64 {
    let limits = Limits {
        max_disk_bytes: 1 << 40,
        min_free_bytes: wiko_agent::config::MIN_FREE_BYTES,
        when_full: WhenFull::DropOldest,
        synchronous: sync,
    };
    let (b, _) = Buffer::open(&dir.join(format!("buffer-{sync:?}.db")), limits).expect("open");
    let start = Instant::now();
    for (i, jpeg) in blobs.iter().enumerate() {
        b.insert(&NewFrame {
            frame_id: Uuid::now_v7(),
            camera: "cam".into(),
            device_id: "bench".into(),
            facility: "yangjiang".into(),
            line: "l1".into(),
            station: "grinding".into(),
            sku: "WK-KN-200".into(),
            part_id: Some(format!("P{i}")),
            lot: None,
            captured_at: Utc::now(),
            jpeg: jpeg.clone(),
            edge: None,
        })
        .expect("insert");
    }
    blobs.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n = <Args as clap::Parser>::parse().frames;
    let blobs: Vec<Vec<u8>> = (0..n).map(blob).collect();
    println!("| synchronous | raw rusqlite frames/s | Buffer::insert frames/s | ratio |");
    println!("|---|---|---|---|");
    for (name, sync) in [("FULL", Synchronous::Full), ("NORMAL", Synchronous::Normal)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let r = raw(dir.path(), name, &blobs);
        let ours = buffer(dir.path(), sync, &blobs);
        println!("| {name} | {r:.0} | {ours:.0} | {:.0}% |", 100.0 * ours / r);
    }
}
