//! Metric names of the cloud, in one place. Units are in the names. The registry and the log
//! subscriber are `wiko_daemon::telemetry`'s.

pub const INGEST_TOTAL: &str = "wiko_cloud_ingest_total";
pub const INGEST_SECONDS: &str = "wiko_cloud_ingest_seconds";
pub const ANALYSES_TOTAL: &str = "wiko_cloud_analyses_total";
pub const ANALYSIS_SECONDS: &str = "wiko_cloud_analysis_seconds";
pub const AUTH_FAILURES_TOTAL: &str = "wiko_cloud_auth_failures_total";
pub const MQTT_CONNECTED: &str = "wiko_cloud_mqtt_connected";
pub const MQTT_PUBLISHED_TOTAL: &str = "wiko_cloud_mqtt_published_total";
pub const OUTBOX_MESSAGES: &str = "wiko_cloud_outbox_messages";
pub const JOBS_WAITING: &str = "wiko_cloud_jobs_waiting";
pub const JOBS_OLDEST_SECONDS: &str = "wiko_cloud_jobs_oldest_seconds";
pub const JOBS_DEAD_TOTAL: &str = "wiko_cloud_jobs_dead_total";
pub const AUDIT_DROPPED_TOTAL: &str = "wiko_cloud_audit_dropped_total";
pub const RATE_LIMITED_TOTAL: &str = "wiko_cloud_rate_limited_total";
pub const MQTT_BROKER_REFUSED_TOTAL: &str = "wiko_cloud_mqtt_broker_refused_total";
pub const MQTT_BROKER_DROPPED_TOTAL: &str = "wiko_cloud_mqtt_broker_dropped_total";
pub const DEVICES: &str = "wiko_cloud_devices";
pub const DEVICE_STATE: &str = "wiko_cloud_device_state";
pub const DEVICE_HEARTBEAT_AGE_SECONDS: &str = "wiko_cloud_device_heartbeat_age_seconds";
pub const DEVICE_BUFFER_FRAMES: &str = "wiko_cloud_device_buffer_frames";
pub const DEVICE_OLDEST_UNSYNCED_SECONDS: &str = "wiko_cloud_device_oldest_unsynced_seconds";
pub const DEVICE_DEAD_LETTERS: &str = "wiko_cloud_device_dead_letters";
pub const HEARTBEATS_TOTAL: &str = "wiko_cloud_heartbeats_total";
/// Remote analyzer calls by `analyzer` and `outcome` (`ok` or the verdict's error code), and
/// enrichments given up without a call (`given_up`, also in [`REMOTE_GIVEN_UP_TOTAL`]).
pub const REMOTE_CALLS_TOTAL: &str = "wiko_cloud_remote_calls_total";
/// Tokens the remote analyzer used, by `analyzer` and `kind` (`input`, `output`).
pub const REMOTE_TOKENS_TOTAL: &str = "wiko_cloud_remote_tokens_total";
/// Estimated cost of the remote analyzer in millionths of a USD, by `analyzer`.
pub const REMOTE_COST_MICRO_USD_TOTAL: &str = "wiko_cloud_remote_cost_micro_usd_total";
/// Time of a remote analysis (every attempt and wait), by `analyzer`.
pub const REMOTE_SECONDS: &str = "wiko_cloud_remote_seconds";
/// Remote calls put off by `analyzer` and `cause` (`rate_limited`: a 429 asked to wait
/// longer than `max_retry_wait_secs`; `budget`: the deployment's shared budget is used up
/// until a later window; `store`: the store could not count that budget; `image`: the image
/// store could not read the part's image): their parts went back to the queue.
pub const REMOTE_DEFERRED_TOTAL: &str = "wiko_cloud_remote_deferred_total";
/// Parts whose remote enrichment was given up by `analyzer` and `cause` (`rate_limited`,
/// `budget` or `image`; `store` is never given up): the call would have been put off past
/// `max_deferral_secs` after the part was taken in, so the result became final with the
/// gate's verdict.
pub const REMOTE_GIVEN_UP_TOTAL: &str = "wiko_cloud_remote_given_up_total";
/// Time a remote call waited for room in the deployment's shared budget, by `analyzer`.
pub const REMOTE_BUDGET_WAIT_SECONDS: &str = "wiko_cloud_remote_budget_wait_seconds";
/// NG parts not sent to the remote model because the gate judged them far above its
/// threshold and typed every region (`remote.confident_ng_above`), by `sku`: their results
/// have the gate's types and descriptions only.
pub const REMOTE_KEPT_LOCAL_TOTAL: &str = "wiko_cloud_remote_kept_local_total";
/// Parts the remote analyzer judged otherwise than the gate, by `sku`.
pub const REMOTE_DISAGREEMENTS_TOTAL: &str = "wiko_cloud_remote_disagreements_total";
/// Parts the cloud's golden model judged otherwise than the agent's (edge analysis), by `sku`.
pub const EDGE_DISAGREEMENTS_TOTAL: &str = "wiko_cloud_edge_disagreements_total";
pub const IMAGES_DAMAGED_TOTAL: &str = "wiko_cloud_images_damaged_total";
/// Time to answer `GET /api/v1/stats`.
pub const STATS_SECONDS: &str = "wiko_cloud_stats_seconds";
/// Reviews of results, by `verdict`.
pub const FEEDBACK_TOTAL: &str = "wiko_cloud_feedback_total";
/// Dashboard sign-ins, by the key's `scope` (refused ones count in `AUTH_FAILURES_TOTAL`).
pub const DASHBOARD_SIGNINS_TOTAL: &str = "wiko_cloud_dashboard_signins_total";
/// Clients of the live feed (`GET /api/v1/events`) connected to this replica.
pub const LIVE_CLIENTS: &str = "wiko_cloud_live_clients";
/// Results the live feed of this replica passed on.
pub const LIVE_EVENTS_TOTAL: &str = "wiko_cloud_live_events_total";
/// Thumbnails made (the first request of each; later ones are read from the image store).
pub const THUMBNAILS_MADE_TOTAL: &str = "wiko_cloud_thumbnails_made_total";
/// Part heat maps, by `outcome`: `drawn`, or `busy` (refused: as many were being made as
/// allowed at once).
pub const HEATMAPS_TOTAL: &str = "wiko_cloud_heatmaps_total";
/// Rows of results exported as CSV.
pub const EXPORT_ROWS_TOTAL: &str = "wiko_cloud_export_rows_total";
