//! The latest frame of a camera that streams (`rtsp`, `v4l2`): a reader (a task or a thread)
//! sends each frame as it comes and only the newest is kept; a trigger takes the first frame
//! that arrived after it, so the picture shows the part the trigger was about. The reader
//! ends when the camera is closed (its sends fail) or when it fails (its reason kept).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::SourceError;

/// One frame and when it arrived.
struct Stamped<T> {
    at: Instant,
    frame: Arc<T>,
}

impl<T> Clone for Stamped<T> {
    fn clone(&self) -> Self {
        Stamped {
            at: self.at,
            frame: self.frame.clone(),
        }
    }
}

/// The reader's end.
pub struct Feed<T> {
    tx: watch::Sender<Option<Stamped<T>>>,
    reason: Arc<Mutex<String>>,
}

/// The camera task's end.
pub struct Latest<T> {
    frames: watch::Receiver<Option<Stamped<T>>>,
    reason: Arc<Mutex<String>>,
    /// What stopped, for the error when the reader ended (`ffmpeg stopped`).
    stopped: &'static str,
}

/// A feed and its latest frame; `stopped` names the reader in errors.
pub fn channel<T>(stopped: &'static str) -> (Feed<T>, Latest<T>) {
    let (tx, frames) = watch::channel(None);
    let reason = Arc::new(Mutex::new(String::new()));
    (
        Feed {
            tx,
            reason: reason.clone(),
        },
        Latest {
            frames,
            reason,
            stopped,
        },
    )
}

impl<T> Feed<T> {
    /// Keeps `frame` as the latest; false once the camera was closed (the reader should stop).
    pub fn send(&self, frame: T) -> bool {
        self.tx
            .send(Some(Stamped {
                at: Instant::now(),
                frame: Arc::new(frame),
            }))
            .is_ok()
    }

    /// Why the reader stops (or the last thing it said), for the camera's error.
    pub fn reason(&self, why: String) {
        if let Ok(mut reason) = self.reason.lock() {
            *reason = why;
        }
    }
}

impl<T> Latest<T> {
    /// The reader ended: why.
    pub fn ended(&self) -> SourceError {
        let reason = self.reason.lock().map(|s| s.clone()).unwrap_or_default();
        SourceError::Device(if reason.is_empty() {
            format!("{} delivering frames", self.stopped)
        } else {
            format!("{}: {reason}", self.stopped)
        })
    }

    /// Waits for the first frame.
    pub async fn first(&mut self) -> Result<(), SourceError> {
        let arrived = self.frames.wait_for(Option::is_some).await.is_ok();
        if arrived { Ok(()) } else { Err(self.ended()) }
    }

    /// The first frame that arrives from now on.
    pub async fn next(&mut self) -> Result<Arc<T>, SourceError> {
        let asked = Instant::now();
        let frame = match self
            .frames
            .wait_for(|f| f.as_ref().is_some_and(|f| f.at >= asked))
            .await
        {
            Ok(frame) => frame.clone(),
            Err(_) => None,
        };
        frame.map(|f| f.frame).ok_or_else(|| self.ended())
    }

    /// The reader still runs and its latest frame is younger than `stall`.
    pub fn check(&self, stall: Duration) -> Result<(), SourceError> {
        if self.frames.has_changed().is_err() {
            return Err(self.ended());
        }
        let age = self
            .frames
            .borrow()
            .as_ref()
            .map_or(Duration::MAX, |f| f.at.elapsed());
        if age > stall {
            return Err(SourceError::Stalled(stall));
        }
        Ok(())
    }

    /// The latest frame, if any (the V4L2 tests).
    #[cfg(all(test, feature = "v4l2"))]
    pub fn peek(&self) -> Option<Arc<T>> {
        self.frames.borrow().as_ref().map(|f| f.frame.clone())
    }
}
