//! What both SQL backends share about a record: the human-facing defect id, status names, the
//! listing cursor and the MQTT messages a finished analysis queues.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;
use wiko_wire::{AlertMessage, Analysis, AnalysisStatus, Topic};

use super::{Judgement, Outcome, StoreError};

/// `DEF-` plus 16 hex digits, the prototype's human-facing id, derived from the analysis id.
pub fn defect_id(id: Uuid) -> String {
    format!("DEF-{}", id.simple().to_string()[16..].to_uppercase())
}

pub fn status_str(s: AnalysisStatus) -> &'static str {
    match s {
        AnalysisStatus::Pending => "pending",
        AnalysisStatus::NotCalibrated => "not_calibrated",
        AnalysisStatus::Provisional => "provisional",
        AnalysisStatus::Final => "final",
        AnalysisStatus::Failed => "failed",
    }
}

pub fn parse_status(s: &str) -> AnalysisStatus {
    match s {
        "not_calibrated" => AnalysisStatus::NotCalibrated,
        "provisional" => AnalysisStatus::Provisional,
        "final" => AnalysisStatus::Final,
        "failed" => AnalysisStatus::Failed,
        _ => AnalysisStatus::Pending,
    }
}

/// Fixed-width UTC timestamps (microseconds), so that text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Database(format!("bad timestamp {s:?}: {e}")))
}

/// One page of a listing fetched with `limit + 1` rows: the first `limit`, and the cursor after
/// the last of them when there is more.
pub fn page(mut items: Vec<Analysis>, limit: usize) -> (Vec<Analysis>, Option<String>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(encode_cursor);
    (items, next)
}

/// The outcome stored for a job given up after `attempts`.
pub fn gave_up(attempts: u32, error: &str) -> Outcome {
    Outcome {
        judgement: Judgement::failed(format!("gave up after {attempts} attempts: {error}"), None),
        analyzer: String::new(),
        analyzer_version: String::new(),
        latency_ms: 0.0,
    }
}

/// The cursor after `a`: listings are ordered by (timestamp, id), newest first.
fn encode_cursor(a: &Analysis) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", ts(a.timestamp), a.id))
}

pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), StoreError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
    let (t, id) = text.split_once('|').ok_or(StoreError::BadCursor)?;
    let t = parse_ts(t).map_err(|_| StoreError::BadCursor)?;
    let id = Uuid::parse_str(id).map_err(|_| StoreError::BadCursor)?;
    Ok((t, id))
}

/// The MQTT messages (topic, payload) of a finished analysis: its result, and an alert if NG.
pub fn messages(done: &Analysis, public_url: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let message = AlertMessage::from_analysis(done, public_url);
    let payload = serde_json::to_vec(&message).map_err(|e| StoreError::Database(e.to_string()))?;
    let mut topics = vec![Topic::Result];
    if done.defect_detected {
        topics.push(Topic::Alert);
    }
    Ok(topics
        .into_iter()
        .map(|t| {
            (
                t.path(&done.facility, &done.line, &done.station),
                payload.clone(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defect_ids_follow_the_prototype_format() {
        let id = defect_id(Uuid::now_v7());
        assert!(id.starts_with("DEF-"));
        assert_eq!(id.len(), 4 + 16);
        assert!(id[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t = parse_ts(&ts(Utc::now())).unwrap();
        let id = Uuid::now_v7();
        let raw =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{id}", ts(t)));
        assert_eq!(decode_cursor(&raw).unwrap(), (t, id));
        assert!(matches!(decode_cursor("!!!"), Err(StoreError::BadCursor)));
        let junk = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x|y");
        assert!(matches!(decode_cursor(&junk), Err(StoreError::BadCursor)));
    }
}
