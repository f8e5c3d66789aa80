use super::*;
use crate::RegionKind;

/// A knife-like part: dark handle, bright blade, on a mid-grey belt with noise, at a small pose
/// offset. `spot` paints a dark disc (u, v, radius) on the part.
fn part(seed: u64, spot: Option<(f32, f32, f32)>) -> Gray {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let (cx, cy, angle) = (160.0 + 6.0 * next(), 100.0 + 6.0 * next(), 0.05 * next());
    let mut g = Gray::new(320, 200, 0.0);
    let (s, c) = angle.sin_cos();
    for y in 0..200 {
        for x in 0..320 {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let u = dx * c + dy * s;
            let v = -dx * s + dy * c;
            let mut value = 90.0;
            if u.abs() < 110.0 && v.abs() < 14.0 {
                value = if u < -50.0 { 40.0 } else { 180.0 + v };
                if let Some((su, sv, r)) = spot
                    && (u - su).powi(2) + (v - sv).powi(2) < r * r
                {
                    value = 20.0;
                }
            }
            g.set(x, y, value + 4.0 * next());
        }
    }
    g
}

fn model() -> Model {
    let good: Vec<Image> = (0..12).map(|i| part(i, None)).map(Image::from).collect();
    Model::fit(&good, &FitOptions::default()).unwrap()
}

#[test]
fn good_parts_pass_and_a_spot_is_found_where_it_is() {
    let m = model();
    assert_eq!(m.kind(), "aligned", "an object on a plain belt");
    for seed in 100..106 {
        let v = m.score(&part(seed, None).into()).unwrap();
        assert!(
            !v.defect_detected,
            "good part {seed}: score {} threshold {}",
            v.score, v.threshold
        );
    }
    let bad = Image::from(part(200, Some((40.0, 0.0, 3.0))));
    let v = m.score(&bad).unwrap();
    assert!(
        v.defect_detected,
        "score {} threshold {}",
        v.score, v.threshold
    );
    let top = &v.regions[0];
    // The spot lies near image x = 160 + 40, y = 100 (within the pose jitter).
    let [x, y, w, h] = top.bbox;
    assert!(
        x <= 205 && x + w >= 195 && y <= 105 && y + h >= 95,
        "bbox {:?}",
        top.bbox
    );
    assert_eq!(top.kind, RegionKind::Pit, "{top:?}");

    // Laid over the image, the map is strongest on the spot, inside the region's box.
    let heat = m.map_in_image(&v, bad.width(), bad.height());
    let (i, peak) =
        heat.data.iter().enumerate().fold(
            (0, f32::MIN),
            |best, (i, &h)| if h > best.1 { (i, h) } else { best },
        );
    let (px, py) = ((i % heat.width) as u32, (i / heat.width) as u32);
    assert!(
        (x..x + w).contains(&px) && (y..y + h).contains(&py),
        "peak at {px},{py}, box {:?}",
        top.bbox
    );
    assert!(
        (peak - v.score).abs() <= 0.25 * v.score,
        "peak {peak}, score {}",
        v.score
    );
    assert_eq!(
        heat.get(0, 0),
        0.0,
        "the belt's corner lies outside the canonical frame"
    );
}

#[test]
fn fitting_needs_enough_images_and_a_part_in_each() {
    let few: Vec<Image> = (0..3).map(|i| part(i, None)).map(Image::from).collect();
    let options = FitOptions::default();
    assert_eq!(Model::fit(&few, &options), Err(FitError::TooFew { got: 3 }));
    let mut with_empty: Vec<Image> = (0..6).map(|i| part(i, None)).map(Image::from).collect();
    with_empty[4] = Gray::new(320, 200, 90.0).into();
    let aligned = FitOptions {
        method: MethodChoice::Aligned,
        ..options
    };
    assert!(matches!(
        Model::fit(&with_empty, &aligned),
        Err(FitError::Image { index: 4, .. })
    ));
    assert_eq!(
        Model::fit(&with_empty, &options).map(|_| ()),
        Err(FitError::Image {
            index: 4,
            source: InspectError::NoPart
        }),
        "auto: one empty belt among knives is a bad golden image, not a texture"
    );
    let bad_rate = FitOptions {
        false_reject_rate: 0.0,
        ..options
    };
    assert_eq!(
        Model::fit(&few, &bad_rate).map(|_| ()),
        Err(FitError::TooFew { got: 3 })
    );
    let enough: Vec<Image> = (0..6).map(|i| part(i, None)).map(Image::from).collect();
    assert_eq!(Model::fit(&enough, &bad_rate), Err(FitError::Rate(0.0)));
}

#[test]
fn auto_takes_a_surface_filling_the_image_as_texture() {
    let good: Vec<Image> = (0..6)
        .map(|i| {
            let mut g = part(i, None);
            for (k, v) in g.data.iter_mut().enumerate() {
                *v = 100.0 + ((k * 7919 + i as usize * 31) % 61) as f32;
            }
            Image::from(g)
        })
        .collect();
    let m = Model::fit(&good, &FitOptions::default()).unwrap();
    assert_eq!(m.kind(), "texture");
    let v = m.score(&good[0]).unwrap();
    assert!(v.pose.is_none());
    let heat = m.map_in_image(&v, 320, 200);
    assert_eq!(
        (heat.width, heat.height),
        (320, 200),
        "the image's own size"
    );
    assert!(heat.data.iter().all(|h| (0.0..=v.score + 1e-3).contains(h)));
}

#[test]
fn the_model_file_round_trips_and_refuses_other_bytes() {
    let m = model();
    let bytes = m.to_bytes();
    assert_eq!(Model::from_bytes(&bytes).unwrap(), m);
    assert_eq!(Model::from_bytes(b"{}"), Err(ModelFileError::NotAModel));
    let mut old = bytes.clone();
    old[8] = 1;
    assert_eq!(
        Model::from_bytes(&old),
        Err(ModelFileError::Format { found: 1 })
    );
    assert!(matches!(
        Model::from_bytes(&bytes[..bytes.len() / 2]),
        Err(ModelFileError::Corrupt(_))
    ));
    // Well-formed but inconsistent (statistics shorter than the frame): refused, not a panic
    // when scoring.
    let mut short = m.clone();
    if let Method::Aligned(a) = &mut short.method {
        a.channels[0].median.pop();
    }
    assert!(matches!(
        Model::from_bytes(&short.to_bytes()),
        Err(ModelFileError::Corrupt(_))
    ));
    // Statistics no fit makes (a NaN or zero spread, a tail next to zero, a huge median)
    // would judge with NaN or infinite scores: refused.
    let parts: Vec<Image> = (0..6).map(|i| part(i, None)).map(Image::from).collect();
    let texture = Model::fit(
        &parts,
        &FitOptions {
            method: MethodChoice::Texture,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let refused = |model: &Model, damage: fn(&mut Method)| {
        let mut bad = model.clone();
        damage(&mut bad.method);
        assert_ne!(&bad, model, "the damage applies");
        matches!(
            Model::from_bytes(&bad.to_bytes()),
            Err(ModelFileError::Corrupt(_))
        )
    };
    assert!(refused(&m, |method| {
        if let Method::Aligned(a) = method {
            a.channels[1].spread[0] = f32::NAN;
        }
    }));
    assert!(refused(&m, |method| {
        if let Method::Aligned(a) = method {
            a.channels[0].spread[7] = 0.0;
        }
    }));
    assert!(refused(&texture, |method| {
        if let Method::Texture(t) = method {
            t.dark_tail[3] = 1e-30;
        }
    }));
    assert!(refused(&texture, |method| {
        if let Method::Texture(t) = method {
            t.median[0] = 1e30;
        }
    }));
    assert!(refused(&texture, |method| {
        if let Method::Texture(t) = method {
            t.unit[2] = 0.0;
        }
    }));
    let patch = Model::fit(
        &parts,
        &FitOptions {
            method: MethodChoice::Patch,
            ..FitOptions::default()
        },
    )
    .unwrap();
    assert!(refused(&patch, |method| {
        if let Method::Patch(p) = method {
            p.bank.pop();
        }
    }));
    assert!(refused(&patch, |method| {
        if let Method::Patch(p) = method {
            p.bank[5] = f32::INFINITY;
        }
    }));
    assert!(refused(&patch, |method| {
        if let Method::Patch(p) = method {
            p.scale = 0.0;
        }
    }));
    // A reference size images would be resized to that no memory holds: refused.
    assert!(refused(&texture, |method| {
        if let Method::Texture(t) = method {
            t.reference_size = Some((1 << 40, 1 << 40));
        }
    }));
}

#[test]
fn scoring_is_deterministic() {
    let m = model();
    let img = Image::from(part(300, Some((-80.0, 5.0, 3.0))));
    assert_eq!(m.score(&img).unwrap(), m.score(&img).unwrap());
}

/// Odd inputs for a model of each kind: every score is a finite verdict or an error, never a
/// panic (flat, saturated, tiny, very long, very tall, a hard checkerboard).
#[test]
fn odd_images_give_a_verdict_or_an_error_with_every_method() {
    let surface = |i: u64| {
        let mut g = part(i, None);
        for (k, v) in g.data.iter_mut().enumerate() {
            *v = 100.0 + ((k * 7919 + i as usize * 31) % 61) as f32;
        }
        g
    };
    let surfaces: Vec<Image> = (0..6).map(surface).map(Image::from).collect();
    let models = [
        model(),
        Model::fit(&surfaces, &FitOptions::default()).unwrap(),
        Model::fit(
            &surfaces,
            &FitOptions {
                method: MethodChoice::Fixed,
                ..FitOptions::default()
            },
        )
        .unwrap(),
        Model::fit(
            &surfaces,
            &FitOptions {
                method: MethodChoice::Patch,
                ..FitOptions::default()
            },
        )
        .unwrap(),
    ];
    let checker = |w: usize, h: usize| {
        let mut g = Gray::new(w, h, 0.0);
        for y in 0..h {
            for x in 0..w {
                g.set(x, y, if (x / 3 + y / 3) % 2 == 0 { 0.0 } else { 255.0 });
            }
        }
        g
    };
    let odd = [
        Gray::new(320, 200, 0.0),
        Gray::new(320, 200, 255.0),
        Gray::new(1, 1, 128.0),
        Gray::new(37, 37, 90.0),
        Gray::new(4000, 40, 90.0),
        Gray::new(40, 4000, 90.0),
        checker(320, 200),
        checker(1200, 90),
    ];
    let kinds: Vec<&str> = models.iter().map(Model::kind).collect();
    assert_eq!(kinds, ["aligned", "texture", "fixed", "patch"]);
    for m in &models {
        let mut verdicts = 0;
        for img in &odd {
            if let Ok(v) = m.score(&Image::from(img.clone())) {
                verdicts += 1;
                assert!(
                    v.score.is_finite(),
                    "{} on {}×{}",
                    m.kind(),
                    img.width,
                    img.height
                );
                assert!(v.regions.iter().all(|r| r.peak.is_finite()));
            }
        }
        assert!(verdicts >= 2, "{}: {verdicts} verdicts", m.kind());
    }
}

#[test]
fn angle_play_is_measured_around_the_circle() {
    let tau = std::f32::consts::TAU;
    assert!(angle_play(&[0.0, 0.05, -0.05]) < 0.06);
    // Directions either side of ±180° are close, not a full turn apart.
    assert!(angle_play(&[3.1, -3.1, 3.12]) < 0.1);
    assert!(angle_play(&[0.0, 1.0, tau - 1.0]) > 0.9);
}

#[test]
fn the_cross_scoring_holds_out_whole_parts() {
    // Images of their own part: fold i % 5, as the calibration always dealt them.
    assert_eq!(folds_of(&[0, 1, 2, 3, 4, 5, 6], 7), [0, 1, 2, 3, 4, 0, 1]);
    // Three photos of part 7, two of part 3, one of part 9: a part's photos share a fold.
    assert_eq!(folds_of(&[7, 3, 7, 9, 3, 7], 6), [0, 1, 0, 2, 1, 0]);
    // One part only, or names that do not match the images: per image.
    assert_eq!(folds_of(&[4, 4, 4, 4, 4, 4], 6), [0, 1, 2, 3, 4, 0]);
    assert_eq!(folds_of(&[0, 1], 6), [0, 1, 2, 3, 4, 0]);
    assert_eq!(folds_of(&[], 0), Vec::<usize>::new());
}

#[test]
fn a_part_photographed_twice_is_not_scored_by_a_model_that_saw_it() {
    // Six parts, each photographed twice at its own pose: with each photo its own part, a
    // photo's twin is among the images that calibrate it, and its held-out score is lower
    // than when the twins are held out together. The patch method's memory shows it plainly
    // (a twin's own cells are in it); the aligned method's robust per-pixel statistics, each
    // pixel matched within a pixel of its place, hardly move with one image more.
    let good: Vec<Image> = (0..12)
        .map(|i| part(i / 2, None))
        .map(Image::from)
        .collect();
    let options = FitOptions {
        method: MethodChoice::Patch,
        ..FitOptions::default()
    };
    let apart = Model::fit(&good, &options).unwrap();
    let parts: Vec<usize> = (0..12).map(|i| i / 2).collect();
    let together = Model::fit_objects(&good, &parts, &options).unwrap();
    assert_eq!(
        apart.method, together.method,
        "the same model on all images"
    );
    let sum = |m: &Model| m.held_out_scores.iter().sum::<f32>();
    assert!(
        sum(&together) > sum(&apart),
        "{:?} vs {:?}",
        together.held_out_scores,
        apart.held_out_scores
    );
}

#[test]
fn a_model_reads_colour_only_when_fitted_on_it_and_judges_the_same_from_luma_alone() {
    // The part with a warm tint, as 8-bit RGB.
    let tinted = |g: &Gray| -> Vec<u8> {
        g.data
            .iter()
            .flat_map(|&v| {
                let v = v.clamp(0.0, 255.0);
                [v as u8, (0.9 * v) as u8, (0.8 * v) as u8]
            })
            .collect()
    };
    let fit = |images: &[Image], method| {
        let options = FitOptions {
            method,
            ..FitOptions::default()
        };
        Model::fit(images, &options).unwrap()
    };
    let colour: Vec<Image> = (0..12)
        .map(|i| part(i, None))
        .map(|g| Image::from_rgb(g.width, g.height, &tinted(&g)))
        .collect();
    let mono: Vec<Image> = (0..12).map(|i| part(i, None).into()).collect();
    let aligned = fit(&colour, MethodChoice::Aligned);
    assert_eq!(aligned.planes(), Planes::Luma);
    assert_eq!(fit(&colour, MethodChoice::Patch).planes(), Planes::Colour);
    assert_eq!(fit(&mono, MethodChoice::Patch).planes(), Planes::Luma);

    // A colour JPEG of a part with a spot, decoded as the aligned model asks: luma alone, the
    // same luma and the same verdict as the full decode.
    let bad = part(200, Some((40.0, 0.0, 3.0)));
    let rgb = image::RgbImage::from_raw(320, 200, tinted(&bad)).unwrap();
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(rgb)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let limits = crate::DecodeLimits::default();
    let full = crate::decode(&jpeg, limits).unwrap();
    let luma = crate::decode_planes(&jpeg, limits, aligned.planes()).unwrap();
    assert!(full.chroma.is_some() && luma.chroma.is_none());
    assert_eq!(luma.luma, full.luma);
    let verdict = aligned.score(&luma).unwrap();
    assert!(verdict.defect_detected);
    assert_eq!(verdict, aligned.score(&full).unwrap());
}

#[test]
fn judging_the_file_gives_the_verdict_of_scoring_its_full_decode() {
    // Parts three times the size: an aligned model works on them at half resolution, and
    // judges a file decoded straight to it.
    let big = |g: Gray| Image::from(g.resize(960, 600));
    let good: Vec<Image> = (0..12).map(|i| big(part(i, None))).collect();
    let aligned = Model::fit(&good, &FitOptions::default()).unwrap();
    let Method::Aligned(m) = &aligned.method else {
        panic!("an object on a plain belt: {}", aligned.kind());
    };
    assert_eq!(m.downscale, 2);
    let texture = Model::fit(
        &good,
        &FitOptions {
            method: MethodChoice::Texture,
            ..FitOptions::default()
        },
    )
    .unwrap();
    let limits = crate::DecodeLimits::default();
    for (seed, spot) in [(300, None), (301, Some((40.0, 0.0, 3.0)))] {
        let luma = big(part(seed, spot)).luma;
        let pixels = luma
            .data
            .iter()
            .map(|&v| v.clamp(0.0, 255.0) as u8)
            .collect();
        let mut file = Vec::new();
        image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(960, 600, pixels).unwrap())
            .write_to(
                &mut std::io::Cursor::new(&mut file),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let decoded = crate::decode(&file, limits).unwrap();
        for model in [&aligned, &texture] {
            let verdict = model.judge(&file, limits).unwrap();
            assert_eq!(verdict, model.score(&decoded).unwrap(), "{}", model.kind());
            if model.kind() == "aligned" {
                assert_eq!(verdict.defect_detected, spot.is_some(), "seed {seed}");
            }
        }
    }
}
