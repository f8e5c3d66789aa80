//! The embedded broker's state, as plain data: sessions, their subscriptions, the QoS 1
//! messages each still owes its client, and the retained messages. No sockets here: a
//! connection asks the router what to send, and sends it.
//!
//! - A session lives while its client is connected; a client that connected with
//!   `clean_session = false` keeps its session (subscriptions and unacknowledged messages) when
//!   it goes away, and gets every message it missed when it comes back (a bounded number).
//! - A QoS 1 message stays owed until the client acknowledges it; a reconnecting client gets
//!   the owed ones again, marked duplicate.
//! - Catch-up after a start: the broker keeps nothing across a restart, so while its catch-up
//!   window is open it logs what is published; a persistent session that is new then (its
//!   client was subscribed before the restart) gets, when it subscribes, the logged messages
//!   its filter matches that were published before it connected. Sessions already connected
//!   got them live, and get nothing twice.

use std::collections::{HashMap, VecDeque};

use rumqttc::mqttbytes::matches;
use rumqttc::{Publish, QoS};

/// Messages a session may owe its client at most; past it the oldest is dropped (counted).
pub(super) const MAX_OWED: usize = 10_000;

/// What a connected client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The cloud: publishes.
    Publisher,
    /// Everyone else: subscribes and reads.
    Subscriber,
}

#[derive(Debug)]
struct Session {
    subscriptions: Vec<(String, QoS)>,
    /// QoS 1 messages sent (or to send) and not acknowledged, oldest first.
    owed: VecDeque<Publish>,
    next_pkid: u16,
    /// Kept when its client goes away.
    persistent: bool,
    connected: bool,
    /// The catch-up log's messages this session gets when it subscribes: those logged before
    /// it connected (none for a clean session or outside the window).
    catch_up: usize,
}

impl Session {
    fn new(persistent: bool, catch_up: usize) -> Session {
        Session {
            subscriptions: Vec::new(),
            owed: VecDeque::new(),
            next_pkid: 1,
            persistent,
            connected: true,
            catch_up: if persistent { catch_up } else { 0 },
        }
    }

    /// Queues `message` for this session at `qos` (owed until acknowledged at QoS 1); the copy
    /// to send.
    fn queue(&mut self, mut copy: Publish, dropped: &mut usize) -> Publish {
        if copy.qos == QoS::AtLeastOnce {
            copy.pkid = self.pkid();
            if self.owed.len() >= MAX_OWED {
                self.owed.pop_front();
                *dropped += 1;
            }
            self.owed.push_back(copy.clone());
        }
        copy
    }

    fn pkid(&mut self) -> u16 {
        let pkid = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        pkid
    }
}

/// What a publish led to: messages to send to connected clients, and messages dropped.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Routed {
    pub(super) send: Vec<(String, Publish)>,
    pub(super) dropped: usize,
}

#[derive(Debug, Default)]
pub(super) struct Router {
    sessions: HashMap<String, Session>,
    retained: HashMap<String, Publish>,
    /// What was published since the start, while the catch-up window is open (at most
    /// `MAX_OWED` messages).
    catch_up: Option<Vec<Publish>>,
}

impl Router {
    /// A router whose catch-up window is open (see the module doc).
    pub(super) fn catching_up() -> Router {
        Router {
            catch_up: Some(Vec::new()),
            ..Router::default()
        }
    }

    /// Closes the catch-up window: its log is dropped.
    pub(super) fn end_catch_up(&mut self) {
        self.catch_up = None;
    }

    /// A client connected: whether a session was there for it, and what it is owed (to send
    /// at once, marked duplicate).
    pub(super) fn connect(&mut self, client: &str, clean: bool) -> (bool, Vec<Publish>) {
        if clean {
            self.sessions.remove(client);
        }
        match self.sessions.get_mut(client) {
            Some(session) => {
                session.connected = true;
                let owed = session
                    .owed
                    .iter()
                    .cloned()
                    .map(|mut p| {
                        p.dup = true;
                        p
                    })
                    .collect();
                (true, owed)
            }
            None => {
                let logged = self.catch_up.as_ref().map_or(0, Vec::len);
                self.sessions
                    .insert(client.to_string(), Session::new(!clean, logged));
                (false, Vec::new())
            }
        }
    }

    /// A client went away: its session is forgotten unless it is persistent.
    pub(super) fn disconnect(&mut self, client: &str) {
        if let Some(session) = self.sessions.get_mut(client) {
            if session.persistent {
                session.connected = false;
            } else {
                self.sessions.remove(client);
            }
        }
    }

    /// Subscribes `client` to `filter`; the retained messages it matches, to send now.
    pub(super) fn subscribe(&mut self, client: &str, filter: &str, qos: QoS) -> Vec<Publish> {
        let Some(session) = self.sessions.get_mut(client) else {
            return Vec::new();
        };
        let earlier: Vec<&str> = session
            .subscriptions
            .iter()
            .map(|(f, _)| f.as_str())
            .collect();
        // Logged messages an earlier subscription of this session already took.
        let taken = |topic: &str| earlier.iter().any(|f| matches(topic, f));
        let logged: Vec<Publish> = self
            .catch_up
            .iter()
            .flatten()
            .take(session.catch_up)
            .filter(|m| matches(&m.topic, filter) && !taken(&m.topic))
            .cloned()
            .collect();
        session.subscriptions.retain(|(f, _)| f != filter);
        session.subscriptions.push((filter.to_string(), qos));
        let mut out = Vec::new();
        let mut dropped = 0;
        for message in self.retained.values() {
            if matches(&message.topic, filter) {
                let mut copy = message.clone();
                copy.qos = min_qos(copy.qos, qos);
                copy.retain = true;
                out.push(session.queue(copy, &mut dropped));
            }
        }
        for message in logged {
            let copy = Publish::new(message.topic, min_qos(message.qos, qos), message.payload);
            out.push(session.queue(copy, &mut dropped));
        }
        out
    }

    pub(super) fn unsubscribe(&mut self, client: &str, filter: &str) {
        if let Some(session) = self.sessions.get_mut(client) {
            session.subscriptions.retain(|(f, _)| f != filter);
        }
    }

    /// The client acknowledged a message.
    pub(super) fn acked(&mut self, client: &str, pkid: u16) {
        if let Some(session) = self.sessions.get_mut(client) {
            session.owed.retain(|p| p.pkid != pkid);
        }
    }

    /// Routes a message to every session subscribed to its topic.
    pub(super) fn publish(&mut self, message: &Publish) -> Routed {
        if message.retain {
            if message.payload.is_empty() {
                self.retained.remove(&message.topic);
            } else {
                let mut kept = message.clone();
                kept.dup = false;
                self.retained.insert(message.topic.clone(), kept);
            }
        }
        if let Some(log) = &mut self.catch_up
            && log.len() < MAX_OWED
        {
            log.push(message.clone());
        }
        let mut routed = Routed::default();
        for (client, session) in &mut self.sessions {
            let Some(qos) = session
                .subscriptions
                .iter()
                .filter(|(f, _)| matches(&message.topic, f))
                .map(|(_, q)| *q)
                .max_by_key(|q| *q as u8)
            else {
                continue;
            };
            let copy = session.queue(
                Publish::new(
                    message.topic.clone(),
                    min_qos(message.qos, qos),
                    message.payload.clone(),
                ),
                &mut routed.dropped,
            );
            if session.connected {
                routed.send.push((client.clone(), copy));
            }
        }
        routed
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    let at_least_once = |q| matches!(q, QoS::AtLeastOnce | QoS::ExactlyOnce);
    if at_least_once(a) && at_least_once(b) {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(payload: &'static str) -> Publish {
        Publish::new("wiko/yj/l1/s1/alert", QoS::AtLeastOnce, payload)
    }

    #[test]
    fn a_persistent_session_gets_what_it_missed_and_a_clean_one_does_not() {
        let mut r = Router::default();
        r.connect("keeper", false);
        r.subscribe("keeper", "wiko/#", QoS::AtLeastOnce);
        r.connect("passer", true);
        r.subscribe("passer", "wiko/+/+/+/alert", QoS::AtLeastOnce);
        let routed = r.publish(&alert("one"));
        assert_eq!(routed.send.len(), 2);
        r.disconnect("keeper");
        r.disconnect("passer");
        assert!(
            r.publish(&alert("two")).send.is_empty(),
            "nobody is connected"
        );
        let (present, owed) = r.connect("keeper", false);
        assert!(present);
        let payloads: Vec<&[u8]> = owed.iter().map(|p| p.payload.as_ref()).collect();
        assert_eq!(
            payloads,
            [b"one".as_slice(), b"two"],
            "unacknowledged, in order"
        );
        assert!(owed.iter().all(|p| p.dup));
        r.acked("keeper", owed[0].pkid);
        r.disconnect("keeper");
        let (_, owed) = r.connect("keeper", false);
        assert_eq!(owed.len(), 1, "the acknowledged one is not owed again");
        let (present, owed) = r.connect("passer", true);
        assert!(!present && owed.is_empty());
    }

    #[test]
    fn after_a_start_a_new_persistent_session_catches_up_once_and_live_ones_get_nothing_twice() {
        let mut r = Router::catching_up();
        r.connect("live", false);
        r.subscribe("live", "wiko/#", QoS::AtLeastOnce);
        assert_eq!(r.publish(&alert("one")).send.len(), 1);
        r.publish(&Publish::new(
            "wiko/yj/l1/s1/result",
            QoS::AtLeastOnce,
            "r1",
        ));

        // The line display was subscribed before the restart: it comes back with a new session.
        r.connect("display", false);
        let got = r.subscribe("display", "wiko/+/+/+/alert", QoS::AtLeastOnce);
        let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_ref()).collect();
        assert_eq!(payloads, [b"one".as_slice()], "what its filter matches");
        let got = r.subscribe("display", "wiko/#", QoS::AtLeastOnce);
        let payloads: Vec<&[u8]> = got.iter().map(|p| p.payload.as_ref()).collect();
        assert_eq!(
            payloads,
            [b"r1".as_slice()],
            "nothing an earlier filter took"
        );
        assert!(
            r.subscribe("display", "wiko/#", QoS::AtLeastOnce)
                .is_empty()
        );
        let routed = r.publish(&alert("two"));
        assert_eq!(routed.send.len(), 2, "live to both, once");

        // A clean session, or any session after the window, catches nothing up.
        r.connect("glance", true);
        assert!(r.subscribe("glance", "wiko/#", QoS::AtLeastOnce).is_empty());
        r.end_catch_up();
        r.connect("late", false);
        assert!(r.subscribe("late", "wiko/#", QoS::AtLeastOnce).is_empty());
    }

    #[test]
    fn retained_messages_reach_later_subscribers_until_cleared() {
        let mut r = Router::default();
        let mut status = Publish::new("wiko/yj/l1/s1/status", QoS::AtLeastOnce, "online");
        status.retain = true;
        r.publish(&status);
        r.connect("late", true);
        let now = r.subscribe("late", "wiko/#", QoS::AtMostOnce);
        assert_eq!(now.len(), 1);
        assert_eq!((now[0].qos, now[0].retain), (QoS::AtMostOnce, true));
        status.payload = Default::default();
        r.publish(&status);
        r.connect("later", true);
        assert!(r.subscribe("later", "wiko/#", QoS::AtLeastOnce).is_empty());
    }
}
