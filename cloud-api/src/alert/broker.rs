//! The embedded MQTT broker (rumqttd), started when no external broker is configured.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

/// How long the broker may take to listen after it was started.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// Starts rumqttd on `listen` in its own threads and returns once it accepts connections (so
/// the publisher's first connection is not refused). It keeps messages in memory and lives as
/// long as the process.
pub async fn start(listen: SocketAddr) -> anyhow::Result<()> {
    let config: rumqttd::Config = serde_json::from_value(json!({
        "id": 0,
        "router": {
            "id": 0,
            "max_connections": 1000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 10_485_760,
            "max_segment_count": 10,
        },
        "v4": {
            "1": {
                "name": "wiko-v4",
                "listen": listen.to_string(),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 65536,
                    "max_inflight_count": 200,
                    "dynamic_filters": true,
                }
            }
        }
    }))?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("wiko-mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    let started = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        anyhow::ensure!(
            started.elapsed() < LISTEN_DEADLINE,
            "the embedded MQTT broker does not listen on {listen} after {LISTEN_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
