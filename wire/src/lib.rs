//! The contract between `wiko-agent`, `wiko-cloud` and whoever listens to their MQTT alerts.
//!
//! This is the only crate that defines serialisable network types. Changes are additive: new
//! optional fields may appear, existing fields never change meaning. Payloads that leave the
//! system (MQTT) carry [`SCHEMA_VERSION`].
//!
//! - [`frame`]: what the agent uploads (`PUT /api/v1/frames/{frame_id}`) and what the cloud answers.
//! - [`analysis`]: the result of analysing one part, as returned by the API.
//! - [`alert`]: the MQTT messages published per part, and their topics.
//! - [`error`]: the JSON error body every HTTP error uses.

pub mod alert;
pub mod analysis;
pub mod error;
pub mod frame;

pub use alert::{AlertMessage, Topic};
pub use analysis::{Analysis, AnalysisStatus, Defect, DefectType, Page};
pub use error::{ErrorBody, ErrorDetail};
pub use frame::{FrameMeta, IngestAck, IngestOutcome, MetaError};

/// Version of the JSON payloads published over MQTT. Bumped only for a breaking change.
pub const SCHEMA_VERSION: u32 = 1;

/// Header carrying the API key, as in the prototype.
pub const API_KEY_HEADER: &str = "x-api-key";

#[cfg(test)]
mod tests;
