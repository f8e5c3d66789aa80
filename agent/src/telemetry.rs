//! The agent's metric names, in one place. Units are in the names. The registry and the log
//! subscriber are `wiko_daemon::telemetry`'s.

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
/// Frames the buffer refused, by `reason`: `full` (`when_full = reject_new`, or a frame
/// larger than the buffer), `disk_low` (under `buffer.min_free_bytes`), `ng_unalerted` (only
/// NG frames nobody has alerted yet would make room: never evicted).
pub const BUFFER_REJECTED_TOTAL: &str = "wiko_agent_buffer_rejected_total";
/// NG frames nobody has alerted yet (never evicted), and their accounted bytes: past half of
/// `buffer.max_disk_bytes` the agent is degraded (`ng_unalerted`); at all of it every new
/// frame is refused (`reason="ng_unalerted"`).
pub const BUFFER_UNALERTED_FRAMES: &str = "wiko_agent_buffer_unalerted_frames";
pub const BUFFER_UNALERTED_BYTES: &str = "wiko_agent_buffer_unalerted_bytes";
pub const BUFFER_QUARANTINED_TOTAL: &str = "wiko_agent_buffer_quarantined_total";
pub const DEAD_LETTERS: &str = "wiko_agent_dead_letters";
pub const SYNC_UPLOADS_TOTAL: &str = "wiko_agent_sync_uploads_total";
pub const SYNC_UPLOAD_SECONDS: &str = "wiko_agent_sync_upload_seconds";
pub const SYNC_IN_FLIGHT: &str = "wiko_agent_sync_in_flight";
pub const HEARTBEATS_TOTAL: &str = "wiko_agent_heartbeats_total";
pub const SYNC_DELETE_FAILURES_TOTAL: &str = "wiko_agent_sync_delete_failures_total";
pub const BUFFER_DISK_FREE_BYTES: &str = "wiko_agent_buffer_disk_free_bytes";
pub const DEGRADED: &str = "wiko_agent_degraded";
pub const CAMERA_STATUS: &str = "wiko_agent_camera_status";
pub const CAMERA_FPS: &str = "wiko_agent_camera_fps";
pub const CAMERA_FRAME_AGE_SECONDS: &str = "wiko_agent_camera_frame_age_seconds";
pub const CAMERA_REOPENS_TOTAL: &str = "wiko_agent_camera_reopens_total";
/// Device calls that outlived their deadline and had not returned when the camera was to be
/// opened again (the camera shows `hung` until they do), counted once per hang.
pub const CAMERA_HANGS_TOTAL: &str = "wiko_agent_camera_hangs_total";
pub const TRIGGERS_TOTAL: &str = "wiko_agent_triggers_total";
pub const TRIGGER_TO_FRAME_SECONDS: &str = "wiko_agent_trigger_to_frame_seconds";
/// Where the trigger-to-frame time goes, per camera and `stage` (`queued`, `trigger`,
/// `camera`, `encode` or `grab`, `store`: `source::stages`).
pub const TRIGGER_STAGE_SECONDS: &str = "wiko_agent_trigger_stage_seconds";
/// A `plc` trigger's connection to its PLC (1 while connected, per camera), and its failures
/// by `error` (`connect`, `timeout`, `transport`, `exception`), each followed by a reconnect.
pub const PLC_CONNECTED: &str = "wiko_agent_plc_connected";
pub const PLC_ERRORS_TOTAL: &str = "wiko_agent_plc_errors_total";
/// Edge analysis: the time to judge one frame (decode and score), verdicts by `outcome`
/// (`ok`, `ng`, `error`), models in use, model files refused.
pub const EDGE_VERDICT_SECONDS: &str = "wiko_agent_edge_verdict_seconds";
pub const EDGE_VERDICTS_TOTAL: &str = "wiko_agent_edge_verdicts_total";
pub const EDGE_MODELS: &str = "wiko_agent_edge_models";
pub const EDGE_MODELS_REFUSED_TOTAL: &str = "wiko_agent_edge_models_refused_total";
/// The MQTT connection (1 while connected); the agent's NG alerts by `outcome` (`queued` in
/// the outbox with their frame, `published`: acknowledged by the broker, `dropped`: past
/// `outbox_max_alerts` or `outbox_max_age_secs`, or left when alerts were turned off: the
/// cloud alerts those parts; `lost`: a dead letter's alert left when alerts were turned off,
/// a part nobody alerts), the outbox's depth,
/// and the time from a frame's capture to its alert's PUBACK.
pub const MQTT_CONNECTED: &str = "wiko_agent_mqtt_connected";
pub const ALERTS_TOTAL: &str = "wiko_agent_alerts_total";
pub const ALERT_OUTBOX: &str = "wiko_agent_alert_outbox";
pub const ALERT_SECONDS: &str = "wiko_agent_alert_seconds";
