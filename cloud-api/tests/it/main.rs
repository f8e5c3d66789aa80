//! The API driven through `wiko_cloud::app(state).oneshot(…)`: no network, the real store of
//! whichever backend the suite runs on (`backend.rs`), one topic per file over one harness
//! (`harness.rs`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod analyze;
mod azure_mock;
mod backend;
mod dashboard;
mod edge;
mod export;
mod feedback;
mod fleet;
mod golden;
mod harness;
mod ingest;
mod keys;
mod live;
mod queue;
mod remote;
mod remote_queue;
mod remote_rig;
mod results;
mod stats;
mod thumbnail;
mod unreachable;
