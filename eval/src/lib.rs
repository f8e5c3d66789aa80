//! `wiko-eval`: dataset tooling, behind `wiko-cloud model fit | score | eval`. The
//! golden-sample model from the command line, so that quality engineers can fit, try and
//! measure it on their own images and scripts can drive it. Progress goes to stderr, results
//! to stdout.
//!
//! - [`manifest`]: dataset manifests (`shared/datasets` format) and image folders.
//! - `evaluate`: fit and score each group of a manifest, and the detection and location
//!   metrics ([`evaluate_group`], [`metrics`]); `mask_free` scores sets without good images.
//! - [`heatmap`]: where an image differs from the good parts, as a picture (also the
//!   dashboard's heat map of a part).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use wiko_inspect::{DecodeLimits, FitOptions, Image, MethodChoice, Model, Verdict};

use crate::manifest::Row;

mod evaluate;
pub mod heatmap;
pub mod manifest;
mod mask_free;

pub use evaluate::{
    FoldsReport, GroupReport, Metrics, Scored, Training, TypeRecall, evaluate_folds,
    evaluate_group, metrics,
};

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
        /// Also write, per image, a PNG of where it differs from the good parts (the anomaly
        /// map in red, the regions boxed) into this directory.
        #[arg(long)]
        heatmap: Option<PathBuf>,
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
        #[arg(long, conflicts_with = "split_by")]
        train_good: Option<usize>,
        /// Hold out whole objects: the manifest column naming each row's object (e.g.
        /// `group_id`). Objects are dealt into `--folds` folds; each fold is scored by a model
        /// fitted on the good images of the other folds' objects only.
        #[arg(long)]
        split_by: Option<String>,
        /// Folds for `--split-by`.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
        folds: u32,
        #[command(flatten)]
        options: FitArgs,
        /// Print one JSON object per group instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write, per held-out image, a PNG of its anomaly map under the model that never
        /// saw its object (in red, the regions boxed, the top one green) with its defect mask
        /// outlined in blue, into this directory: where a missed defect's top region went.
        #[arg(long, requires = "split_by")]
        heatmap: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct FitArgs {
    /// `auto`, `aligned` (an object on a plain background), `fixed` (a surface under a fixed
    /// camera), `texture` (a surface where position means nothing) or `patch` (local colour
    /// statistics against the good parts', position-free: parts that hang or turn).
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
        "patch" => Ok(MethodChoice::Patch),
        other => Err(format!(
            "`{other}`: expected auto, aligned, fixed, texture or patch"
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
        ModelCommand::Score {
            model,
            inputs,
            heatmap,
        } => score(&model, &inputs, heatmap.as_deref()),
        ModelCommand::Eval {
            manifest,
            group_by,
            train_good,
            split_by,
            folds,
            options,
            json,
            heatmap,
        } => {
            let split = match split_by {
                Some(column) => evaluate::Split::Objects {
                    column,
                    folds: folds as usize,
                },
                None => evaluate::Split::FirstGood(train_good),
            };
            evaluate::eval(
                &manifest,
                group_by.as_deref(),
                &split,
                &options.options(),
                json,
                heatmap.as_deref(),
            )
        }
    }
}

/// Reads and decodes images on every core, in order.
fn decode_all(paths: &[&Path]) -> Vec<Result<(Image, f64), String>> {
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
fn decode_file(path: &Path) -> Result<(Image, f64), String> {
    let started = Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let image = wiko_inspect::decode(&bytes, DecodeLimits::default())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((image, started.elapsed().as_secs_f64() * 1000.0))
}

/// The manifest column naming the physical part an image shows (`shared/datasets` format).
pub const OBJECT_COLUMN: &str = "group_id";

/// Decodes good images and fits a model, reporting progress on stderr. Rows that name their
/// part in the column `objects` (every row must) are calibrated with whole parts held out of
/// each cross-scoring fold ([`Model::fit_objects`]); otherwise each image is a part of its own.
fn fit_rows(rows: &[&Row], objects: &str, options: &FitOptions) -> anyhow::Result<Model> {
    let paths: Vec<&Path> = rows.iter().map(|r| r.path.as_path()).collect();
    eprintln!("decoding {} good images", paths.len());
    let images = decode_all(&paths)
        .into_iter()
        .map(|r| r.map(|(g, _)| g))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut names: Vec<&str> = Vec::new();
    let ids: Option<Vec<usize>> = rows
        .iter()
        .map(|r| {
            let name = r.columns.get(objects)?.as_str();
            Some(names.iter().position(|n| *n == name).unwrap_or_else(|| {
                names.push(name);
                names.len() - 1
            }))
        })
        .collect();
    let ids = ids.unwrap_or_else(|| (0..images.len()).collect());
    let started = Instant::now();
    let model = Model::fit_objects(&images, &ids, options).context("fitting the model")?;
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
    let mut model = fit_rows(&rows.iter().collect::<Vec<_>>(), OBJECT_COLUMN, options)?;
    model.sku = sku.unwrap_or_default();
    let bytes = model.to_bytes();
    write_atomically(out, &bytes)?;
    eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(())
}

/// Writes a file through a temporary sibling and a rename: never a half-written model. A
/// symbolic link is followed (its target replaced, the link kept); a device or a pipe
/// (`/dev/stdout`, `/dev/null`, a FIFO) is written into, never replaced by a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if std::fs::metadata(&target).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return std::fs::write(&target, bytes)
            .with_context(|| format!("writing {}", path.display()));
    }
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).context("writing the model")?;
    tmp.persist(&target)
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

fn score(model_path: &Path, inputs: &[PathBuf], heatmap: Option<&Path>) -> anyhow::Result<()> {
    let model = load_model(model_path)?;
    if let Some(dir) = heatmap {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
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
            Ok((verdict, image, ms)) => {
                if let Some(dir) = heatmap {
                    let heat = model.map_in_image(&verdict, image.width(), image.height());
                    let path = heatmap::path_for(dir, &row.name);
                    heatmap::render(&image.luma, &heat, verdict.threshold, &verdict.regions)
                        .save(&path)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
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

/// Decodes and scores one image: the verdict, the decoded image and the milliseconds both took.
fn score_one(model: &Model, path: &Path) -> Result<(Verdict, Image, f64), String> {
    let started = Instant::now();
    let (image, _) = decode_file(path)?;
    let verdict = model.score(&image).map_err(|e| e.to_string())?;
    Ok((verdict, image, started.elapsed().as_secs_f64() * 1000.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn methods_parse_by_name() {
        assert_eq!(parse_method("texture"), Ok(MethodChoice::Texture));
        assert!(parse_method("deep").is_err());
    }

    #[test]
    fn a_model_replaces_a_file_and_the_target_of_a_link_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("knife.model");
        std::fs::write(&file, b"old").unwrap();
        write_atomically(&file, b"new model").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new model");
        let link = dir.path().join("current.model");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_atomically(&link, b"newer model").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"newer model");
    }

    #[test]
    fn a_model_written_to_a_pipe_goes_into_it_and_leaves_the_pipe() {
        use std::os::unix::fs::FileTypeExt;
        // As `--out /dev/stdout` or `--out /dev/null`: a rename would replace the device.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_atomically(&fifo, b"model bytes").unwrap();
        assert_eq!(reader.join().unwrap(), b"model bytes");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the pipe was replaced: {kind:?}");
    }
}
