//! `wiko-cloud model eval`: fits a model per group of a manifest, scores the rest and
//! measures detection (AUROC, F1, recall and false rejects at the calibrated threshold),
//! location (whether the top region overlaps the defect's mask) and typing (which type the top
//! region of each found defect was given, against the manifest's `defect_type` where that is a
//! taxonomy name). With `--split-by`, whole objects are held out instead: each fold of
//! objects is scored by a model fitted on the other objects' good images only
//! ([`evaluate_folds`]), and the AUROC is given as the mean and spread over the folds.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use wiko_inspect::{FitOptions, Image, Model};
use wiko_wire::DefectType;

use super::mask_free::largest_clear_rectangle;
use super::{OBJECT_COLUMN, decode_file, fit_rows, score_one};
use crate::heatmap;
use crate::manifest::{self, Row};

/// The smallest side, in image pixels, of a mask-free part taken as good surface.
const MIN_CLEAR_SIDE: u32 = 40;

/// One scored evaluation image.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub defect: bool,
    /// The manifest's `defect_type` (`none` for good images).
    pub defect_type: String,
    pub score: f32,
    pub detected: bool,
    /// Whether the top region overlaps the mask (`None` without a mask).
    pub located: Option<bool>,
    /// The heuristic type of the top region (`None` without a region).
    pub top_type: Option<&'static str>,
    pub ms: f64,
}

/// Detection and location metrics of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub good: usize,
    pub defect: usize,
    pub auroc: Option<f64>,
    /// `None` without good images: precision means nothing then.
    pub f1: Option<f64>,
    pub recall: Option<f64>,
    pub false_reject_rate: Option<f64>,
    pub region_hit_rate: Option<f64>,
    /// Of the found defects whose `defect_type` is a taxonomy name, the share whose top region
    /// was given that type (`None` if no label is a taxonomy name).
    pub type_agreement: Option<f64>,
    pub ms_per_image: f64,
    /// Defect images found at the calibrated threshold, per defect type in first-seen order.
    pub recall_by_type: Vec<TypeRecall>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeRecall {
    pub defect_type: String,
    pub defects: usize,
    pub detected: usize,
    /// The types the top regions of the found ones were given, most frequent first.
    pub typed_as: Vec<(String, usize)>,
}

/// Metrics at the model's own (calibrated) threshold.
pub fn metrics(scored: &[Scored]) -> Metrics {
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    let scores = |defect: bool| -> Vec<f32> {
        scored
            .iter()
            .filter(|s| s.defect == defect)
            .map(|s| s.score)
            .collect()
    };
    let (good, defect) = (scores(false), scores(true));
    let tp = scored.iter().filter(|s| s.defect && s.detected).count();
    let fp = scored.iter().filter(|s| !s.defect && s.detected).count();
    let recall = ratio(tp, defect.len());
    let precision = ratio(tp, tp + fp).filter(|_| !good.is_empty());
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let masked: Vec<bool> = scored.iter().filter_map(|s| s.located).collect();
    let mut recall_by_type: Vec<TypeRecall> = Vec::new();
    for s in scored.iter().filter(|s| s.defect) {
        let i = match recall_by_type
            .iter()
            .position(|t| t.defect_type == s.defect_type)
        {
            Some(i) => i,
            None => {
                recall_by_type.push(TypeRecall {
                    defect_type: s.defect_type.clone(),
                    defects: 0,
                    detected: 0,
                    typed_as: Vec::new(),
                });
                recall_by_type.len() - 1
            }
        };
        let t = &mut recall_by_type[i];
        t.defects += 1;
        t.detected += usize::from(s.detected);
        if let Some(given) = s.top_type.filter(|_| s.detected) {
            match t.typed_as.iter_mut().find(|(name, _)| name == given) {
                Some((_, n)) => *n += 1,
                None => t.typed_as.push((given.to_string(), 1)),
            }
        }
    }
    for t in &mut recall_by_type {
        t.typed_as
            .sort_by(|(a, m), (b, n)| n.cmp(m).then_with(|| a.cmp(b)));
    }
    let labelled: Vec<&Scored> = scored
        .iter()
        .filter(|s| s.defect && s.detected && DefectType::parse(&s.defect_type).is_some())
        .collect();
    let typed_right = labelled
        .iter()
        .filter(|s| s.top_type == Some(s.defect_type.as_str()))
        .count();
    Metrics {
        good: good.len(),
        defect: defect.len(),
        auroc: wiko_inspect::stats::auroc(&good, &defect),
        f1,
        recall,
        false_reject_rate: ratio(fp, good.len()),
        region_hit_rate: ratio(masked.iter().filter(|&&h| h).count(), masked.len()),
        type_agreement: ratio(typed_right, labelled.len()),
        ms_per_image: scored.iter().map(|s| s.ms).sum::<f64>() / scored.len().max(1) as f64,
        recall_by_type,
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

/// What a group's models were fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Training {
    /// The group's first good images.
    GoodImages,
    /// A group without good images: per defect image, a model fitted on the largest
    /// mask-free part of each of the group's other defect images.
    ClearPartsOfOthers,
}

/// The evaluation of one group.
#[derive(Debug, Serialize)]
pub struct GroupReport {
    pub group: String,
    pub model: String,
    pub training: Training,
    /// Images per fit.
    pub trained_on: usize,
    /// The calibrated threshold (the median over the fits when there are several).
    pub threshold: f32,
    /// Time spent fitting, over all fits.
    pub fit_seconds: f64,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Images that could not be scored.
    pub errors: usize,
}

/// Fits on the first `train_good` good rows of a group (default: half of them, at most 50)
/// and scores every other row. A group without good images is measured on the surface
/// around its defects instead: see [`evaluate_on_clear_parts`].
pub fn evaluate_group(
    group: &str,
    members: &[&Row],
    train_good: Option<usize>,
    options: &FitOptions,
) -> anyhow::Result<GroupReport> {
    let goods: Vec<&Row> = members.iter().copied().filter(|r| !r.defect).collect();
    if goods.is_empty() && members.iter().any(|r| r.mask.is_some()) {
        return evaluate_on_clear_parts(group, members, options);
    }
    let n = train_good
        .unwrap_or((goods.len() / 2).min(50))
        .min(goods.len());
    let train = &goods[..n];
    eprintln!("{group}: fitting on {n} good images");
    let started = Instant::now();
    let model = fit_rows(train, OBJECT_COLUMN, options)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let test: Vec<&Row> = members
        .iter()
        .copied()
        .filter(|r| !train.iter().any(|t| std::ptr::eq(*t, *r)))
        .collect();
    eprintln!("{group}: scoring {} images", test.len());
    let (scored, errors) = score_rows(&model, &test, None)?;
    Ok(GroupReport {
        group: group.to_string(),
        model: model.kind().to_string(),
        training: Training::GoodImages,
        trained_on: n,
        threshold: model.threshold,
        fit_seconds,
        metrics: metrics(&scored),
        errors,
    })
}

/// A group of defect images only (NEU-DET has no good image): each image is scored by a model
/// fitted on the largest mask-free part (both sides at least [`MIN_CLEAR_SIDE`]) of every
/// other image of the group, and never on any part of itself (rows without a mask are left
/// out: nothing tells their clear part). Only recall, recall per type
/// and the region hit rate mean something then; the threshold still comes from defect-free
/// surface alone.
pub fn evaluate_on_clear_parts(
    group: &str,
    members: &[&Row],
    options: &FitOptions,
) -> anyhow::Result<GroupReport> {
    let rows: Vec<&Row> = members
        .iter()
        .copied()
        .filter(|r| r.mask.is_some())
        .collect();
    eprintln!(
        "{group}: no good images; scoring each of {} defect images with a model fitted on the \
         mask-free parts of the others",
        rows.len()
    );
    let clear: Vec<Option<Image>> = rows
        .iter()
        .map(|row| match clear_part(row) {
            Ok(part) => part,
            Err(e) => {
                eprintln!("{e}");
                None
            }
        })
        .collect();
    let (mut scored, mut errors, mut thresholds) = (Vec::new(), 0, Vec::new());
    let (mut fit_seconds, mut trained_on, mut model_kind) = (0.0, 0, String::new());
    for (i, row) in rows.iter().enumerate() {
        let others: Vec<Image> = clear
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .filter_map(|(_, part)| part.clone())
            .collect();
        let started = Instant::now();
        let model = Model::fit(&others, options).with_context(|| {
            format!(
                "{group}: fitting on the clear parts of {} images",
                others.len()
            )
        })?;
        fit_seconds += started.elapsed().as_secs_f64();
        (trained_on, model_kind) = (others.len(), model.kind().to_string());
        thresholds.push(model.threshold);
        let (one, failed) = score_rows(&model, &[row], None)?;
        scored.extend(one);
        errors += failed;
        if (i + 1) % 10 == 0 {
            eprintln!("{group}: {} of {} scored", i + 1, rows.len());
        }
    }
    thresholds.sort_unstable_by(f32::total_cmp);
    Ok(GroupReport {
        group: group.to_string(),
        model: model_kind,
        training: Training::ClearPartsOfOthers,
        trained_on,
        threshold: thresholds
            .get(thresholds.len() / 2)
            .copied()
            .unwrap_or(f32::NAN),
        fit_seconds,
        metrics: metrics(&scored),
        errors,
    })
}

/// The largest mask-free part of a defect image, if one is large enough.
fn clear_part(row: &Row) -> Result<Option<Image>, String> {
    let Some(mask_path) = &row.mask else {
        return Ok(None);
    };
    let mask = image::open(mask_path)
        .map_err(|e| format!("{}: {e}", mask_path.display()))?
        .to_luma8();
    let Some([x, y, w, h]) = largest_clear_rectangle(&mask, MIN_CLEAR_SIDE) else {
        return Ok(None);
    };
    let (image, _) = decode_file(&row.path)?;
    // The mask may be at another scale than the image.
    let sx = image.width() as f64 / f64::from(mask.width().max(1));
    let sy = image.height() as f64 / f64::from(mask.height().max(1));
    let at = |v: u32, s: f64| (f64::from(v) * s) as usize;
    Ok(Some(image.crop(at(x, sx), at(y, sy), at(w, sx), at(h, sy))))
}

/// How a group's rows are split into fitting and scoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Fit on the first N good rows (default: half, at most 50), score the rest.
    FirstGood(Option<usize>),
    /// Deal the objects named by `column` into `folds` folds; score each fold with a model
    /// fitted on the other folds' good rows.
    Objects { column: String, folds: usize },
}

/// The evaluation of one group with whole objects held out.
#[derive(Debug, Serialize)]
pub struct FoldsReport {
    pub group: String,
    /// The method of each fold's model (one name when all agree).
    pub model: String,
    pub folds: usize,
    /// Distinct objects in the group.
    pub objects: usize,
    /// Good images per fit, the mean over the folds.
    pub trained_on: f64,
    /// AUROC of each fold with both good and defect images (`None` for the others).
    pub fold_auroc: Vec<Option<f64>>,
    /// Mean and standard deviation of the folds' AUROCs.
    pub auroc_mean: Option<f64>,
    pub auroc_sd: Option<f64>,
    /// Every fold's scored images together, each at its own model's calibrated threshold
    /// (the pooled AUROC ranks scores of different models: the per-fold mean is the figure).
    #[serde(flatten)]
    pub pooled: Metrics,
    pub fit_seconds: f64,
    pub errors: usize,
}

/// Holds out whole objects: the distinct values of `column` are dealt round-robin, in
/// first-seen order, into `folds` folds; each fold's rows (good and defect) are scored by a
/// model fitted on the good rows of the other folds, so no object is ever scored by a model
/// that saw it, and no threshold comes from it.
///
/// With `heatmaps`, each scored image's picture (its anomaly map under the fold's model, its
/// regions boxed, its defect mask outlined) is written there: where the misses lie.
pub fn evaluate_folds(
    group: &str,
    members: &[&Row],
    column: &str,
    folds: usize,
    options: &FitOptions,
    heatmaps: Option<&Path>,
) -> anyhow::Result<FoldsReport> {
    let mut objects: Vec<&str> = Vec::new();
    let mut fold_of = Vec::with_capacity(members.len());
    for row in members {
        let object = row
            .columns
            .get(column)
            .map(String::as_str)
            .with_context(|| format!("the manifest has no column `{column}`"))?;
        let index = match objects.iter().position(|o| *o == object) {
            Some(i) => i,
            None => {
                objects.push(object);
                objects.len() - 1
            }
        };
        fold_of.push(index % folds.max(1));
    }
    let folds = folds.clamp(1, objects.len().max(1));
    let (mut scored, mut errors, mut fit_seconds) = (Vec::new(), 0, 0.0);
    let (mut kinds, mut fold_auroc, mut trained) = (Vec::<String>::new(), Vec::new(), 0usize);
    for fold in 0..folds {
        let train: Vec<&Row> = members
            .iter()
            .zip(&fold_of)
            .filter(|(r, f)| **f != fold && !r.defect)
            .map(|(r, _)| *r)
            .collect();
        let test: Vec<&Row> = members
            .iter()
            .zip(&fold_of)
            .filter(|(_, f)| **f == fold)
            .map(|(r, _)| *r)
            .collect();
        if test.is_empty() {
            continue;
        }
        eprintln!(
            "{group}: fold {} of {folds}: fitting on {} good images, scoring {}",
            fold + 1,
            train.len(),
            test.len()
        );
        let started = Instant::now();
        let model = fit_rows(&train, column, options)
            .with_context(|| format!("{group}: fold {}", fold + 1))?;
        fit_seconds += started.elapsed().as_secs_f64();
        trained += train.len();
        if !kinds.contains(&model.kind().to_string()) {
            kinds.push(model.kind().to_string());
        }
        let (fold_scored, failed) = score_rows(&model, &test, heatmaps)?;
        fold_auroc.push(metrics(&fold_scored).auroc);
        scored.extend(fold_scored);
        errors += failed;
    }
    let defined: Vec<f64> = fold_auroc.iter().flatten().copied().collect();
    let (auroc_mean, auroc_sd) = mean_sd(&defined);
    Ok(FoldsReport {
        group: group.to_string(),
        model: kinds.join("+"),
        folds,
        objects: objects.len(),
        trained_on: trained as f64 / fold_auroc.len().max(1) as f64,
        fold_auroc,
        auroc_mean,
        auroc_sd,
        pooled: metrics(&scored),
        fit_seconds,
        errors,
    })
}

/// Mean and (population) standard deviation; `None` for no values.
fn mean_sd(values: &[f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (Some(mean), Some(var.sqrt()))
}

pub(super) fn eval(
    manifest_path: &Path,
    group_by: Option<&str>,
    split: &Split,
    options: &FitOptions,
    json: bool,
    heatmaps: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(dir) = heatmaps {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
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
    // The group column is as wide as the longest group name.
    let width = groups
        .iter()
        .map(|(g, _)| g.len())
        .max()
        .unwrap_or(0)
        .max(5);
    if let Split::Objects { column, folds } = split {
        if !json {
            println!(
                "{:<width$} {:>7} {:>5} {:>7} {:>5} {:>6} {:>13} {:>6} {:>6} {:>6} {:>7}",
                "group",
                "model",
                "folds",
                "objects",
                "good",
                "defect",
                "AUROC (sd)",
                "recall",
                "FRR",
                "hit",
                "ms/img"
            );
        }
        for (group, members) in &groups {
            match evaluate_folds(group, members, column, *folds, options, heatmaps) {
                Ok(report) if json => println!("{}", serde_json::to_string(&report)?),
                Ok(report) => print_folds(&report, width),
                Err(e) => print_error(group, &e, json, width),
            }
        }
        return Ok(());
    }
    let Split::FirstGood(train_good) = *split else {
        return Ok(());
    };
    if !json {
        println!(
            "{:<width$} {:>7} {:>5} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}",
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
            "type",
            "ms/img"
        );
    }
    for (group, members) in &groups {
        match evaluate_group(group, members, train_good, options) {
            Ok(report) if json => println!("{}", serde_json::to_string(&report)?),
            Ok(report) => print_row(&report, width),
            Err(e) => print_error(group, &e, json, width),
        }
    }
    Ok(())
}

fn print_error(group: &str, e: &anyhow::Error, json: bool, width: usize) {
    let e = format!("{e:#}");
    if json {
        println!("{}", serde_json::json!({ "group": group, "error": e }));
    } else {
        println!("{group:<width$} cannot fit: {e}");
    }
}

fn print_folds(r: &FoldsReport, width: usize) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let m = &r.pooled;
    let auroc = match (r.auroc_mean, r.auroc_sd) {
        (Some(mean), Some(sd)) => format!("{mean:.3} ({sd:.3})"),
        _ => "-".to_string(),
    };
    println!(
        "{:<width$} {:>7} {:>5} {:>7} {:>5} {:>6} {:>13} {:>6} {:>6} {:>6} {:>7.1}",
        r.group,
        r.model,
        r.folds,
        r.objects,
        m.good,
        m.defect,
        auroc,
        pct(m.recall),
        pct(m.false_reject_rate),
        pct(m.region_hit_rate),
        m.ms_per_image
    );
    if r.errors > 0 {
        println!("{:<width$} {} images could not be scored", "", r.errors);
    }
}

/// Scores evaluation rows on one core (so the milliseconds are one core's), checking the top
/// region against the mask; with `heatmaps`, writes each image's picture there
/// ([`heatmap::render`], the mask outlined). Only a picture that cannot be written is an error.
fn score_rows(
    model: &Model,
    rows: &[&Row],
    heatmaps: Option<&Path>,
) -> anyhow::Result<(Vec<Scored>, usize)> {
    let mut scored = Vec::with_capacity(rows.len());
    let mut errors = 0;
    for row in rows {
        match score_one(model, &row.path) {
            Ok((verdict, image, ms)) => {
                let size = (image.width(), image.height());
                // An unreadable mask says so and leaves the image out of the hit rate.
                let mask = row.mask.as_ref().filter(|_| row.defect).and_then(|path| {
                    match image::open(path) {
                        Ok(mask) => Some(mask.to_luma8()),
                        Err(e) => {
                            eprintln!("{}: {e}", path.display());
                            None
                        }
                    }
                });
                // A missed defect is not located.
                let top = verdict.regions.first();
                let located = mask
                    .as_ref()
                    .map(|mask| top.is_some_and(|t| box_hits_mask(t.bbox, size, mask)));
                if let Some(dir) = heatmaps {
                    let heat = model.map_in_image(&verdict, size.0, size.1);
                    let mut picture =
                        heatmap::render(&image.luma, &heat, verdict.threshold, &verdict.regions);
                    if let Some(mask) = &mask {
                        heatmap::outline_mask(&mut picture, mask);
                    }
                    let path = heatmap::path_for(dir, &row.name);
                    picture
                        .save(&path)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                scored.push(Scored {
                    defect: row.defect,
                    defect_type: row.defect_type.clone(),
                    score: verdict.score,
                    detected: verdict.defect_detected,
                    located,
                    top_type: top.map(|r| r.kind.as_str()),
                    ms,
                });
            }
            Err(e) => {
                eprintln!("{e}");
                errors += 1;
            }
        }
    }
    Ok((scored, errors))
}

fn print_row(r: &GroupReport, width: usize) {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let m = &r.metrics;
    println!(
        "{:<width$} {:>7} {:>5} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7.1}",
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
        pct(m.type_agreement),
        m.ms_per_image
    );
    if r.training == Training::ClearPartsOfOthers {
        println!(
            "{:<width$} no good images: each scored by a model of the mask-free parts of the others",
            ""
        );
    }
    if r.metrics.recall_by_type.len() > 1 {
        let types: Vec<String> = r
            .metrics
            .recall_by_type
            .iter()
            .map(|t| format!("{} {}/{}", t.defect_type, t.detected, t.defects))
            .collect();
        println!("{:<width$} found: {}", "", types.join(", "));
    }
    let typed: Vec<String> = r
        .metrics
        .recall_by_type
        .iter()
        .filter(|t| !t.typed_as.is_empty())
        .map(|t| {
            let given: Vec<String> = t.typed_as.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("{} as {}", t.defect_type, given.join(", "))
        })
        .collect();
    if !typed.is_empty() {
        println!("{:<width$} typed (heuristic): {}", "", typed.join("; "));
    }
    if r.errors > 0 {
        println!("{:<width$} {} images could not be scored", "", r.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(defect: bool, score: f32, detected: bool, located: Option<bool>) -> Scored {
        Scored {
            defect,
            defect_type: if defect { "pit" } else { "none" }.to_string(),
            score,
            detected,
            located,
            top_type: Some("pit"),
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
        assert_eq!(m.type_agreement, Some(1.0), "both found pits typed as pits");
        assert_eq!(m.recall_by_type[0].typed_as, [("pit".to_string(), 2)]);
        assert_eq!(m.ms_per_image, 2.0);
        let no_defects = metrics(&[s(false, 1.0, false, None)]);
        assert_eq!((no_defects.auroc, no_defects.recall), (None, None));
    }

    #[test]
    fn held_out_objects_are_each_scored_once_by_a_model_that_never_saw_them() {
        // Ten objects with two good photos each and two with a defect photo: a bright square.
        let dir = tempfile::tempdir().unwrap();
        let mut text = "file,label,group_id\n".to_string();
        let photo = |name: &str, seed: u32, defect: bool| {
            let img = image::RgbImage::from_fn(64, 64, |x, y| {
                let noise = ((x * 7 + y * 13 + seed * 31) % 17) as u8;
                let spot = defect && (20..30).contains(&x) && (20..30).contains(&y);
                image::Rgb(if spot {
                    [250, 240, 60]
                } else {
                    [90 + noise, 100, 120]
                })
            });
            img.save(dir.path().join(name)).unwrap();
        };
        for object in 0..12u32 {
            let defect = object >= 10;
            for shot in 0..if defect { 1 } else { 2 } {
                let name = format!("o{object}_{shot}.png");
                photo(&name, object * 2 + shot, defect);
                let label = if defect { "defect" } else { "good" };
                text.push_str(&format!("{name},{label},object{object}\n"));
            }
        }
        let rows = manifest::parse(&text, dir.path()).unwrap();
        let members: Vec<&Row> = rows.iter().collect();
        let options = FitOptions {
            method: wiko_inspect::MethodChoice::Patch,
            ..FitOptions::default()
        };
        let pictures = tempfile::tempdir().unwrap();
        let report = evaluate_folds(
            "all",
            &members,
            "group_id",
            4,
            &options,
            Some(pictures.path()),
        )
        .unwrap();
        assert_eq!((report.folds, report.objects, report.errors), (4, 12, 0));
        // A picture of every scored image, named after it.
        assert_eq!(std::fs::read_dir(pictures.path()).unwrap().count(), 22);
        assert!(pictures.path().join("o10_0.heat.png").exists());
        // Every image scored exactly once.
        assert_eq!((report.pooled.good, report.pooled.defect), (20, 2));
        // Objects are dealt in turn: folds 0 and 1 hold three good objects (six photos) each,
        // so their models fit on the other 14; folds 2 and 3 two good objects and a defect
        // each (16 fitted).
        assert_eq!(report.trained_on, (14 + 14 + 16 + 16) as f64 / 4.0);
        assert_eq!(report.fold_auroc.iter().filter(|a| a.is_some()).count(), 2);
        assert_eq!(report.auroc_mean, Some(1.0), "the bright square stands out");
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
    fn recall_per_type_and_no_f1_without_good_images() {
        let typed = |t: &str, detected| Scored {
            defect_type: t.to_string(),
            ..s(true, 1.0, detected, None)
        };
        let m = metrics(&[
            typed("scratches", true),
            typed("crazing", false),
            typed("scratches", true),
            typed("crazing", true),
            typed("patches", false),
        ]);
        let found: Vec<(&str, usize, usize)> = m
            .recall_by_type
            .iter()
            .map(|t| (t.defect_type.as_str(), t.detected, t.defects))
            .collect();
        assert_eq!(
            found,
            [("scratches", 2, 2), ("crazing", 1, 2), ("patches", 0, 1)]
        );
        assert!((m.recall.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!((m.auroc, m.f1, m.false_reject_rate), (None, None, None));
        assert_eq!(m.type_agreement, None, "no label is a taxonomy name");
    }

    #[test]
    fn typing_counts_the_top_region_of_found_defects_against_taxonomy_labels() {
        let found = |label: &str, given: Option<&'static str>, detected| Scored {
            defect_type: label.to_string(),
            top_type: given,
            ..s(true, 1.0, detected, None)
        };
        let m = metrics(&[
            found("chip", Some("chip"), true),
            found("chip", Some("scratch"), true),
            found("chip", Some("chip"), true),
            found("chip", Some("scratch"), false),
            found("rust", Some("stain"), true),
            found("blowhole", Some("pit"), true),
        ]);
        assert_eq!(
            m.recall_by_type[0].typed_as,
            [("chip".to_string(), 2), ("scratch".to_string(), 1)],
            "found ones only, most frequent first"
        );
        // chip 2 of 3 found, rust 0 of 1; `blowhole` is not a taxonomy name.
        assert_eq!(m.type_agreement, Some(0.5));
        assert_eq!(m.recall_by_type[2].typed_as, [("pit".to_string(), 1)]);
    }
}
