//! Hostile input through the public API: damaged model files and damaged image bytes, made by
//! seeded random mutation of good ones. Every call returns a value or an error; no panic, and
//! no model that loads but judges with a NaN.

use image::{DynamicImage, GrayImage, ImageFormat, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wiko_inspect::{DecodeLimits, FitOptions, Gray, Image, MethodChoice, Model, decode};

/// Mutations tried per model file and per image file.
const MUTATIONS: usize = 1_000;

/// A dark bar (a part) on a plain belt, at a small offset per seed.
fn part(seed: u64) -> Gray {
    let mut rng = StdRng::seed_from_u64(seed);
    let (ox, oy) = (rng.random_range(-4.0..4.0), rng.random_range(-4.0..4.0));
    let mut g = Gray::new(240, 140, 0.0);
    for y in 0..140 {
        for x in 0..240 {
            let (u, v) = (x as f32 - 120.0 - ox, y as f32 - 70.0 - oy);
            let inside = u.abs() < 90.0 && v.abs() < 16.0;
            let base = if inside { 190.0 } else { 80.0 };
            g.set(x, y, base + rng.random_range(-5.0..5.0));
        }
    }
    g
}

/// A noisy striped surface filling the image.
fn surface(seed: u64) -> Gray {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut g = Gray::new(160, 120, 0.0);
    for y in 0..120 {
        for x in 0..160 {
            let stripe = if (x / 4) % 2 == 0 { 20.0 } else { 0.0 };
            g.set(x, y, 110.0 + stripe + rng.random_range(-8.0..8.0));
        }
    }
    g
}

/// One model of each kind, with the images it was fitted on.
fn models() -> Vec<(Model, Vec<Image>)> {
    let parts: Vec<Image> = (0..8).map(|i| part(i).into()).collect();
    let surfaces: Vec<Image> = (0..8).map(|i| surface(i).into()).collect();
    let fit = |images: &[Image], method| {
        let options = FitOptions {
            method,
            ..FitOptions::default()
        };
        Model::fit(images, &options).expect("the good images fit")
    };
    let models = vec![
        (fit(&parts, MethodChoice::Aligned), parts),
        (fit(&surfaces, MethodChoice::Texture), surfaces.clone()),
        (fit(&surfaces, MethodChoice::Fixed), surfaces.clone()),
        (fit(&surfaces, MethodChoice::Patch), surfaces),
    ];
    let kinds: Vec<&str> = models.iter().map(|(m, _)| m.kind()).collect();
    assert_eq!(kinds, ["aligned", "texture", "fixed", "patch"]);
    models
}

/// Damages `bytes` in one to three places: a flipped bit, a byte set at random, a cut, or a
/// stretch repeated.
fn mutate(bytes: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=3) {
        if out.is_empty() {
            break;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..4) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = rng.random(),
            2 => out.truncate(at),
            _ => {
                let end = (at + rng.random_range(1..16)).min(out.len());
                let stretch = out[at..end].to_vec();
                out.splice(at..at, stretch);
            }
        }
    }
    out
}

/// Scores `images` with `model`: each is an error or a verdict with finite numbers.
fn assert_judges_soundly(model: &Model, images: &[Image], what: &str) {
    for img in images {
        if let Ok(v) = model.score(img) {
            assert!(v.score.is_finite(), "{what}: score {}", v.score);
            assert!(v.threshold.is_finite(), "{what}: threshold {}", v.threshold);
            assert!(
                v.regions.iter().all(|r| r.peak.is_finite()),
                "{what}: a region's peak is not finite"
            );
        }
    }
}

#[test]
fn a_damaged_model_file_is_refused_or_judges_soundly() {
    let mut rng = StdRng::seed_from_u64(7);
    for (model, images) in models() {
        let bytes = model.to_bytes();
        let probes = [images[0].clone(), Gray::new(90, 60, 128.0).into()];
        let mut loaded = 0;
        for i in 0..MUTATIONS {
            let damaged = mutate(&bytes, &mut rng);
            if let Ok(m) = Model::from_bytes(&damaged) {
                loaded += 1;
                assert_judges_soundly(&m, &probes, &format!("{} mutation {i}", model.kind()));
            }
        }
        eprintln!(
            "{}: {loaded} of {MUTATIONS} damaged files loaded",
            model.kind()
        );
        // Damage inside the statistics that leaves them plausible cannot be told from a model
        // fitted on other parts: such files load, and must still judge soundly.
        assert!(
            loaded > 0,
            "{}: no damaged file loaded at all",
            model.kind()
        );
    }
}

#[test]
fn damaged_image_bytes_decode_to_an_image_or_an_error() {
    let mut rng = StdRng::seed_from_u64(11);
    let models = models();
    let grey = GrayImage::from_fn(96, 64, |x, y| Luma([((x * 5 + y * 3) % 200) as u8 + 20]));
    let pictures = [
        (DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Jpeg),
        (
            DynamicImage::ImageLuma8(grey.clone()).to_rgb8().into(),
            ImageFormat::Jpeg,
        ),
        (
            DynamicImage::ImageLuma8(grey.clone()).to_luma16().into(),
            ImageFormat::Png,
        ),
        (DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Bmp),
        (
            DynamicImage::ImageLuma8(grey).to_rgb8().into(),
            ImageFormat::Tiff,
        ),
    ];
    for (picture, format) in pictures {
        let mut encoded = std::io::Cursor::new(Vec::new());
        picture
            .write_to(&mut encoded, format)
            .expect("encoding to memory");
        let bytes = encoded.into_inner();
        assert!(
            decode(&bytes, DecodeLimits::default()).is_ok(),
            "{format:?}"
        );
        for i in 0..MUTATIONS {
            let damaged = mutate(&bytes, &mut rng);
            if let Ok(img) = decode(&damaged, DecodeLimits::default()) {
                assert!(img.luma.data.iter().all(|v| v.is_finite()));
                let chroma = img.chroma.iter().flatten();
                assert!(chroma.flat_map(|p| &p.data).all(|v| v.is_finite()));
                for (m, _) in &models {
                    let what = format!("{format:?} mutation {i}");
                    assert_judges_soundly(m, std::slice::from_ref(&img), &what);
                }
            }
        }
    }
}
