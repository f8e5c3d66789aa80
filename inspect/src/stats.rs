//! Robust statistics and the threshold calibration.

/// Median of a slice (reorders it); 0 for an empty slice.
pub fn median(values: &mut [f32]) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// The `q` quantile (0..=1) of a slice, by linear interpolation between the two order
/// statistics around it (reorders the slice; linear time, no sort); 0 if empty.
pub fn quantile(values: &mut [f32], q: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f32;
    let (lo, frac) = (pos.floor() as usize, pos.fract());
    let (_, low, above) = values.select_nth_unstable_by(lo, f32::total_cmp);
    let low = *low;
    if frac == 0.0 || above.is_empty() {
        return low;
    }
    // The next order statistic is the smallest of those above.
    let high = above.iter().copied().fold(f32::INFINITY, f32::min);
    low * (1.0 - frac) + high * frac
}

/// Median and robust standard deviation (1.4826 × median absolute deviation).
pub fn median_spread(values: &mut [f32]) -> (f32, f32) {
    let m = median(values);
    for v in values.iter_mut() {
        *v = (*v - m).abs();
    }
    (m, 1.4826 * median(values))
}

/// The image-score threshold for a target false-reject rate, from the scores of good images
/// that the model did not learn from (held-out folds).
///
/// An image score is the maximum of an anomaly map, so good scores follow an extreme-value
/// (Gumbel) law. Its location and scale are estimated robustly from the median and the
/// interquartile range (a few bad parts among the "good" ones barely move them), and the
/// threshold is the Gumbel quantile at `1 - false_reject_rate`. It is deliberately not the
/// largest good score: one mislabelled part among the good ones must not blind the model.
pub fn calibrate(held_out: &[f32], false_reject_rate: f32) -> f32 {
    let mut scores = held_out.to_vec();
    let q1 = quantile(&mut scores, 0.25);
    let q3 = quantile(&mut scores, 0.75);
    let med = quantile(&mut scores, 0.5);
    // IQR of a Gumbel law is 1.5725 β; its median is μ + 0.3665 β.
    let beta = ((q3 - q1) / 1.5725).max(0.02 * med.abs()).max(1e-3);
    let mu = med - 0.3665 * beta;
    let p = (1.0 - false_reject_rate).clamp(0.5, 0.999_999);
    mu - beta * (-p.ln()).ln()
}

/// Image AUROC: the probability that a defect image scores above a good one (ties count
/// half). `None` without both kinds.
pub fn auroc(good: &[f32], defect: &[f32]) -> Option<f64> {
    if good.is_empty() || defect.is_empty() {
        return None;
    }
    let mut all: Vec<(f32, bool)> = good
        .iter()
        .map(|&s| (s, false))
        .chain(defect.iter().map(|&s| (s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|(_, d)| *d).count() as f64 * mid_rank;
        i = j + 1;
    }
    let (n_d, n_g) = (defect.len() as f64, good.len() as f64);
    Some((rank_sum - n_d * (n_d + 1.0) / 2.0) / (n_d * n_g))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn median_quantile_and_spread() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(quantile(&mut [0.0, 10.0], 0.25), 2.5);
        let (m, s) = median_spread(&mut [1.0, 2.0, 3.0, 4.0, 100.0]);
        assert_eq!(m, 3.0);
        assert!((s - 1.4826).abs() < 1e-4, "an outlier does not inflate it");
    }

    #[test]
    fn a_quantile_by_selection_is_the_one_of_the_sorted_values() {
        let mut rng = StdRng::seed_from_u64(11);
        for n in [1usize, 2, 3, 10, 101, 1000] {
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-5.0..5.0)).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            for q in [0.0, 0.003, 0.01, 0.25, 0.5, 0.7, 0.99, 0.997, 1.0] {
                let pos = q * (n - 1) as f32;
                let (lo, frac) = (pos.floor() as usize, pos.fract());
                let hi = (lo + 1).min(n - 1);
                let expected = sorted[lo] * (1.0 - frac) + sorted[hi] * frac;
                let got = quantile(&mut values.clone(), q);
                assert!(
                    (got - expected).abs() < 1e-5,
                    "n {n}, q {q}: {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn the_threshold_sits_above_good_scores_and_rises_for_a_stricter_rate() {
        let good: Vec<f32> = (0..40).map(|i| 3.0 + (i % 7) as f32 * 0.1).collect();
        let loose = calibrate(&good, 0.05);
        let strict = calibrate(&good, 0.001);
        assert!(loose >= 3.6, "above every good score here: {loose}");
        assert!(strict > loose);
        // One bad part among the good ones moves it little.
        let mut spoiled = good.clone();
        spoiled[0] = 50.0;
        assert!((calibrate(&spoiled, 0.01) - calibrate(&good, 0.01)).abs() < 0.5);
    }

    #[test]
    fn auroc_counts_ordered_pairs() {
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), Some(1.0));
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), Some(0.0));
        assert_eq!(auroc(&[1.0, 2.0], &[2.0, 3.0]), Some(0.875));
        assert_eq!(auroc(&[], &[1.0]), None);
    }
}
