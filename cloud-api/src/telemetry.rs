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
pub const IMAGES_DAMAGED_TOTAL: &str = "wiko_cloud_images_damaged_total";
