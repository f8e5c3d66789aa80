//! `wiko-daemon`: what both Wiko daemons (`wiko-agent`, `wiko-cloud`) need at their edge, and
//! nothing else: the layered configuration loader ([`config`]), logs and the metrics registry
//! ([`telemetry`]), the shutdown signal ([`shutdown_signal`]), systemd supervision
//! ([`systemd`]) and the MQTT connections' TLS settings from PEM files ([`tls`]). No IO beyond
//! reading the configuration, its secret and certificate files, and notifying systemd.

pub mod config;
pub mod systemd;
pub mod telemetry;
pub mod tls;

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
