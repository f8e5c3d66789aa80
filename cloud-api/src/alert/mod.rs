//! Alerts over MQTT: the outbox publisher. MQTT appears only in this module.
//!
//! Results queue their messages in the store's outbox in the same transaction that stores them.
//! The publisher sends outbox rows with QoS 1 and deletes a row only when the broker acknowledged
//! it (PUBACK), so messages survive restarts and broker outages. After a connection error the
//! client is rebuilt and everything unacknowledged is sent again: delivery is at least once, and
//! subscribers deduplicate on `result_id`.

pub mod broker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::Store;
use crate::telemetry;

/// Most messages sent and not yet acknowledged.
const MAX_IN_FLIGHT: usize = 64;

pub struct Publisher {
    pub store: Arc<dyn Store>,
    pub options: MqttOptions,
    pub wake: Arc<Notify>,
    pub up: Arc<AtomicBool>,
}

/// Tracks which outbox row each packet id carries.
#[derive(Default)]
struct InFlight {
    /// Rows handed to the client, waiting for their packet id (assigned in order).
    awaiting_pkid: VecDeque<i64>,
    by_pkid: HashMap<u16, i64>,
    rows: HashSet<i64>,
}

pub fn options(client_id: &str, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_inflight(MAX_IN_FLIGHT as u16);
    o
}

impl Publisher {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            self.session(&shutdown).await;
            self.up.store(false, Ordering::Relaxed);
            metrics::gauge!(telemetry::MQTT_CONNECTED).set(0.0);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// One connection: from connect until an error (or shutdown).
    async fn session(&self, shutdown: &CancellationToken) {
        let (client, mut events) = AsyncClient::new(self.options.clone(), MAX_IN_FLIGHT * 2);
        let mut state = InFlight::default();
        let mut connected = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let room = connected && state.rows.len() < MAX_IN_FLIGHT;
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!("connected to the MQTT broker");
                        connected = true;
                        self.up.store(true, Ordering::Relaxed);
                        metrics::gauge!(telemetry::MQTT_CONNECTED).set(1.0);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(row) = state.awaiting_pkid.pop_front() {
                            state.by_pkid.insert(pkid, row);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(row) = state.by_pkid.remove(&ack.pkid) {
                            match self.store.outbox_done(vec![row]).await {
                                Ok(()) => {
                                    metrics::counter!(telemetry::MQTT_PUBLISHED_TOTAL).increment(1);
                                    state.rows.remove(&row);
                                }
                                // The row stays in flight until the next session re-sends it.
                                Err(e) => warn!(error = %e, "deleting an acknowledged outbox row failed"),
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "MQTT connection lost; unacknowledged alerts will be sent again");
                        return;
                    }
                },
                _ = self.wake.notified(), if room => self.send_more(&client, &mut state).await,
                _ = tick.tick(), if room => self.send_more(&client, &mut state).await,
                _ = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    return;
                }
            }
        }
    }

    async fn send_more(&self, client: &AsyncClient, state: &mut InFlight) {
        let items = match self.store.outbox(MAX_IN_FLIGHT * 2).await {
            Ok(items) => items,
            Err(e) => {
                warn!(error = %e, "reading the outbox failed");
                return;
            }
        };
        metrics::gauge!(telemetry::OUTBOX_MESSAGES).set(items.len() as f64);
        for item in items {
            if state.rows.len() >= MAX_IN_FLIGHT {
                break;
            }
            if state.rows.contains(&item.id) {
                continue;
            }
            if client
                .try_publish(item.topic, QoS::AtLeastOnce, false, item.payload)
                .is_err()
            {
                break; // the request queue is full; the next tick continues
            }
            state.rows.insert(item.id);
            state.awaiting_pkid.push_back(item.id);
        }
    }
}
