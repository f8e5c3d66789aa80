//! `model score --heatmap DIR`: a picture per scored image of where it differs from the good
//! parts, for a quality engineer checking a model on their own images; `model eval --split-by
//! … --heatmap DIR` the same for each held-out image, with its defect's mask outlined, so that
//! a missed defect shows where the top region went instead.

use std::path::{Path, PathBuf};

use image::{GrayImage, Rgb, RgbImage};
use wiko_inspect::{Gray, Region};

/// Box colours: the top region, then the others.
const TOP: Rgb<u8> = Rgb([40, 220, 60]);
const OTHER: Rgb<u8> = Rgb([240, 200, 40]);
/// The outline of a defect's mask (the labelled truth).
const MASK: Rgb<u8> = Rgb([60, 120, 255]);

/// The image in grey with the anomaly map (`heat`, laid over the image) in red: from half the
/// threshold, fully red at the threshold and above; each region's box drawn (the top one green,
/// the others yellow).
pub fn render(image: &Gray, heat: &Gray, threshold: f32, regions: &[Region]) -> RgbImage {
    let (w, h) = (image.width as u32, image.height as u32);
    let floor = 0.5 * threshold;
    let span = (threshold - floor).max(f32::EPSILON);
    let mut out = RgbImage::from_fn(w, h, |x, y| {
        let i = y as usize * image.width + x as usize;
        let grey = image.data[i].clamp(0.0, 255.0);
        let heat = heat.data.get(i).copied().unwrap_or(0.0);
        let alpha = ((heat - floor) / span).clamp(0.0, 1.0) * 0.6;
        let mix = |target: f32| (grey * (1.0 - alpha) + target * alpha).round() as u8;
        Rgb([mix(255.0), mix(0.0), mix(0.0)])
    });
    for (k, r) in regions.iter().enumerate().rev() {
        outline(&mut out, r.bbox, if k == 0 { TOP } else { OTHER });
    }
    out
}

/// Outlines a defect mask (pixels >= 128, as the hit rate reads it; a mask of another size is
/// scaled to the picture's) on a picture: each mask pixel with a neighbour outside the mask.
pub fn outline_mask(img: &mut RgbImage, mask: &GrayImage) {
    let (w, h) = img.dimensions();
    let (mw, mh) = mask.dimensions();
    if mw == 0 || mh == 0 {
        return;
    }
    let inside = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            return false;
        }
        let mx = (x as u64 * u64::from(mw) / u64::from(w)) as u32;
        let my = (y as u64 * u64::from(mh) / u64::from(h)) as u32;
        mask.get_pixel(mx, my).0[0] >= 128
    };
    for y in 0..i64::from(h) {
        for x in 0..i64::from(w) {
            let edge = inside(x, y)
                && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1));
            if edge {
                img.put_pixel(x as u32, y as u32, MASK);
            }
        }
    }
}

/// A two-pixel outline of `[x, y, w, h]`, clipped to the image.
fn outline(img: &mut RgbImage, [x, y, w, h]: [u32; 4], colour: Rgb<u8>) {
    let (iw, ih) = img.dimensions();
    let (x1, y1) = ((x + w).min(iw), (y + h).min(ih));
    for yy in y.min(ih)..y1 {
        for xx in x.min(iw)..x1 {
            let edge = xx < x + 2 || xx + 2 >= x1 || yy < y + 2 || yy + 2 >= y1;
            if edge {
                img.put_pixel(xx, yy, colour);
            }
        }
    }
}

/// Where the picture of the image named `name` (a manifest's `file`, or a path) goes in `dir`:
/// its path with separators made underscores, as a PNG.
pub fn path_for(dir: &Path, name: &str) -> PathBuf {
    let flat: String = name
        .trim_start_matches(['/', '.'])
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | ':') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let stem = Path::new(&flat)
        .file_stem()
        .map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
    dir.join(format!("{stem}.heat.png"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;
    use wiko_inspect::RegionKind;

    #[test]
    fn the_map_is_red_where_it_reaches_the_threshold_and_boxes_are_drawn() {
        let image = Gray::new(40, 20, 100.0);
        let mut heat = Gray::new(40, 20, 0.0);
        heat.set(30, 10, 4.0);
        heat.set(31, 10, 1.5);
        let region = Region {
            bbox: [2, 2, 10, 8],
            area: 20,
            peak: 4.0,
            shift: -10.0,
            elongation: 1.0,
            kind: RegionKind::Pit,
        };
        let out = render(&image, &heat, 2.0, &[region]);
        assert_eq!(out.dimensions(), (40, 20));
        assert_eq!(out.get_pixel(20, 15), &Rgb([100, 100, 100]), "untouched");
        assert_eq!(
            out.get_pixel(30, 10),
            &Rgb([193, 40, 40]),
            "over the threshold"
        );
        let half = out.get_pixel(31, 10);
        assert!(half[0] > 100 && half[0] < 193, "between: {half:?}");
        assert_eq!(out.get_pixel(2, 2), &TOP);
        assert_eq!(out.get_pixel(6, 6), &Rgb([100, 100, 100]), "inside the box");
    }

    #[test]
    fn a_mask_is_outlined_at_the_pictures_scale() {
        let mut picture = RgbImage::from_pixel(40, 20, Rgb([0, 0, 0]));
        // A half-size mask whose pixels 5..10 × 2..6 are defect (10..20 × 4..12 in the
        // picture); 127 is not defect.
        let mask = GrayImage::from_fn(20, 10, |x, y| {
            Luma([if (5..10).contains(&x) && (2..6).contains(&y) {
                200
            } else {
                127
            }])
        });
        outline_mask(&mut picture, &mask);
        assert_eq!(picture.get_pixel(10, 4), &MASK, "corner");
        assert_eq!(picture.get_pixel(19, 8), &MASK, "right side");
        assert_eq!(picture.get_pixel(15, 8), &Rgb([0, 0, 0]), "inside");
        assert_eq!(picture.get_pixel(9, 8), &Rgb([0, 0, 0]), "outside");
        assert_eq!(picture.get_pixel(20, 8), &Rgb([0, 0, 0]), "outside");
    }

    #[test]
    fn pictures_are_named_after_the_whole_path() {
        let dir = Path::new("/out");
        assert_eq!(
            path_for(dir, "images/mt_crack_1.jpg"),
            Path::new("/out/images_mt_crack_1.heat.png")
        );
        assert_eq!(
            path_for(dir, "/data/a/x.jpeg"),
            Path::new("/out/data_a_x.heat.png")
        );
        assert_eq!(path_for(dir, "x.png"), Path::new("/out/x.heat.png"));
    }
}
