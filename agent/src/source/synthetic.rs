//! The synthetic camera: knife photos with known defects from `wiko-synth`, deterministic by
//! seed (part `i` of a camera with seed `s` is always the same picture).

use std::time::Duration;

use async_trait::async_trait;
use wiko_synth::{KnifeShape, part_jpeg, render_part, shape};

use super::{Blocking, Capture, Source, SourceError};

/// The knife renderer as a [`Source`]: rendering runs on the blocking pool.
pub struct Synthetic {
    device: Blocking<SyntheticCamera>,
    /// The renderer at the next part: what a reopen starts from.
    next: SyntheticCamera,
}

impl Synthetic {
    /// `None` when no knife shape is known for `sku`; `grace` as [`Blocking::new`].
    pub fn new(
        sku: &str,
        name: &str,
        seed: u64,
        defect_rate: f64,
        grace: Duration,
    ) -> Option<Synthetic> {
        Some(Synthetic {
            device: Blocking::new(grace),
            next: SyntheticCamera::new(sku, name, seed, defect_rate)?,
        })
    }
}

#[async_trait]
impl Source for Synthetic {
    async fn open(&mut self) -> Result<(), SourceError> {
        let camera = self.next.clone();
        self.device.open(move || Ok(camera)).await
    }

    async fn grab(&mut self) -> Result<Capture, SourceError> {
        let shot = self
            .device
            .call(|camera| camera.capture().map_err(SourceError::Device))
            .await?;
        self.next.next += 1;
        Ok(shot)
    }

    fn close(&mut self) {
        self.device.close();
    }
}

#[derive(Clone)]
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
            part_id: Some(format!("{}-{index:06}", self.name)),
            ..Capture::jpeg(part_jpeg(&part)?)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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
}
