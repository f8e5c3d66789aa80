//! Analysis: the [`Analyzer`] interface, the golden-sample analyzer ([`golden`]), the
//! [`Workers`] that drain the job queue, and the [`cascade`] that sends NG and uncertain parts
//! to a [`remote`] vision model.

pub mod budget;
pub mod cascade;
pub(crate) mod config;
pub mod golden;
pub mod remote;
mod workers;

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use wiko_inspect::{DecodeLimits, Image, InspectError, Planes};

pub use crate::store::Judgement;
use crate::store::Outcome;
use crate::telemetry;
pub(crate) use workers::Workers;

#[async_trait]
pub trait Analyzer: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    /// The planes [`Analyzer::judge`] reads of an image of `sku`: a colour decode serves any
    /// analyzer; one that judges luma alone says so, and its images skip their chroma. Asked
    /// before the decode; a SKU's model replaced by a colour one in between decodes that one
    /// frame again ([`Frame::image`]).
    async fn planes(&self, _sku: &str) -> Planes {
        Planes::Colour
    }
    /// Judges one frame of a part of `sku`.
    async fn judge(&self, sku: &str, frame: Frame) -> Judgement;
}

/// A part's image decoded with the planes its analyzer asked for ([`Analyzer::planes`]), and
/// the file it was decoded from.
pub struct Frame {
    bytes: Bytes,
    limits: DecodeLimits,
    planes: Planes,
    image: Image,
}

impl Frame {
    /// Decodes `planes` of `bytes` on the blocking pool.
    pub async fn decode(
        bytes: Bytes,
        limits: DecodeLimits,
        planes: Planes,
    ) -> Result<Frame, InspectError> {
        let image = decode(bytes.clone(), limits, planes).await?;
        Ok(Frame {
            bytes,
            limits,
            planes,
            image,
        })
    }

    /// The image with the `planes` its judge reads: the decoded one, or, when it was decoded
    /// in luma alone and colour is wanted (the SKU's model was replaced by one that reads
    /// colour after [`Analyzer::planes`] was asked), the file decoded again in colour, the
    /// luma image dropped first (the frame's memory reservation covers one colour decode).
    pub async fn image(self, planes: Planes) -> Result<Image, InspectError> {
        if self.planes == Planes::Luma && planes == Planes::Colour {
            drop(self.image);
            return decode(self.bytes, self.limits, Planes::Colour).await;
        }
        Ok(self.image)
    }
}

/// Decodes the `planes` an analyzer reads ([`Analyzer::planes`]) on the blocking pool.
pub async fn decode(
    bytes: Bytes,
    limits: DecodeLimits,
    planes: Planes,
) -> Result<Image, InspectError> {
    decoded(
        tokio::task::spawn_blocking(move || wiko_inspect::decode_planes(&bytes, limits, planes))
            .await,
    )
}

/// Checks that an image decodes, on the blocking pool, with `memory` held until the decode
/// ends, also when the caller is dropped first (a request that timed out). Luma alone: the
/// whole file is still read (a JPEG's entropy-coded data of every component), its chroma is
/// not upsampled or converted.
pub async fn verify_holding(
    bytes: Bytes,
    limits: DecodeLimits,
    memory: budget::Reservation,
) -> Result<(), InspectError> {
    decoded(
        memory
            .run(move || wiko_inspect::decode_planes(&bytes, limits, Planes::Luma))
            .await,
    )
    .map(drop)
}

fn decoded(
    joined: Result<Result<Image, InspectError>, tokio::task::JoinError>,
) -> Result<Image, InspectError> {
    joined.unwrap_or_else(|e| Err(InspectError::Decode(format!("decoder task: {e}"))))
}

/// Runs the analyzer and fills in name, version and latency.
pub async fn run(analyzer: &dyn Analyzer, sku: &str, frame: Frame) -> Outcome {
    let started = Instant::now();
    let judgement = analyzer.judge(sku, frame).await;
    let latency = started.elapsed();
    metrics::histogram!(telemetry::ANALYSIS_SECONDS).record(latency.as_secs_f64());
    Outcome {
        judgement,
        analyzer: analyzer.name().to_string(),
        analyzer_version: analyzer.version().to_string(),
        latency_ms: latency.as_secs_f64() * 1000.0,
    }
}

/// What is said about an image that cannot be used: the decoder's own words stay in the log
/// (they name library internals), the answer and the stored result say what is wrong.
pub(crate) fn describe(e: &InspectError) -> String {
    match e {
        InspectError::Decode(detail) => {
            tracing::debug!(%detail, "the image does not decode");
            "the image does not decode".to_string()
        }
        other => other.to_string(),
    }
}

/// What a result says of an image that cannot be decoded.
pub(crate) fn undecodable_reason(e: &InspectError) -> String {
    format!("the image could not be decoded: {}", describe(e))
}

/// An outcome for an image that cannot be analysed at all.
pub(crate) fn undecodable(analyzer: &dyn Analyzer, e: &InspectError) -> Outcome {
    no_verdict(analyzer, undecodable_reason(e))
}

/// An outcome for an image larger than the memory budget.
pub(crate) fn too_large(analyzer: &dyn Analyzer, e: &budget::TooLarge) -> Outcome {
    no_verdict(analyzer, e.to_string())
}

fn no_verdict(analyzer: &dyn Analyzer, reason: String) -> Outcome {
    Outcome {
        judgement: Judgement::failed(reason, None),
        analyzer: analyzer.name().to_string(),
        analyzer_version: analyzer.version().to_string(),
        latency_ms: 0.0,
    }
}
