//! The `genicam` camera: GigE Vision and USB3 Vision industrial cameras through Aravis
//! (cargo feature `genicam`; Debian's `libaravis-dev`).
//!
//! Opening sets the configured pixel format, exposure and gain, puts the camera in software
//! trigger mode when it has one (free run otherwise), queues a few buffers and starts
//! acquisition. Each part is one software trigger and the buffer it fills (in free run, the
//! first buffer after the frames already queued are put back); a camera that sent no complete
//! buffer within 35% of the deadline is triggered once more (a camera can miss a trigger),
//! and a picture that still fails names the stream's statistics (buffers completed, failed
//! with lost packets, underruns), so a silent camera is told from a lossy network. Mono8, RGB8, BGR8 and 8-bit
//! Bayer pixels are encoded to JPEG ([`super::pixels`]). Between triggers the camera is read
//! (its payload size) every `stall_timeout_ms`, so a camera that went away is reported. Every
//! Aravis call runs on the blocking pool ([`Blocking`]): a call that hangs costs a thread
//! (one at most: the camera is not reopened while it hangs), never the camera task.

use aravis::prelude::*;
use aravis::{AcquisitionMode, Buffer, BufferStatus, Camera, PixelFormat, Stream};
use async_trait::async_trait;
use tracing::warn;

use super::pixels::{Layout, encode};
use super::{Blocking, Capture, Source, SourceError, reopen_grace};
use crate::config::{CameraConfig, SourceConfig};

/// Buffers queued on the stream.
const BUFFERS: usize = 4;

#[derive(Clone)]
struct Settings {
    device: Option<String>,
    pixel_format: Option<String>,
    exposure_us: Option<f64>,
    gain_db: Option<f64>,
    jpeg_quality: u8,
    timeout_us: u64,
}

pub struct Genicam {
    settings: Settings,
    device: Blocking<Device>,
}

struct Device {
    camera: Camera,
    stream: Stream,
    software_trigger: bool,
}

impl Drop for Device {
    fn drop(&mut self) {
        // Best effort: a camera that is gone cannot be stopped, and need not be.
        let _ = self.camera.stop_acquisition();
    }
}

fn device_error(what: &str) -> impl Fn(aravis::glib::Error) -> SourceError + '_ {
    move |e| SourceError::Device(format!("{what}: {e}"))
}

impl Genicam {
    pub fn new(cam: &CameraConfig) -> Genicam {
        let settings = match &cam.source {
            SourceConfig::Genicam {
                device,
                pixel_format,
                exposure_us,
                gain_db,
                jpeg_quality,
            } => Settings {
                device: device.clone(),
                pixel_format: pixel_format.clone(),
                exposure_us: *exposure_us,
                gain_db: *gain_db,
                jpeg_quality: *jpeg_quality,
                timeout_us: cam.stall_timeout_ms.saturating_mul(1000),
            },
            _ => Settings {
                device: None,
                pixel_format: None,
                exposure_us: None,
                gain_db: None,
                jpeg_quality: 90,
                timeout_us: cam.stall_timeout_ms.saturating_mul(1000),
            },
        };
        Genicam {
            settings,
            device: Blocking::new(reopen_grace(cam)),
        }
    }
}

fn open(s: &Settings) -> Result<Device, SourceError> {
    let camera = Camera::new(s.device.as_deref()).map_err(device_error("opening the camera"))?;
    if let Some(format) = &s.pixel_format {
        camera
            .set_pixel_format_from_string(format)
            .map_err(device_error("setting the pixel format"))?;
    }
    if let Some(us) = s.exposure_us {
        camera
            .set_exposure_time(us)
            .map_err(device_error("setting the exposure"))?;
    }
    if let Some(db) = s.gain_db {
        camera
            .set_gain(db)
            .map_err(device_error("setting the gain"))?;
    }
    camera
        .set_acquisition_mode(AcquisitionMode::Continuous)
        .map_err(device_error("setting continuous acquisition"))?;
    let software_trigger = camera.set_trigger("Software").is_ok();
    let payload = camera
        .payload()
        .map_err(device_error("reading the payload size"))?;
    let stream = camera
        .create_stream()
        .map_err(device_error("creating the stream"))?;
    for _ in 0..BUFFERS {
        stream.push_buffer(Buffer::new_allocate(payload as usize));
    }
    camera
        .start_acquisition()
        .map_err(device_error("starting acquisition"))?;
    Ok(Device {
        camera,
        stream,
        software_trigger,
    })
}

/// How long a software-triggered camera is given for its first buffer, as a share of the
/// picture's deadline, before it is triggered once more; the second trigger gets
/// [`RETRIGGERED_SHARE`]. Together they stay under the deadline, so the camera task's own
/// deadline does not cut the answer (and its stream statistics) short.
const FIRST_SHARE: f64 = 0.35;
const RETRIGGERED_SHARE: f64 = 0.5;

fn share(timeout_us: u64, share: f64) -> u64 {
    (timeout_us as f64 * share) as u64
}

fn trigger(device: &Device) -> Result<(), SourceError> {
    device
        .camera
        .software_trigger()
        .map_err(device_error("software trigger"))
}

/// One picture. A software-triggered camera that has sent no complete buffer within
/// [`FIRST_SHARE`] of the deadline is triggered once more (a camera can miss a trigger, and a
/// frame can lose packets on the way); what came of the first trigger, if it comes late, is
/// an old frame that the next picture puts back unread.
fn grab(device: &mut Device, s: &Settings) -> Result<Vec<u8>, SourceError> {
    // Frames already delivered show an earlier moment: put them back.
    while let Some(old) = device.stream.try_pop_buffer() {
        device.stream.push_buffer(old);
    }
    let waits = if device.software_trigger {
        trigger(device)?;
        [
            share(s.timeout_us, FIRST_SHARE),
            share(s.timeout_us, RETRIGGERED_SHARE),
        ]
    } else {
        [s.timeout_us, 0]
    };
    let mut last_status = None;
    for (attempt, wait) in waits.into_iter().enumerate() {
        if attempt > 0 {
            if wait == 0 {
                break;
            }
            warn!(
                last_buffer = ?last_status,
                waited_ms = waits[0] / 1000,
                "no complete frame after the software trigger: triggering once more"
            );
            trigger(device)?;
        }
        let Some(buffer) = device.stream.timeout_pop_buffer(wait) else {
            continue;
        };
        let status = buffer.status();
        let result = (status == BufferStatus::Success).then(|| {
            let width = usize::try_from(buffer.image_width()).unwrap_or(0);
            let height = usize::try_from(buffer.image_height()).unwrap_or(0);
            to_jpeg(
                buffer.image_pixel_format(),
                width,
                height,
                &buffer.image_data(),
                s.jpeg_quality,
            )
        });
        device.stream.push_buffer(buffer);
        match result {
            Some(jpeg) => return jpeg,
            None => last_status = Some(status),
        }
    }
    let (completed, failures, underruns) = device.stream.statistics();
    let waited = std::time::Duration::from_micros(waits.iter().sum());
    let what = match last_status {
        Some(status) => format!("only incomplete buffers ({status:?})"),
        None => "no frame".to_string(),
    };
    let triggers = if device.software_trigger {
        " of two software triggers"
    } else {
        ""
    };
    Err(SourceError::Device(format!(
        "{what} within {waited:?}{triggers}; the stream since the camera was opened: {completed} buffers completed, {failures} failed (lost packets), {underruns} underruns (no free buffer)"
    )))
}

fn layout(format: PixelFormat) -> Option<Layout> {
    Some(match format {
        PixelFormat::MONO_8 => Layout::Mono8,
        PixelFormat::RGB_8_PACKED => Layout::Rgb8,
        PixelFormat::BGR_8_PACKED => Layout::Bgr8,
        PixelFormat::BAYER_RG_8 => Layout::Bayer8 { red: (0, 0) },
        PixelFormat::BAYER_GR_8 => Layout::Bayer8 { red: (1, 0) },
        PixelFormat::BAYER_GB_8 => Layout::Bayer8 { red: (0, 1) },
        PixelFormat::BAYER_BG_8 => Layout::Bayer8 { red: (1, 1) },
        _ => return None,
    })
}

fn to_jpeg(
    format: PixelFormat,
    width: usize,
    height: usize,
    data: &[u8],
    quality: u8,
) -> Result<Vec<u8>, SourceError> {
    let layout = layout(format).ok_or_else(|| {
        SourceError::Device(format!(
            "pixel format {:#010x} is not supported (use Mono8, RGB8, BGR8 or an 8-bit Bayer format)",
            format.raw()
        ))
    })?;
    encode(layout, width, height, data, quality)
}

#[async_trait]
impl Source for Genicam {
    async fn open(&mut self) -> Result<(), SourceError> {
        let settings = self.settings.clone();
        self.device.open(move || open(&settings)).await
    }

    async fn grab(&mut self) -> Result<Capture, SourceError> {
        let settings = self.settings.clone();
        let jpeg = self
            .device
            .call(move |device| grab(device, &settings))
            .await?;
        Ok(Capture::jpeg(jpeg))
    }

    /// Reads the payload size: a camera that went away (or lost its control channel) fails.
    async fn check(&mut self) -> Result<(), SourceError> {
        self.device
            .call(|device| {
                device
                    .camera
                    .payload()
                    .map(drop)
                    .map_err(device_error("reading the camera"))
            })
            .await
    }

    fn close(&mut self) {
        self.device.close();
    }
}

/// The GenICam cameras Aravis can see: `(device id, vendor, model, address)`.
pub fn list() -> Vec<[String; 4]> {
    match aravis::Aravis::initialize() {
        Ok(aravis) => aravis
            .get_device_list()
            .into_iter()
            .map(|d| [d.id, d.vendor, d.model, d.address].map(|s| s.to_string_lossy().into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unsupported_pixel_formats_are_named() {
        let e = to_jpeg(PixelFormat::from_raw(0x1234), 2, 2, &[0; 4], 90).unwrap_err();
        assert!(e.to_string().contains("0x00001234"), "{e}");
    }
}
