//! Power loss, many times over (seeded): the buffer's files are copied while it runs, as a
//! power cut leaves them, the write-ahead log is cut or its tail zeroed at a random offset, and
//! the copy is opened again. SQLite replays the log up to the last whole commit, so the buffer
//! must hold exactly what it held after some operation: every frame whose insert was durable
//! before the cut is there unless its acknowledgement was durable too, and nothing else.

use std::collections::BTreeSet;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;
use wiko_agent::buffer::{Buffer, Limits, NewFrame};
use wiko_agent::config::{Synchronous, WhenFull};

const ITERATIONS: u64 = 120;

fn limits() -> Limits {
    Limits {
        max_disk_bytes: 1 << 30,
        min_free_bytes: 0,
        when_full: WhenFull::DropOldest,
        synchronous: Synchronous::Full,
    }
}

fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len())
}

fn frames(buffer: &Buffer) -> BTreeSet<Uuid> {
    buffer
        .pending(100_000, &[])
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(
                p.meta.image_blake3,
                wiko_wire::frame::image_digest(&p.jpeg),
                "a frame came back with other bytes"
            );
            p.meta.frame_id
        })
        .collect()
}

// See: issue #19
#[test]
fn a_torn_write_ahead_log_reopens_to_a_state_the_buffer_really_had() {
    let live = tempfile::tempdir().unwrap();
    let db = live.path().join("buffer.db");
    let (buffer, _) = Buffer::open(&db, limits()).unwrap();
    // After each operation: the log's length and the frames held. Few and small enough that
    // no checkpoint runs (fewer than 1,000 pages), so the whole history is in the log.
    let mut history = vec![(wal_len(&db), BTreeSet::new())];
    let mut held = BTreeSet::new();
    let mut rng = StdRng::seed_from_u64(19);
    for i in 0..80u32 {
        if held.is_empty() || rng.random_bool(0.7) {
            let f = NewFrame {
                part_id: Some(format!("P{i}")),
                ..crate::frame(
                    (0..rng.random_range(200..3000))
                        .map(|_| rng.random())
                        .collect(),
                    Some(crate::verdict(rng.random_bool(0.2))),
                )
            };
            buffer.insert(&f).unwrap();
            held.insert(f.frame_id);
        } else {
            let id = *held.iter().nth(rng.random_range(0..held.len())).unwrap();
            assert!(buffer.ack(id).unwrap());
            held.remove(&id);
        }
        history.push((wal_len(&db), held.clone()));
    }
    assert!(
        history.windows(2).all(|w| w[0].0 <= w[1].0),
        "no checkpoint ran"
    );
    // The files as a power cut leaves them (the shared-memory index is rebuilt on open).
    let main = std::fs::read(&db).unwrap();
    let wal = std::fs::read(db.with_extension("db-wal")).unwrap();
    drop(buffer);

    for seed in 0..ITERATIONS {
        let mut rng = StdRng::seed_from_u64(seed);
        let cut = rng.random_range(0..=wal.len());
        let mut torn = wal.clone();
        let how = if rng.random_bool(0.5) {
            torn.truncate(cut);
            "cut"
        } else {
            torn[cut..].fill(0);
            "zeroed"
        };
        let copy = tempfile::tempdir().unwrap();
        let path = copy.path().join("buffer.db");
        std::fs::write(&path, &main).unwrap();
        std::fs::write(path.with_extension("db-wal"), &torn).unwrap();

        let (reopened, quarantined) = Buffer::open(&path, limits())
            .unwrap_or_else(|e| panic!("seed {seed}: {how} at {cut}: open failed: {e}"));
        assert_eq!(
            quarantined, None,
            "seed {seed}: a torn log tail is no corruption"
        );
        let expected = &history
            .iter()
            .rev()
            .find(|(len, _)| *len <= cut as u64)
            .map_or(&history[0].1, |(_, frames)| frames);
        assert_eq!(
            &frames(&reopened),
            *expected,
            "seed {seed}: log {how} at {cut} of {}",
            wal.len()
        );
        // And it keeps working.
        let extra = crate::frame(vec![1; 100], None);
        reopened.insert(&extra).unwrap();
        assert!(reopened.ack(extra.frame_id).unwrap());
    }
}

/// Zeros in the database file itself (a torn page after a checkpoint): the buffer opens,
/// quarantining the file when its check finds it corrupt, and reading it never panics: never
/// a crash loop.
#[test]
fn a_damaged_database_file_opens_or_is_quarantined_and_the_agent_goes_on() {
    let live = tempfile::tempdir().unwrap();
    let db = live.path().join("buffer.db");
    {
        let (buffer, _) = Buffer::open(&db, limits()).unwrap();
        for i in 0..40u8 {
            let f = crate::frame(vec![i; 5000], None);
            buffer.insert(&f).unwrap();
        }
    } // closed: checkpointed into the main file
    let main = std::fs::read(&db).unwrap();
    let mut quarantined = 0;
    for seed in 0..ITERATIONS {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut torn = main.clone();
        let start = rng.random_range(0..torn.len());
        let end = (start + rng.random_range(1..8192)).min(torn.len());
        torn[start..end].fill(0);
        let copy = tempfile::tempdir().unwrap();
        let path = copy.path().join("buffer.db");
        std::fs::write(&path, &torn).unwrap();
        let (buffer, aside) = Buffer::open(&path, limits())
            .unwrap_or_else(|e| panic!("seed {seed}: zeroed {start}..{end}: open failed: {e}"));
        quarantined += usize::from(aside.is_some());
        // Reading may find damage the quick check did not; it must not panic.
        let _ = buffer.pending(100, &[]);
        let _ = buffer.stats();
    }
    eprintln!("{quarantined} of {ITERATIONS} damaged files quarantined");
}
