//! A 1080p camera frame to the JPEG the buffer stores:
//! `cargo bench -p wiko-agent --features v4l2 --bench frame [-- --frames N --case NAME]`
//!
//! Each case runs the agent's own code on one 1920×1080 frame, `frames` times after `warmup`:
//! - `mjpeg`: a UVC camera's MJPEG frame through `v4l2::to_jpeg`, passed through (checked
//!   complete, then kept byte for byte: the bench asserts the stored JPEG is the camera's).
//! - `mono8`, `bayer_rg8`, `rgb8`: a GenICam camera's pixels through `pixels::encode` (what
//!   `genicam`'s grab calls once the pixel format is mapped to its layout).
//! - `yuyv`: a UVC camera's YUYV frame through `v4l2::to_jpeg` (BT.601 to RGB, then encode).
//!
//! Baselines, in the same run: `bare_mono8` and `bare_rgb8`, the `image` crate's JPEG encoder
//! alone on the same pixels (what any conversion adds is the difference), and
//! `mjpeg_decoded_and_encoded`, the same MJPEG frame decoded (zune-jpeg, inside `image`) and
//! encoded again: what passing MJPEG through saves.
//!
//! Reported per case: wall time per frame (p50, p99), CPU time per frame (the thread's own, from
//! the kernel's `/proc/thread-self/schedstat`, in ns: not what other processes on a shared
//! machine take, unlike wall time; the crate forbids the `unsafe` a `getrusage` call needs) and
//! the JPEG's size. Instruction counts, which load does not change at all: run one case under
//! callgrind, collecting only inside [`one_frame`]:
//! `valgrind --tool=callgrind --toggle-collect='*one_frame*' --callgrind-out-file=/dev/null
//! target/release/deps/frame-… --frames 3 --warmup 0 --case mono8` (Ir ÷ 3).

use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use wiko_agent::frame::{Layout, Pixels, RawFrame, encode, to_jpeg};

const WIDTH: usize = 1920;
const HEIGHT: usize = 1080;

#[derive(clap::Parser)]
struct Args {
    /// Frames measured per case.
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Frames run before measuring, per case.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// JPEG quality of the encoded cases (the sources' default `jpeg_quality`).
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// Run this case only.
    #[arg(long)]
    case: Option<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One frame's work, as the agent does it (or the baseline's).
enum Case {
    /// `v4l2::to_jpeg` on a frame as the UVC camera gave it.
    V4l2(RawFrame),
    /// `pixels::encode` of a GenICam camera's pixels.
    Genicam(Layout, Vec<u8>),
    /// The `image` crate's encoder alone.
    Bare(ExtendedColorType, Vec<u8>),
    /// The MJPEG frame decoded and encoded again.
    Reencoded(Vec<u8>),
}

fn main() {
    let args: Args = clap::Parser::parse();
    let rgb = camera_picture();
    let mono: Vec<u8> = rgb
        .chunks_exact(3)
        .map(|p| ((u32::from(p[0]) * 77 + u32::from(p[1]) * 150 + u32::from(p[2]) * 29) >> 8) as u8)
        .collect();
    // What a UVC camera sends: its own JPEG of the scene (quality 85).
    let mjpeg = bare_encode(ExtendedColorType::Rgb8, &rgb, 85);
    let raw = |pixels, data| RawFrame {
        pixels,
        width: WIDTH,
        height: HEIGHT,
        data,
    };
    let cases = [
        ("mjpeg", Case::V4l2(raw(Pixels::Jpeg, mjpeg.clone()))),
        ("mjpeg_decoded_and_encoded", Case::Reencoded(mjpeg.clone())),
        ("mono8", Case::Genicam(Layout::Mono8, mono.clone())),
        ("bare_mono8", Case::Bare(ExtendedColorType::L8, mono)),
        (
            "bayer_rg8",
            Case::Genicam(Layout::Bayer8 { red: (0, 0) }, bayer_rg(&rgb)),
        ),
        ("rgb8", Case::Genicam(Layout::Rgb8, rgb.clone())),
        (
            "bare_rgb8",
            Case::Bare(ExtendedColorType::Rgb8, rgb.clone()),
        ),
        (
            "yuyv",
            Case::V4l2(raw(Pixels::Raw(Layout::Yuyv), yuyv(&rgb))),
        ),
    ];
    println!(
        "{WIDTH}×{HEIGHT}, quality {}, {} frames per case after {} warm-up",
        args.quality, args.frames, args.warmup
    );
    for (name, case) in &cases {
        if args.case.as_deref().is_some_and(|c| c != *name) {
            continue;
        }
        let input = match case {
            Case::V4l2(raw) => raw.data.len(),
            Case::Genicam(_, data) | Case::Bare(_, data) | Case::Reencoded(data) => data.len(),
        };
        let mut jpeg = Vec::new();
        for _ in 0..args.warmup {
            jpeg = one_frame(case, args.quality);
        }
        if let Case::V4l2(RawFrame {
            pixels: Pixels::Jpeg,
            data,
            ..
        }) = case
        {
            assert_eq!(&jpeg, data, "MJPEG is stored as the camera sent it");
        }
        let mut ms = Vec::with_capacity(args.frames);
        let cpu_start = thread_cpu_ns();
        for _ in 0..args.frames {
            let start = Instant::now();
            jpeg = one_frame(case, args.quality);
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let cpu_ms = (thread_cpu_ns() - cpu_start) as f64 / 1e6 / args.frames.max(1) as f64;
        if ms.is_empty() {
            continue;
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "{name:>26}: {input:>8} B in, {:>7} B JPEG: wall p50 {:.3} ms, p99 {:.3} ms; CPU {:.3} ms/frame",
            jpeg.len(),
            at(0.5),
            at(0.99),
            cpu_ms
        );
    }
}

/// One frame through the case's path (kept out of line: callgrind collects inside it).
#[inline(never)]
fn one_frame(case: &Case, quality: u8) -> Vec<u8> {
    match case {
        Case::V4l2(raw) => to_jpeg(raw, quality).expect("a V4L2 frame to JPEG"),
        Case::Genicam(layout, data) => {
            encode(*layout, WIDTH, HEIGHT, data, quality).expect("GenICam pixels to JPEG")
        }
        Case::Bare(color, data) => bare_encode(*color, data, quality),
        Case::Reencoded(jpeg) => {
            let decoded = image::load_from_memory(jpeg)
                .expect("the MJPEG frame decodes")
                .to_rgb8();
            bare_encode(ExtendedColorType::Rgb8, decoded.as_raw(), quality)
        }
    }
}

fn bare_encode(color: ExtendedColorType, data: &[u8], quality: u8) -> Vec<u8> {
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, quality)
        .write_image(data, WIDTH as u32, HEIGHT as u32, color)
        .expect("encode");
    jpeg
}

/// A knife on the belt at 1920×1080 (the synthetic camera's picture, scaled up) with a sensor's
/// noise (±4 levels), so the JPEG has a real camera frame's detail to code.
fn camera_picture() -> Vec<u8> {
    let part = wiko_synth::render_part(&wiko_synth::SHAPES[0], 7, 0, 0.0);
    let small = RgbImage::from_raw(wiko_synth::WIDTH, wiko_synth::HEIGHT, part.rgb)
        .expect("the synthetic picture's size");
    let big = image::imageops::resize(
        &small,
        WIDTH as u32,
        HEIGHT as u32,
        image::imageops::FilterType::Triangle,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(20);
    big.into_raw()
        .into_iter()
        .map(|v| v.saturating_add_signed(rng.random_range(-4..=4)))
        .collect()
}

/// The RGGB mosaic a Bayer sensor would give for `rgb`.
fn bayer_rg(rgb: &[u8]) -> Vec<u8> {
    (0..HEIGHT)
        .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
        .map(|(x, y)| {
            let channel = match (x % 2, y % 2) {
                (0, 0) => 0,
                (1, 1) => 2,
                _ => 1,
            };
            rgb[(y * WIDTH + x) * 3 + channel]
        })
        .collect()
}

/// `rgb` as YUYV (BT.601 studio swing), as a UVC camera streams it.
fn yuyv(rgb: &[u8]) -> Vec<u8> {
    let ycc = |p: &[u8]| {
        let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        (
            (16.0 + 0.257 * r + 0.504 * g + 0.098 * b) as u8,
            (128.0 - 0.148 * r - 0.291 * g + 0.439 * b) as u8,
            (128.0 + 0.439 * r - 0.368 * g - 0.071 * b) as u8,
        )
    };
    rgb.chunks_exact(6)
        .flat_map(|pair| {
            let (y0, u, v) = ycc(&pair[..3]);
            let (y1, _, _) = ycc(&pair[3..]);
            [y0, u, y1, v]
        })
        .collect()
}

/// CPU time this thread has run, in ns (the scheduler's own account).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat")
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("the thread's CPU time")
}
