//! The agent's one MQTT connection (`[mqtt]`): everything the agent says and hears on the
//! broker goes through [`Link`].
//!
//! - **Status:** `wiko/{facility}/{line}/{station}/status` (the agent's first camera's
//!   station), retained: [`AgentStatus`] `online` after each connect, `offline` as the Last
//!   Will (the broker publishes it when the connection is lost) and before a clean stop.
//! - **Alerts:** the NG alerts of the buffer's outbox ([`crate::buffer::alerts`]), QoS 1, each
//!   deleted on its PUBACK; at most [`MAX_ALERTS_IN_FLIGHT`] unacknowledged. Alerts older than
//!   `outbox_max_age_secs` (and not in flight) are dropped each second, between connections
//!   and before a new connection sends. An NG frame's upload waits for its alert at most
//!   [`crate::buffer::ALERT_GRACE`] (it says `alerted` only if the alert was acknowledged by
//!   then), so each acknowledgement wakes the uploader ([`Link::uploads`]).
//! - **TLS** (`tls = true`): rustls, the broker checked against `ca_file` (or the system's
//!   CAs) under the name `host` (there is no other name to check), a client certificate
//!   presented when configured. A TLS failure is logged with a `hint` naming the likely cause
//!   (`tls_hint`): a broker certificate of another CA, one not naming `host`, one out of
//!   date, or the broker refusing the agent's certificate.
//! - **Triggers:** each `mqtt` trigger's topic ([`crate::trigger::mqtt`]); answers, like
//!   heartbeats (`…/heartbeat`), are handed to the connection as [`Message`]s.
//! - **Model announcements:** `wiko/models/{sku}` (retained, from the cloud) for each SKU with
//!   edge analysis: the agent pulls that SKU's model at once (an unchanged model is not sent
//!   again), not waiting for `edge.refresh_secs`.
//!
//! Every connection is a new client with a clean session: subscriptions are made again and the
//! status republished after each connect, and what was handed to a lost connection is not
//! sent again by the client library; the outbox's leases are freed when the connection ends
//! instead, so the next connection sends every unacknowledged alert again (at least once, one
//! `result_id`), unless the outbox's bounds dropped it meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wiko_wire::{AgentState, AgentStatus, ModelAnnouncement, Topic};

use crate::buffer::{AlertOutbox, Buffer, QueuedAlert};
use crate::config::MqttConfig;
use crate::heartbeat::Identity;
use crate::telemetry as names;
use crate::trigger::mqtt::Route;

/// Largest MQTT packet sent or taken: a heartbeat with its dead letters and models fits.
const MAX_PACKET: usize = 256 * 1024;
/// Most alerts sent and not acknowledged yet.
pub const MAX_ALERTS_IN_FLIGHT: usize = 32;
/// How long an alert handed to the connection waits for its PUBACK before it is sent again.
const ALERT_LEASE: Duration = Duration::from_secs(30);
/// Messages other than alerts waiting for the connection (trigger answers, heartbeats).
const OUTGOING_QUEUE: usize = 256;
/// The client's request queue: alerts, messages, subscriptions.
const CLIENT_QUEUE: usize = 512;
/// How often the outbox is looked at without a wake (leases that ran out, the depth gauge).
const TICK: Duration = Duration::from_secs(1);
/// The first wait before reconnecting, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// A message for the broker (QoS 1, not retained).
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Where components hand the connection their messages; a message that finds the queue full,
/// or no connection, is dropped (answers and heartbeats are best effort).
pub type Outgoing = mpsc::Sender<Message>;

/// The queue of messages for a [`Link`].
pub fn outgoing() -> (Outgoing, mpsc::Receiver<Message>) {
    mpsc::channel(OUTGOING_QUEUE)
}

/// What the frame pipeline needs to queue alerts: the outbox's settings (the cloud's URL the
/// alert names the part's image under, its bounds) and the connection's wake.
#[derive(Clone)]
pub struct Alerts {
    pub outbox: Arc<AlertOutbox>,
    pub wake: Arc<Notify>,
}

/// The connection and what it serves.
pub struct Link {
    pub config: MqttConfig,
    pub identity: Identity,
    pub routes: Vec<Route>,
    pub buffer: Arc<Buffer>,
    /// Woken when an alert is queued.
    pub alerts: Arc<Notify>,
    /// The uploader's wake, woken on each acknowledged alert: its frame may go up now.
    pub uploads: Arc<Notify>,
    /// The SKUs judged at the edge, and where a newly announced one is sent to be pulled.
    pub models: Option<(Vec<String>, mpsc::Sender<String>)>,
    pub outgoing: mpsc::Receiver<Message>,
    /// The sender of `outgoing`, for the trigger answers.
    pub answers: Outgoing,
}

/// What one connection has in flight.
#[derive(Default)]
struct InFlight {
    /// Publications handed to the client, waiting for their packet ids (assigned in order):
    /// the alert's, or `None` for another message.
    awaiting_pkid: VecDeque<Option<QueuedAlert>>,
    by_pkid: HashMap<u16, QueuedAlert>,
    /// Every alert handed to the client and not acknowledged.
    alerts: HashSet<i64>,
}

fn status(device_id: &str, state: AgentState) -> Vec<u8> {
    // A struct of strings: serialising it cannot fail.
    serde_json::to_vec(&AgentStatus {
        schema_version: wiko_wire::SCHEMA_VERSION,
        device_id: device_id.to_string(),
        state,
    })
    .unwrap_or_default()
}

impl Link {
    fn status_topic(&self) -> String {
        let id = &self.identity;
        Topic::Status.path(&id.facility, &id.line, &id.station)
    }

    fn options(&self) -> MqttOptions {
        let cfg = &self.config;
        let mut options = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        options.set_keep_alive(cfg.keep_alive);
        // The library's 10 KiB default would end the connection at a heartbeat with many dead
        // letters (an encoding error), so status, answers and alerts would flap with it.
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        options.set_clean_session(true);
        options.set_inflight(u16::try_from(MAX_ALERTS_IN_FLIGHT * 4).unwrap_or(u16::MAX));
        if let Some((user, password)) = &cfg.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &cfg.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        options.set_last_will(LastWill::new(
            self.status_topic(),
            status(&self.identity.device_id, AgentState::Offline),
            QoS::AtLeastOnce,
            true,
        ));
        options
    }

    /// Keeps the connection up until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut delay = RECONNECT_FIRST;
        while !stop.is_cancelled() {
            let connected = self.session(&stop).await;
            metrics::gauge!(names::MQTT_CONNECTED).set(0.0);
            // What the connection had in flight is not any more: sent again by the next one,
            // or dropped by the outbox's bounds meanwhile (in flight, it never is).
            let buffer = self.buffer.clone();
            match tokio::task::spawn_blocking(move || buffer.release_alerts()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "freeing the alert outbox's leases failed"),
                Err(e) => warn!(error = %e, "freeing the alert outbox's leases panicked"),
            }
            // Between connections the outbox only grows: it is tended here too.
            self.tend_outbox().await;
            delay = if connected {
                RECONNECT_FIRST
            } else {
                (delay * 2).clamp(RECONNECT_FIRST, RECONNECT_MAX)
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => {}
            }
        }
    }

    /// One connection, until an error or `stop`; whether it connected.
    async fn session(&mut self, stop: &CancellationToken) -> bool {
        let (client, mut events) = AsyncClient::new(self.options(), CLIENT_QUEUE);
        // Alerts and trigger answers are small messages that must not wait for Nagle's
        // algorithm (40 ms and more).
        events.network_options.set_tcp_nodelay(true);
        let mut state = InFlight::default();
        let mut connected = false;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(host = %self.config.host, port = self.config.port, "MQTT broker connected");
                        connected = true;
                        metrics::gauge!(names::MQTT_CONNECTED).set(1.0);
                        if !self.connected(&client, &mut state).await {
                            return connected;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                        if let Some(Some(alert)) = state.awaiting_pkid.pop_front() {
                            state.by_pkid.insert(pkid, alert);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(alert) = state.by_pkid.remove(&ack.pkid) {
                            self.acked(&mut state, alert).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => self.heard(&publish),
                    Ok(_) => {}
                    Err(e) => {
                        match tls_hint(&e) {
                            Some(hint) => warn!(error = %e, hint, "MQTT connection lost; unacknowledged alerts will be sent again"),
                            None => warn!(error = %e, "MQTT connection lost; unacknowledged alerts will be sent again"),
                        }
                        return connected;
                    }
                },
                Some(message) = self.outgoing.recv(), if connected => {
                    if client.try_publish(message.topic, QoS::AtLeastOnce, false, message.payload).is_err() {
                        warn!("the MQTT request queue is full; reconnecting");
                        return connected;
                    }
                    state.awaiting_pkid.push_back(None);
                }
                _ = self.alerts.notified(), if connected => {
                    if !self.send_alerts(&client, &mut state).await {
                        return connected;
                    }
                }
                // Only once connected: a branch taken while connecting would drop the
                // connect under way (the client starts it again on the next poll), so a
                // broker slower to answer than the tick would never be reached.
                _ = tick.tick(), if connected => {
                    self.tend_outbox().await;
                    if !self.send_alerts(&client, &mut state).await {
                        return connected;
                    }
                }
                _ = stop.cancelled() => {
                    if connected {
                        self.close(&client, &mut events).await;
                    }
                    return connected;
                }
            }
        }
    }

    /// After each connect: the status, the subscriptions, then the alerts waiting. False if
    /// the client refused a request.
    async fn connected(&self, client: &AsyncClient, state: &mut InFlight) -> bool {
        let online = status(&self.identity.device_id, AgentState::Online);
        if client
            .try_publish(self.status_topic(), QoS::AtLeastOnce, true, online)
            .is_err()
        {
            return false;
        }
        state.awaiting_pkid.push_back(None);
        let mut filters: Vec<String> = self.routes.iter().map(|r| r.topic.clone()).collect();
        if let Some((skus, _)) = &self.models {
            filters.extend(skus.iter().map(|sku| ModelAnnouncement::topic(sku)));
        }
        for filter in filters {
            if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                warn!(topic = %filter, error = %e, "subscribing failed");
                return false;
            }
        }
        // What the last connection (or run) had in flight was freed when it ended: it is sent
        // again, but for the alerts that grew too old meanwhile.
        self.tend_outbox().await;
        self.send_alerts(client, state).await
    }

    /// Hands the client the alerts waiting, up to [`MAX_ALERTS_IN_FLIGHT`]. False if the
    /// client refused one (the connection is then ended, and the next sends it again).
    async fn send_alerts(&self, client: &AsyncClient, state: &mut InFlight) -> bool {
        let room = MAX_ALERTS_IN_FLIGHT.saturating_sub(state.alerts.len());
        if room == 0 {
            return true;
        }
        let buffer = self.buffer.clone();
        let leased =
            match tokio::task::spawn_blocking(move || buffer.lease_alerts(room, ALERT_LEASE)).await
            {
                Ok(Ok(leased)) => leased,
                Ok(Err(e)) => {
                    warn!(error = %e, "reading the alert outbox failed");
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "reading the alert outbox panicked");
                    return true;
                }
            };
        for alert in leased {
            if !state.alerts.insert(alert.seq) {
                // Its lease ran out while it waits for its PUBACK: sent again below.
                debug!(
                    seq = alert.seq,
                    "alert sent again: no PUBACK within its lease"
                );
            }
            if client
                .try_publish(
                    alert.topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    alert.payload.clone(),
                )
                .is_err()
            {
                warn!("the MQTT request queue is full; reconnecting");
                return false;
            }
            state.awaiting_pkid.push_back(Some(alert));
        }
        true
    }

    /// The broker acknowledged `alert`: it leaves the outbox.
    async fn acked(&self, state: &mut InFlight, alert: QueuedAlert) {
        state.alerts.remove(&alert.seq);
        let buffer = self.buffer.clone();
        let seq = alert.seq;
        match tokio::task::spawn_blocking(move || buffer.ack_alert(seq)).await {
            Ok(Ok(true)) => {
                self.uploads.notify_one();
                metrics::counter!(names::ALERTS_TOTAL, "outcome" => "published").increment(1);
                let age = chrono::Utc::now() - alert.captured_at;
                metrics::histogram!(names::ALERT_SECONDS)
                    .record(age.to_std().unwrap_or_default().as_secs_f64());
                debug!(frame_id = %alert.frame_id, "alert published");
            }
            // Sent twice (its lease ran out) and already deleted.
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(error = %e, frame_id = %alert.frame_id, "deleting a published alert failed; it will be sent again")
            }
            Err(e) => warn!(error = %e, "deleting a published alert panicked"),
        }
    }

    /// Drops the alerts too old to send (`outbox_max_age_secs`; their frames not uploaded yet
    /// go up unmarked, so the cloud alerts those parts) and reads the outbox's depth.
    async fn tend_outbox(&self) {
        let buffer = self.buffer.clone();
        let max_age = self.config.outbox.max_age;
        let tended = tokio::task::spawn_blocking(move || {
            buffer.expire_alerts(max_age)?;
            buffer.alerts_queued()
        })
        .await;
        match tended {
            Ok(Ok(n)) => metrics::gauge!(names::ALERT_OUTBOX).set(n as f64),
            Ok(Err(e)) => warn!(error = %e, "tending the alert outbox failed"),
            Err(e) => warn!(error = %e, "tending the alert outbox panicked"),
        }
    }

    /// A message from the broker: a trigger, or a model announcement.
    fn heard(&self, publish: &rumqttc::Publish) {
        if let Some(route) = self.routes.iter().find(|r| r.topic == publish.topic) {
            crate::trigger::mqtt::serve(&self.answers, route, &publish.payload);
            return;
        }
        let Some((skus, pull)) = &self.models else {
            return;
        };
        if !ModelAnnouncement::is_topic(&publish.topic) {
            return;
        }
        match serde_json::from_slice::<ModelAnnouncement>(&publish.payload) {
            Ok(announced) if skus.contains(&announced.sku) => {
                info!(sku = %announced.sku, version = %announced.version, "model announced");
                if pull.try_send(announced.sku).is_err() {
                    debug!("a model pull is already waiting");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(topic = %publish.topic, error = %e, "not a model announcement"),
        }
    }

    /// A clean stop: `offline` (the broker sends no Last Will after a DISCONNECT), then the
    /// DISCONNECT, each given a moment to leave.
    async fn close(&self, client: &AsyncClient, events: &mut rumqttc::EventLoop) {
        let offline = status(&self.identity.device_id, AgentState::Offline);
        let _ = client.try_publish(self.status_topic(), QoS::AtLeastOnce, true, offline);
        let _ = client.try_disconnect();
        let flush = async {
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    }
}

/// What to check when `error` is a TLS failure (the operator's reading of rustls' error, which
/// the log line carries as `hint`); `None` for any other failure.
fn tls_hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let mut next = Some(error);
    let tls = loop {
        let e = next?;
        // rustls' error reaches the client inside an I/O error, which hides it from `source`.
        let found = e.downcast_ref::<Tls>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<Tls>())
        });
        if let Some(tls) = found {
            break tls;
        }
        next = e.source();
    };
    Some(match tls {
        Tls::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the broker's certificate does not name mqtt.host (the name checked; connect by the \
             name the certificate carries, or give the certificate this address)"
        }
        Tls::InvalidCertificate(
            Cert::Expired
            | Cert::ExpiredContext { .. }
            | Cert::NotValidYet
            | Cert::NotValidYetContext { .. },
        ) => "the broker's certificate is out of date, or this machine's clock is wrong",
        Tls::InvalidCertificate(_) => {
            "the broker's certificate is not signed by a CA of mqtt.ca_file (without ca_file: of \
             the system's CAs)"
        }
        Tls::AlertReceived(
            Alert::CertificateRequired
            | Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::AccessDenied
            | Alert::HandshakeFailure,
        ) => {
            "the broker refused the agent: most often its client certificate \
             (mqtt.client_cert_file) is missing or not signed by a CA the broker trusts; the \
             broker's log says which"
        }
        _ => {
            "a TLS failure: check that mqtt.port is the broker's TLS listener, and the broker's log"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::tls_hint;
    use rustls::{AlertDescription, CertificateError, Error as Tls};

    /// As rumqttc reports a failed handshake: rustls' error inside an I/O error.
    fn handshake(e: Tls) -> rumqttc::ConnectionError {
        rumqttc::ConnectionError::Tls(rumqttc::TlsError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e,
        )))
    }

    #[test]
    fn a_tls_failure_names_what_to_check() {
        let bad_ca = handshake(Tls::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(
            tls_hint(&bad_ca)
                .unwrap()
                .contains("not signed by a CA of mqtt.ca_file")
        );
        let wrong_name = handshake(Tls::InvalidCertificate(CertificateError::NotValidForName));
        assert!(
            tls_hint(&wrong_name)
                .unwrap()
                .contains("does not name mqtt.host")
        );
        let expired = handshake(Tls::InvalidCertificate(CertificateError::Expired));
        assert!(tls_hint(&expired).unwrap().contains("out of date"));
        // A broker refusing the client's certificate answers after the handshake: the alert
        // comes with the first read.
        let refused = rumqttc::ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Tls::AlertReceived(AlertDescription::CertificateRequired),
        ));
        assert!(
            tls_hint(&refused)
                .unwrap()
                .contains("mqtt.client_cert_file")
        );
        let refused_plain = rumqttc::ConnectionError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ));
        assert_eq!(tls_hint(&refused_plain), None, "not TLS");
    }
}
