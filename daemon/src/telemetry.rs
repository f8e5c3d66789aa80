//! Logs and the Prometheus registry, set up the same way in both daemons (the demo runs the
//! cloud and an agent in one process; their metric names do not overlap).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets of every histogram, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus registry, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours stays empty and the
        // handle still renders (nothing), which is the best available.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// What is logged when `RUST_LOG` is not set: our own lines from `info` up; the embedded MQTT
/// broker's per-connection lines only from `warn` (`RUST_LOG=debug` shows them).
const DEFAULT_FILTER: &str = "info,rumqttd=warn";

/// Installs the tracing subscriber: `RUST_LOG` filter (default [`DEFAULT_FILTER`]), plain text
/// to stderr (journald adds the timestamps under systemd).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
