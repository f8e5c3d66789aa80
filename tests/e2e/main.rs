//! End-to-end scenarios with the real `wiko-cloud` and `wiko-agent` processes on 127.0.0.1.
//!
//! - `flow`: 200 synthetic parts from two stations arrive exactly once, one result message per
//!   part and one alert per NG part.
//! - `outage`: the cloud stops while the agent captures, then comes back: nothing lost.
//! - `crash`: the agent is stopped (SIGTERM) and killed (SIGKILL) mid-upload and restarted:
//!   nothing lost, nothing twice.
//! - `edge`: the agent judges each frame with the model the cloud fitted (pulled at start);
//!   the cloud shows that verdict as the provisional result, its own makes it final, one
//!   result per part.
//! - `folder`: the hot-folder camera takes complete files once and rejects unreadable ones.
//! - `cameras`: snapshot, RTSP (`camera-tests`) and GigE Vision (`genicam-tests`) cameras and
//!   MQTT triggers (`mosquitto-tests`): one frame per trigger; a camera taken away is reported
//!   and reopened while another keeps capturing.
//! - `prototype`: the prototype's own curl check works unchanged.
//! - `backup`: a backup taken while serving restores every result and image.
//! - `demo`: README's first command shows results and NG alerts within 30 s.
//! - `model_cli`: `wiko-cloud model fit | score | eval` driven as a script drives them.
//! - `mqtt`: the embedded broker: results published around a cloud restart reach a
//!   reconnecting subscriber; forged publishes and a taken client id are refused.
//! - `abuse`: memory bombs, slow and stalled clients, idle connections, header bombs, a
//!   queue-stalling image and wrong keys at speed against a real cloud, which keeps answering
//!   `/health` within a second and stays within its memory budget.
//! - `dashboard` (feature `browser-tests`): the dashboard in Chromium shows the API's numbers;
//!   no page without a session, no form without its token.
//! - `mosquitto` (feature `mosquitto-tests`): alerts through an external Mosquitto broker.
//! - `mosquitto_agent` (feature `mosquitto-tests`): the agent's own MQTT: an NG part alerted
//!   by the agent with the cloud down, once (broker outage, restart with alerts in its outbox),
//!   not again by the cloud; its retained status and Last Will; a model announcement pulled at
//!   once.
//! - `mosquitto_broker` (feature `mosquitto-tests`): the agent against a Mosquitto the test
//!   starts: alerts over TLS, a CA the broker's certificate is not of refused with a hint, a
//!   client certificate required; the broker restarted (Last Will, `online` again,
//!   subscriptions back, each alert once); heartbeats on the broker; the alert outbox bounded,
//!   and the parts whose alert it dropped alerted by the cloud; with the cloud up and the broker
//!   away, an NG part uploaded after the alert's grace and alerted by the cloud and then the agent.
//! - `mosquitto_rig` (feature `mosquitto-tests`): the cloud, subscriber, switch and agent both
//!   Mosquitto scenarios of the agent start, and the helpers that read what arrived.
//! - `openapi` (feature `schemathesis-tests`): the API fuzzed against its OpenAPI document with
//!   each kind of key.
//! - `production` (feature `production-tests`): PostgreSQL, S3 and Mosquitto; three replicas
//!   with one killed, the database and the object store cut off mid-run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod abuse;
mod backup;
mod cameras;
mod crash;
#[cfg(feature = "browser-tests")]
mod dashboard;
mod demo;
mod edge;
mod fleet;
mod flow;
mod folder;
mod model_cli;
#[cfg(feature = "mosquitto-tests")]
mod mosquitto;
#[cfg(feature = "mosquitto-tests")]
mod mosquitto_agent;
#[cfg(feature = "mosquitto-tests")]
mod mosquitto_broker;
#[cfg(feature = "mosquitto-tests")]
mod mosquitto_rig;
mod mqtt;
#[cfg(feature = "schemathesis-tests")]
mod openapi;
mod outage;
#[cfg(feature = "production-tests")]
mod production;
mod prototype;
mod systemd;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde_json::Value;
use wiko_e2e::Agent;

/// Checks that the cloud holds each captured frame once, that the device's sequence numbers
/// are exactly 1..=n (a gap is a lost frame), and that the agent's buffer empties. The cloud
/// stores a frame before the agent hears so and deletes its copy, so the last frame may still
/// be buffered for a moment after the cloud shows it: the buffer is given a few seconds.
pub async fn assert_complete(analyses: &[Value], agent: &Agent) -> usize {
    let frames: Vec<&str> = analyses
        .iter()
        .filter_map(|a| a["frame_id"].as_str())
        .collect();
    let unique: HashSet<&str> = frames.iter().copied().collect();
    assert_eq!(unique.len(), frames.len(), "a frame is stored twice");
    let drained = wiko_e2e::wait_until(Duration::from_secs(10), "an empty buffer", || async {
        let health = agent.health().await?;
        (health.buffer.frames == 0).then_some(health)
    })
    .await;
    let health = match drained {
        Ok(health) => health,
        Err(e) => panic!(
            "{e}: the agent still buffers frames: {:?}",
            agent.health().await
        ),
    };
    assert_eq!(health.buffer.dead_letters, 0, "{health:?}");
    frames.len()
}

/// The device's sequence numbers as the cloud holds them must be exactly 1..=n: a gap is a lost
/// frame (SQLite's AUTOINCREMENT never skips a number on commit, nor reuses one).
pub fn assert_contiguous(analyses: &[Value]) {
    let seqs: BTreeSet<u64> = analyses.iter().filter_map(|a| a["seq"].as_u64()).collect();
    assert_eq!(
        seqs.len(),
        analyses.len(),
        "two frames share a sequence number"
    );
    let max = seqs.iter().max().copied().unwrap_or(0);
    assert_eq!(
        seqs.len() as u64,
        max,
        "sequence numbers have gaps: lost frames"
    );
    assert_eq!(seqs.iter().min().copied(), Some(1));
}
