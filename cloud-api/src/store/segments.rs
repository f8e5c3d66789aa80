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
        let seq = {
            let mut state = lock(&self.state);
            match state.index.get(key) {
                Some(loc) => loc.seq,
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
                    };
                    state.index.insert(key.to_string(), loc);
                    loc.seq
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

    /// The data of `key`, checked against its digest; `None` if the key is not in the log.
    pub fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        let Some(loc) = lock(&self.state).index.get(key).copied() else {
            return Ok(None);
        };
        let file = File::open(segment_path(&self.dir, loc.segment))?;
        let mut data = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut data, loc.offset)?;
        let mut digest = [0u8; 32];
        file.read_exact_at(&mut digest, loc.offset - (key.len() + 32) as u64)?;
        if blake3::hash(&data).as_bytes() != &digest {
            return Err(std::io::Error::other(format!(
                "image {key} is damaged in segment {}",
                loc.segment
            )));
        }
        Ok(Some(data))
    }

    pub fn contains(&self, key: &str) -> bool {
        lock(&self.state).index.contains_key(key)
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
    fn damaged_bytes_are_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path()).unwrap();
        log.put("k", b"0123456789").unwrap();
        let path = segment_path(dir.path(), 1);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        file.write_all_at(b"X", size - 3).unwrap();
        assert!(log.get("k").is_err());
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
