//! The `rtsp` camera: an IP camera's RTSP stream, decoded by an `ffmpeg` child process that
//! writes each frame as a JPEG to its stdout (`-f mpjpeg`: a multipart stream whose parts carry
//! their length). A reader task keeps only the latest frame; a trigger takes the first frame
//! decoded after it, so the picture shows the part the trigger was about.
//!
//! The stream is stalled when no frame arrived for `stall_timeout_ms` or ffmpeg exited; the
//! camera is then reopened (a new ffmpeg). ffmpeg is killed when the camera closes or the agent
//! stops (`kill_on_drop`).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tracing::debug;

use super::latest::{self, Latest};
use super::{Capture, Source, SourceError, redact};
use crate::config::{CameraConfig, RtspTransport, SourceConfig};

/// Largest frame accepted from ffmpeg.
const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

pub struct Rtsp {
    url: String,
    transport: RtspTransport,
    ffmpeg: std::path::PathBuf,
    stall: Duration,
    running: Option<Running>,
}

struct Running {
    _child: Child,
    frames: Latest<Vec<u8>>,
    reader: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Rtsp {
    pub fn new(cam: &CameraConfig) -> Rtsp {
        let (url, transport, ffmpeg) = match &cam.source {
            SourceConfig::Rtsp {
                url,
                transport,
                ffmpeg,
            } => (url.clone(), *transport, ffmpeg.clone()),
            _ => Default::default(),
        };
        Rtsp {
            url,
            transport,
            ffmpeg,
            stall: Duration::from_millis(cam.stall_timeout_ms),
            running: None,
        }
    }

    fn spawn(&self) -> Result<Running, SourceError> {
        let transport = match self.transport {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        };
        let mut child = Command::new(&self.ffmpeg)
            .args(["-nostdin", "-hide_banner", "-loglevel", "error"])
            .args(["-rtsp_transport", transport, "-i", &self.url])
            .args(["-an", "-f", "mpjpeg", "-q:v", "3", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| SourceError::Device(format!("starting {}: {e}", self.ffmpeg.display())))?;
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), Some(err)) => (out, err),
            _ => return Err(SourceError::Device("ffmpeg's pipes are missing".into())),
        };
        let (feed, frames) = latest::channel("ffmpeg stopped");
        // ffmpeg names the URL in its errors: never its credentials.
        let (url, shown) = (self.url.clone(), redact(&self.url));
        let reader = tokio::spawn(async move {
            let log = async {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = line.replace(&url, &shown);
                    debug!(%line, "ffmpeg");
                    feed.reason(line);
                }
            };
            let read = async {
                let mut out = BufReader::new(stdout);
                while let Ok(Some(jpeg)) = next_part(&mut out).await {
                    if !feed.send(jpeg) {
                        return;
                    }
                }
            };
            // The frames end when ffmpeg does; its stderr is read to the end for the reason.
            tokio::join!(read, log);
        });
        Ok(Running {
            _child: child,
            frames,
            reader,
        })
    }
}

/// Reads one part of ffmpeg's `mpjpeg` stream: a boundary line, headers with
/// `Content-length`, an empty line, then that many bytes. `None` at the end of the stream.
async fn next_part<R: AsyncBufRead + Unpin>(out: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    let mut length = None;
    let mut in_headers = false;
    loop {
        line.clear();
        if out.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let text = line.trim();
        if !in_headers {
            in_headers = text.starts_with("--");
            continue;
        }
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length
        .filter(|n| *n <= MAX_FRAME_BYTES)
        .ok_or_else(|| std::io::Error::other("a part without a usable Content-length"))?;
    let mut jpeg = vec![0; length];
    out.read_exact(&mut jpeg).await?;
    Ok(Some(jpeg))
}

#[async_trait]
impl Source for Rtsp {
    /// Starts ffmpeg and waits for its first frame.
    async fn open(&mut self) -> Result<(), SourceError> {
        self.running = None;
        let mut running = self.spawn()?;
        running.frames.first().await?;
        self.running = Some(running);
        Ok(())
    }

    async fn grab(&mut self) -> Result<Capture, SourceError> {
        let running = self.running.as_mut().ok_or(SourceError::NotOpen)?;
        let jpeg = running.frames.next().await?;
        Ok(Capture::jpeg(jpeg.as_ref().clone()))
    }

    async fn check(&mut self) -> Result<(), SourceError> {
        let running = self.running.as_ref().ok_or(SourceError::NotOpen)?;
        running.frames.check(self.stall)
    }

    fn close(&mut self) {
        self.running = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_multipart_stream_yields_each_jpeg_whole() {
        let a = [0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9];
        let b = [0xFF, 0xD8, b'\r', b'\n', b'-', b'-', 0xFF, 0xD9];
        let mut stream = Vec::new();
        for part in [&a[..], &b[..]] {
            stream.extend_from_slice(
                format!(
                    "--ffmpeg\r\nContent-type: image/jpeg\r\nContent-length: {}\r\n\r\n",
                    part.len()
                )
                .as_bytes(),
            );
            stream.extend_from_slice(part);
            stream.extend_from_slice(b"\r\n");
        }
        let mut reader = BufReader::new(&stream[..]);
        assert_eq!(next_part(&mut reader).await.unwrap().unwrap(), a);
        assert_eq!(next_part(&mut reader).await.unwrap().unwrap(), b);
        assert!(next_part(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_part_without_a_length_is_an_error() {
        let stream = b"--ffmpeg\r\nContent-type: image/jpeg\r\n\r\n\xFF\xD8".to_vec();
        let mut reader = BufReader::new(&stream[..]);
        assert!(next_part(&mut reader).await.is_err());
    }
}
