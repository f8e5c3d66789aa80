//! The memory budget of image work: decoding and judging a part, verifying a large image at
//! ingest, fitting a golden set. The pixel limit caps pixels, not memory, and requests run at
//! once: without a budget, twenty 36-megapixel PNGs of 4 KB each take 8 GB. Each piece of work
//! reserves what its pixels will cost before it decodes anything and waits while the budget is
//! spent; work that could never fit is refused at once. The budget is shared by every request,
//! worker and fit of the process.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Peak bytes per pixel of decoding and judging one image (the decoder's buffers, the
/// analyzer's working images), measured on model format 9, plus what format 10's colour adds
/// (half-resolution chroma: 2 bytes a pixel kept; added, not measured).
pub const JUDGE_BYTES_PER_PIXEL: u64 = 18;
/// Bytes per pixel each image of a golden set holds while the set is fitted (kept decoded,
/// luma 4 and chroma 2, plus the fit's statistics).
pub const FIT_BYTES_PER_PIXEL: u64 = 8;
/// Peak bytes per pixel of decoding one image (the decoder's buffers beside the result: a
/// colour JPEG's YCbCr samples, 3 bytes, and their turned copy when EXIF says so).
pub const DECODE_BYTES_PER_PIXEL: u64 = 12;
/// Smallest budget accepted: one 1080p frame judged with room to spare.
pub const MIN_BUDGET: u64 = 256 * 1024 * 1024;

/// Accounted in KiB so that any budget fits a semaphore's permits.
const UNIT: u64 = 1024;

#[derive(Debug, thiserror::Error)]
#[error(
    "the work needs {needs_mb} MB, more than the server's memory budget of {budget_mb} MB \
     (analysis.memory_budget_bytes): send smaller images"
)]
pub struct TooLarge {
    pub needs_mb: u64,
    pub budget_mb: u64,
}

#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    units: u32,
}

/// Memory reserved until dropped.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        let units = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX);
        Budget {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// What judging an image of this size costs.
    pub fn judging(width: u32, height: u32) -> u64 {
        u64::from(width) * u64::from(height) * JUDGE_BYTES_PER_PIXEL
    }

    /// What fitting a set of images of these sizes costs: the set held decoded, and the
    /// largest image being decoded beside it.
    pub fn fitting(sizes: impl IntoIterator<Item = (u32, u32)>) -> u64 {
        let pixels: Vec<u64> = sizes
            .into_iter()
            .map(|(w, h)| u64::from(w) * u64::from(h))
            .collect();
        let largest = pixels.iter().copied().max().unwrap_or(0);
        pixels.iter().sum::<u64>() * FIT_BYTES_PER_PIXEL + largest * DECODE_BYTES_PER_PIXEL
    }

    /// Reserves `bytes`, waiting while other work holds the budget; refused at once if
    /// `bytes` is more than the whole budget.
    pub async fn reserve(&self, bytes: u64) -> Result<Reservation, TooLarge> {
        let units = bytes.div_ceil(UNIT).max(1);
        let too_large = || TooLarge {
            needs_mb: bytes.div_ceil(1 << 20),
            budget_mb: (u64::from(self.units) * UNIT) >> 20,
        };
        let units = u32::try_from(units).map_err(|_| too_large())?;
        if units > self.units {
            return Err(too_large());
        }
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| too_large())?;
        Ok(Reservation { _permit: permit })
    }
}

impl Reservation {
    /// Runs `work` on the blocking pool with this memory held until the work ends. The future
    /// awaiting it may be dropped first (a request's timeout, a client gone) while the work
    /// goes on: the reservation goes with the work, not with that future.
    pub async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        tokio::task::spawn_blocking(move || {
            let _held = self;
            work()
        })
        .await
    }
}

impl Reservation {
    /// Runs `work` as a task of its own with this memory held until it ends: as
    /// [`Reservation::run`], for work that awaits (a decode, then a judgement). The future
    /// awaiting it may be dropped first while the work goes on to its end.
    pub async fn spawn<T: Send + 'static>(
        self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        tokio::spawn(async move {
            let _held = self;
            work.await
        })
        .await
    }
}

/// The default budget: half of the machine's memory (`MemTotal` of `/proc/meminfo`), or 2 GiB
/// where that cannot be read.
pub fn default_bytes() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    total.map_or(2 << 30, |t| (t / 2).max(MIN_BUDGET))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn work_waits_for_the_budget_and_too_much_is_refused_at_once() {
        let budget = Budget::new(100 * 1024 * 1024);
        let first = budget.reserve(60 * 1024 * 1024).await.unwrap();
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(60 * 1024 * 1024).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the second waits while the first holds"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let e = budget.reserve(101 * 1024 * 1024).await.err().unwrap();
        assert_eq!((e.needs_mb, e.budget_mb), (101, 100));
    }

    #[tokio::test]
    async fn work_on_the_blocking_pool_holds_its_memory_after_its_caller_is_gone() {
        let budget = Budget::new(100 * 1024 * 1024);
        let memory = budget.reserve(60 * 1024 * 1024).await.unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel();
        let caller = tokio::spawn(async move {
            let ran = memory.run(move || wait.recv().is_ok()).await;
            let _ = done.send(ran.unwrap());
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        caller.abort();
        let _ = caller.await;
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(60 * 1024 * 1024).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the work still running holds its memory though its caller was dropped"
        );
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(finished.await.is_err(), "the dropped caller saw no result");
    }

    #[test]
    fn a_36_megapixel_image_costs_what_it_decodes_to() {
        assert_eq!(
            Budget::judging(6000, 6000),
            36_000_000 * JUDGE_BYTES_PER_PIXEL
        );
        assert!(default_bytes() >= MIN_BUDGET);
    }
}
