//! The `mqtt` trigger: the agent subscribes to `wiko/{facility}/{line}/{station}/trigger` of
//! each camera with this trigger and answers every message on `…/trigger/ack` (QoS 1) with
//! the frame id, or why nothing was taken. The message is a JSON [`TriggerRequest`]; an empty
//! one is a plain part.
//!
//! One connection for the whole agent. Subscriptions are made again on every (re)connection;
//! a trigger published while the agent is disconnected is not served (the broker does not
//! keep it for a clean session), which is what a line wants: a late picture is of the wrong part.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wiko_wire::trigger::{trigger_ack_topic, trigger_topic};
use wiko_wire::{TriggerAck, TriggerOutcome, TriggerRequest};

use super::{ANSWER_DEADLINE, Station, Trigger};
use crate::config::MqttConfig;

/// Wait before polling the connection again after an error.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// One station reachable over MQTT.
pub struct Route {
    pub topic: String,
    pub ack_topic: String,
    pub station: Arc<Station>,
}

impl Route {
    pub fn new(facility: &str, line: &str, station_name: &str, station: Arc<Station>) -> Route {
        Route {
            topic: trigger_topic(facility, line, station_name),
            ack_topic: trigger_ack_topic(facility, line, station_name),
            station,
        }
    }
}

/// Serves `routes` until `shutdown`.
pub async fn run(cfg: MqttConfig, routes: Vec<Route>, shutdown: CancellationToken) {
    let mut options = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    options.set_keep_alive(cfg.keep_alive);
    options.set_clean_session(true);
    if let Some((user, password)) = &cfg.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    // A trigger is a small message that must not wait for Nagle's algorithm (40 ms and more).
    events.network_options.set_tcp_nodelay(true);
    let routes = Arc::new(routes);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                info!(host = %cfg.host, port = cfg.port, stations = routes.len(), "trigger broker connected");
                for route in routes.iter() {
                    if let Err(e) = client.try_subscribe(route.topic.clone(), QoS::AtLeastOnce) {
                        warn!(topic = %route.topic, error = %e, "subscribing to a trigger topic failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Some(route) = routes.iter().find(|r| r.topic == publish.topic) else {
                    continue;
                };
                serve(&client, route, &publish.payload);
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "trigger broker connection failed; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
}

/// Fires one message's trigger; its answer is published when the camera gives it.
fn serve(client: &AsyncClient, route: &Route, payload: &[u8]) {
    let camera = route.station.camera().to_string();
    let ack_topic = route.ack_topic.clone();
    let client = client.clone();
    let parsed = if payload.iter().all(u8::is_ascii_whitespace) {
        Ok(TriggerRequest::default())
    } else {
        serde_json::from_slice::<TriggerRequest>(payload)
    };
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            let ack = TriggerAck {
                request_id: None,
                camera,
                outcome: TriggerOutcome::Invalid,
                frame_id: None,
                reason: Some(format!("not a trigger request: {e}")),
                defect_detected: None,
            };
            tokio::spawn(publish(client, ack_topic, ack));
            return;
        }
    };
    let (tx, rx) = oneshot::channel();
    let request_id = request.request_id.clone();
    route.station.fire(Trigger::new("mqtt", request, Some(tx)));
    tokio::spawn(async move {
        let ack = match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
            Ok(Ok(ack)) => ack,
            _ => TriggerAck {
                request_id,
                camera,
                outcome: TriggerOutcome::CameraFailed,
                frame_id: None,
                reason: Some("no answer from the camera".into()),
                defect_detected: None,
            },
        };
        publish(client, ack_topic, ack).await;
    });
}

async fn publish(client: AsyncClient, topic: String, ack: TriggerAck) {
    let body = match serde_json::to_vec(&ack) {
        Ok(body) => body,
        Err(e) => {
            warn!(error = %e, "encoding a trigger answer failed");
            return;
        }
    };
    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, body).await {
        warn!(error = %e, "publishing a trigger answer failed");
    }
}
