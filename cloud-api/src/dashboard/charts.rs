//! The Overview's charts as inline SVG written here (no chart library, no script): the NG-rate
//! trend, a Pareto of defect types, and a p-chart of the NG rate with 3-sigma limits. The
//! figures behind them are plain functions ([`p_chart_points`]), tested apart from the
//! drawing.

use maud::{Markup, html};

const W: f64 = 640.0;
const H: f64 = 220.0;
/// Room for the axes' labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 20.0;
const RIGHT: f64 = 12.0;

/// One bucket of a time series: its label, parts judged, and of them NG.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub label: String,
    pub judged: u64,
    pub ng: u64,
}

/// A p-chart point: the bucket's NG rate and its limits (they narrow as the sample grows).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlPoint {
    pub rate: f64,
    pub lower: f64,
    pub upper: f64,
    /// Outside its limits.
    pub out_of_control: bool,
}

/// The centre line (the NG rate over every bucket) and each bucket's point; `None` without a
/// judged part. A bucket without a judged part has no point.
pub fn p_chart_points(samples: &[Sample]) -> Option<(f64, Vec<Option<ControlPoint>>)> {
    let judged: u64 = samples.iter().map(|s| s.judged).sum();
    if judged == 0 {
        return None;
    }
    let centre = samples.iter().map(|s| s.ng).sum::<u64>() as f64 / judged as f64;
    let points = samples
        .iter()
        .map(|s| {
            (s.judged > 0).then(|| {
                let n = s.judged as f64;
                let sigma = (centre * (1.0 - centre) / n).sqrt();
                let rate = s.ng as f64 / n;
                let (lower, upper) = (
                    (centre - 3.0 * sigma).max(0.0),
                    (centre + 3.0 * sigma).min(1.0),
                );
                ControlPoint {
                    rate,
                    lower,
                    upper,
                    out_of_control: rate > upper + 1e-12 || rate < lower - 1e-12,
                }
            })
        })
        .collect();
    Some((centre, points))
}

fn x_at(i: usize, count: usize) -> f64 {
    let inner = W - LEFT - RIGHT;
    if count <= 1 {
        LEFT + inner / 2.0
    } else {
        LEFT + inner * i as f64 / (count - 1) as f64
    }
}

fn y_at(v: f64, top: f64) -> f64 {
    let inner = H - TOP - BOTTOM;
    TOP + inner * (1.0 - (v / top).clamp(0.0, 1.0))
}

/// A rate axis's top: a round percentage above `max`.
fn rate_top(max: f64) -> f64 {
    let steps = [0.02, 0.04, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0];
    steps.into_iter().find(|s| *s >= max * 1.1).unwrap_or(1.0)
}

fn pct(v: f64) -> String {
    if v < 0.1 {
        format!("{:.1}%", v * 100.0)
    } else {
        format!("{:.0}%", v * 100.0)
    }
}

/// The frame, the horizontal grid with percentage labels, and a few bucket labels.
fn axes(top: f64, labels: &[String]) -> Markup {
    let every = labels.len().div_ceil(8).max(1);
    html! {
        @for k in 0..=4 {
            @let v = top * k as f64 / 4.0;
            @let y = y_at(v, top);
            line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y) y2=(y) {}
            text.axis x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (pct(v)) }
        }
        @for (i, l) in labels.iter().enumerate() {
            @if i % every == 0 {
                @let anchor = if labels.len() > 1 && i == 0 { "start" } else if labels.len() > 1 && i + 1 == labels.len() { "end" } else { "middle" };
                text.axis x=(x_at(i, labels.len())) y=(H - 8.0) text-anchor=(anchor) { (l) }
            }
        }
    }
}

fn empty(what: &str) -> Markup {
    html! { p.muted.chart-empty { "No judged parts in this range: no " (what) "." } }
}

/// The NG rate per bucket, as a line with its points.
pub fn trend(samples: &[Sample]) -> Markup {
    let rates: Vec<Option<f64>> = samples
        .iter()
        .map(|s| (s.judged > 0).then(|| s.ng as f64 / s.judged as f64))
        .collect();
    let max = rates.iter().flatten().copied().fold(0.0, f64::max);
    if rates.iter().all(Option::is_none) {
        return empty("trend");
    }
    let top = rate_top(max);
    let labels: Vec<String> = samples.iter().map(|s| s.label.clone()).collect();
    let path: Vec<String> = rates
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| format!("{:.1},{:.1}", x_at(i, rates.len()), y_at(r, top))))
        .collect();
    html! {
        svg.chart #trend viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="NG rate trend" {
            (axes(top, &labels))
            polyline.series points=(path.join(" ")) {}
            @for (i, r) in rates.iter().enumerate() {
                @if let Some(r) = r {
                    circle.dot cx=(x_at(i, rates.len())) cy=(y_at(*r, top)) r="3" {
                        title { (samples[i].label) ": " (pct(*r)) " NG of " (samples[i].judged) }
                    }
                }
            }
        }
    }
}

/// Defects by type, most frequent first, with the cumulative share as a line.
pub fn pareto(counts: &[(String, u64)]) -> Markup {
    let mut sorted: Vec<&(String, u64)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let total: u64 = sorted.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return html! { p.muted.chart-empty { "No defects in this range." } };
    }
    let max = sorted[0].1 as f64;
    let slot = (W - LEFT - RIGHT) / sorted.len() as f64;
    let mut cumulative = 0;
    // Each bar: name, count, left edge, top, and the cumulative share's point above it.
    let bars: Vec<(&str, u64, f64, f64, String)> = sorted
        .iter()
        .enumerate()
        .map(|(i, (name, n))| {
            cumulative += n;
            let x = LEFT + slot * i as f64 + slot * 0.15;
            let share = y_at(cumulative as f64 / total as f64, 1.0);
            let point = format!("{:.1},{share:.1}", x + slot * 0.35);
            (name.as_str(), *n, x, y_at(*n as f64 / max, 1.0), point)
        })
        .collect();
    let line: Vec<&str> = bars.iter().map(|b| b.4.as_str()).collect();
    html! {
        svg.chart #pareto viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="Pareto of defect types" {
            @for k in 0..=4 {
                @let y = y_at(k as f64 / 4.0, 1.0);
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y) y2=(y) {}
                text.axis x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (k * 25) "%" }
            }
            @for (name, n, x, y, _) in &bars {
                @let middle = format!("{:.1}", x + slot * 0.35);
                g.bar data-type=(name) data-count=(n) {
                    rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{:.1}", slot * 0.7)) height=(format!("{:.1}", H - BOTTOM - y)) {
                        title { (name) ": " (n) }
                    }
                    text.axis x=(middle) y=(H - 8.0) text-anchor="middle" { (name.replace('_', " ")) }
                    text.value x=(middle) y=(format!("{:.1}", y - 4.0)) text-anchor="middle" { (n) }
                }
            }
            polyline.cumulative points=(line.join(" ")) {}
        }
    }
}

/// The p-chart: each bucket's NG rate, the centre line, the 3-sigma limits (a step line, as
/// they depend on each bucket's size) and the points outside them marked.
pub fn p_chart(samples: &[Sample]) -> Markup {
    let Some((centre, points)) = p_chart_points(samples) else {
        return empty("control chart");
    };
    let max = points
        .iter()
        .flatten()
        .map(|p| p.rate.max(p.upper))
        .fold(centre, f64::max);
    let top = rate_top(max);
    let labels: Vec<String> = samples.iter().map(|s| s.label.clone()).collect();
    let n = points.len();
    let limit = |pick: fn(&ControlPoint) -> f64| -> String {
        points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                p.as_ref()
                    .map(|p| format!("{:.1},{:.1}", x_at(i, n), y_at(pick(p), top)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rates = limit(|p| p.rate);
    let out = points.iter().flatten().filter(|p| p.out_of_control).count();
    html! {
        svg.chart #p-chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label="p-chart of the NG rate" data-centre=(format!("{centre:.4}")) data-out-of-control=(out) {
            (axes(top, &labels))
            line.centre x1=(LEFT) x2=(W - RIGHT) y1=(y_at(centre, top)) y2=(y_at(centre, top)) {}
            polyline.limit points=(limit(|p| p.upper)) {}
            polyline.limit points=(limit(|p| p.lower)) {}
            polyline.series points=(rates) {}
            @for (i, p) in points.iter().enumerate() {
                @if let Some(p) = p {
                    circle class=(if p.out_of_control { "dot ooc" } else { "dot" }) cx=(x_at(i, n)) cy=(y_at(p.rate, top)) r=(if p.out_of_control { "5" } else { "3" }) {
                        title { (samples[i].label) ": " (pct(p.rate)) " (limits " (pct(p.lower)) "–" (pct(p.upper)) ")" }
                    }
                }
            }
            text.axis x=(W - RIGHT) y=(y_at(centre, top) - 4.0) text-anchor="end" { "p̄ " (pct(centre)) }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample(judged: u64, ng: u64) -> Sample {
        Sample {
            label: String::new(),
            judged,
            ng,
        }
    }

    #[test]
    fn p_chart_limits_are_three_sigma_of_each_bucket_and_mark_what_is_outside() {
        // 10 buckets of 100 parts: 2 NG in nine, 20 in one. p̄ = 38 / 1000.
        let mut samples: Vec<Sample> = (0..9).map(|_| sample(100, 2)).collect();
        samples.push(sample(100, 20));
        let (centre, points) = p_chart_points(&samples).unwrap();
        assert!((centre - 0.038).abs() < 1e-12);
        let sigma = (0.038f64 * 0.962 / 100.0).sqrt();
        let p = points[0].as_ref().unwrap();
        assert!((p.upper - (0.038 + 3.0 * sigma)).abs() < 1e-12);
        assert_eq!(p.lower, 0.0, "clamped at zero");
        assert!(!p.out_of_control);
        assert!(points[9].as_ref().unwrap().out_of_control);
        let svg = p_chart(&samples).into_string();
        assert!(svg.contains("data-out-of-control=\"1\""), "{svg}");
        assert_eq!(svg.matches("dot ooc").count(), 1);
    }

    #[test]
    fn a_bucket_without_parts_has_no_point_and_no_parts_no_chart() {
        let (_, points) = p_chart_points(&[sample(10, 1), sample(0, 0)]).unwrap();
        assert!(points[1].is_none());
        assert!(p_chart_points(&[sample(0, 0)]).is_none());
        assert!(p_chart(&[]).into_string().contains("No judged parts"));
    }

    #[test]
    fn the_pareto_puts_the_most_frequent_defect_first() {
        let svg =
            pareto(&[("pit".into(), 2), ("rust".into(), 7), ("chip".into(), 0)]).into_string();
        let rust = svg.find("data-type=\"rust\"").unwrap();
        let pit = svg.find("data-type=\"pit\"").unwrap();
        assert!(rust < pit, "{svg}");
        assert!(
            !svg.contains("data-type=\"chip\""),
            "a type never seen is left out"
        );
    }
}
