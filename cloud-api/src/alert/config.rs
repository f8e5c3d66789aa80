//! `[mqtt]`: where alerts and results are published.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};

use super::broker;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct MqttConfig {
    /// External broker, `mqtt://host:1883`. When absent, an embedded broker is started.
    #[serde(default)]
    pub url: Option<String>,
    /// Listen address of the embedded broker.
    #[serde(default = "default_embedded_listen")]
    pub embedded_listen: SocketAddr,
    /// Client id of this cloud replica on the broker.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Publish nothing (events stay in the outbox); for tests of the API alone.
    #[serde(default)]
    pub disabled: bool,
    /// User name on an external broker (the embedded broker's accounts are its own).
    #[serde(default)]
    pub username: Option<String>,
    /// Password on an external broker. Prefer `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password on an external broker.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A second listener of the embedded broker, speaking TLS (with `embedded_tls_cert_file`
    /// and `embedded_tls_key_file`).
    #[serde(default)]
    pub embedded_tls_listen: Option<SocketAddr>,
    /// The TLS listener's certificate chain (PEM).
    #[serde(default)]
    pub embedded_tls_cert_file: Option<PathBuf>,
    /// The TLS listener's private key (PEM).
    #[serde(default)]
    pub embedded_tls_key_file: Option<PathBuf>,
    /// Events stay this long after the broker acknowledged them, in seconds; the embedded
    /// broker keeps nothing across a restart, so after one the cloud publishes again what it
    /// published in this window (subscribers deduplicate on `result_id`).
    #[serde(default = "default_replay_secs")]
    pub replay_secs: u64,
    /// After a restart, how long subscribers get to reconnect before that replay, in seconds;
    /// meanwhile a subscriber returning with a persistent session gets what was published since
    /// the start.
    #[serde(default = "default_replay_grace_secs")]
    pub replay_grace_secs: u64,
    /// Days the result events published for each part are kept for its page (the dashboard's
    /// MQTT messages), at least 1; older ones are deleted a batch at a time.
    #[serde(default = "default_published_events_days")]
    pub published_events_days: u64,
}

fn default_replay_secs() -> u64 {
    60
}
fn default_replay_grace_secs() -> u64 {
    10
}
/// The longest `published_events_days`: past it the cut-off would leave the databases' dates.
const MAX_PUBLISHED_EVENTS_DAYS: u64 = 36_500;

fn default_published_events_days() -> u64 {
    30
}

fn default_embedded_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_client_id() -> String {
    "wiko-cloud".into()
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            embedded_listen: default_embedded_listen(),
            client_id: default_client_id(),
            disabled: false,
            username: None,
            password: None,
            password_file: None,
            embedded_tls_listen: None,
            embedded_tls_cert_file: None,
            embedded_tls_key_file: None,
            replay_secs: default_replay_secs(),
            replay_grace_secs: default_replay_grace_secs(),
            published_events_days: default_published_events_days(),
        }
    }
}

/// Where alerts go.
#[derive(Debug, Clone)]
pub enum Broker {
    /// Start the embedded broker in-process and publish to it.
    Embedded(broker::Settings),
    External {
        host: String,
        port: u16,
        /// User name and password, when the broker asks for them.
        login: Option<(String, String)>,
    },
    Disabled,
}

/// How long events are kept after publishing (in the outbox for a replay, with each part for
/// its page), and how soon after a start they are replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    pub window: Duration,
    pub grace: Duration,
    /// How long the events published for each part are kept (`published_events`).
    pub kept_with_parts: Duration,
}

impl MqttConfig {
    pub(crate) fn replay(&self) -> Replay {
        Replay {
            window: Duration::from_secs(self.replay_secs),
            grace: Duration::from_secs(self.replay_grace_secs),
            kept_with_parts: Duration::from_secs(self.published_events_days.saturating_mul(86_400)),
        }
    }

    pub(crate) fn validate(&self, data_dir: &Path) -> Result<Broker, ConfigError> {
        if !(1..=MAX_PUBLISHED_EVENTS_DAYS).contains(&self.published_events_days) {
            return Err(invalid(
                "mqtt.published_events_days",
                "must be from 1 to 36500 (a hundred years)",
            ));
        }
        if self.disabled {
            return Ok(Broker::Disabled);
        }
        if self.replay_secs == 0 {
            return Err(invalid("mqtt.replay_secs", "must be above zero"));
        }
        let password = secret(
            "mqtt.password",
            self.password.clone(),
            self.password_file.as_deref(),
        )?;
        let Some(url) = &self.url else {
            if self.username.is_some() || password.is_some() {
                return Err(invalid(
                    "mqtt.username",
                    "the embedded broker's accounts are its own (mqtt-credentials.json in data_dir)",
                ));
            }
            let tls = match (
                self.embedded_tls_listen,
                &self.embedded_tls_cert_file,
                &self.embedded_tls_key_file,
            ) {
                (Some(listen), Some(cert), Some(key)) => Some((
                    listen,
                    Arc::new(wiko_daemon::tls::server_config(
                        "mqtt.embedded_tls_cert_file",
                        cert,
                        "mqtt.embedded_tls_key_file",
                        key,
                    )?),
                )),
                (None, None, None) => None,
                _ => {
                    return Err(invalid(
                        "mqtt.embedded_tls_listen",
                        "set embedded_tls_listen, embedded_tls_cert_file and embedded_tls_key_file together",
                    ));
                }
            };
            return Ok(Broker::Embedded(broker::Settings {
                listen: self.embedded_listen,
                tls,
                credentials_file: data_dir.join("mqtt-credentials.json"),
                publisher_id: self.client_id.clone(),
                catch_up: Duration::from_secs(self.replay_grace_secs),
            }));
        };
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| invalid("mqtt.url", "must start with mqtt://"))?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.trim_end_matches('/')
                    .parse()
                    .map_err(|_| invalid("mqtt.url", "bad port"))?,
            ),
            None => (rest.trim_end_matches('/'), 1883),
        };
        if host.is_empty() {
            return Err(invalid("mqtt.url", "no host"));
        }
        let login = match (&self.username, password) {
            (Some(user), Some(password)) => Some((user.clone(), password)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "mqtt.username",
                    "set username and password (or password_file) together",
                ));
            }
        };
        Ok(Broker::External {
            host: host.to_string(),
            port,
            login,
        })
    }
}
