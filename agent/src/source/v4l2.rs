//! The `v4l2` camera: USB/UVC cameras through V4L2, with `nokhwa` (cargo feature `v4l2`).
//!
//! The device is named by its stable `/dev/v4l/by-id/…` link (it survives a reboot and another
//! USB port), by `/dev/videoN` or by the index N; the link is followed at each open, so a
//! camera plugged in after the agent started is found on the next reopen. Opening asks for the
//! configured size, frame rate and pixel format (the camera's nearest mode), sets exposure and
//! gain where the camera has those controls (a warning where it lacks them), and starts
//! streaming.
//!
//! Capture runs in a thread of its own that owns the device and reads frames as the camera
//! sends them, keeping only the latest ([`FrameProvider`] is that thread's view of the device;
//! the tests give it a fake). A trigger takes the first frame read after it, so the picture
//! shows the part the trigger was about, never one a driver buffer kept from before. MJPEG
//! frames are passed through as they are (no decode, no re-encode; a frame without its
//! Huffman tables, as many UVC cameras send, is decoded with the standard MJPEG tables
//! downstream); YUYV, NV12, grey and RGB frames are encoded to JPEG ([`super::pixels`]).
//!
//! Known upstream failures are guarded against: a read that fails ends the thread and the
//! camera is reopened; a read that hangs leaves the latest frame ageing, so the check between
//! triggers (and the trigger's own deadline) reports the camera stalled and it is reopened with
//! backoff by [`super::run_camera`]. A camera has one capture thread at most: a reopen waits
//! (half `stall_timeout_ms` at most) for the last thread to end, and while that thread is
//! still blocked in an open or a read that never returns, the open fails without starting
//! another ([`SourceError::Hung`]: the camera shows `hung`, and is retried with backoff).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::latest::{self, Latest};
use super::pixels::{Layout, encode};
use super::{Capture, Outstanding, Source, SourceError, reopen_grace};
use crate::config::{CameraConfig, SourceConfig, V4l2PixelFormat};

/// How a frame's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// A JPEG (MJPEG stream): kept as it is.
    Jpeg,
    Raw(Layout),
}

/// One frame as the device gave it.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub pixels: Pixels,
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// An open, streaming device: the capture thread's view of it.
pub trait FrameProvider {
    /// The next frame the camera sends (blocks until it comes).
    fn frame(&mut self) -> Result<RawFrame, SourceError>;
}

/// The capture thread's answer to opening its device.
type Opened = oneshot::Receiver<Result<(), SourceError>>;

/// Opens a device; called on the capture thread (the device need not be `Send`).
pub type Opener = Arc<dyn Fn() -> Result<Box<dyn FrameProvider>, SourceError> + Send + Sync>;

pub struct V4l2 {
    open: Opener,
    jpeg_quality: u8,
    stall: Duration,
    /// The capture thread's frames; dropping them stops the thread at its next frame.
    running: Option<Latest<RawFrame>>,
    /// The capture thread last started, until it ends.
    thread: Outstanding,
}

impl V4l2 {
    /// The camera a configuration names, opened through nokhwa.
    pub fn new(cam: &CameraConfig) -> V4l2 {
        let settings = match &cam.source {
            SourceConfig::V4l2 {
                device,
                width,
                height,
                fps,
                pixel_format,
                exposure,
                gain,
                ..
            } => device::Settings {
                device: device.clone(),
                width: *width,
                height: *height,
                fps: *fps,
                pixel_format: *pixel_format,
                exposure: *exposure,
                gain: *gain,
            },
            _ => device::Settings::default(),
        };
        let quality = match &cam.source {
            SourceConfig::V4l2 { jpeg_quality, .. } => *jpeg_quality,
            _ => 90,
        };
        V4l2::with_opener(
            Arc::new(move || device::open(&settings)),
            quality,
            Duration::from_millis(cam.stall_timeout_ms),
            reopen_grace(cam),
        )
    }

    /// A camera whose device `open` gives (the tests' fakes); `grace`: how long an open waits
    /// for the last capture thread to end.
    pub fn with_opener(open: Opener, jpeg_quality: u8, stall: Duration, grace: Duration) -> V4l2 {
        V4l2 {
            open,
            jpeg_quality,
            stall,
            running: None,
            thread: Outstanding::new(grace),
        }
    }

    /// Starts the capture thread; `Opened` answers once the device is open.
    fn spawn(&mut self) -> Result<(Latest<RawFrame>, Opened), SourceError> {
        let (feed, frames) = latest::channel("the V4L2 capture stopped");
        let (opened_tx, opened) = oneshot::channel();
        let open = self.open.clone();
        let running = self.thread.start();
        std::thread::Builder::new()
            .name("v4l2-capture".into())
            .spawn(move || {
                // Dropped last, after the device: the thread has ended with its device closed.
                let _running = running;
                let mut device = match open() {
                    Ok(device) => device,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                // Nobody waits any more: the open outlived its deadline; close the device.
                if opened_tx.send(Ok(())).is_err() {
                    return;
                }
                loop {
                    match device.frame() {
                        Ok(raw) => {
                            // Not sent: the camera was closed.
                            if !feed.send(raw) {
                                return;
                            }
                        }
                        Err(e) => {
                            debug!(error = %e, "V4L2 read failed");
                            feed.reason(e.to_string());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| SourceError::Device(format!("starting the capture thread: {e}")))?;
        Ok((frames, opened))
    }
}

/// A frame as a JPEG: MJPEG as it came (checked complete), anything else encoded.
pub fn to_jpeg(raw: &RawFrame, quality: u8) -> Result<Vec<u8>, SourceError> {
    match raw.pixels {
        Pixels::Jpeg => {
            if !raw.data.starts_with(&[0xFF, 0xD8])
                || wiko_inspect::decode::is_truncated_jpeg(&raw.data)
            {
                return Err(SourceError::Device(
                    "the camera sent an incomplete MJPEG frame".into(),
                ));
            }
            Ok(raw.data.clone())
        }
        Pixels::Raw(layout) => encode(layout, raw.width, raw.height, &raw.data, quality),
    }
}

#[async_trait]
impl Source for V4l2 {
    /// Starts the capture thread (once the last one ended) and waits for the device to open
    /// and send its first frame.
    async fn open(&mut self) -> Result<(), SourceError> {
        self.running = None;
        self.thread.settle().await?;
        let (mut frames, opened) = self.spawn()?;
        opened.await.map_err(|_| SourceError::Panicked)??;
        frames.first().await?;
        self.running = Some(frames);
        Ok(())
    }

    async fn grab(&mut self) -> Result<Capture, SourceError> {
        let frames = self.running.as_mut().ok_or(SourceError::NotOpen)?;
        let raw = frames.next().await?;
        let quality = self.jpeg_quality;
        let jpeg = tokio::task::spawn_blocking(move || to_jpeg(&raw, quality))
            .await
            .map_err(|_| SourceError::Panicked)??;
        Ok(Capture::jpeg(jpeg))
    }

    /// The capture thread still runs and its latest frame is younger than `stall_timeout_ms`.
    async fn check(&mut self) -> Result<(), SourceError> {
        let frames = self.running.as_ref().ok_or(SourceError::NotOpen)?;
        frames.check(self.stall)
    }

    fn close(&mut self) {
        self.running = None;
    }
}

/// The index N of `/dev/videoN` that `device` names: N itself, `/dev/videoN`, or a link to it
/// (`/dev/v4l/by-id/…`).
pub fn device_index(device: &str) -> Result<u32, SourceError> {
    if let Ok(n) = device.parse::<u32>() {
        return Ok(n);
    }
    let real =
        std::fs::canonicalize(device).map_err(|e| SourceError::Device(format!("{device}: {e}")))?;
    video_index(&real).ok_or_else(|| {
        SourceError::Device(format!(
            "{device} ({}) is not a V4L2 device (/dev/videoN)",
            real.display()
        ))
    })
}

fn video_index(path: &Path) -> Option<u32> {
    path.file_name()?
        .to_str()?
        .strip_prefix("video")?
        .parse()
        .ok()
}

/// The V4L2 cameras this machine has: `(device, name, /dev/videoN)`, the device by its
/// `/dev/v4l/by-id/…` link where it has one.
pub fn list() -> Vec<[String; 3]> {
    let links: Vec<(u32, String)> = std::fs::read_dir("/dev/v4l/by-id")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let real = std::fs::canonicalize(entry.path()).ok()?;
            Some((video_index(&real)?, entry.path().display().to_string()))
        })
        .collect();
    device::query()
        .into_iter()
        .map(|(index, name)| {
            let node = format!("/dev/video{index}");
            let stable = links
                .iter()
                .find(|(i, _)| *i == index)
                .map_or_else(|| node.clone(), |(_, link)| link.clone());
            [stable, name, node]
        })
        .collect()
}

/// The real device, through nokhwa.
mod device {
    use nokhwa::Camera;
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{
        ApiBackend, CameraFormat, CameraIndex, ControlValueSetter, FrameFormat, KnownCameraControl,
        RequestedFormat, RequestedFormatType, Resolution,
    };

    use super::*;

    #[derive(Debug, Clone, Default)]
    pub struct Settings {
        pub device: String,
        pub width: u32,
        pub height: u32,
        pub fps: u32,
        pub pixel_format: V4l2PixelFormat,
        pub exposure: Option<i64>,
        pub gain: Option<i64>,
    }

    struct Nokhwa {
        camera: Camera,
        pixels: Pixels,
        width: usize,
        height: usize,
    }

    impl FrameProvider for Nokhwa {
        fn frame(&mut self) -> Result<RawFrame, SourceError> {
            let data = self
                .camera
                .frame_raw()
                .map_err(|e| SourceError::Device(format!("reading a frame: {e}")))?
                .into_owned();
            Ok(RawFrame {
                pixels: self.pixels,
                width: self.width,
                height: self.height,
                data,
            })
        }
    }

    impl Drop for Nokhwa {
        fn drop(&mut self) {
            // Best effort: a camera that was unplugged cannot be stopped, and need not be.
            let _ = self.camera.stop_stream();
        }
    }

    fn pixels(format: FrameFormat) -> Pixels {
        match format {
            FrameFormat::MJPEG => Pixels::Jpeg,
            FrameFormat::YUYV => Pixels::Raw(Layout::Yuyv),
            FrameFormat::NV12 => Pixels::Raw(Layout::Nv12),
            FrameFormat::GRAY => Pixels::Raw(Layout::Mono8),
            FrameFormat::RAWRGB => Pixels::Raw(Layout::Rgb8),
            FrameFormat::RAWBGR => Pixels::Raw(Layout::Bgr8),
        }
    }

    pub fn open(s: &Settings) -> Result<Box<dyn FrameProvider>, SourceError> {
        let index = device_index(&s.device)?;
        let wanted = match s.pixel_format {
            V4l2PixelFormat::Mjpeg => FrameFormat::MJPEG,
            V4l2PixelFormat::Yuyv => FrameFormat::YUYV,
            V4l2PixelFormat::Nv12 => FrameFormat::NV12,
            V4l2PixelFormat::Gray => FrameFormat::GRAY,
        };
        let format = CameraFormat::new(Resolution::new(s.width, s.height), wanted, s.fps);
        let fail = |what: &'static str| {
            move |e: nokhwa::NokhwaError| SourceError::Device(format!("{what}: {e}"))
        };
        let mut camera = Camera::new(
            CameraIndex::Index(index),
            RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(format)),
        )
        .map_err(fail("opening the camera"))?;
        for (control, value, name) in [
            (KnownCameraControl::Exposure, s.exposure, "exposure"),
            (KnownCameraControl::Gain, s.gain, "gain"),
        ] {
            if let Some(value) = value
                && let Err(e) =
                    camera.set_camera_control(control, ControlValueSetter::Integer(value))
            {
                warn!(device = %s.device, error = %e, "the camera did not take the {name}");
            }
        }
        camera.open_stream().map_err(fail("starting the stream"))?;
        let got = camera.camera_format();
        if got.format() != wanted {
            warn!(device = %s.device, asked = %wanted, got = %got.format(), "the camera streams another pixel format");
        }
        debug!(device = %s.device, format = %got, "V4L2 stream open");
        Ok(Box::new(Nokhwa {
            pixels: pixels(got.format()),
            width: got.resolution().width() as usize,
            height: got.resolution().height() as usize,
            camera,
        }))
    }

    /// `(index, name)` of each V4L2 device; none where V4L2 cannot be queried.
    pub fn query() -> Vec<(u32, String)> {
        nokhwa::query(ApiBackend::Video4Linux)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|info| {
                let index = info.index().as_index().ok()?;
                Some((
                    index,
                    format!("{} ({})", info.human_name(), info.description()),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
