//! The contract between `wiko-agent`, `wiko-cloud` and whoever listens to their MQTT alerts.
//!
//! This is the only crate that defines serialisable network types. Changes are additive: new
//! optional fields may appear, existing fields never change meaning. Payloads that leave the
//! system (MQTT) carry [`SCHEMA_VERSION`].
//!
//! - [`frame`]: what the agent uploads (`PUT /api/v1/frames/{frame_id}`) and what the cloud answers.
//! - [`analysis`]: the result of analysing one part, as returned by the API.
//! - [`golden`]: golden sets and models per SKU.
//! - [`stats`]: parts, NG and first-pass yield by group and time bucket.
//! - [`feedback`]: reviews of results, and the model capability they show.
//! - [`events`]: the live stream of results (Server-Sent Events).
//! - [`alert`]: the MQTT messages published per part, and their topics.
//! - [`health`]: the health and readiness bodies of the cloud and the agent.
//! - [`fleet`]: heartbeats, the devices the cloud derives from them, and commands to agents.
//! - [`trigger`]: part triggers sent to the agent (MQTT or its local HTTP) and their answers.
//! - [`keys`]: API keys, their scopes and bindings.
//! - [`error`]: the JSON error body every HTTP error uses, and its stable codes.
//! - [`retry`]: how long a server asks a client to wait.

pub mod alert;
pub mod analysis;
pub mod error;
pub mod events;
pub mod feedback;
pub mod fleet;
pub mod frame;
pub mod golden;
pub mod health;
pub mod keys;
pub mod retry;
pub mod stats;
pub mod trigger;

pub use alert::{AgentState, AgentStatus, AlertMessage, ModelAnnouncement, Topic};
pub use analysis::{
    Analysis, AnalysisStatus, CostRow, Costs, Defect, DefectType, Page, RegionFigures, Usage,
    Verdict, VerdictError, VerdictErrorCode, VerdictSource,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use feedback::{
    BulkFeedback, BulkRefusal, BulkReviewed, BulkReviewedResult, BulkVerdict, Capability, Feedback,
    FeedbackVerdict, NewFeedback,
};
pub use fleet::{
    DeadLetter, Device, DeviceAction, DeviceCommand, DeviceState, Heartbeat, HeartbeatAck,
    HeartbeatError,
};
pub use frame::{EdgeVerdict, FrameMeta, IngestAck, IngestOutcome, MetaError};
pub use golden::{Calibration, GoldenSample, GoldenSet, ModelInfo, SkuSummary};
pub use health::{
    AgentHealth, BufferHealth, CameraHealth, CameraStatus, Health, Readiness, ReadinessChecks,
};
pub use keys::{CreatedKey, KeyInfo, NewKey, Scope};
pub use stats::{Stats, StatsBucket, StatsCounts, StatsDimension, StatsRow};
pub use trigger::{TriggerAck, TriggerOutcome, TriggerRequest};

/// Version of the JSON payloads published over MQTT. Bumped only for a breaking change.
pub const SCHEMA_VERSION: u32 = 1;

/// Header carrying the API key, as in the prototype.
pub const API_KEY_HEADER: &str = "x-api-key";

#[cfg(test)]
mod tests;
