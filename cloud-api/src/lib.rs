//! `wiko-cloud`: the cloud API of the Wiko Defect Analyzer.
//!
//! A tour, in the order data flows:
//! - [`http`]: the API. [`app`] builds the whole router, so tests can `oneshot` it; start at
//!   `http/ingest.rs` (agent frames) and `http/analyze.rs` (the prototype's synchronous call).
//! - [`store`]: records and images behind [`store::Store`] and [`store::blob::BlobStore`]; the
//!   embedded backend is SQLite plus a local directory, production is PostgreSQL plus S3.
//! - [`analysis`]: the [`analysis::Analyzer`] interface and the workers draining the job queue.
//! - [`alert`]: the MQTT outbox publisher and the embedded broker.
//! - [`config`]: TOML + environment configuration, validated before anything starts.
//! - [`demo`]: the whole system on one machine with simulated stations.
//!
//! [`serve`] starts in order (store, analyzer, broker, publisher, workers, HTTP) and stops in
//! reverse when `shutdown` completes: HTTP drains, then workers and the publisher stop.

pub mod alert;
pub mod analysis;
pub mod backup;
pub mod config;
pub mod demo;
pub mod http;
pub mod manifest;
pub mod model_cli;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use wiko_inspect::DecodeLimits;

pub use http::{AppState, app};

use crate::config::{Broker, Config, Database};
use crate::store::Store;
use crate::store::blob::{BlobStore, LocalDir};
use crate::store::postgres::PgStore;
use crate::store::s3::S3;
use crate::store::sqlite::SqliteStore;

/// How often a replica looks for model versions that another replica fitted, and reads the
/// queue's gauges.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// The configured store and image store; pending PostgreSQL migrations are applied unless
/// `database.migrate_on_start` is off.
async fn open_storage(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn BlobStore>)> {
    let store: Arc<dyn Store> = match &config.database {
        Database::Embedded => {
            let db = config.data_dir.join("wiko.db");
            Arc::new(SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?)
        }
        Database::Postgres {
            settings,
            migrate_on_start,
        } => {
            let pg = PgStore::connect(settings).context("database settings")?;
            if *migrate_on_start {
                pg.migrate().await.context("migrating the database")?;
                info!("database schema up to date");
            }
            Arc::new(pg)
        }
    };
    let blobs: Arc<dyn BlobStore> = match &config.s3 {
        None => {
            Arc::new(LocalDir::new(config.data_dir.clone()).context("opening the image directory")?)
        }
        Some(s3) => Arc::new(S3::new(s3).context("S3 settings")?),
    };
    Ok((store, blobs))
}

/// Every [`HOUSEKEEPING`]: activates models other replicas fitted, refits models of an older
/// format, and sets the queue gauges.
async fn housekeeping(
    golden: Arc<analysis::golden::Golden>,
    store: Arc<dyn Store>,
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

/// Runs the cloud on `listener` until `shutdown` completes.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Install the metrics registry first: anything recorded before it would be lost.
    telemetry::prometheus();
    let (store, blobs) = open_storage(&config).await?;
    let limits = DecodeLimits {
        max_pixels: config.max_image_pixels,
    };
    let golden = Arc::new(
        analysis::golden::Golden::new(
            store.clone(),
            blobs.clone(),
            limits,
            wiko_inspect::FitOptions {
                method: config.analysis.method,
                false_reject_rate: config.analysis.false_reject_rate,
            },
        )
        .await,
    );
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let broker_up = Arc::new(AtomicBool::new(false));
    let outbox_wake = Arc::new(Notify::new());
    let mqtt_target = match &config.broker {
        Broker::Embedded(addr) => {
            alert::broker::start(*addr).context("starting the embedded MQTT broker")?;
            info!(%addr, "embedded MQTT broker started");
            Some((addr.ip().to_string(), addr.port()))
        }
        Broker::External { host, port } => Some((host.clone(), *port)),
        Broker::Disabled => None,
    };
    if let Some((host, port)) = mqtt_target {
        let publisher = alert::Publisher {
            store: store.clone(),
            options: alert::options(&config.mqtt_client_id, &host, port),
            wake: outbox_wake.clone(),
            up: broker_up.clone(),
        };
        tasks.spawn(publisher.run(stop.clone()));
    } else {
        broker_up.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let jobs_wake = Arc::new(Notify::new());
    let workers = analysis::Workers {
        store: store.clone(),
        blobs: blobs.clone(),
        analyzer: golden.clone(),
        limits,
        public_url: config.public_url.clone(),
        wake: jobs_wake.clone(),
        outbox_wake: outbox_wake.clone(),
        max_attempts: config.analysis.max_attempts,
        lease: Duration::from_secs(config.analysis.job_lease_secs),
    };
    for _ in 0..config.analysis.workers {
        tasks.spawn(workers.clone().run(stop.clone()));
    }
    tasks.spawn(housekeeping(golden.clone(), store.clone(), stop.clone()));
    tasks.close();
    let state = AppState {
        store,
        blobs,
        analyzer: golden.clone(),
        golden,
        keys: config.keys.clone().into(),
        limits,
        public_url: config.public_url.clone(),
        max_body_bytes: config.max_body_bytes,
        max_concurrent_requests: config.max_concurrent_requests,
        jobs_wake,
        outbox_wake,
        broker_up,
    };
    info!(addr = %listener.local_addr()?, public_url = %config.public_url, "wiko-cloud listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    info!("HTTP stopped; stopping workers and publisher");
    stop.cancel();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within 10 s");
    }
    info!("wiko-cloud stopped");
    Ok(())
}
