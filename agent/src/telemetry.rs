//! Logs and metrics: the tracing subscriber, the Prometheus recorder, and every metric name.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Metric names, in one place. Units are in the names.
pub mod names {
    pub const FRAMES_CAPTURED_TOTAL: &str = "wiko_agent_frames_captured_total";
    pub const TRIGGERS_MISSED_TOTAL: &str = "wiko_agent_triggers_missed_total";
    pub const CAPTURE_ERRORS_TOTAL: &str = "wiko_agent_capture_errors_total";
    pub const FILES_REJECTED_TOTAL: &str = "wiko_agent_files_rejected_total";
    pub const CAPTURE_SECONDS: &str = "wiko_agent_capture_seconds";
    pub const BUFFER_FRAMES: &str = "wiko_agent_buffer_frames";
    pub const BUFFER_CAMERA_FRAMES: &str = "wiko_agent_buffer_camera_frames";
    pub const BUFFER_BYTES: &str = "wiko_agent_buffer_bytes";
    pub const BUFFER_OLDEST_UNSYNCED_SECONDS: &str = "wiko_agent_buffer_oldest_unsynced_seconds";
    pub const BUFFER_EVICTIONS_TOTAL: &str = "wiko_agent_buffer_evictions_total";
    pub const BUFFER_REJECTED_TOTAL: &str = "wiko_agent_buffer_rejected_total";
    pub const DEAD_LETTERS: &str = "wiko_agent_dead_letters";
    pub const SYNC_UPLOADS_TOTAL: &str = "wiko_agent_sync_uploads_total";
    pub const SYNC_UPLOAD_SECONDS: &str = "wiko_agent_sync_upload_seconds";
    pub const SYNC_IN_FLIGHT: &str = "wiko_agent_sync_in_flight";
}

/// The process-wide Prometheus registry, installed on first use. The demo runs the cloud and
/// agents in one process; their metric names do not overlap.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours stays empty and the
        // handle still renders (nothing), which is the best available.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default `info`), plain text to stderr
/// (journald adds the timestamps under systemd).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
