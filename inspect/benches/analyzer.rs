//! Golden-sample analyzer speed: `cargo bench -p wiko-inspect --bench analyzer`
//!
//! On one thread, for synthetic chef's knives at the camera's 640×480 and upscaled to
//! 1920×1080 (JPEG, quality as the synthetic camera's): fitting from 50 good parts, then
//! decode + score per image (`Model::judge`: the planes the model reads, luma alone unless a
//! patch model was fitted on colour; an aligned model's straight at its working scale), over
//! 60 images (good and defective). Baselines in the same run: the full colour decode (luma and
//! chroma), and decoding the model's planes at full resolution. The parts are fitted by each method in turn
//! (the automatic choice, aligned, and the position-free texture and patch methods, which knives
//! on a belt do not need but surfaces and parts that turn do) so that every method's speed is
//! measured on the same frames.

use std::time::Instant;

use image::{ImageBuffer, Rgb};
use wiko_inspect::{DecodeLimits, FitOptions, Image, MethodChoice, Model};
use wiko_synth::{self as synthetic, SynthDefect};

fn frame(defect: Option<SynthDefect>, seed: u64, size: (u32, u32)) -> Vec<u8> {
    let part = synthetic::render(&synthetic::SHAPES[0], defect, seed);
    let (w, h) = (synthetic::WIDTH, synthetic::HEIGHT);
    if size == (w, h) {
        return synthetic::encode_jpeg(&part.rgb, w, h).unwrap_or_default();
    }
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_raw(w, h, part.rgb).unwrap_or_default();
    let big = image::imageops::resize(&img, size.0, size.1, image::imageops::FilterType::Triangle);
    synthetic::encode_jpeg(big.as_raw(), size.0, size.1).unwrap_or_default()
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let limits = DecodeLimits::default();
    for size in [(640, 480), (1920, 1080)] {
        let good: Vec<Vec<u8>> = (0..50).map(|i| frame(None, 100 + i, size)).collect();
        let test: Vec<Vec<u8>> = (0..60)
            .map(|i| {
                let defect = (i % 2 == 1).then(|| SynthDefect::ALL[(i / 2) as usize % 7]);
                frame(defect, 5000 + i, size)
            })
            .collect();
        let decoded: Vec<Image> = good
            .iter()
            .filter_map(|b| wiko_inspect::decode(b, limits).ok())
            .collect();
        for method in [
            MethodChoice::Auto,
            MethodChoice::Texture,
            MethodChoice::Patch,
        ] {
            measure(&decoded, &test, size, method, limits);
        }
    }
}

/// Fits `good` by `method`, then decodes and scores every test frame, one by one.
fn measure(
    good: &[Image],
    test: &[Vec<u8>],
    size: (u32, u32),
    method: MethodChoice,
    limits: DecodeLimits,
) {
    let options = FitOptions {
        method,
        ..FitOptions::default()
    };
    let started = Instant::now();
    let model = match Model::fit(good, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fit failed: {e}");
            return;
        }
    };
    let fit_s = started.elapsed().as_secs_f64();
    let (mut colour_ms, mut decode_ms, mut total_ms, mut detected) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    for bytes in test {
        let t0 = Instant::now();
        if wiko_inspect::decode(bytes, limits).is_ok() {
            colour_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let t0 = Instant::now();
        if wiko_inspect::decode_planes(bytes, limits, model.planes()).is_ok() {
            decode_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let t0 = Instant::now();
        if model.judge(bytes, limits).is_ok_and(|v| v.defect_detected) {
            detected += 1;
        }
        total_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{}x{}: fit on 50 good parts {:.2} s ({} model, {} bytes, reads {:?}); per image, median of {}: colour decode {:.1} ms (baseline), full-resolution decode of the planes read {:.1} ms (baseline), judge (decode + score) {:.1} ms; {} of 30 defective flagged",
        size.0,
        size.1,
        fit_s,
        model.kind(),
        model.to_bytes().len(),
        model.planes(),
        total_ms.len(),
        median_ms(colour_ms),
        median_ms(decode_ms),
        median_ms(total_ms),
        detected
    );
}
