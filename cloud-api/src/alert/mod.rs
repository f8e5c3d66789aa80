//! Alerts over MQTT: the outbox publisher. MQTT appears only in this module.
//!
//! Results queue a `result` event in the store's outbox in the same transaction that stores
//! them. The publisher turns each event into its MQTT messages ([`messages`]: the result on
//! `…/result`, and on `…/alert` too for an NG part; a remote model's enrichment on `…/result`
//! only, its `status` then `final`), sends them with QoS 1 and deletes the event
//! only when the broker acknowledged every one (PUBACK), so messages survive restarts and
//! broker outages. After a connection error the client is rebuilt and everything
//! unacknowledged is sent again: delivery is at least once, and subscribers deduplicate on
//! (`result_id`, `status`). Published events are kept a while (`mqtt.replay_secs`); with the embedded
//! broker, which keeps nothing across a restart, they are published again once after a start,
//! when subscribers had time to reconnect. Each acknowledged result event is also kept with its
//! part (the store's `published_events`); [`sent`] turns them into the messages the part's
//! dashboard page lists.

pub(crate) mod broker;
pub(crate) mod config;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use wiko_wire::{AlertMessage, Analysis, ModelAnnouncement, Topic};

use crate::config::Replay;
use crate::store::{Event, Published, Store};
use crate::telemetry;

/// Most events sent and not yet acknowledged.
const MAX_IN_FLIGHT: usize = 64;

pub(crate) struct Publisher {
    pub store: Arc<dyn Store>,
    pub options: MqttOptions,
    pub wake: Arc<Notify>,
    pub up: Arc<AtomicBool>,
    /// Prefixed to image paths in the messages.
    pub public_url: String,
    /// Publish again, once after a start, what was published just before it (the embedded
    /// broker keeps nothing across a restart).
    pub replay: Option<Replay>,
}

/// The MQTT messages (topic, payload) of an event.
pub(crate) fn messages(event: Event, public_url: &str) -> Vec<(String, Vec<u8>)> {
    match event {
        Event::Result(done) => result_messages(&done, public_url),
        Event::Message { topic, payload } => vec![(topic, payload)],
    }
}

/// An MQTT message the broker acknowledged, for a part's page.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub at: chrono::DateTime<chrono::Utc>,
    pub topic: String,
    pub payload: String,
}

/// The messages the part's acknowledged events became, oldest first: each result as it was
/// queued, rendered again by the publisher's rules and `public_url` of today (what was sent,
/// unless those changed since).
pub(crate) fn sent(published: Vec<Published>, public_url: &str) -> Vec<Sent> {
    published
        .into_iter()
        .flat_map(|p| {
            result_messages(&p.result, public_url)
                .into_iter()
                .map(move |(topic, payload)| Sent {
                    at: p.at,
                    topic,
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                })
        })
        .collect()
}

/// A finished analysis on its station's `…/result`, and on `…/alert` too if NG and the agent
/// did not alert it. A remote model's enrichment of a provisional result is an update on
/// `…/result` only: the NG part was alerted when the gate judged it. A part the agent alerted
/// itself (its edge verdict NG, `alerted`: acknowledged by the broker before the upload, under
/// the same `result_id`) is not alerted a second time; the cloud alerts a part its own verdict
/// finds NG whose upload does not say so (the agent's alert may still come: a duplicate under
/// one `result_id`, never a loss). Its final verdict governs: a part the edge judged NG and
/// the cloud OK is not alerted by the cloud, also when the agent's alert was dropped; its
/// result says `disagreement` (ARCHITECTURE.md, invariants).
fn result_messages(done: &Analysis, public_url: &str) -> Vec<(String, Vec<u8>)> {
    let message = AlertMessage::from_analysis(done, public_url);
    // A struct of strings, numbers and lists: serialising it cannot fail.
    let payload = serde_json::to_vec(&message).unwrap_or_default();
    let mut topics = vec![Topic::Result];
    let enrichment = done
        .verdicts
        .iter()
        .any(|v| v.source == wiko_wire::VerdictSource::Remote);
    let edge_alerted = done.verdicts.iter().any(|v| {
        v.source == wiko_wire::VerdictSource::Edge && v.defect_detected == Some(true) && v.alerted
    });
    if done.defect_detected && !enrichment && !edge_alerted {
        topics.push(Topic::Alert);
    }
    topics
        .into_iter()
        .map(|t| {
            (
                t.path(&done.facility, &done.line, &done.station),
                payload.clone(),
            )
        })
        .collect()
}

/// Tracks which outbox event each packet id carries.
#[derive(Default)]
struct InFlight {
    /// Events whose messages were handed to the client, waiting for their packet ids
    /// (assigned in order); `None` for a replayed message, which nothing waits for.
    awaiting_pkid: VecDeque<Option<i64>>,
    by_pkid: HashMap<u16, i64>,
    /// Every event in flight, and how many of its messages the broker has not acknowledged.
    unacked: HashMap<i64, usize>,
    /// Events the broker acknowledged whose publication the store has not recorded yet (it
    /// was unreachable); recorded before anything more is sent.
    unrecorded: Vec<i64>,
}

pub(crate) fn options(client_id: &str, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_max_packet_size(256 * 1024, 256 * 1024);
    o.set_inflight(MAX_IN_FLIGHT as u16);
    o
}

/// A replay to come: when, and of what was published from when until the start (what was
/// published after it reached the new broker, which catches returning sessions up itself).
/// Bounded, so a replay retried later (the store was unreachable when it was due) sends
/// nothing more.
#[derive(Debug, Clone, Copy)]
struct Pending {
    at: tokio::time::Instant,
    since: chrono::DateTime<chrono::Utc>,
    until: chrono::DateTime<chrono::Utc>,
}

/// The first wait before reconnecting, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// The wait before the next connection attempt: short again after a session that connected,
/// doubling while the broker stays unreachable.
fn reconnect_delay(previous: Duration, connected: bool) -> Duration {
    if connected {
        RECONNECT_FIRST
    } else {
        (previous * 2).clamp(RECONNECT_FIRST, RECONNECT_MAX)
    }
}

impl Publisher {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut delay = RECONNECT_FIRST;
        let started = chrono::Utc::now();
        let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
        let mut replay = self.replay.map(|r| Pending {
            at: tokio::time::Instant::now() + r.grace,
            since: started - span(r.window),
            until: started,
        });
        while !shutdown.is_cancelled() {
            let connected = self.session(&shutdown, &mut replay).await;
            self.up.store(false, Ordering::Relaxed);
            metrics::gauge!(telemetry::MQTT_CONNECTED).set(0.0);
            delay = reconnect_delay(delay, connected);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// One connection: from connect until an error (or shutdown). Whether it connected.
    async fn session(&self, shutdown: &CancellationToken, replay: &mut Option<Pending>) -> bool {
        // Room for every message of the events in flight (at most two each), and more.
        let (client, mut events) = AsyncClient::new(self.options.clone(), MAX_IN_FLIGHT * 4);
        let mut state = InFlight::default();
        let mut connected = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let room = connected && state.unacked.len() < MAX_IN_FLIGHT;
            let replay_due =
                connected && replay.is_some_and(|r| r.at <= tokio::time::Instant::now());
            if replay_due && let Some(pending) = replay.take() {
                match self.replay(&client, &mut state, pending).await {
                    Ok(n) => info!(
                        events = n,
                        "published again what was published before the start"
                    ),
                    Err(e) => {
                        warn!(error = %e, "replaying published events failed; trying again");
                        *replay = Some(pending);
                    }
                }
            }
            tokio::select! {
                event = events.poll() => match event {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        info!("connected to the MQTT broker");
                        connected = true;
                        self.up.store(true, Ordering::Relaxed);
                        metrics::gauge!(telemetry::MQTT_CONNECTED).set(1.0);
                    }
                    Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(row)) = state.awaiting_pkid.pop_front() {
                            state.by_pkid.insert(pkid, row);
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                        if let Some(row) = state.by_pkid.remove(&ack.pkid) {
                            metrics::counter!(telemetry::MQTT_PUBLISHED_TOTAL).increment(1);
                            self.acked(&mut state, row).await;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "MQTT connection lost; unacknowledged alerts will be sent again");
                        return connected;
                    }
                },
                _ = self.wake.notified(), if room => {
                    if !self.send_more(&client, &mut state).await {
                        return connected;
                    }
                }
                _ = tick.tick() => {
                    self.record(&mut state).await;
                    if room && !self.send_more(&client, &mut state).await {
                        return connected;
                    }
                }
                _ = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    return connected;
                }
            }
        }
    }

    /// Publishes again the events of `pending`; how many.
    async fn replay(
        &self,
        client: &AsyncClient,
        state: &mut InFlight,
        pending: Pending,
    ) -> Result<usize, crate::store::StoreError> {
        let items = self
            .store
            .published_between(pending.since, pending.until)
            .await?;
        let n = items.len();
        for item in items {
            for (topic, payload) in messages(item.event, &self.public_url) {
                // Waits for room: the replay is a one-off at start.
                let retain = ModelAnnouncement::is_topic(&topic);
                if client
                    .publish(topic, QoS::AtLeastOnce, retain, payload)
                    .await
                    .is_err()
                {
                    return Ok(n);
                }
                state.awaiting_pkid.push_back(None);
            }
        }
        Ok(n)
    }

    /// One message of `row` was acknowledged; once all were, the event leaves the outbox.
    async fn acked(&self, state: &mut InFlight, row: i64) {
        let Some(left) = state.unacked.get_mut(&row) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return;
        }
        state.unrecorded.push(row);
        self.record(state).await;
    }

    /// Records the acknowledged events as published. Until that succeeds they stay in flight
    /// (not sent again in this session) and are retried on each tick.
    async fn record(&self, state: &mut InFlight) {
        if state.unrecorded.is_empty() {
            return;
        }
        match self.store.outbox_done(state.unrecorded.clone()).await {
            Ok(()) => {
                for row in state.unrecorded.drain(..) {
                    state.unacked.remove(&row);
                }
            }
            Err(e) => warn!(
                error = %e,
                events = state.unrecorded.len(),
                "recording acknowledged outbox events failed; retrying"
            ),
        }
    }

    /// Hands the client the messages of events not in flight yet. False if the client's
    /// queue refused one (the session then ends, and the next sends everything again).
    async fn send_more(&self, client: &AsyncClient, state: &mut InFlight) -> bool {
        let items = match self.store.outbox(MAX_IN_FLIGHT * 2).await {
            Ok(items) => items,
            Err(e) => {
                warn!(error = %e, "reading the outbox failed");
                return true;
            }
        };
        metrics::gauge!(telemetry::OUTBOX_MESSAGES).set(items.len() as f64);
        for item in items {
            if state.unacked.len() >= MAX_IN_FLIGHT {
                break;
            }
            if state.unacked.contains_key(&item.id) {
                continue;
            }
            let messages = messages(item.event, &self.public_url);
            state.unacked.insert(item.id, messages.len());
            for (topic, payload) in messages {
                let retain = ModelAnnouncement::is_topic(&topic);
                if client
                    .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                    .is_err()
                {
                    warn!("the MQTT request queue is full; reconnecting");
                    return false;
                }
                state.awaiting_pkid.push_back(Some(item.id));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn analysis(defect_detected: bool) -> Analysis {
        serde_json::from_value(serde_json::json!({
            "id": "0192d3a4-0000-7000-8000-000000000001", "defect_id": "DEF-8000000000000001",
            "timestamp": "2026-12-06T10:00:00Z", "facility": "yangjiang", "line": "l1",
            "station": "grinding", "product_sku": "WK-KN-200", "part_id": null, "lot": null,
            "device_id": "pc1", "frame_id": null, "seq": 1, "status": "final",
            "defect_detected": defect_detected, "defects": [], "score": 2.0,
            "score_threshold": 1.0, "confidence": 0.9, "recommendation": "reject",
            "analyzer": "golden", "analyzer_version": "0", "model_version": "v1",
            "latency_ms": 3.0, "image_width": 640, "image_height": 480,
            "image_url": "/api/v1/analyses/0192d3a4-0000-7000-8000-000000000001/image",
            "created_at": "2026-12-06T10:00:00Z", "analyzed_at": null
        }))
        .unwrap()
    }

    #[test]
    fn a_result_goes_to_its_station_and_an_ng_part_to_its_alert_topic_too() {
        let ok = messages(Event::Result(Box::new(analysis(false))), "http://api");
        let topics: Vec<&str> = ok.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["wiko/yangjiang/l1/grinding/result"]);
        let ng = messages(Event::Result(Box::new(analysis(true))), "http://api/");
        let topics: Vec<&str> = ng.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "wiko/yangjiang/l1/grinding/result",
                "wiko/yangjiang/l1/grinding/alert"
            ]
        );
        let message: AlertMessage = serde_json::from_slice(&ng[1].1).unwrap();
        assert!(message.image_url.starts_with("http://api/api/v1/analyses/"));
        let legacy = Event::Message {
            topic: "wiko/a/b/c/alert".into(),
            payload: b"{}".to_vec(),
        };
        assert_eq!(
            messages(legacy, "x"),
            [("wiko/a/b/c/alert".to_string(), b"{}".to_vec())]
        );
    }

    #[test]
    fn a_remote_enrichment_is_an_update_on_result_only() {
        let mut enriched = analysis(true);
        enriched.verdicts.push(wiko_wire::Verdict {
            source: wiko_wire::VerdictSource::Remote,
            analyzer: "azure_openai".into(),
            model: Some("gpt-4o".into()),
            defect_detected: Some(false),
            score: None,
            defects: Vec::new(),
            summary: None,
            latency_ms: Some(900.0),
            usage: None,
            error: None,
            alerted: false,
        });
        enriched.disagreement = true;
        let update = messages(Event::Result(Box::new(enriched)), "http://api");
        let topics: Vec<&str> = update.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            ["wiko/yangjiang/l1/grinding/result"],
            "alerted once, before"
        );
        let message: AlertMessage = serde_json::from_slice(&update[0].1).unwrap();
        assert!(message.disagreement);
    }

    #[test]
    fn a_part_the_edge_alerted_is_not_alerted_again() {
        // The edge's verdict: NG or not, and whether the agent published its alert (it
        // does only with `[mqtt]`).
        let edge = |ng: bool, alerted: bool| wiko_wire::Verdict {
            source: wiko_wire::VerdictSource::Edge,
            analyzer: "golden".into(),
            model: Some("v1".into()),
            defect_detected: Some(ng),
            score: Some(2.0),
            defects: Vec::new(),
            summary: None,
            latency_ms: Some(15.0),
            usage: None,
            error: None,
            alerted,
        };
        let topics = |edge_ng: bool, alerted: bool| {
            let mut done = analysis(true);
            done.verdicts.push(edge(edge_ng, alerted));
            messages(Event::Result(Box::new(done)), "http://api")
                .into_iter()
                .map(|(t, _)| t)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            topics(true, true),
            ["wiko/yangjiang/l1/grinding/result"],
            "the agent alerted it"
        );
        let cloud_alerts = [
            "wiko/yangjiang/l1/grinding/result",
            "wiko/yangjiang/l1/grinding/alert",
        ];
        assert_eq!(
            topics(false, false),
            cloud_alerts,
            "the edge found it OK: the cloud alerts"
        );
        assert_eq!(
            topics(true, false),
            cloud_alerts,
            "an agent without a broker did not alert: the cloud does"
        );

        // The edge judged NG, the agent's alert was dropped (not `alerted`), the cloud judged
        // OK: its final verdict governs, nobody alerts; the disagreement is on `…/result`.
        let mut good = analysis(false);
        good.verdicts.push(edge(true, false));
        good.disagreement = true;
        let sent = messages(Event::Result(Box::new(good)), "http://api");
        let topics: Vec<&str> = sent.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["wiko/yangjiang/l1/grinding/result"]);
        let message: AlertMessage = serde_json::from_slice(&sent[0].1).unwrap();
        assert!(!message.defect_detected && message.disagreement);
    }

    #[test]
    fn reconnecting_backs_off_while_the_broker_is_away_and_starts_short_after_a_session() {
        let mut delay = RECONNECT_FIRST;
        for _ in 0..10 {
            delay = reconnect_delay(delay, false);
        }
        assert_eq!(delay, RECONNECT_MAX);
        assert_eq!(reconnect_delay(delay, true), RECONNECT_FIRST);
        assert_eq!(reconnect_delay(RECONNECT_FIRST, false), RECONNECT_FIRST * 2);
    }
}
