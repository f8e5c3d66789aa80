//! Edge analysis per frame: `cargo bench -p wiko-agent --bench edge [-- --frames N]`
//!
//! For each synthetic SKU: the model the e2e test fits (30 good parts, `wiko-agent synth
//! --count 30 --seed 424242 --defect-rate 0`), installed as a pulled model file, then
//! `Models::judge` (decode of the synthetic camera's 640×480 JPEG and score) on `frames` parts
//! of a camera stream with a quarter of them defective, one at a time: p50, p99 and mean.

use std::time::Instant;

use wiko_agent::edge::Models;
use wiko_inspect::{DecodeLimits, FitOptions, Model};
use wiko_synth::{SHAPES, part_jpeg, render_part};

#[derive(clap::Parser)]
struct Args {
    /// Frames judged per SKU.
    #[arg(long, default_value_t = 200)]
    frames: u64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Args = clap::Parser::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let models = Models::open(dir.path()).expect("models");
    for shape in SHAPES {
        let good: Vec<_> = (0..30)
            .map(|i| {
                let jpeg = part_jpeg(&render_part(&shape, 424_242, i, 0.0)).expect("jpeg");
                wiko_inspect::decode(&jpeg, DecodeLimits::default()).expect("decode")
            })
            .collect();
        let file = Model::fit(&good, &FitOptions::default())
            .expect("fit")
            .to_bytes();
        models
            .install(shape.sku, "v1", "\"bench\"", &file)
            .expect("install");
        let frames: Vec<Vec<u8>> = (0..args.frames)
            .map(|i| part_jpeg(&render_part(&shape, 7, i, 0.25)).expect("jpeg"))
            .collect();
        let mut ms = Vec::with_capacity(frames.len());
        let mut ng = 0;
        for jpeg in &frames {
            let start = Instant::now();
            let verdict = models.judge(shape.sku, jpeg).expect("judged");
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
            ng += usize::from(verdict.defect_detected);
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        let bytes = frames.iter().map(Vec::len).sum::<usize>() / frames.len();
        println!(
            "{}: {} frames ({} B JPEG on average, model file {} B, {} NG): p50 {:.1} ms, p99 {:.1} ms, mean {:.1} ms",
            shape.sku,
            frames.len(),
            bytes,
            file.len(),
            ng,
            at(0.5),
            at(0.99),
            mean
        );
    }
}
