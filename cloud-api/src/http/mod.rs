//! The HTTP API. Handlers are thin: they authorize, parse, call the intake, the store and the
//! analyzer, and map errors with [`error::ApiError`]. Status codes appear only in this module;
//! the bodies are `wiko_wire`'s.

mod analyze;
pub(crate) mod caller;
pub(crate) mod config;
mod costs;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod feedback;
pub(crate) mod fleet;
pub(crate) mod golden;
mod health;
pub(crate) mod image;
mod ingest;
mod keys;
mod openapi;
pub(crate) mod results;
pub(crate) mod server;
pub(crate) mod stats;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;
use wiko_inspect::DecodeLimits;

use crate::analysis::Analyzer;
use crate::analysis::budget::Budget;
use crate::analysis::cascade::{Gate, RemoteWorkers};
use crate::analysis::golden::Golden;
use crate::analysis::remote::Remote;
use crate::auth::Keyring;
use crate::auth::audit::Audit;
use crate::auth::limits::Limits;
use crate::config::{Broker, Config};
use crate::intake::Intake;
use crate::live::Live;
use crate::store::Storage;

/// What every handler shares: one replica's services.
#[derive(Clone)]
pub struct AppState {
    /// Where images come in (and the storage behind it).
    pub intake: Intake,
    /// The golden-sample analyzer: golden sets, models, and the verdicts.
    pub golden: Arc<Golden>,
    /// What judges parts (the golden analyzer, as the cascade's gate when a remote model is
    /// configured).
    pub analyzer: Arc<dyn Analyzer>,
    /// The remote vision model, if configured.
    pub remote: Option<Arc<Remote>>,
    /// The keys in force (reloaded from the store every second by `serve`).
    pub keyring: Arc<Keyring>,
    /// Requests per key and per address, failed key checks per address.
    pub(crate) limits: Arc<Limits>,
    /// Admin actions and refused keys, to the audit log.
    pub(crate) audit: Audit,
    pub max_body_bytes: usize,
    /// Requests served at once (`/health`, `/ready` and `/metrics` are not counted).
    pub max_concurrent_requests: usize,
    /// Timeouts and the CORS allow-list.
    pub http: config::HttpConfig,
    /// When a device counts as behind or silent.
    pub fleet: crate::fleet::FleetConfig,
    /// Wakes the MQTT publisher after a result.
    pub outbox_wake: Arc<Notify>,
    /// Whether the MQTT connection is up (for `/ready`); always true without a broker.
    pub broker_up: Arc<AtomicBool>,
    /// Results committed on any replica, for `GET /api/v1/events`.
    pub live: Live,
    /// Signs and checks the dashboard's session cookies and form tokens.
    pub(crate) sessions: crate::dashboard::Sessions,
    /// The plant's clock, for the dashboard's Overview.
    pub(crate) plant: crate::dashboard::Plant,
    /// Prefixed to image paths in MQTT messages (a part's page shows its messages as sent).
    pub(crate) public_url: String,
    /// The part heat maps being made (the dashboard's toggle), a few at once.
    pub(crate) heatmaps: crate::heatmap::Heatmaps,
}

impl AppState {
    /// The services of a replica configured by `config` over `storage`: the stored models are
    /// loaded (or, with the store unreachable, loaded later).
    pub async fn new(config: &Config, storage: Storage) -> AppState {
        let limits = DecodeLimits {
            max_pixels: config.max_image_pixels,
        };
        let budget = Budget::new(config.analysis.budget_bytes());
        let golden = Arc::new(
            Golden::new(
                storage.clone(),
                limits,
                budget.clone(),
                wiko_inspect::FitOptions {
                    method: config.analysis.method,
                    false_reject_rate: config.analysis.false_reject_rate,
                },
            )
            .await,
        );
        let remote = config.remote.clone().and_then(|settings| match Remote::new(settings) {
            Ok(remote) => Some(Arc::new(
                remote
                    .sharing(storage.records.clone())
                    .decoding(limits, budget.clone()),
            )),
            Err(e) => {
                tracing::error!(error = %e, "the remote analyzer cannot start; parts are judged by the gate alone");
                None
            }
        });
        let analyzer: Arc<dyn Analyzer> = match &remote {
            Some(remote) => Arc::new(Gate {
                local: golden.clone(),
                remote: remote.clone(),
            }),
            None => golden.clone(),
        };
        let keyring = Arc::new(Keyring::new(config.keys.clone()));
        let live = Live::start(storage.records.clone()).await;
        if let Err(e) = keyring.reload(storage.records.as_ref()).await {
            tracing::warn!(error = %e, "stored API keys not loaded at start; retrying every second");
        }
        AppState {
            keyring,
            limits: Arc::new(Limits::new(&config.limits)),
            audit: Audit::start(storage.records.clone()),
            intake: Intake {
                storage,
                limits,
                budget,
                verify_above_pixels: config.analysis.verify_at_ingest_pixels,
                jobs_wake: Arc::new(Notify::new()),
            },
            analyzer,
            remote,
            golden,
            max_body_bytes: config.max_body_bytes,
            max_concurrent_requests: config.max_concurrent_requests,
            http: config.http.clone(),
            fleet: config.fleet.clone(),
            outbox_wake: Arc::new(Notify::new()),
            broker_up: Arc::new(AtomicBool::new(matches!(config.broker, Broker::Disabled))),
            live,
            sessions: crate::dashboard::Sessions::new(&config.dashboard),
            plant: config.dashboard.plant.clone(),
            public_url: config.public_url.clone(),
            heatmaps: crate::heatmap::Heatmaps::new(crate::heatmap::AT_ONCE),
        }
    }

    /// The workers that enrich provisional results, when a remote model is configured.
    pub fn remote_workers(&self) -> Option<RemoteWorkers> {
        self.remote.as_ref().map(|remote| RemoteWorkers {
            storage: self.intake.storage.clone(),
            remote: remote.clone(),
            outbox_wake: self.outbox_wake.clone(),
        })
    }

    /// The records.
    fn store(&self) -> &dyn crate::store::Store {
        self.intake.storage.records.as_ref()
    }
}

/// The whole API as one router, so that tests can call it with `oneshot`. The API's routes
/// share the request concurrency limit; health, readiness and metrics stay outside it, so
/// they answer while the API is saturated.
pub fn app(state: AppState) -> Router {
    let limits = state.http.clone();
    let api = Router::new()
        .merge(ingest::router())
        .merge(analyze::router())
        .merge(results::router())
        .merge(costs::router())
        .merge(golden::router())
        .merge(keys::router())
        .merge(fleet::router())
        .merge(stats::router())
        .merge(feedback::router())
        .merge(events::router())
        .merge(crate::dashboard::router())
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_millis(
            limits.body_idle_timeout_ms,
        )))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.max_concurrent_requests,
        ));
    let deadline = Duration::from_millis(limits.request_timeout_ms);
    let mut router = Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .merge(api)
        .layer(axum::middleware::from_fn(move |req, next| {
            within(deadline, req, next)
        }))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        // The dashboard's pages load only their own stylesheet, script and images.
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        // Images say how long they may be kept; everything else is not to be stored.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(TraceLayer::new_for_http());
    if let Some(cors) = cors(&limits.cors_allowed_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// Answers `408 request_timeout` when the request takes longer than `deadline`.
async fn within(deadline: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => error::ApiError::RequestTimeout.into_response(),
    }
}

/// Cross-origin calls from the configured origins only; none when the list is empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::CONTENT_TYPE,
                HeaderName::from_static(wiko_wire::API_KEY_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}
