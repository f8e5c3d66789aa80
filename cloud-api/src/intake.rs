//! The one way an image comes in, for agent frames, the prototype's `POST /api/v1/analyze` and
//! golden uploads alike: checked and named by its digest ([`Intake::image`]), stored before the
//! record that names it (`Storage::put_part`, `Storage::put_golden`: keys are the store's), and
//! for a part, the workers woken.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use uuid::Uuid;
use wiko_inspect::{DecodeLimits, InspectError};
use wiko_wire::IngestOutcome;

use crate::analysis::budget::{Budget, TooLarge};
use crate::analysis::verify_holding;
use crate::store::{Image, Origin, Storage, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A frame whose image is not the one its metadata names.
    #[error("the image does not match meta.image_blake3")]
    DigestMismatch,
    #[error(transparent)]
    Image(#[from] InspectError),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone)]
pub struct Intake {
    pub storage: Storage,
    pub limits: DecodeLimits,
    /// The memory of image work: verifying large frames, judging a part synchronously.
    pub budget: Budget,
    /// Frames over this many pixels are decoded at ingest.
    pub verify_above_pixels: u64,
    /// Wakes the analysis workers after a new part.
    pub jobs_wake: Arc<Notify>,
}

impl Intake {
    /// Checks an image cheaply before anything is stored (format, size against the pixel limit
    /// and, for JPEG, the end-of-image marker: nothing is decoded) and names it by its BLAKE3.
    pub fn image(&self, bytes: Bytes) -> Result<Image, IntakeError> {
        let (width, height) = wiko_inspect::decode::dimensions(&bytes, self.limits)?;
        Ok(Image {
            blake3: wiko_wire::frame::image_digest(&bytes),
            bytes,
            width,
            height,
        })
    }

    /// Decodes a frame's image once if it is large (within the budget), so that the queue
    /// holds only images the workers can judge; smaller ones were checked from their headers.
    pub async fn verify(&self, image: &Image) -> Result<(), IntakeError> {
        let pixels = u64::from(image.width) * u64::from(image.height);
        if pixels <= self.verify_above_pixels {
            return Ok(());
        }
        let memory = self
            .budget
            .reserve(Budget::judging(image.width, image.height))
            .await?;
        verify_holding(image.bytes.clone(), self.limits, memory).await?;
        Ok(())
    }

    /// Takes a part in: its image stored, then its record and job (idempotent on a frame's
    /// id); the workers are woken for a new one. A job due later (`run_after`) is for a caller
    /// that analyses the part itself and leaves the job to a worker only if it dies.
    pub async fn part(
        &self,
        origin: Origin,
        image: Image,
        run_after: Duration,
    ) -> Result<(IngestOutcome, Uuid), IntakeError> {
        if origin
            .frame()
            .is_some_and(|f| f.image_blake3 != image.blake3)
        {
            return Err(IntakeError::DigestMismatch);
        }
        let (outcome, id) = self.storage.put_part(origin, image, run_after).await?;
        if outcome == IngestOutcome::Created && run_after.is_zero() {
            self.jobs_wake.notify_one();
        }
        Ok((outcome, id))
    }
}
