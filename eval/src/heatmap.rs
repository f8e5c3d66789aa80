//! `model score --heatmap DIR`: a picture per scored image of where it differs from the good
//! parts, for a quality engineer checking a model on their own images.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use wiko_inspect::{Gray, Region};

/// Box colours: the top region, then the others.
const TOP: Rgb<u8> = Rgb([40, 220, 60]);
const OTHER: Rgb<u8> = Rgb([240, 200, 40]);

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
