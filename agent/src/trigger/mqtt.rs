//! The `mqtt` trigger: the agent subscribes to `wiko/{facility}/{line}/{station}/trigger` of
//! each camera with this trigger and answers every message on `…/trigger/ack` (QoS 1) with
//! the frame id, or why nothing was taken. The message is a JSON [`TriggerRequest`]; an empty
//! one is a plain part.
//!
//! The agent's one connection ([`crate::mqtt::Link`]) subscribes to these topics again on
//! every (re)connection and hands each message to [`serve`]; a trigger published while the
//! agent is disconnected is not served (the broker does not keep it for a clean session),
//! which is what a line wants: a late picture is of the wrong part.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::warn;
use wiko_wire::trigger::{trigger_ack_topic, trigger_topic};
use wiko_wire::{TriggerAck, TriggerOutcome, TriggerRequest};

use super::{ANSWER_DEADLINE, Station, Trigger};
use crate::mqtt::{Message, Outgoing};

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

/// Fires one message's trigger; its answer is published when the camera gives it.
pub fn serve(out: &Outgoing, route: &Route, payload: &[u8]) {
    let camera = route.station.camera().to_string();
    let ack_topic = route.ack_topic.clone();
    let out = out.clone();
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
            publish(&out, ack_topic, ack);
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
        publish(&out, ack_topic, ack);
    });
}

fn publish(out: &Outgoing, topic: String, ack: TriggerAck) {
    let payload = match serde_json::to_vec(&ack) {
        Ok(payload) => payload,
        Err(e) => {
            warn!(error = %e, "encoding a trigger answer failed");
            return;
        }
    };
    if let Err(e) = out.try_send(Message { topic, payload }) {
        warn!(error = %e, "a trigger answer could not be handed to the MQTT connection");
    }
}
