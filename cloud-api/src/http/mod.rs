//! The HTTP API. Handlers are thin: they authorize, parse, call the store and the analyzer, and
//! map errors with [`error::ApiError`]. Status codes appear only in this module.

pub mod analyze;
pub mod auth;
pub mod error;
pub mod golden;
pub mod health;
pub mod image;
pub mod ingest;
pub mod results;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;
use wiko_inspect::DecodeLimits;

use crate::analysis::Analyzer;
use crate::analysis::golden::Golden;
use crate::store::Store;
use crate::store::blob::BlobStore;
use auth::KeyEntry;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub analyzer: Arc<dyn Analyzer>,
    /// The golden-sample analyzer, for golden uploads (the same object as `analyzer`).
    pub golden: Arc<Golden>,
    pub keys: Arc<[KeyEntry]>,
    pub limits: DecodeLimits,
    pub public_url: String,
    pub max_body_bytes: usize,
    /// Requests served at once.
    pub max_concurrent_requests: usize,
    /// Wakes the analysis workers after an ingest.
    pub jobs_wake: Arc<Notify>,
    /// Wakes the MQTT publisher after a result.
    pub outbox_wake: Arc<Notify>,
    /// Whether the MQTT connection is up (for `/ready`).
    pub broker_up: Arc<AtomicBool>,
}

/// The whole API as one router, so that tests can call it with `oneshot`.
pub fn app(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    let max_concurrent = state.max_concurrent_requests;
    Router::new()
        .merge(health::router())
        .merge(ingest::router())
        .merge(analyze::router())
        .merge(results::router())
        .merge(golden::router())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            max_concurrent,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
