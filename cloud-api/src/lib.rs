//! `wiko-cloud`: the cloud API of the Wiko Defect Analyzer.
//!
//! A tour, in the order data flows:
//! - [`http`]: the API. [`app`] builds the whole router over an [`AppState`], so tests can
//!   `oneshot` it; start at `http/ingest.rs` (agent frames) and `http/analyze.rs` (the
//!   prototype's synchronous call).
//! - `intake`: the one way an image comes in (checked, named by digest, stored, recorded).
//! - [`store`]: records behind [`store::Store`] (one SQL store over SQLite or PostgreSQL) and
//!   images behind [`store::BlobStore`] (a local segment log or S3).
//! - [`analysis`]: the analyzer interface, the golden-sample analyzer, the workers draining
//!   the job queue, and the cascade that has a remote vision model enrich NG and uncertain
//!   parts.
//! - `alert`: the outbox publisher (events to MQTT) and the embedded broker.
//! - [`fleet`]: the devices, from their heartbeats.
//! - What the dashboard reads: [`stats`] (hourly aggregates folded into buckets and groups),
//!   [`live`] (every replica's feed of committed results), `thumbnail` (made once, kept in the
//!   image store), `export` (the results as CSV, streamed page by page).
//! - `auth`: API keys and scopes.
//! - `dashboard`: the pages quality engineers use, at `/` (sign-in with a key, a session
//!   cookie, server-rendered HTML).
//! - [`config`]: TOML + environment configuration, validated before anything starts; each
//!   section lives beside its component.
//! - [`backup`]: `wiko-cloud backup | restore` of the embedded store.
//!
//! [`serve`] starts in order (store, analyzer, broker, publisher, workers, HTTP) and stops in
//! reverse when `shutdown` completes: HTTP drains, then workers and the publisher stop.

mod alert;
pub mod analysis;
mod auth;
pub mod backup;
pub mod config;
mod dashboard;
mod export;
pub mod fleet;
mod heatmap;
pub mod http;
mod intake;
pub mod live;
pub mod stats;
pub mod store;
mod telemetry;
mod thumbnail;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use http::{AppState, app};

/// Checks and stores a new API key; the key itself (shown this once) and what it may do.
pub async fn create_key(
    store: &dyn Store,
    new: wiko_wire::NewKey,
) -> anyhow::Result<(String, wiko_wire::KeyInfo)> {
    let (key, stored) = auth::create_key(store, new).await?;
    Ok((key, stored.info))
}

use crate::analysis::golden::Golden;
use crate::config::{Broker, Config, Database};
use crate::store::blob::{BlobStore, LocalDir};
use crate::store::s3::S3;
use crate::store::{Storage, Store};

/// How often a replica looks for model versions that another replica fitted, and reads the
/// queue's gauges.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// The configured records and images; pending PostgreSQL migrations are applied unless
/// `database.migrate_on_start` is off.
pub async fn open_storage(config: &Config) -> anyhow::Result<Storage> {
    let records: Arc<dyn Store> = match &config.database {
        Database::Embedded => {
            let db = config.data_dir.join("wiko.db");
            store::open_sqlite(&db).with_context(|| format!("opening {}", db.display()))?
        }
        Database::Postgres {
            settings,
            migrate_on_start,
        } => {
            let pg = store::open_postgres(settings, *migrate_on_start)
                .await
                .context("opening the database")?;
            if *migrate_on_start {
                info!("database schema up to date");
            }
            pg
        }
    };
    let images: Arc<dyn BlobStore> = match &config.s3 {
        None => {
            Arc::new(LocalDir::new(config.data_dir.clone()).context("opening the image directory")?)
        }
        Some(s3) => Arc::new(S3::new(s3).context("S3 settings")?),
    };
    Ok(Storage { records, images })
}

/// Events kept with their parts deleted by one statement at most (a short transaction).
const PRUNE_BATCH: usize = 1000;
/// Batches a sweep deletes at most; the rest waits for the next sweep, so a backlog (the first
/// sweep after an upgrade) does not hold the housekeeping's other work.
const PRUNE_BATCHES: usize = 50;

/// Forgets the events kept with their parts that were published before `before`, the oldest
/// first, [`PRUNE_BATCH`] at a time, at most [`PRUNE_BATCHES`] batches; how many.
async fn forget_published_events(
    store: &dyn Store,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, store::StoreError> {
    let mut forgot = 0;
    for _ in 0..PRUNE_BATCHES {
        let deleted = store.prune_published_events(before, PRUNE_BATCH).await?;
        forgot += deleted;
        if deleted < PRUNE_BATCH as u64 {
            break;
        }
    }
    Ok(forgot)
}

/// Every [`HOUSEKEEPING`]: activates models other replicas fitted, refits models of an older
/// format, forgets events published longer ago than `replay.window` (and those kept with their
/// parts longer than `replay.kept_with_parts`), and sets the queue gauges.
async fn housekeeping(
    golden: Arc<Golden>,
    store: Arc<dyn Store>,
    replay: config::Replay,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = golden.refresh().await {
            tracing::warn!(error = %e, "refreshing models from the store failed");
        }
        if let Err(e) = golden.refit_unusable().await {
            tracing::warn!(error = %e, "refitting unusable models failed");
        }
        // A time too long ago for the calendar keeps everything.
        let ago = |d: Duration| {
            let now = chrono::Utc::now();
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        };
        if let Err(e) = store.prune_published(ago(replay.window)).await {
            tracing::warn!(error = %e, "forgetting published events failed");
        }
        if let Err(e) = forget_published_events(store.as_ref(), ago(replay.kept_with_parts)).await {
            tracing::warn!(error = %e, "forgetting the parts' old published events failed");
        }
        if let Err(e) = store
            .prune_result_events(chrono::Utc::now() - live::KEEP)
            .await
        {
            tracing::warn!(error = %e, "forgetting the live feed's old numbers failed");
        }
        match store.queue_stats().await {
            Ok(q) => {
                metrics::gauge!(telemetry::JOBS_WAITING).set(q.waiting as f64);
                let oldest = q.oldest_due.map_or(0.0, |d| d.as_secs_f64());
                metrics::gauge!(telemetry::JOBS_OLDEST_SECONDS).set(oldest);
            }
            Err(e) => tracing::warn!(error = %e, "reading the queue's size failed"),
        }
    }
}

/// How often a replica reloads the keys in force (a revocation takes effect within it).
const KEY_RELOAD: Duration = Duration::from_secs(1);
/// How often rate-limit state of callers not seen lately is forgotten.
const FORGET_IDLE_CALLERS: Duration = Duration::from_secs(60);

/// Every [`KEY_RELOAD`]: reloads the keys in force and records when keys were used; now and
/// then forgets idle callers' rate-limit state.
async fn access(state: AppState, stop: CancellationToken) {
    let mut forgot = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEY_RELOAD) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = state
            .keyring
            .reload(state.intake.storage.records.as_ref())
            .await
        {
            tracing::warn!(error = %e, "reloading API keys failed; the keys loaded before stay in force");
        }
        if forgot.elapsed() >= FORGET_IDLE_CALLERS {
            state.limits.forget_idle();
            forgot = tokio::time::Instant::now();
        }
    }
}

/// Runs the cloud on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Install the metrics registry first: anything recorded before it would be lost.
    wiko_daemon::telemetry::prometheus();
    let storage = open_storage(&config).await?;
    let state = AppState::new(&config, storage.clone()).await;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    // (host, port, login, whether to replay after a start: the embedded broker forgets).
    let mqtt_target = match &config.broker {
        Broker::Embedded(settings) => {
            let accounts = alert::broker::start(settings)
                .await
                .context("starting the embedded MQTT broker")?;
            info!(addr = %settings.listen, "embedded MQTT broker started");
            let login = (accounts.publisher.username, accounts.publisher.password);
            let addr = settings.listen;
            Some((addr.ip().to_string(), addr.port(), Some(login), true))
        }
        Broker::External { host, port, login } => Some((host.clone(), *port, login.clone(), false)),
        Broker::Disabled => None,
    };
    if let Some((host, port, login, replay)) = mqtt_target {
        let mut options = alert::options(&config.mqtt_client_id, &host, port);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        let publisher = alert::Publisher {
            store: storage.records.clone(),
            options,
            wake: state.outbox_wake.clone(),
            up: state.broker_up.clone(),
            public_url: config.public_url.clone(),
            replay: replay.then_some(config.replay),
        };
        tasks.spawn(publisher.run(stop.clone()));
    }
    let workers = analysis::Workers {
        storage: storage.clone(),
        analyzer: state.analyzer.clone(),
        limits: state.intake.limits,
        budget: state.intake.budget.clone(),
        wake: state.intake.jobs_wake.clone(),
        outbox_wake: state.outbox_wake.clone(),
        max_attempts: config.analysis.max_attempts,
        lease: Duration::from_secs(config.analysis.job_lease_secs),
    };
    for _ in 0..config.analysis.workers {
        tasks.spawn(workers.clone().run(stop.clone()));
    }
    if let (Some(remote), Some(settings)) = (state.remote_workers(), &config.remote) {
        for _ in 0..settings.workers {
            tasks.spawn(remote.clone().run(stop.clone()));
        }
    }
    tasks.spawn(housekeeping(
        state.golden.clone(),
        storage.records.clone(),
        config.replay,
        stop.clone(),
    ));
    tasks.spawn(access(state.clone(), stop.clone()));
    tasks.spawn(fleet::gauges(
        storage.records.clone(),
        config.fleet.clone(),
        stop.clone(),
    ));
    tasks.close();
    let audit = state.audit.clone();
    info!(addr = %listener.local_addr()?, public_url = %config.public_url, "wiko-cloud listening");
    wiko_daemon::systemd::ready("serving");
    if let Some(timeout) = wiko_daemon::systemd::watchdog_timeout() {
        // Pinged while the runtime runs tasks; a store or broker outage is answered with 503s
        // and retries, which a restart would not mend.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(timeout / 3).await;
                wiko_daemon::systemd::alive();
            }
        });
    }
    let shutdown = async move {
        shutdown.await;
        wiko_daemon::systemd::stopping();
    };
    http::server::serve(listener, app(state), &config.http, shutdown)
        .await
        .context("serving HTTP")?;
    info!("HTTP stopped; stopping workers and publisher");
    stop.cancel();
    audit.flush().await;
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    info!("wiko-cloud stopped");
    Ok(())
}
