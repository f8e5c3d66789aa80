//! The V4L2 camera through its boundary: fake devices behind [`FrameProvider`] (MJPEG passed
//! through, YUYV encoded, a read that fails, a read or an open that hangs: one capture thread
//! at most), device names resolved to their `/dev/videoN`, and a real device where this
//! machine has one.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;

use super::*;

/// A JPEG of `w`×`h` in one grey.
pub fn mjpeg(w: u32, h: u32, grey: u8) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(w, h, image::Luma([grey]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A device that gives `frame(n)` for its n-th frame, one every 5 ms.
struct Fake<F>(u32, F);

impl<F: FnMut(u32) -> Result<RawFrame, SourceError>> FrameProvider for Fake<F> {
    fn frame(&mut self) -> Result<RawFrame, SourceError> {
        std::thread::sleep(Duration::from_millis(5));
        self.0 += 1;
        (self.1)(self.0)
    }
}

fn camera_of<F>(make: impl Fn() -> F + Send + Sync + 'static) -> (V4l2, Arc<AtomicU32>)
where
    F: FnMut(u32) -> Result<RawFrame, SourceError> + 'static,
{
    let opened = Arc::new(AtomicU32::new(0));
    let count = opened.clone();
    let open: Opener = Arc::new(move || {
        count.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Fake(0, make())) as Box<dyn FrameProvider>)
    });
    (
        V4l2::with_opener(
            open,
            90,
            Duration::from_millis(300),
            Duration::from_millis(100),
        ),
        opened,
    )
}

fn jpeg_frame(data: Vec<u8>) -> RawFrame {
    RawFrame {
        pixels: Pixels::Jpeg,
        width: 64,
        height: 48,
        data,
    }
}

#[tokio::test]
async fn mjpeg_frames_are_buffered_byte_for_byte_and_yuyv_frames_are_encoded() {
    // See: issue #20 (MJPEG passthrough: no decode, no re-encode).
    let sent = mjpeg(64, 48, 90);
    let frame = sent.clone();
    let (mut cam, _) = camera_of(move || {
        let frame = frame.clone();
        move |_| Ok(jpeg_frame(frame.clone()))
    });
    cam.open().await.unwrap();
    for _ in 0..3 {
        assert_eq!(cam.grab().await.unwrap().jpeg, sent);
    }
    cam.check().await.unwrap();

    // 8×4 YUYV, mid grey.
    let (mut cam, _) = camera_of(|| {
        |_| {
            Ok(RawFrame {
                pixels: Pixels::Raw(Layout::Yuyv),
                width: 8,
                height: 4,
                data: [126, 128, 126, 128].repeat(16),
            })
        }
    });
    cam.open().await.unwrap();
    let jpeg = cam.grab().await.unwrap().jpeg;
    let img = image::load_from_memory(&jpeg).unwrap().to_luma8();
    assert_eq!(img.dimensions(), (8, 4));
    assert!(img.pixels().all(|p| p.0[0].abs_diff(128) <= 3), "{img:?}");
}

#[test]
fn an_incomplete_mjpeg_frame_or_a_short_raw_frame_is_refused() {
    let mut cut = mjpeg(64, 48, 90);
    cut.truncate(cut.len() / 2);
    assert!(to_jpeg(&jpeg_frame(cut), 90).is_err());
    assert!(to_jpeg(&jpeg_frame(b"not a jpeg".to_vec()), 90).is_err());
    let short = RawFrame {
        pixels: Pixels::Raw(Layout::Yuyv),
        width: 64,
        height: 48,
        data: vec![0; 100],
    };
    assert!(to_jpeg(&short, 90).is_err());
}

#[tokio::test]
async fn a_trigger_takes_a_frame_read_after_it() {
    let (mut cam, _) = camera_of(|| {
        |n: u32| {
            // Each frame's grey is its number: later frames are brighter.
            Ok(RawFrame {
                pixels: Pixels::Raw(Layout::Mono8),
                width: 8,
                height: 8,
                data: vec![(n.min(255)) as u8; 64],
            })
        }
    });
    cam.open().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let latest = cam.running.as_ref().unwrap().peek().unwrap().data[0];
    let jpeg = cam.grab().await.unwrap().jpeg;
    let grey = image::load_from_memory(&jpeg)
        .unwrap()
        .to_luma8()
        .get_pixel(4, 4)
        .0[0];
    assert!(
        grey > latest,
        "frame {grey} was read before the trigger (latest {latest})"
    );
}

#[tokio::test]
async fn a_failing_read_ends_the_capture_and_the_camera_opens_again() {
    let (mut cam, opened) = camera_of(|| {
        |n: u32| {
            if n > 3 {
                Err(SourceError::Device("VIDIOC_DQBUF: No such device".into()))
            } else {
                Ok(jpeg_frame(mjpeg(8, 8, 10)))
            }
        }
    });
    cam.open().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = cam.check().await.unwrap_err().to_string();
    assert!(e.contains("No such device"), "{e}");
    assert!(cam.grab().await.is_err());
    cam.close();
    cam.open().await.unwrap();
    assert_eq!(opened.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_read_that_hangs_is_reported_stalled_and_no_thread_joins_it_until_it_returns() {
    let (release, hang) = mpsc::channel::<()>();
    let hang = Arc::new(std::sync::Mutex::new(hang));
    let (mut cam, opened) = camera_of(move || {
        let hang = hang.clone();
        move |n: u32| {
            if n > 2 {
                // Like a driver whose read never returns (until the test ends).
                let _ = hang.lock().unwrap().recv_timeout(Duration::from_secs(10));
            }
            Ok(jpeg_frame(mjpeg(8, 8, 10)))
        }
    });
    cam.open().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(cam.check().await, Err(SourceError::Stalled(_))));
    // See: issue #20 (a hung call must not leak a thread per reopen). The thread is still in
    // its read: no second one while it is.
    cam.close();
    for _ in 0..3 {
        assert!(matches!(cam.open().await, Err(SourceError::Hung)));
    }
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    // The read returns: the thread ends, and the camera opens again.
    drop(release);
    cam.open().await.unwrap();
    assert_eq!(opened.load(Ordering::SeqCst), 2);
    cam.grab().await.unwrap();
}

#[tokio::test]
async fn an_open_that_hangs_leaves_one_thread_however_often_the_camera_is_reopened() {
    // See: issue #20 (a V4L2 open that hangs must not leak a thread per reopen).
    let (release, hang) = mpsc::channel::<()>();
    let hang = std::sync::Mutex::new(hang);
    let started = Arc::new(AtomicU32::new(0));
    let open: Opener = {
        let started = started.clone();
        Arc::new(move || {
            // Each open runs on a thread of its own: this counts the threads started.
            if started.fetch_add(1, Ordering::SeqCst) == 0 {
                // Like a driver whose open never returns (until the test lets it).
                let _ = hang.lock().unwrap().recv();
            }
            Ok(Box::new(Fake(0, |_: u32| Ok(jpeg_frame(mjpeg(8, 8, 10)))))
                as Box<dyn FrameProvider>)
        })
    };
    let mut cam = V4l2::with_opener(
        open,
        90,
        Duration::from_millis(300),
        Duration::from_millis(100),
    );
    // The camera task's deadline on the open.
    let deadline = Duration::from_millis(300);
    assert!(tokio::time::timeout(deadline, cam.open()).await.is_err());
    for _ in 0..5 {
        cam.close();
        let again = tokio::time::timeout(deadline, cam.open()).await;
        assert!(matches!(again, Ok(Err(SourceError::Hung))), "{again:?}");
    }
    assert_eq!(started.load(Ordering::SeqCst), 1);
    // The hung open returns at last: its thread sees nobody waits, closes the device and ends.
    drop(release);
    cam.open().await.unwrap();
    assert_eq!(started.load(Ordering::SeqCst), 2);
    cam.grab().await.unwrap();
}

#[test]
fn a_device_is_named_by_index_node_or_stable_link() {
    assert_eq!(device_index("3").unwrap(), 3);
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("video7");
    std::fs::write(&node, b"").unwrap();
    let link = dir.path().join("usb-Logitech_C920_1234-video-index0");
    std::os::unix::fs::symlink(&node, &link).unwrap();
    assert_eq!(device_index(link.to_str().unwrap()).unwrap(), 7);
    assert_eq!(device_index(node.to_str().unwrap()).unwrap(), 7);
    let other = dir.path().join("sda");
    std::fs::write(&other, b"").unwrap();
    let e = device_index(other.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a V4L2 device"), "{e}");
    assert!(device_index("/dev/v4l/by-id/absent").is_err());
}

#[tokio::test]
async fn a_real_device_gives_a_jpeg_where_this_machine_has_one() {
    let mut nodes: Vec<_> = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| video_index(p).is_some())
        .collect();
    nodes.sort();
    let Some(node) = nodes.first() else {
        println!("skipped: this machine has no /dev/video* (no V4L2 device to test against)");
        return;
    };
    let cam: CameraConfig = toml::from_str(&format!(
        r#"
name = "usb"
line = "l1"
station = "s1"
sku = "WK-KN-200"
source = {{ type = "v4l2", device = "{}", width = 640, height = 480 }}
trigger = {{ type = "http" }}
"#,
        node.display()
    ))
    .unwrap();
    println!("testing the real V4L2 device {}", node.display());
    let mut source = V4l2::new(&cam);
    source.open().await.unwrap();
    let jpeg = source.grab().await.unwrap().jpeg;
    image::load_from_memory(&jpeg).unwrap();
    println!("{}: a {} byte JPEG", node.display(), jpeg.len());
}
