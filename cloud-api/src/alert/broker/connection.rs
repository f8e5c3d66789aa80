//! One client connection: MQTT 3.1.1 packets (rumqttc's codec) read and written on a TCP or TLS
//! stream. The CONNECT decides who the client is (its credentials) and what it may do: only the
//! publisher may publish and use the publisher's client id; a subscriber that publishes is
//! disconnected. A client silent for one and a half keep-alive periods is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::{Error as CodecError, valid_filter, valid_topic};
use rumqttc::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, QoS, SubAck, SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::router::{Role, Router};
use super::{Credentials, MAX_PACKET};
use crate::telemetry;

/// Longest wait for a client's CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one connected client at most; a client that reads slower is dropped.
const SEND_QUEUE: usize = 1024;

/// What the broker knows that every connection needs.
pub(super) struct Shared {
    pub(super) router: Mutex<Router>,
    pub(super) credentials: Credentials,
    /// The publisher's client id: only its credentials may use it.
    pub(super) publisher_id: String,
    /// Each connected client's outgoing queue, and what ends its connection, by client id.
    pub(super) clients: Mutex<HashMap<String, (mpsc::Sender<Packet>, CancellationToken)>>,
}

impl Shared {
    fn router(&self) -> std::sync::MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the router's catch-up window.
    pub(super) fn end_catch_up(&self) {
        self.router().end_catch_up();
    }

    fn clients(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (mpsc::Sender<Packet>, CancellationToken)>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who a CONNECT's credentials and client id make the client, if anyone.
    fn admit(
        &self,
        client_id: &str,
        login: Option<&rumqttc::Login>,
    ) -> Result<Role, ConnectReturnCode> {
        let Some(login) = login else {
            return Err(ConnectReturnCode::NotAuthorized);
        };
        let role = self
            .credentials
            .role(&login.username, &login.password)
            .ok_or(ConnectReturnCode::BadUserNamePassword)?;
        if client_id.is_empty() {
            return Err(ConnectReturnCode::BadClientId);
        }
        if client_id == self.publisher_id && role != Role::Publisher {
            // The cloud's own id: taking it over would disconnect the cloud.
            return Err(ConnectReturnCode::NotAuthorized);
        }
        Ok(role)
    }

    /// Routes a message and hands each copy to its connected client.
    pub(super) fn route(&self, message: &Publish) {
        let routed = self.router().publish(message);
        if routed.dropped > 0 {
            metrics::counter!(telemetry::MQTT_BROKER_DROPPED_TOTAL)
                .increment(routed.dropped as u64);
        }
        let clients = self.clients();
        for (client, copy) in routed.send {
            if let Some((queue, _)) = clients.get(&client)
                && queue.try_send(Packet::Publish(copy)).is_err()
            {
                // Too slow a reader: it gets the message again on its next connect (QoS 1
                // and a persistent session), and is cut off now.
                debug!(%client, "a subscriber's queue is full");
            }
        }
    }
}

fn encode(packet: &Packet) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    packet.write(&mut out, MAX_PACKET).ok().map(|_| out)
}

/// Serves one client until it goes away (or breaks a rule).
pub(super) async fn serve<S>(stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(4096);
    let connect = match tokio::time::timeout(CONNECT_TIMEOUT, next(&mut reader, &mut buf)).await {
        Ok(Some(Packet::Connect(c))) => c,
        _ => return,
    };
    let client = connect.client_id.clone();
    let role = match shared.admit(&client, connect.login.as_ref()) {
        Ok(role) => role,
        Err(code) => {
            warn!(%client, ?code, "MQTT connection refused");
            metrics::counter!(telemetry::MQTT_BROKER_REFUSED_TOTAL).increment(1);
            if let Some(bytes) = encode(&Packet::ConnAck(ConnAck::new(code, false))) {
                let _ = writer.write_all(&bytes).await;
            }
            return;
        }
    };
    let (queue, mut outgoing) = mpsc::channel::<Packet>(SEND_QUEUE);
    let ended = CancellationToken::new();
    // A client connecting again with the same id ends the older connection.
    if let Some((_, older)) = shared
        .clients()
        .insert(client.clone(), (queue.clone(), ended.clone()))
    {
        older.cancel();
    }
    let (present, owed) = shared.router().connect(&client, connect.clean_session);
    let _ = queue.try_send(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        present,
    )));
    for message in owed {
        let _ = queue.try_send(Packet::Publish(message));
    }
    let keep_alive = Duration::from_secs(u64::from(connect.keep_alive.max(5)) * 3 / 2);
    let reading = async {
        loop {
            let packet = match tokio::time::timeout(keep_alive, next(&mut reader, &mut buf)).await {
                Ok(Some(packet)) => packet,
                _ => return,
            };
            if !handle(packet, role, &client, &shared, &queue) {
                return;
            }
        }
    };
    let writing = async {
        while let Some(packet) = outgoing.recv().await {
            let Some(bytes) = encode(&packet) else {
                continue;
            };
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reading => {}
        _ = writing => {}
        _ = ended.cancelled() => {}
    }
    let mut clients = shared.clients();
    // Only this connection's entry: a newer connection of the same client stays.
    if clients
        .get(&client)
        .is_some_and(|(q, _)| q.same_channel(&queue))
    {
        clients.remove(&client);
        drop(clients);
        shared.router().disconnect(&client);
    }
}

/// Acts on one packet; false when the connection is to end.
fn handle(
    packet: Packet,
    role: Role,
    client: &str,
    shared: &Shared,
    queue: &mpsc::Sender<Packet>,
) -> bool {
    match packet {
        Packet::Publish(p) => {
            if role != Role::Publisher || !valid_topic(&p.topic) {
                warn!(%client, topic = %p.topic, "a publish from a client that may not publish: disconnected");
                metrics::counter!(telemetry::MQTT_BROKER_REFUSED_TOTAL).increment(1);
                return false;
            }
            shared.route(&p);
            if p.qos != QoS::AtMostOnce {
                let _ = queue.try_send(Packet::PubAck(PubAck::new(p.pkid)));
            }
            true
        }
        Packet::PubAck(ack) => {
            shared.router().acked(client, ack.pkid);
            true
        }
        Packet::Subscribe(s) => {
            let mut codes = Vec::with_capacity(s.filters.len());
            let mut retained = Vec::new();
            for f in &s.filters {
                if valid_filter(&f.path) {
                    let qos = if f.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    retained.extend(shared.router().subscribe(client, &f.path, qos));
                    codes.push(SubscribeReasonCode::Success(qos));
                } else {
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
            let _ = queue.try_send(Packet::SubAck(SubAck::new(s.pkid, codes)));
            for message in retained {
                let _ = queue.try_send(Packet::Publish(message));
            }
            true
        }
        Packet::Unsubscribe(u) => {
            for topic in &u.topics {
                shared.router().unsubscribe(client, topic);
            }
            let _ = queue.try_send(Packet::UnsubAck(UnsubAck::new(u.pkid)));
            true
        }
        Packet::PingReq => {
            let _ = queue.try_send(Packet::PingResp);
            true
        }
        // QoS 2 is not offered (subscriptions are granted QoS 1 at most).
        Packet::Disconnect | Packet::Connect(_) | Packet::PubRec(_) | Packet::PubRel(_) => false,
        Packet::ConnAck(_)
        | Packet::PubComp(_)
        | Packet::SubAck(_)
        | Packet::UnsubAck(_)
        | Packet::PingResp => true,
    }
}

/// The next packet, reading as needed; `None` when the stream ends or breaks the protocol.
async fn next<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(packet) => return Some(packet),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(_) => return None,
        }
        if reader.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}
