//! The HTTP API. Handlers are thin: they authorize, parse, call the intake, the store and the
//! analyzer, and map errors with [`error::ApiError`]. Status codes appear only in this module;
//! the bodies are `wiko_wire`'s.

mod analyze;
pub(crate) mod error;
mod golden;
mod health;
mod image;
mod ingest;
mod results;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;
use wiko_inspect::DecodeLimits;

use crate::analysis::Analyzer;
use crate::analysis::golden::Golden;
use crate::auth::{KeyEntry, Need, Principal, authorize};
use crate::config::{Broker, Config};
use crate::intake::Intake;
use crate::store::Storage;
use error::ApiError;

/// What every handler shares: one replica's services.
#[derive(Clone)]
pub struct AppState {
    /// Where images come in (and the storage behind it).
    pub intake: Intake,
    /// The golden-sample analyzer: golden sets, models, and the verdicts.
    pub golden: Arc<Golden>,
    /// What judges parts (the golden analyzer).
    pub analyzer: Arc<dyn Analyzer>,
    pub keys: Arc<[KeyEntry]>,
    pub max_body_bytes: usize,
    /// Requests served at once.
    pub max_concurrent_requests: usize,
    /// Wakes the MQTT publisher after a result.
    pub outbox_wake: Arc<Notify>,
    /// Whether the MQTT connection is up (for `/ready`); always true without a broker.
    pub broker_up: Arc<AtomicBool>,
}

impl AppState {
    /// The services of a replica configured by `config` over `storage`: the stored models are
    /// loaded (or, with the store unreachable, loaded later).
    pub async fn new(config: &Config, storage: Storage) -> AppState {
        let limits = DecodeLimits {
            max_pixels: config.max_image_pixels,
        };
        let golden = Arc::new(
            Golden::new(
                storage.clone(),
                limits,
                wiko_inspect::FitOptions {
                    method: config.analysis.method,
                    false_reject_rate: config.analysis.false_reject_rate,
                },
            )
            .await,
        );
        AppState {
            intake: Intake {
                storage,
                limits,
                jobs_wake: Arc::new(Notify::new()),
            },
            analyzer: golden.clone(),
            golden,
            keys: config.keys.clone().into(),
            max_body_bytes: config.max_body_bytes,
            max_concurrent_requests: config.max_concurrent_requests,
            outbox_wake: Arc::new(Notify::new()),
            broker_up: Arc::new(AtomicBool::new(config.broker == Broker::Disabled)),
        }
    }

    /// The records.
    fn store(&self) -> &dyn crate::store::Store {
        self.intake.storage.records.as_ref()
    }

    /// The key presented in `X-API-Key`, if it may do `need`.
    fn authorize(&self, headers: &HeaderMap, need: Need) -> Result<Principal, ApiError> {
        let presented = headers
            .get(wiko_wire::API_KEY_HEADER)
            .and_then(|v| v.to_str().ok());
        Ok(authorize(&self.keys, presented, need)?)
    }
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
