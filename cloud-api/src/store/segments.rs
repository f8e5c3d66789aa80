//! An append-only segment log for images: many images per file, one `fdatasync` for all the
//! images written while the previous one ran (group sync). Creating, fsyncing and renaming one
//! file per image cost about half the ingest throughput; appending costs a copy.
//!
//! Record: `WKBLOB01`, key length (u16 LE), data length (u32 LE), BLAKE3 of the data (32
//! bytes), the key, the data. Segments are `segments/seg-00000001.log`, …, each up to
//! [`SEGMENT_BYTES`]. The key → location index lives in memory and is rebuilt by reading the
//! record headers at start. A crash can only tear the tail of the last segment (records are
//! appended in order); the scan stops at the first incomplete record and the file is cut there.
//! Nothing torn was ever acknowledged: `put` returns only after a sync that covers its record.
//!
//! A power loss can also keep a record's header but not its data (zeros, or old blocks). A
//! record found by the scan is therefore unverified until its data has been read and matched
//! against its BLAKE3 (lazily: on the first `get`, `contains` or `put` of its key, so a start
//! reads headers only). A record that does not match is quarantined: dropped from the index
//! (logged and counted), so the key is absent and the next `put` of it appends a good record,
//! which a later scan prefers (the last record of a key wins).
//!
//! Blocking: call from a blocking thread.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const MAGIC: &[u8; 8] = b"WKBLOB01";
const HEADER: usize = 8 + 2 + 4 + 32;
/// A segment is closed (fsynced, never written again) once it reaches this size.
pub const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u32,
    offset: u64,
    len: u32,
    /// Write sequence number: the record is durable once `synced >= seq`.
    seq: u64,
    /// The data matched its digest (or was written by this process).
    verified: bool,
}

impl Location {
    fn same_record(&self, other: &Location) -> bool {
        (self.segment, self.offset) == (other.segment, other.offset)
    }
}

struct Active {
    id: u32,
    file: File,
    len: u64,
}

struct State {
    index: HashMap<String, Location>,
    active: Active,
    /// Records appended so far (sequence numbers).
    written: u64,
}

pub struct SegmentLog {
    dir: PathBuf,
    state: Mutex<State>,
    /// Sequence number covered by the last completed sync; the lock also makes one thread at a
    /// time the sync leader.
    synced: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent before it can panic (index entries
    // are inserted after their bytes are written).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:08}.log"))
}

impl SegmentLog {
    /// Opens the log in `dir`, indexing every complete record.
    pub fn open(dir: &Path) -> std::io::Result<SegmentLog> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u32> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect();
        ids.sort_unstable();
        let mut index = HashMap::new();
        let mut last = None;
        for &id in &ids {
            let path = segment_path(dir, id);
            let end = scan(&path, id, &mut index)?;
            last = Some((id, end));
        }
        let active = match last {
            Some((id, end)) if end < SEGMENT_BYTES => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(segment_path(dir, id))?;
                // Cut a torn tail: it was never acknowledged.
                file.set_len(end)?;
                file.sync_all()?;
                Active { id, file, len: end }
            }
            Some((id, _)) => new_segment(dir, id + 1)?,
            None => new_segment(dir, 1)?,
        };
        Ok(SegmentLog {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                index,
                active,
                written: 0,
            }),
            synced: Mutex::new(0),
        })
    }

    /// Appends `data` under `key` and returns once it is on disk. A key already stored is not
    /// written again (keys are content-addressed), but the call still waits until that record
    /// is durable.
    pub fn put(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        let key_len = u16::try_from(key.len()).map_err(|_| invalid("key too long"))?;
        let data_len = u32::try_from(data.len()).map_err(|_| invalid("image too large"))?;
        let digest = blake3::hash(data);
        let seq = loop {
            let mut state = lock(&self.state);
            match state.index.get(key).copied() {
                Some(loc) if loc.verified => break loc.seq,
                Some(loc) => {
                    // Found by the scan: check it before trusting it; a damaged record is
                    // dropped from the index and the loop appends a good one.
                    drop(state);
                    self.read_verified(key, loc)?;
                }
                None => {
                    if state.active.len >= SEGMENT_BYTES {
                        // Close the full segment durably before writing to the next.
                        state.active.file.sync_data()?;
                        let next = new_segment(&self.dir, state.active.id + 1)?;
                        state.active = next;
                    }
                    // Header and key, then the data in place: no copy of the image.
                    let mut head = Vec::with_capacity(HEADER + key.len());
                    head.extend_from_slice(MAGIC);
                    head.extend_from_slice(&key_len.to_le_bytes());
                    head.extend_from_slice(&data_len.to_le_bytes());
                    head.extend_from_slice(digest.as_bytes());
                    head.extend_from_slice(key.as_bytes());
                    let offset = state.active.len;
                    state.active.file.write_all_at(&head, offset)?;
                    state
                        .active
                        .file
                        .write_all_at(data, offset + head.len() as u64)?;
                    state.active.len += (head.len() + data.len()) as u64;
                    state.written += 1;
                    let loc = Location {
                        segment: state.active.id,
                        offset: offset + (HEADER + key.len()) as u64,
                        len: data_len,
                        seq: state.written,
                        verified: true,
                    };
                    state.index.insert(key.to_string(), loc);
                    break loc.seq;
                }
            }
        };
        self.sync_through(seq)
    }

    /// Group sync: the first waiter syncs everything written so far; the others find their
    /// record covered when they get the lock.
    fn sync_through(&self, seq: u64) -> std::io::Result<()> {
        let mut synced = lock(&self.synced);
        if *synced >= seq {
            return Ok(());
        }
        let (file, target) = {
            let state = lock(&self.state);
            (state.active.file.try_clone()?, state.written)
        };
        file.sync_data()?;
        *synced = target;
        Ok(())
    }

    /// The data of `key`, checked against its digest; `None` if the key is not in the log or
    /// its record is damaged (then quarantined).
    pub fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let Some(loc) = lock(&self.state).index.get(key).copied() else {
                return Ok(None);
            };
            if let Some(data) = self.read_verified(key, loc)? {
                return Ok(Some(data));
            }
            // Quarantined, unless a `put` replaced it meanwhile: look again.
        }
    }

    /// Whether the log holds a good record of `key` (its data is read and checked once).
    pub fn contains(&self, key: &str) -> std::io::Result<bool> {
        loop {
            let Some(loc) = lock(&self.state).index.get(key).copied() else {
                return Ok(false);
            };
            if loc.verified || self.read_verified(key, loc)?.is_some() {
                return Ok(true);
            }
        }
    }

    /// Reads the record at `loc` and checks it against its digest. A match marks it verified;
    /// a mismatch quarantines it (the key leaves the index) and gives `None`.
    fn read_verified(&self, key: &str, loc: Location) -> std::io::Result<Option<Vec<u8>>> {
        let file = File::open(segment_path(&self.dir, loc.segment))?;
        let mut data = vec![0u8; loc.len as usize];
        let mut digest = [0u8; 32];
        let read = file
            .read_exact_at(&mut data, loc.offset)
            .and_then(|()| file.read_exact_at(&mut digest, loc.offset - (key.len() + 32) as u64));
        let good = match read {
            Ok(()) => blake3::hash(&data).as_bytes() == &digest,
            // Shorter than its header says: cut under a running log, as damaged as zeros.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
            Err(e) => return Err(e),
        };
        let mut state = lock(&self.state);
        let current = state.index.get_mut(key);
        let same = current.as_ref().is_some_and(|c| c.same_record(&loc));
        if good {
            if let Some(current) = current.filter(|_| same) {
                current.verified = true;
            }
            return Ok(Some(data));
        }
        if same {
            state.index.remove(key);
            metrics::counter!(crate::telemetry::IMAGES_DAMAGED_TOTAL).increment(1);
            tracing::error!(
                key,
                segment = loc.segment,
                offset = loc.offset,
                "an image record does not match its digest: quarantined, the next upload of it rewrites it"
            );
        }
        Ok(None)
    }

    /// Records held.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).index.len()
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string())
}

fn new_segment(dir: &Path, id: u32) -> std::io::Result<Active> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, id))?;
    File::open(dir)?.sync_all()?;
    Ok(Active { id, file, len: 0 })
}

/// Indexes the complete records of one segment; returns where the complete records end.
fn scan(path: &Path, id: u32, index: &mut HashMap<String, Location>) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    loop {
        if offset + HEADER as u64 > size {
            return Ok(offset);
        }
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut header)?;
        if &header[..8] != MAGIC {
            return Ok(offset);
        }
        let key_len = u16::from_le_bytes([header[8], header[9]]) as u64;
        let data_len = u32::from_le_bytes([header[10], header[11], header[12], header[13]]);
        let end = offset + HEADER as u64 + key_len + u64::from(data_len);
        if end > size {
            return Ok(offset);
        }
        let mut key = vec![0u8; key_len as usize];
        file.read_exact(&mut key)?;
        let Ok(key) = String::from_utf8(key) else {
            return Ok(offset);
        };
        index.insert(
            key,
            Location {
                segment: id,
                offset: offset + HEADER as u64 + key_len,
                len: data_len,
                seq: 0,
                verified: false,
            },
        );
        offset = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_survive_a_reopen_and_a_key_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        log.put("images/a.jpg", b"first image").unwrap();
        log.put("images/b.jpg", b"second").unwrap();
        log.put("images/a.jpg", b"first image").unwrap();
        assert_eq!(log.len(), 2);
        drop(log);
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(log.get("images/a.jpg").unwrap().unwrap(), b"first image");
        assert_eq!(log.get("images/b.jpg").unwrap().unwrap(), b"second");
        assert_eq!(log.get("images/none.jpg").unwrap(), None);
        log.put("images/c.jpg", b"third").unwrap();
        assert_eq!(log.get("images/c.jpg").unwrap().unwrap(), b"third");
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        log.put("k1", b"complete").unwrap();
        log.put("k2", b"torn by a crash").unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let size = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(size - 4)
            .unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(log.get("k1").unwrap().unwrap(), b"complete");
        assert_eq!(log.get("k2").unwrap(), None, "the torn record is gone");
        log.put("k2", b"torn by a crash").unwrap();
        drop(log);
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(log.get("k2").unwrap().unwrap(), b"torn by a crash");
    }

    #[test]
    fn damaged_bytes_are_never_served_and_a_new_put_repairs_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        log.put("k", b"0123456789").unwrap();
        let path = segment_path(dir.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        file.write_all_at(b"X", size - 3).unwrap();
        assert_eq!(log.get("k").unwrap(), None, "damaged: absent");
        assert!(!log.contains("k").unwrap());
        log.put("k", b"0123456789").unwrap();
        assert_eq!(log.get("k").unwrap().unwrap(), b"0123456789");
        drop(log);
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(
            log.get("k").unwrap().unwrap(),
            b"0123456789",
            "the new record wins"
        );
    }

    // See: issue #19
    #[test]
    fn a_record_whose_data_was_zeroed_by_a_power_loss_is_rewritten_by_the_next_upload() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        log.put("good", b"kept as it was").unwrap();
        log.put("zeroed", &[7u8; 4096]).unwrap();
        drop(log);
        // The header survived, the data blocks did not.
        let path = segment_path(dir.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        file.write_all_at(&[0u8; 4096], size - 4096).unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 2, "the scan reads headers only");
        // The upload that follows (the agent retries: it was never acknowledged) is written.
        log.put("zeroed", &[7u8; 4096]).unwrap();
        assert_eq!(log.get("zeroed").unwrap().unwrap(), [7u8; 4096]);
        assert_eq!(log.get("good").unwrap().unwrap(), b"kept as it was");
        assert!(
            std::fs::metadata(&path).unwrap().len() > size,
            "appended again"
        );
        drop(log);
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(log.get("zeroed").unwrap().unwrap(), [7u8; 4096]);
    }

    /// Power loss, seeded many times over: the segment's tail is cut, zeroed, or only the data
    /// of the last records is zeroed (their headers survived), at a random offset. A record
    /// wholly before the damage is served as written; nothing damaged is ever served; putting
    /// every image again (the agents retry what was not acknowledged) repairs the log for good.
    // See: issue #19
    #[test]
    fn torn_tails_never_serve_a_damaged_image_and_a_reupload_repairs_it() {
        use rand::{Rng, SeedableRng};
        let live = tempfile::tempdir().unwrap();
        let mut images = Vec::new();
        {
            let log = SegmentLog::open(live.path()).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(19);
            for i in 0..40 {
                let data: Vec<u8> = (0..rng.random_range(1..4000))
                    .map(|_| rng.random())
                    .collect();
                let key = format!("20261206/{i:03}.jpg");
                log.put(&key, &data).unwrap();
                let end = lock(&log.state).active.len;
                images.push((key, data, end));
            }
        }
        let segment = std::fs::read(segment_path(live.path(), 1)).unwrap();
        for seed in 0..100u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let cut = rng.random_range(0..=segment.len());
            let mut torn = segment.clone();
            let how = match rng.random_range(0..3) {
                0 => {
                    torn.truncate(cut);
                    "cut"
                }
                1 => {
                    torn[cut..].fill(0);
                    "zeroed"
                }
                _ => {
                    // Headers kept, data lost: every record's data from `cut` on is zeroed.
                    for (_, data, end) in &images {
                        let end = *end as usize;
                        if end > cut {
                            torn[(end - data.len()).max(cut)..end].fill(0);
                        }
                    }
                    "data zeroed"
                }
            };
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(segment_path(dir.path(), 1), &torn).unwrap();
            let log = SegmentLog::open(dir.path()).unwrap();
            for (key, data, end) in &images {
                match log.get(key).unwrap() {
                    Some(got) => assert_eq!(&got, data, "seed {seed}: {how} at {cut}: {key}"),
                    None => assert!(
                        *end as usize > cut,
                        "seed {seed}: {how} at {cut}: {key}, whole before the cut, is gone"
                    ),
                }
            }
            for (key, data, _) in &images {
                log.put(key, data).unwrap();
            }
            drop(log);
            let log = SegmentLog::open(dir.path()).unwrap();
            for (key, data, _) in &images {
                assert_eq!(
                    log.get(key).unwrap().as_ref(),
                    Some(data),
                    "seed {seed}: {how} at {cut}: {key} after the re-upload"
                );
            }
        }
    }

    #[test]
    fn concurrent_puts_share_syncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(SegmentLog::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let data = format!("image {t}-{i}").repeat(100);
                        log.put(&format!("k/{t}/{i}"), data.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(log);
        let log = SegmentLog::open(dir.path()).unwrap();
        assert_eq!(log.len(), 400);
        assert_eq!(
            log.get("k/7/49").unwrap().unwrap(),
            "image 7-49".repeat(100).as_bytes()
        );
    }
}
