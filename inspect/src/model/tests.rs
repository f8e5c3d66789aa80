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
                    value = 60.0;
                }
            }
            g.set(x, y, value + 4.0 * next());
        }
    }
    g
}

fn model() -> Model {
    let good: Vec<Gray> = (0..12).map(|i| part(i, None)).collect();
    Model::fit(&good).unwrap()
}

#[test]
fn good_parts_pass_and_a_spot_is_found_where_it_is() {
    let m = model();
    for seed in 100..106 {
        let v = m.score(&part(seed, None)).unwrap();
        assert!(
            !v.defect_detected,
            "good part {seed}: score {} threshold {}",
            v.score, v.threshold
        );
    }
    let bad = part(200, Some((40.0, 0.0, 4.0)));
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
    assert_eq!(top.kind, RegionKind::Pit);
}

#[test]
fn fitting_needs_enough_images_and_a_part_in_each() {
    let few: Vec<Gray> = (0..3).map(|i| part(i, None)).collect();
    assert_eq!(Model::fit(&few), Err(FitError::TooFew { got: 3 }));
    let mut with_empty: Vec<Gray> = (0..6).map(|i| part(i, None)).collect();
    with_empty[4] = Gray::new(320, 200, 90.0);
    assert!(matches!(
        Model::fit(&with_empty),
        Err(FitError::Image { index: 4, .. })
    ));
}

#[test]
fn the_model_round_trips_through_json() {
    let m = model();
    let back: Model = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back.threshold, m.threshold);
    assert_eq!(back.median.len(), m.width * m.height);
}

#[test]
fn scoring_is_deterministic() {
    let m = model();
    let img = part(300, Some((-80.0, 5.0, 3.0)));
    assert_eq!(m.score(&img).unwrap(), m.score(&img).unwrap());
}
