//! The synthetic camera: knife photos with known defects, deterministic by seed.
//!
//! Part `i` of a camera with seed `s` is always the same picture. [`write_dataset`] writes a
//! labelled set (images, masks, manifest) in the format of `shared/datasets`.

pub mod render;

use std::io::Write;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

pub use render::{KnifeShape, Part, SHAPES, SynthDefect, pick_defect, render, shape};

use super::Capture;

/// JPEG quality of synthetic frames.
const QUALITY: u8 = 90;

pub struct SyntheticCamera {
    shape: KnifeShape,
    name: String,
    seed: u64,
    defect_rate: f64,
    next: u64,
}

impl SyntheticCamera {
    /// `None` when no knife shape is known for `sku`.
    pub fn new(sku: &str, name: &str, seed: u64, defect_rate: f64) -> Option<SyntheticCamera> {
        Some(SyntheticCamera {
            shape: shape(sku)?,
            name: name.to_string(),
            seed,
            defect_rate,
            next: 0,
        })
    }

    pub fn capture(&mut self) -> Result<Capture, String> {
        let index = self.next;
        self.next += 1;
        let part = render_part(&self.shape, self.seed, index, self.defect_rate);
        Ok(Capture {
            jpeg: encode_jpeg(&part.rgb, render::WIDTH, render::HEIGHT)?,
            part_id: Some(format!("{}-{index:06}", self.name)),
            lot: None,
        })
    }
}

/// Part `index` of the stream with `seed`.
pub fn render_part(shape: &KnifeShape, seed: u64, index: u64, defect_rate: f64) -> Part {
    let defect = pick_defect(seed, index, defect_rate);
    render(
        shape,
        defect,
        seed.wrapping_mul(1_000_003).wrapping_add(index),
    )
}

pub fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .write_image(rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn encode_png_mask(mask: &[u8], width: u32, height: u32) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(mask, width, height, ExtendedColorType::L8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes `count` parts per SKU to `dir`: `images/*.jpg`, `masks/*.png` for defective parts and
/// `manifest.csv` with the columns of `shared/datasets` (`group_id` is the SKU).
/// Good parts and defective parts are interleaved as the camera produces them.
pub fn write_dataset(
    dir: &Path,
    skus: &[KnifeShape],
    count: u64,
    seed: u64,
    defect_rate: f64,
) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir.join("images"))?;
    std::fs::create_dir_all(dir.join("masks"))?;
    let mut manifest = std::io::BufWriter::new(std::fs::File::create(dir.join("manifest.csv"))?);
    writeln!(
        manifest,
        "file,label,defect_type,source_repo,source_path,mask_file,mask_kind,group_id,width,height"
    )?;
    let io = |e: String| std::io::Error::other(e);
    let mut written = 0;
    for shape in skus {
        for index in 0..count {
            let part = render_part(shape, seed, index, defect_rate);
            let stem = format!("{}_{index:05}", shape.sku);
            let file = format!("images/{stem}.jpg");
            std::fs::write(
                dir.join(&file),
                encode_jpeg(&part.rgb, render::WIDTH, render::HEIGHT).map_err(io)?,
            )?;
            let (label, kind, mask_file, mask_kind) = match part.defect {
                Some(d) => {
                    let mask_file = format!("masks/{stem}.png");
                    std::fs::write(
                        dir.join(&mask_file),
                        encode_png_mask(&part.mask, render::WIDTH, render::HEIGHT).map_err(io)?,
                    )?;
                    ("defect", d.type_name(), mask_file, "pixel")
                }
                None => ("good", "none", String::new(), ""),
            };
            writeln!(
                manifest,
                "{file},{label},{kind},wiko-synthetic,{},{mask_file},{mask_kind},{},{},{}",
                shape.sku,
                shape.sku,
                render::WIDTH,
                render::HEIGHT
            )?;
            written += 1;
        }
    }
    manifest.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_camera_numbers_its_parts_and_makes_jpegs() {
        let mut cam = SyntheticCamera::new("WK-PR-090", "cam-a", 3, 0.5).unwrap();
        let a = cam.capture().unwrap();
        let b = cam.capture().unwrap();
        assert_eq!(a.part_id.as_deref(), Some("cam-a-000000"));
        assert_eq!(b.part_id.as_deref(), Some("cam-a-000001"));
        assert_eq!(&a.jpeg[..2], &[0xFF, 0xD8]);
        assert!(SyntheticCamera::new("NO-SUCH", "x", 0, 0.0).is_none());
    }

    #[test]
    fn a_dataset_has_a_manifest_row_and_mask_per_part() {
        let dir = tempfile::tempdir().unwrap();
        let n = write_dataset(dir.path(), &SHAPES, 6, 11, 0.5).unwrap();
        assert_eq!(n, 12);
        let manifest = std::fs::read_to_string(dir.path().join("manifest.csv")).unwrap();
        let rows: Vec<&str> = manifest.lines().skip(1).collect();
        assert_eq!(rows.len(), 12);
        for row in rows {
            let cols: Vec<&str> = row.split(',').collect();
            assert!(dir.path().join(cols[0]).exists());
            if cols[1] == "defect" {
                assert!(dir.path().join(cols[5]).exists(), "{row}");
            } else {
                assert_eq!(cols[5], "");
            }
        }
    }
}
