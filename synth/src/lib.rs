//! `wiko-synth`: synthetic knife photos with known defects, deterministic by seed.
//!
//! [`render`] draws one part (chef's knife `WK-KN-200`, paring knife `WK-PR-090`) with a
//! painted defect and its pixel mask; [`render_part`] is part `i` of a camera's stream;
//! [`write_dataset`] writes a labelled set (images, masks, `manifest.csv`) in the format of
//! `shared/datasets`; [`Nuisance`] adds what a line adds (part-to-part geometry, pose play,
//! blur, light, noise) for robustness sweeps. Used by the agent's `synthetic` camera and
//! `wiko-agent synth`, the demo, the benchmarks and the tests.

pub mod nuisance;
pub mod render;

use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

pub use nuisance::Nuisance;
pub use render::{
    Deviation, HEIGHT, KnifeShape, Part, SHAPES, SynthDefect, WIDTH, pick_defect, render,
    render_deviating, shape,
};

/// JPEG quality of synthetic frames.
const QUALITY: u8 = 90;

/// Part `index` of the stream with `seed`: a defect (or none) drawn at `defect_rate`.
pub fn render_part(shape: &KnifeShape, seed: u64, index: u64, defect_rate: f64) -> Part {
    let defect = pick_defect(seed, index, defect_rate);
    render(
        shape,
        defect,
        seed.wrapping_mul(1_000_003).wrapping_add(index),
    )
}

/// RGB pixels (`width × height × 3`) as a JPEG of the synthetic camera's quality.
pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    encode_jpeg_at(rgb, width, height, QUALITY)
}

/// RGB pixels (`width × height × 3`) as a JPEG of `quality` (1 to 100).
pub fn encode_jpeg_at(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A rendered part as a JPEG.
pub fn part_jpeg(part: &Part) -> Result<Vec<u8>, String> {
    encode_jpeg(&part.rgb, WIDTH, HEIGHT)
}

fn encode_png_mask(mask: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(mask, width, height, ExtendedColorType::L8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// One row of `manifest.csv`, in the column order of `shared/datasets`.
#[derive(Debug, serde::Serialize)]
struct ManifestRow<'a> {
    file: &'a str,
    label: &'a str,
    defect_type: &'a str,
    source_repo: &'a str,
    source_path: &'a str,
    mask_file: &'a str,
    mask_kind: &'a str,
    group_id: &'a str,
    width: u32,
    height: u32,
}

/// Writes `count` parts per SKU to `dir`: `images/*.jpg`, `masks/*.png` for defective parts and
/// `manifest.csv` with the columns of `shared/datasets` (`group_id` is the SKU). Good parts
/// and defective parts are interleaved as the camera produces them. Returns how many parts.
pub fn write_dataset(
    dir: &Path,
    skus: &[KnifeShape],
    count: u64,
    seed: u64,
    defect_rate: f64,
) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir.join("images"))?;
    std::fs::create_dir_all(dir.join("masks"))?;
    let mut manifest = csv::Writer::from_path(dir.join("manifest.csv"))?;
    let io = |e: String| std::io::Error::other(e);
    let mut written = 0;
    for shape in skus {
        for index in 0..count {
            let part = render_part(shape, seed, index, defect_rate);
            let stem = format!("{}_{index:05}", shape.sku);
            let file = format!("images/{stem}.jpg");
            std::fs::write(dir.join(&file), part_jpeg(&part).map_err(io)?)?;
            let (label, defect_type, mask_file, mask_kind) = match part.defect {
                Some(d) => {
                    let mask_file = format!("masks/{stem}.png");
                    std::fs::write(
                        dir.join(&mask_file),
                        encode_png_mask(&part.mask, WIDTH, HEIGHT).map_err(io)?,
                    )?;
                    ("defect", d.type_name(), mask_file, "pixel")
                }
                None => ("good", "none", String::new(), ""),
            };
            manifest.serialize(ManifestRow {
                file: &file,
                label,
                defect_type,
                source_repo: "wiko-synthetic",
                source_path: shape.sku,
                mask_file: &mask_file,
                mask_kind,
                group_id: shape.sku,
                width: WIDTH,
                height: HEIGHT,
            })?;
            written += 1;
        }
    }
    manifest.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_dataset_has_a_manifest_row_and_mask_per_part() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_dataset(dir.path(), &SHAPES, 6, 11, 0.5).unwrap();
        assert_eq!(n, 12);
        let mut manifest = csv::Reader::from_path(dir.path().join("manifest.csv")).unwrap();
        let headers = manifest.headers().unwrap().clone();
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [
                "file",
                "label",
                "defect_type",
                "source_repo",
                "source_path",
                "mask_file",
                "mask_kind",
                "group_id",
                "width",
                "height"
            ]
        );
        let rows: Vec<csv::StringRecord> = manifest.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 12);
        for row in rows {
            assert!(dir.path().join(&row[0]).exists());
            if &row[1] == "defect" {
                assert!(dir.path().join(&row[5]).exists(), "{row:?}");
            } else {
                assert_eq!(&row[5], "");
            }
        }
    }

    #[test]
    fn a_part_of_a_stream_is_the_same_each_time_and_encodes_as_jpeg() {
        let a = render_part(&SHAPES[0], 3, 7, 0.5);
        let b = render_part(&SHAPES[0], 3, 7, 0.5);
        assert_eq!((a.rgb.clone(), a.defect), (b.rgb, b.defect));
        assert_eq!(&part_jpeg(&a).unwrap()[..2], &[0xFF, 0xD8]);
    }
}
