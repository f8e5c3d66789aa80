//! Robustness of the golden-sample analyzer to what a line adds that is no defect: one
//! nuisance knob at a time ([`wiko_synth::Nuisance`], or the JPEG quality), from none to
//! beyond what a line would see, and every knob at once (`combined`), on synthetic chef's
//! knives (or paring knives). Per level: fit (method `auto`) on 30 good parts (the sweep:
//! `WIKO_SWEEP_GOOD`) under that nuisance, score 20 other good parts and 21 defective ones (3
//! of each painted kind) under it; image AUROC, the share of defects whose top region covers
//! the mask and the good parts rejected at the calibrated threshold (stated rate 1%).
//!
//! The parts are drawn from a generator seed: seed 0 (the default) gives the chef's knives the
//! aligned method's rules were chosen on (development figures); other seeds give other parts
//! (BENCHMARKS.md says which seeds later took part in choosing a rule: the chef's 5, 6 and 8
//! to 10, the paring knife's 1 and 2). The suite runs a few levels on seed 0 with floors set
//! from what was measured, rivets ±1 px and combined 1 on seed 4 too, and the paring knife
//! either way up and at combined 1; the whole sweep, for BENCHMARKS.md:
//! `cargo test -p wiko-inspect --test robustness -- --ignored --nocapture`, with
//! `WIKO_SWEEP_SEEDS=1,2,3` for fresh parts (mean and spread over the seeds),
//! `WIKO_SWEEP_SKU=WK-PR-090` for the paring knife, `WIKO_SWEEP_GOOD=10` to fit on fewer good
//! parts.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use wiko_inspect::stats::auroc;
use wiko_inspect::{DecodeLimits, FitOptions, Image, Model};
use wiko_synth::{self as synthetic, KnifeShape, Nuisance, SHAPES, SynthDefect};

/// One level of one knob: a nuisance and the JPEG quality, on one knife, fitted on `good`
/// good parts.
struct Level {
    shape: KnifeShape,
    good: u64,
    knob: &'static str,
    value: f32,
    nuisance: Nuisance,
    quality: u8,
}

fn level(knob: &'static str, value: f32) -> Level {
    let mut nuisance = Nuisance::default();
    let mut quality = 90;
    match knob {
        "none" => {}
        // Every knob at once, `value` times what a line would see at once (JPEG quality 75
        // at 1, down to 60 at 2; any turn and either way up at every level).
        "combined" => {
            nuisance = Nuisance {
                features_px: value,
                outline: 0.015 * value,
                shift_px: 2.0 * value,
                rotation_deg: 180.0,
                scale: 0.015 * value,
                blur_sigma: 0.75 * value,
                gain: 0.1 * value,
                colour_cast: 0.05 * value,
                gradient: 0.1 * value,
                noise_sigma: 3.0 * value,
                flip: true,
                belt_marks: 8.0 * value,
            };
            quality = (90.0 - 15.0 * value).max(60.0) as u8;
        }
        "features_px" => nuisance.features_px = value,
        "outline" => nuisance.outline = value,
        "shift_px" => nuisance.shift_px = value,
        "rotation_deg" => nuisance.rotation_deg = value,
        "scale" => nuisance.scale = value,
        "blur_sigma" => nuisance.blur_sigma = value,
        "gain" => nuisance.gain = value,
        "colour_cast" => nuisance.colour_cast = value,
        "gradient" => nuisance.gradient = value,
        "noise_sigma" => nuisance.noise_sigma = value,
        "flip" => nuisance.flip = value > 0.0,
        "belt_marks" => nuisance.belt_marks = value,
        "jpeg_quality" => quality = value as u8,
        other => panic!("no knob {other}"),
    }
    Level {
        shape: SHAPES[0],
        good: 30,
        knob,
        value,
        nuisance,
        quality,
    }
}

/// A part under the level's nuisance, decoded, with its mask.
fn photo(l: &Level, defect: Option<SynthDefect>, seed: u64) -> (Image, Vec<u8>) {
    let part = l.nuisance.render(&l.shape, defect, seed);
    let (rgb, mask) = l.nuisance.apply(&part, seed);
    let jpeg =
        synthetic::encode_jpeg_at(&rgb, synthetic::WIDTH, synthetic::HEIGHT, l.quality).unwrap();
    (
        wiko_inspect::decode(&jpeg, DecodeLimits::default()).unwrap(),
        mask,
    )
}

/// Whether a box `[x, y, w, h]` covers a masked pixel.
fn covers(bbox: [u32; 4], mask: &[u8]) -> bool {
    let w = synthetic::WIDTH;
    let [x, y, bw, bh] = bbox;
    (y..(y + bh).min(synthetic::HEIGHT))
        .any(|yy| (x..(x + bw).min(w)).any(|xx| mask[(yy * w + xx) as usize] > 0))
}

/// What one level measured on the parts of one generator seed.
struct Measured {
    /// The method `auto` chose.
    method: String,
    auroc: f64,
    /// The share of defects whose top region covers the mask.
    hit: f64,
    /// Good parts (of [`GOOD_SCORED`]) over the calibrated threshold.
    rejected: usize,
}

/// Good parts scored at each level, besides the defective ones.
const GOOD_SCORED: u64 = 20;

/// One level on the parts of generator seed `sweep_seed`; why the good parts could not be
/// fitted, when they could not.
fn measure(l: &Level, sweep_seed: u64) -> Result<Measured, String> {
    // Seed 0 is the development parts' seeds; every other seed a million further per step.
    let base = sweep_seed * 1_000_000;
    let good: Vec<Image> = (0..l.good)
        .map(|i| photo(l, None, base + 1000 + i).0)
        .collect();
    let model = Model::fit(&good, &FitOptions::default()).map_err(|e| e.to_string())?;
    let (mut good_scores, mut rejected) = (Vec::new(), 0);
    for i in 0..GOOD_SCORED {
        let v = model.score(&photo(l, None, base + 5000 + i).0).unwrap();
        good_scores.push(v.score);
        rejected += usize::from(v.defect_detected);
    }
    let (mut defect_scores, mut hits) = (Vec::new(), 0);
    for (k, defect) in SynthDefect::ALL.iter().enumerate() {
        for j in 0..3u64 {
            let (img, mask) = photo(l, Some(*defect), base + 7000 + 10 * k as u64 + j);
            let v = model.score(&img).unwrap();
            defect_scores.push(v.score);
            hits += usize::from(v.regions.first().is_some_and(|r| covers(r.bbox, &mask)));
        }
    }
    Ok(Measured {
        method: model.kind().to_string(),
        auroc: auroc(&good_scores, &defect_scores).unwrap(),
        hit: hits as f64 / defect_scores.len() as f64,
        rejected,
    })
}

/// Prints the level's row over the generator seeds `seeds` (each seed's figures, then the
/// mean and standard deviation when there are several); its lowest AUROC and hit rate over the
/// seeds (0 when a fit was refused).
fn report(l: &Level, seeds: &[u64]) -> (f64, f64) {
    let (mut aurocs, mut hits, mut cells) = (Vec::new(), Vec::new(), Vec::new());
    let mut method = String::from("-");
    for &seed in seeds {
        match measure(l, seed) {
            Ok(m) => {
                cells.push(format!(
                    "{:.3} / {:.0}% / {}",
                    m.auroc,
                    m.hit * 100.0,
                    m.rejected
                ));
                method = m.method;
                aurocs.push(m.auroc);
                hits.push(m.hit);
            }
            Err(e) => {
                cells.push(format!("fit refused: {e}"));
                aurocs.push(0.0);
                hits.push(0.0);
            }
        }
    }
    let spread = |v: &[f64], scale: f64, digits: usize| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        format!("{:.digits$} ({:.digits$})", mean * scale, sd * scale)
    };
    let summary = if seeds.len() > 1 {
        format!(
            " | {} | {}",
            spread(&aurocs, 1.0, 3),
            spread(&hits, 100.0, 0)
        )
    } else {
        String::new()
    };
    println!(
        "| {} | {} | {method} | {}{summary} |",
        l.knob,
        l.value,
        cells.join(" | ")
    );
    let lowest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    (lowest(&aurocs), lowest(&hits))
}

/// A few levels, each with floors under what it reached on the development seed (0); the
/// rivets ±1 px and combined 1 also on seed 4, a generator seed no rule was chosen on and no
/// figure was looked at before its floors were set (0.95 / 90%, under the lowest of the fresh
/// seeds 1-3: 0.976 / 95%). Since model format 12, seed 4 at rivets ±1 px locates 19 of 21
/// defects (0.905): the hit floor is met with no defect to spare. The paring knife, on which
/// only the handedness rule was chosen (from seed 1), either way up on seed 3 and at combined
/// 1 on seed 4: measured 1.000 / 100% and 1.000 / 95% (model format 14; 0.829 / 0% and 0.902
/// / 24% before).
#[test]
fn the_analyzer_holds_under_line_nuisances_at_a_few_levels() {
    let [chef, paring] = SHAPES;
    for (shape, knob, value, seed, auroc_floor, hit_floor) in [
        (chef, "none", 0.0, 0, 0.98, 0.9),
        (chef, "shift_px", 2.0, 0, 0.98, 0.9),
        (chef, "rotation_deg", 180.0, 0, 0.98, 0.9),
        (chef, "scale", 0.015, 0, 0.98, 0.9),
        (chef, "scale", 0.05, 0, 0.98, 0.9),
        (chef, "gain", 0.2, 0, 0.98, 0.9),
        (chef, "jpeg_quality", 60.0, 0, 0.95, 0.8),
        (chef, "flip", 1.0, 0, 0.98, 0.9),
        (chef, "belt_marks", 8.0, 0, 0.98, 0.9),
        (chef, "features_px", 1.0, 0, 0.98, 0.9),
        (chef, "features_px", 1.0, 4, 0.95, 0.9),
        (chef, "combined", 1.0, 0, 0.98, 0.9),
        (chef, "combined", 1.0, 4, 0.95, 0.9),
        (paring, "flip", 1.0, 3, 0.98, 0.9),
        (paring, "combined", 1.0, 4, 0.95, 0.85),
    ] {
        let start = std::time::Instant::now();
        let (a, hit) = report(
            &Level {
                shape,
                ..level(knob, value)
            },
            &[seed],
        );
        let sku = shape.sku;
        println!(
            "  ({sku}, seed {seed}, {:.1} s)",
            start.elapsed().as_secs_f64()
        );
        assert!(
            a >= auroc_floor,
            "{sku} {knob} {value} seed {seed}: AUROC {a:.3}"
        );
        assert!(
            hit >= hit_floor,
            "{sku} {knob} {value} seed {seed}: hit {hit:.3}"
        );
    }
}

/// The whole sweep (minutes in a debug build): a Markdown table for BENCHMARKS.md.
/// `WIKO_SWEEP_KNOBS=scale,gain` sweeps only those knobs; `WIKO_SWEEP_SEEDS=1,2,3` draws
/// the parts from those generator seeds (default 0, the development parts);
/// `WIKO_SWEEP_SKU=WK-PR-090` sweeps that knife (default the chef's knife, `WK-KN-200`, on
/// which the rules were chosen, all but the handedness rule's scatter test);
/// `WIKO_SWEEP_GOOD=10` fits on that many good parts (default 30).
#[test]
#[ignore = "the whole sweep; run it for BENCHMARKS.md"]
fn sweep() {
    let shape = std::env::var("WIKO_SWEEP_SKU").map_or(SHAPES[0], |sku| {
        synthetic::shape(&sku).unwrap_or_else(|| panic!("no synthetic knife {sku}"))
    });
    let good: u64 = std::env::var("WIKO_SWEEP_GOOD").map_or(30, |n| n.trim().parse().unwrap());
    let seeds: Vec<u64> = std::env::var("WIKO_SWEEP_SEEDS")
        .map(|s| s.split(',').map(|v| v.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| vec![0]);
    let per_seed: String = seeds
        .iter()
        .map(|s| format!(" seed {s}: AUROC / hit / good rejected |"))
        .collect();
    let summary = if seeds.len() > 1 {
        " AUROC mean (sd) | hit mean (sd) |"
    } else {
        ""
    };
    println!(
        "{}, fitted on {good} good parts; {GOOD_SCORED} good parts scored:\n",
        shape.sku
    );
    println!("| knob | level | method |{per_seed}{summary}");
    println!(
        "|---|---|---|{}",
        "---|".repeat(seeds.len() + 2 * usize::from(seeds.len() > 1))
    );
    let levels: &[(&str, &[f32])] = &[
        ("none", &[0.0]),
        ("features_px", &[0.5, 1.0, 2.0]),
        ("outline", &[0.015, 0.03]),
        ("shift_px", &[0.5, 2.0, 4.0]),
        ("rotation_deg", &[5.0, 30.0, 180.0]),
        ("scale", &[0.015, 0.05]),
        ("blur_sigma", &[0.75, 1.5]),
        ("gain", &[0.1, 0.3]),
        ("colour_cast", &[0.05, 0.15]),
        ("gradient", &[0.1, 0.3]),
        ("noise_sigma", &[3.0, 8.0]),
        ("jpeg_quality", &[75.0, 60.0]),
        ("flip", &[1.0]),
        ("belt_marks", &[8.0, 20.0]),
        ("combined", &[0.5, 1.0, 2.0]),
    ];
    let only = std::env::var("WIKO_SWEEP_KNOBS").ok();
    let wanted = |knob: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|k| k == knob))
    };
    for (knob, values) in levels.iter().filter(|(knob, _)| wanted(knob)) {
        for &value in *values {
            report(
                &Level {
                    shape,
                    good,
                    ..level(knob, value)
                },
                &seeds,
            );
        }
    }
}
