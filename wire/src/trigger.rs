//! Part triggers: what a line controller sends the agent to have one part photographed, and
//! the agent's answer.
//!
//! The same bodies travel over MQTT (request on [`trigger_topic`], answer on
//! [`trigger_ack_topic`]) and over the agent's local HTTP (`POST /trigger/{camera}`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::frame::{MetaError, validate_id};

/// One part to photograph. Every field is optional: an empty object (or no body) is a part of
/// the camera's configured SKU with no part id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Echoed in the answer, so a controller can match answers to requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The part's id (serial number, carrier id), stored in the frame record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_id: Option<String>,
    /// The production lot, stored in the frame record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<String>,
    /// The SKU of this part; the camera's configured SKU when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
}

impl TriggerRequest {
    /// Checks the identifiers that go into the frame record (`request_id` is only echoed and
    /// may be anything up to the same length).
    pub fn validate(&self) -> Result<(), MetaError> {
        for (field, value) in [
            ("part_id", &self.part_id),
            ("lot", &self.lot),
            ("sku", &self.sku),
        ] {
            if let Some(value) = value {
                validate_id(field, value)?;
            }
        }
        if self
            .request_id
            .as_ref()
            .is_some_and(|r| r.len() > crate::frame::MAX_ID_LEN)
        {
            return Err(MetaError::TooLong {
                field: "request_id",
            });
        }
        Ok(())
    }
}

/// What became of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOutcome {
    /// The part was photographed and its frame is in the agent's buffer (`frame_id`).
    Captured,
    /// The station was still busy with the previous part: counted as missed, nothing taken.
    Busy,
    /// The camera is not delivering pictures (stalled, reopening, failed or hung): counted as
    /// missed.
    CameraFailed,
    /// The frame could not be kept (the buffer refused it or could not be written).
    NotStored,
    /// The request itself is not acceptable (`reason` says why).
    Invalid,
}

/// The agent's answer to one [`TriggerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The camera that served (or refused) the trigger.
    pub camera: String,
    pub outcome: TriggerOutcome,
    /// The buffered frame, when `outcome` is `captured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_id: Option<Uuid>,
    /// Why nothing was captured, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The edge verdict of the captured frame (true: NG), when the agent judged it (edge
    /// analysis on and a model for the part's SKU); absent otherwise. Provisional: the cloud's
    /// verdict follows on the result topic. Also with `not_stored` when the frame was judged
    /// but the buffer refused it: then it is the part's only verdict (no frame reaches the
    /// cloud, no alert is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defect_detected: Option<bool>,
}

/// The MQTT topic a station's triggers arrive on: `wiko/{facility}/{line}/{station}/trigger`.
pub fn trigger_topic(facility: &str, line: &str, station: &str) -> String {
    format!("wiko/{facility}/{line}/{station}/trigger")
}

/// The MQTT topic the agent answers a station's triggers on: `…/trigger/ack`.
pub fn trigger_ack_topic(facility: &str, line: &str, station: &str) -> String {
    format!("{}/ack", trigger_topic(facility, line, station))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_empty_body_is_a_plain_part_and_unknown_fields_are_refused() {
        let req: TriggerRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(req, TriggerRequest::default());
        assert!(serde_json::from_str::<TriggerRequest>(r#"{"part":"x"}"#).is_err());
    }

    #[test]
    fn identifiers_that_reach_the_frame_record_are_checked() {
        let bad = TriggerRequest {
            part_id: Some("a/b".into()),
            ..TriggerRequest::default()
        };
        assert_eq!(
            bad.validate(),
            Err(MetaError::BadChars { field: "part_id" })
        );
        let good = TriggerRequest {
            request_id: Some("any text at all".into()),
            part_id: Some("SN-001".into()),
            lot: Some("L7".into()),
            sku: Some("WK-KN-200".into()),
        };
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn acks_name_their_outcome_in_snake_case() {
        let ack = TriggerAck {
            request_id: None,
            camera: "c1".into(),
            outcome: TriggerOutcome::CameraFailed,
            frame_id: None,
            reason: Some("stalled".into()),
            defect_detected: None,
        };
        let text = serde_json::to_string(&ack).unwrap();
        assert_eq!(
            text,
            r#"{"camera":"c1","outcome":"camera_failed","reason":"stalled"}"#
        );
        assert_eq!(trigger_ack_topic("f", "l1", "s"), "wiko/f/l1/s/trigger/ack");
    }
}
