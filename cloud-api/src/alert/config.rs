//! `[mqtt]`: where alerts and results are published.

use std::net::SocketAddr;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid};

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
        }
    }
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Start rumqttd in-process on this address and publish to it.
    Embedded(SocketAddr),
    External {
        host: String,
        port: u16,
    },
    Disabled,
}

impl MqttConfig {
    pub(crate) fn validate(&self) -> Result<Broker, ConfigError> {
        if self.disabled {
            return Ok(Broker::Disabled);
        }
        let Some(url) = &self.url else {
            return Ok(Broker::Embedded(self.embedded_listen));
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
        Ok(Broker::External {
            host: host.to_string(),
            port,
        })
    }
}
