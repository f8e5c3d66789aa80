//! `wiko-cloud model fit | score | eval`: the golden-sample model from the command line, so
//! that quality engineers can fit, try and measure it on their own images and scripts can
//! drive it. Progress goes to stderr, results to stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use wiko_inspect::{DecodeLimits, FitOptions, Gray, MethodChoice, Model, Verdict};

use crate::manifest::{self, Row};

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Fit a model from good images: a folder of images or a manifest (its `good` rows).
    Fit {
        #[arg(long)]
        good: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The SKU the model is for (recorded in the model file).
        #[arg(long)]
        sku: Option<String>,
        #[command(flatten)]
        options: FitArgs,
    },
    /// Score images (a manifest or image files); one JSON object per line.
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Fit and score each group of a manifest, and print detection and location metrics.
    Eval {
        #[arg(long)]
        manifest: PathBuf,
        /// Manifest column whose values split the rows into groups (one model each).
        #[arg(long)]
        group_by: Option<String>,
        /// Good images to fit on: the first N of the group in manifest order
        /// [default: half of the group's good images, at most 50].
        #[arg(long)]
        train_good: Option<usize>,
        #[command(flatten)]
        options: FitArgs,
        /// Print one JSON object per group instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct FitArgs {
    /// `auto`, `aligned` (an object on a plain background), `fixed` (a surface under a fixed
    /// camera) or `texture` (a surface where position means nothing).
    #[arg(long, default_value = "auto", value_parser = parse_method)]
    pub method: MethodChoice,
    /// Share of good parts the calibrated threshold may reject.
    #[arg(long, default_value_t = 0.01)]
    pub false_reject_rate: f32,
}

impl FitArgs {
    fn options(&self) -> FitOptions {
        FitOptions {
            method: self.method,
            false_reject_rate: self.false_reject_rate,
        }
    }
}

fn parse_method(s: &str) -> Result<MethodChoice, String> {
    match s {
        "auto" => Ok(MethodChoice::Auto),
        "aligned" => Ok(MethodChoice::Aligned),
        "fixed" => Ok(MethodChoice::Fixed),
        "texture" => Ok(MethodChoice::Texture),
        other => Err(format!(
            "`{other}`: expected auto, aligned, fixed or texture"
        )),
    }
}

pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Fit {
            good,
            out,
            sku,
            options,
        } => fit(&good, &out, sku, &options.options()),
        ModelCommand::Score { model, inputs } => score(&model, &inputs),
        ModelCommand::Eval {
            manifest,
            group_by,
            train_good,
            options,
            json,
        } => eval(
            &manifest,
            group_by.as_deref(),
            train_good,
            &options.options(),
            json,
        ),
    }
}

/// Reads and decodes images on every core, in order.
fn decode_all(paths: &[&Path]) -> Vec<Result<(Gray, f64), String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|p| decode_file(p)).collect()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("decoder thread failed".to_string())])
            })
            .collect()
    })
}

/// Decodes one file; also returns the milliseconds it took.
fn decode_file(path: &Path) -> Result<(Gray, f64), String> {
    let started = Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let gray = wiko_inspect::decode(&bytes, DecodeLimits::default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((gray, started.elapsed().as_secs_f64() * 1000.0))
}

/// Decodes good images and fits a model, reporting progress on stderr.
fn fit_rows(rows: &[&Row], options: &FitOptions) -> anyhow::Result<Model> {
    let paths: Vec<&Path> = rows.iter().map(|r| r.path.as_path()).collect();
    eprintln!("decoding {} good images", paths.len());
    let images = decode_all(&paths)
        .into_iter()
        .map(|r| r.map(|(g, _)| g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let model = Model::fit(&images, options).context("fitting the model")?;
    eprintln!(
        "fitted a {} model on {} images in {:.1} s; threshold {:.2} (false-reject rate {})",
        model.kind(),
        model.trained_on,
        started.elapsed().as_secs_f64(),
        model.threshold,
        model.false_reject_rate
    );
    Ok(model)
}

fn fit(good: &Path, out: &Path, sku: Option<String>, options: &FitOptions) -> anyhow::Result<()> {
    let rows = if good.is_dir() {
        manifest::folder(good)?
    } else {
        manifest::read(good)?
            .into_iter()
            .filter(|r| !r.defect)
            .collect()
    };
    if rows.is_empty() {
        bail!("{}: no good images found", good.display());
    }
    let mut model = fit_rows(&rows.iter().collect::<Vec<_>>(), options)?;
    model.sku = sku.unwrap_or_default();
    let bytes = model.to_bytes();
    write_atomically(out, &bytes)?;
    eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}

/// Writes a file through a temporary sibling and a rename: never a half-written model.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).context("writing the model")?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn load_model(path: &Path) -> anyhow::Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Model::from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

#[derive(Serialize)]
struct ScoreLine<'a> {
    file: &'a str,
    score: f32,
    defect_detected: bool,
    defects: Vec<DefectLine>,
    ms: f64,
}

#[derive(Serialize)]
struct DefectLine {
    #[serde(rename = "type")]
    kind: &'static str,
    bbox: [u32; 4],
    score: f32,
}

fn score(model_path: &Path, inputs: &[PathBuf]) -> anyhow::Result<()> {
    let model = load_model(model_path)?;
    let rows: Vec<Row> = match inputs {
        [one]
            if one
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            manifest::read(one)?
        }
        _ => inputs.iter().cloned().map(manifest::image_row).collect(),
    };
    let mut failed = 0;
    for row in &rows {
        match score_one(&model, &row.path) {
            Ok((verdict, ms)) => {
                let line = ScoreLine {
                    file: &row.name,
                    score: verdict.score,
                    defect_detected: verdict.defect_detected,
                    defects: verdict
                        .regions
                        .iter()
                        .map(|r| DefectLine {
                            kind: r.kind.as_str(),
                            bbox: r.bbox,
                            score: r.peak,
                        })
                        .collect(),
                    ms,
                };
                println!("{}", serde_json::to_string(&line)?);
            }
            Err(e) => {
                failed += 1;
                println!("{}", serde_json::json!({ "file": row.name, "error": e }));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be scored", rows.len());
    }
    Ok(())
}

/// Decodes and scores one image; the milliseconds include decoding.
fn score_one(model: &Model, path: &Path) -> Result<(Verdict, f64), String> {
    let started = Instant::now();
    let (gray, _) = decode_file(path)?;
    let verdict = model.score(&gray).map_err(|e| e.to_string())?;
    Ok((verdict, started.elapsed().as_secs_f64() * 1000.0))
}

/// One scored evaluation image.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub defect: bool,
    pub score: f32,
    pub detected: bool,
    /// Whether the top region overlaps the mask (`None` without a mask).
    pub located: Option<bool>,
    pub ms: f64,
}

/// Detection and location metrics of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub good: usize,
    pub defect: usize,
    pub auroc: Option<f64>,
    pub f1: Option<f64>,
    pub recall: Option<f64>,
    pub false_reject_rate: Option<f64>,
    pub region_hit_rate: Option<f64>,
    pub ms_per_image: f64,
}

/// Metrics at the model's own (calibrated) threshold.
pub fn metrics(scored: &[Scored]) -> Metrics {
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    let good: Vec<f32> = scored
        .iter()
        .filter(|s| !s.defect)
        .map(|s| s.score)
        .collect();
    let defect: Vec<f32> = scored
        .iter()
        .filter(|s| s.defect)
        .map(|s| s.score)
        .collect();
    let tp = scored.iter().filter(|s| s.defect && s.detected).count();
    let fp = scored.iter().filter(|s| !s.defect && s.detected).count();
    let recall = ratio(tp, defect.len());
    let precision = ratio(tp, tp + fp);
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let masked: Vec<bool> = scored.iter().filter_map(|s| s.located).collect();
    Metrics {
        good: good.len(),
        defect: defect.len(),
        auroc: wiko_inspect::stats::auroc(&good, &defect),
        f1,
        recall,
        false_reject_rate: ratio(fp, good.len()),
        region_hit_rate: ratio(masked.iter().filter(|&&h| h).count(), masked.len()),
        ms_per_image: scored.iter().map(|s| s.ms).sum::<f64>() / scored.len().max(1) as f64,
    }
}

/// Whether a box `[x, y, w, h]` of an image `image_size` covers a mask pixel (≥ 128); the
/// box is scaled if the mask has another size.
pub fn box_hits_mask(bbox: [u32; 4], image_size: (usize, usize), mask: &image::GrayImage) -> bool {
    let (mw, mh) = (mask.width() as f64, mask.height() as f64);
    let sx = mw / image_size.0.max(1) as f64;
    let sy = mh / image_size.1.max(1) as f64;
    let [x, y, w, h] = bbox.map(f64::from);
    let (x0, y0) = ((x * sx).floor() as u32, (y * sy).floor() as u32);
    let x1 = (((x + w) * sx).ceil()).min(mw) as u32;
    let y1 = (((y + h) * sy).ceil()).min(mh) as u32;
    (y0..y1).any(|yy| (x0..x1).any(|xx| mask.get_pixel(xx, yy).0[0] >= 128))
}

/// The evaluation of one group.
#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub model: String,
    pub trained_on: usize,
    pub threshold: f32,
    pub fit_seconds: f64,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Images that could not be scored.
    pub errors: usize,
}

/// Fits on the first `train_good` good rows of a group (default: half of them, at most 50)
/// and scores every other row.
pub fn evaluate_group(
    group: &str,
    members: &[&Row],
    train_good: Option<usize>,
    options: &FitOptions,
) -> anyhow::Result<GroupReport> {
    let goods: Vec<&Row> = members.iter().copied().filter(|r| !r.defect).collect();
    let n = train_good
        .unwrap_or((goods.len() / 2).min(50))
        .min(goods.len());
    let train = &goods[..n];
    eprintln!("{group}: fitting on {n} good images");
    let started = Instant::now();
    let model = fit_rows(train, options)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let test: Vec<&Row> = members
        .iter()
        .copied()
        .filter(|r| !train.iter().any(|t| std::ptr::eq(*t, *r)))
        .collect();
    eprintln!("{group}: scoring {} images", test.len());
    let (scored, errors) = score_rows(&model, &test);
    Ok(GroupReport {
        group: group.to_string(),
        model: model.kind().to_string(),
        trained_on: n,
        threshold: model.threshold,
        fit_seconds,
        metrics: metrics(&scored),
        errors,
    })
}

fn eval(
    manifest_path: &Path,
    group_by: Option<&str>,
    train_good: Option<usize>,
    options: &FitOptions,
    json: bool,
) -> anyhow::Result<()> {
    let rows = manifest::read(manifest_path)?;
    let mut groups: Vec<(String, Vec<&Row>)> = Vec::new();
    for row in &rows {
        let key = match group_by {
            Some(column) => row
                .columns
                .get(column)
                .cloned()
                .with_context(|| format!("the manifest has no column `{column}`"))?,
            None => "all".to_string(),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(row),
            None => groups.push((key, vec![row])),
        }
    }
    if !json {
        println!(
            "{:<40} {:>7} {:>5} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}",
            "group",
            "model",
            "train",
            "good",
            "defect",
            "AUROC",
            "F1",
            "recall",
            "FRR",
            "hit",
            "ms/img"
        );
    }
    for (group, members) in &groups {
        match evaluate_group(group, members, train_good, options) {
            Ok(report) if json => println!("{}", serde_json::to_string(&report)?),
            Ok(report) => print_row(&report),
            Err(e) => {
                let e = format!("{e:#}");
                if json {
                    println!("{}", serde_json::json!({ "group": group, "error": e }));
                } else {
                    println!("{group:<40} cannot fit: {e}");
                }
            }
        }
    }
    Ok(())
}

/// Scores evaluation rows on one core (so the milliseconds are one core's), checking the top
/// region against the mask.
fn score_rows(model: &Model, rows: &[&Row]) -> (Vec<Scored>, usize) {
    let mut scored = Vec::with_capacity(rows.len());
    let mut errors = 0;
    for row in rows {
        match score_one(model, &row.path) {
            Ok((verdict, ms)) => {
                let located = row.mask.as_ref().filter(|_| row.defect).map(|mask| {
                    let size = image::image_dimensions(&row.path)
                        .map(|(w, h)| (w as usize, h as usize))
                        .unwrap_or((1, 1));
                    match (verdict.regions.first(), image::open(mask)) {
                        (Some(top), Ok(mask)) => box_hits_mask(top.bbox, size, &mask.to_luma8()),
                        _ => false,
                    }
                });
                scored.push(Scored {
                    defect: row.defect,
                    score: verdict.score,
                    detected: verdict.defect_detected,
                    located,
                    ms,
                });
            }
            Err(e) => {
                eprintln!("{e}");
                errors += 1;
            }
        }
    }
    (scored, errors)
}

fn print_row(r: &GroupReport) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let m = &r.metrics;
    println!(
        "{:<40} {:>7} {:>5} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7.1}",
        r.group,
        r.model,
        r.trained_on,
        m.good,
        m.defect,
        num(m.auroc),
        num(m.f1),
        pct(m.recall),
        pct(m.false_reject_rate),
        pct(m.region_hit_rate),
        m.ms_per_image
    );
    if r.errors > 0 {
        println!("{:<40} {} images could not be scored", "", r.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(defect: bool, score: f32, detected: bool, located: Option<bool>) -> Scored {
        Scored {
            defect,
            score,
            detected,
            located,
            ms: 2.0,
        }
    }

    #[test]
    fn metrics_at_the_calibrated_threshold() {
        let m = metrics(&[
            s(false, 1.0, false, None),
            s(false, 3.0, true, None),
            s(true, 4.0, true, Some(true)),
            s(true, 5.0, true, Some(false)),
            s(true, 2.0, false, Some(false)),
            s(false, 1.5, false, None),
        ]);
        assert_eq!((m.good, m.defect), (3, 3));
        assert!((m.auroc.unwrap() - 8.0 / 9.0).abs() < 1e-9);
        assert!((m.recall.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((m.false_reject_rate.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!(
            (m.f1.unwrap() - 2.0 / 3.0).abs() < 1e-9,
            "precision 2/3, recall 2/3"
        );
        assert!((m.region_hit_rate.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.ms_per_image, 2.0);
        let no_defects = metrics(&[s(false, 1.0, false, None)]);
        assert_eq!((no_defects.auroc, no_defects.recall), (None, None));
    }

    #[test]
    fn a_box_hits_a_mask_at_its_own_scale() {
        let mut mask = image::GrayImage::new(20, 10);
        mask.put_pixel(15, 5, image::Luma([255]));
        assert!(box_hits_mask([14, 4, 3, 3], (20, 10), &mask));
        assert!(!box_hits_mask([0, 0, 10, 10], (20, 10), &mask));
        // The image is twice the mask's size.
        assert!(box_hits_mask([29, 9, 4, 4], (40, 20), &mask));
        mask.put_pixel(15, 5, image::Luma([100]));
        assert!(!box_hits_mask([14, 4, 3, 3], (20, 10), &mask), "below 128");
    }

    #[test]
    fn methods_parse_by_name() {
        assert_eq!(parse_method("texture"), Ok(MethodChoice::Texture));
        assert!(parse_method("deep").is_err());
    }
}
