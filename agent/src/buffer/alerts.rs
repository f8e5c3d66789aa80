//! The alert outbox: an NG frame's alert is written in the frame's own transaction
//! ([`Buffer::insert_alerting`]), leased by the MQTT connection, and deleted on the broker's
//! acknowledgement, so an alert survives a broker outage and a restart, and is not sent again
//! once acknowledged. Delivery is at least once: an alert whose acknowledgement was lost with
//! the connection is sent again, under the same `result_id`.
//!
//! Every NG part is alerted at least once, by the agent or the cloud. The frame's verdict is
//! stored with `alerted = false`, and [`Buffer::ack_alert`] sets it in the transaction that
//! deletes the acknowledged alert (in `frames`, or `dead_letters` if the cloud refused the
//! frame meanwhile): the mark means the broker has the alert, so the cloud does not alert the
//! part. A dropped alert leaves no mark to clear: its frame goes up unmarked and the cloud
//! alerts the part (the frame stays `unalerted`, so it is never evicted before its upload). [`Buffer::pending`] holds an NG frame whose alert is still queued for at
//! most [`super::ALERT_GRACE`] after its insert, so the normal case is alerted once; after it
//! the upload does not say `alerted` and the cloud alerts the part too when its verdict is NG:
//! a duplicate under one `result_id` if the agent's alert gets through as well, which
//! subscribers dedupe. An upload never carries an `alerted` the agent may still take back.
//!
//! The outbox is bounded ([`OutboxLimits`]): while the broker is away it keeps at most
//! `max_alerts` not in flight, the oldest dropped first as a new one comes in, and an alert
//! older than `max_age` is dropped rather than sent late ([`Buffer::expire_alerts`]). An alert
//! in flight (leased to the current connection, waiting for its PUBACK) is never dropped: a
//! lease lives as long as its connection ([`Buffer::release_alerts`] when it ends, and each
//! start), so the outbox may hold up to the in-flight limit more than `max_alerts`. Nor is
//! the alert of a dead letter (the cloud refused its frame, so the cloud alerts nobody: the
//! agent's alert is the part's only one), whatever the bounds; only turning alerts off drops
//! those, counted `lost` and logged as an error. An alert
//! whose PUBACK was lost with its connection counts as not delivered: if it is dropped then,
//! the broker may still have passed it on, and the cloud alerts the part too (a duplicate
//! under one `result_id`, which subscribers dedupe; never a loss). Dropped alerts are counted
//! (`wiko_agent_alerts_total{outcome="dropped"}`, `alerts_dropped_total` in `/healthz` and the
//! heartbeat; a dead letter's alert is `lost`: `outcome="lost"`, not in `alerts_dropped_total`); the bound's drops are logged once per episode (from the first drop until the
//! outbox is empty again), the age's once per sweep with their count and the oldest's age.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use uuid::Uuid;
use wiko_wire::{AlertMessage, FrameMeta, Topic};

use super::{Buffer, BufferError};

/// An alert waiting for the broker's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAlert {
    pub seq: i64,
    pub frame_id: Uuid,
    pub topic: String,
    pub payload: Vec<u8>,
    pub captured_at: DateTime<Utc>,
}

/// How many alerts the outbox keeps, and how long (`[mqtt]` `outbox_max_alerts`,
/// `outbox_max_age_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_alerts: u64,
    pub max_age: Duration,
}

/// What an NG frame's alert is queued with: where its image link points, and the outbox's
/// bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertOutbox {
    /// The cloud's public URL, which the image link starts with.
    pub image_base_url: String,
    pub limits: OutboxLimits,
}

/// Writes the alert of an NG frame in its transaction, then drops the oldest alerts not in
/// flight (nor of dead letters) past `max_alerts` of them: whether one was written, and how
/// many were dropped.
pub(super) fn queue(
    tx: &Transaction<'_>,
    meta: &FrameMeta,
    outbox: &AlertOutbox,
) -> Result<(bool, u64), BufferError> {
    let Some(edge) = meta.edge.as_ref().filter(|e| e.defect_detected) else {
        return Ok((false, 0));
    };
    let message = AlertMessage::from_edge(meta, edge, &outbox.image_base_url);
    let topic = Topic::Alert.path(&meta.facility, &meta.line, &meta.station);
    tx.execute(
        "INSERT OR IGNORE INTO alerts (frame_id, topic, payload, captured_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            meta.frame_id.to_string(),
            topic,
            serde_json::to_vec(&message)?,
            meta.captured_at.to_rfc3339(),
        ],
    )?;
    let max = i64::try_from(outbox.limits.max_alerts).unwrap_or(i64::MAX);
    let waiting: i64 = tx.query_row(
        &format!("SELECT count(*) FROM alerts WHERE leased_until IS NULL AND {NOT_DEAD_LETTER}"),
        [],
        |r| r.get(0),
    )?;
    if waiting <= max {
        return Ok((true, 0));
    }
    let dropped = drop_where(
        tx,
        &format!(
            "seq IN (SELECT seq FROM alerts WHERE leased_until IS NULL AND {NOT_DEAD_LETTER}
                     ORDER BY seq LIMIT ?1)"
        ),
        waiting - max,
    )?;
    Ok((true, dropped.count))
}

/// What a drop took out of the outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Dropped {
    pub count: u64,
    /// Of them, alerts of dead letters (the cloud refused the frame, so it alerts nobody):
    /// parts nobody was told of. Only [`Buffer::abandon_alerts`] drops those.
    pub lost: u64,
    /// Seconds since the oldest dropped alert's part was captured.
    pub oldest_age_secs: Option<f64>,
}

/// The condition (on `alerts`) of an alert the outbox's bounds may drop: its frame is not a
/// dead letter. A dead letter's part is alerted by nobody else (the cloud refused the frame),
/// so its alert waits for the broker whatever the bounds.
const NOT_DEAD_LETTER: &str = "frame_id NOT IN (SELECT frame_id FROM dead_letters)";

/// Drops the alerts not in flight that `condition` (on `alerts`, with `?1` bound to `param`)
/// selects, in `tx`: their frames never get the `alerted` mark (only an acknowledgement sets
/// it), so their upload hands the part to the cloud's alert; counted in the buffer (kept
/// across restarts).
fn drop_where(
    tx: &Transaction<'_>,
    condition: &str,
    param: impl rusqlite::ToSql,
) -> Result<Dropped, BufferError> {
    let selected = format!("leased_until IS NULL AND ({condition})");
    let (count, lost, oldest_age_secs): (i64, i64, Option<f64>) = tx.query_row(
        &format!(
            "SELECT count(*), coalesce(sum(NOT ({NOT_DEAD_LETTER})), 0),
                    (julianday('now') - min(julianday(captured_at))) * 86400.0
             FROM alerts WHERE {selected}"
        ),
        [&param],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    if count == 0 {
        return Ok(Dropped::default());
    }
    tx.execute(&format!("DELETE FROM alerts WHERE {selected}"), [&param])?;
    // The persisted count is `outcome="dropped"`'s: a dead letter's alert (only turning
    // alerts off drops one) is `lost`, counted apart.
    tx.execute(
        "UPDATE counters SET value = value + ?1 WHERE name = 'alerts_dropped'",
        [count - lost],
    )?;
    Ok(Dropped {
        count: count as u64,
        lost: lost as u64,
        oldest_age_secs,
    })
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Buffer {
    /// Up to `limit` alerts not leased (or whose lease ran out), oldest first, each leased for
    /// `lease`.
    pub fn lease_alerts(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<QueuedAlert>, BufferError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, frame_id, topic, payload, captured_at FROM alerts
                 WHERE leased_until IS NULL OR leased_until <= ?1 ORDER BY seq LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![now, limit as i64])?;
            while let Some(row) = rows.next()? {
                let frame_id: String = row.get(1)?;
                let captured_at: String = row.get(4)?;
                out.push(QueuedAlert {
                    seq: row.get(0)?,
                    // Written by this module from a Uuid and `to_rfc3339`; a damaged row is
                    // still sent (its payload is what subscribers read).
                    frame_id: Uuid::parse_str(&frame_id).unwrap_or_default(),
                    topic: row.get(2)?,
                    payload: row.get(3)?,
                    captured_at: DateTime::parse_from_rfc3339(&captured_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                });
            }
        }
        for alert in &out {
            tx.execute(
                "UPDATE alerts SET leased_until = ?2 WHERE seq = ?1",
                params![alert.seq, until],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// The broker acknowledged alert `seq`: it leaves the outbox, and its frame's verdict
    /// says `alerted` (in `frames`, or in `dead_letters`), in one transaction. Whether it was
    /// there.
    pub fn ack_alert(&self, seq: i64) -> Result<bool, BufferError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE frames SET edge = json_set(edge, '$.alerted', json('true')), unalerted = 0
             WHERE edge IS NOT NULL
               AND frame_id = (SELECT frame_id FROM alerts WHERE seq = ?1)",
            [seq],
        )?;
        tx.execute(
            "UPDATE dead_letters SET meta_json = json_set(meta_json, '$.edge.alerted', json('true'))
             WHERE json_type(meta_json, '$.edge') = 'object'
               AND frame_id = (SELECT frame_id FROM alerts WHERE seq = ?1)",
            [seq],
        )?;
        let deleted = tx.execute("DELETE FROM alerts WHERE seq = ?1", [seq])? > 0;
        tx.commit()?;
        self.end_drop_episode(&conn)?;
        Ok(deleted)
    }

    /// Drops the alerts not in flight of parts captured more than `max_age` ago: their frames
    /// still buffered go to the cloud unmarked, so the cloud alerts those parts. Logged once
    /// per sweep that dropped any.
    pub fn expire_alerts(&self, max_age: Duration) -> Result<Dropped, BufferError> {
        let Some(cutoff) = chrono::Duration::from_std(max_age)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
        else {
            // An age beyond the calendar: nothing is that old.
            return Ok(Dropped::default());
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let dropped = drop_where(
            &tx,
            &format!("julianday(captured_at) < julianday(?1) AND {NOT_DEAD_LETTER}"),
            cutoff.to_rfc3339(),
        )?;
        tx.commit()?;
        if dropped.count > 0 {
            self.count_drops(dropped.count);
            tracing::warn!(
                dropped = dropped.count,
                oldest_age_secs = dropped.oldest_age_secs.unwrap_or_default().round(),
                max_age_secs = max_age.as_secs(),
                "alert outbox: dropped alerts older than mqtt.outbox_max_age_secs; the cloud \
                 alerts those parts"
            );
        }
        self.end_drop_episode(&conn)?;
        Ok(dropped)
    }

    /// Drops every alert not in flight (alerts are off: nothing would send them); their parts
    /// are the cloud's to alert, but for the dead letters' (the cloud refused those frames):
    /// those parts are lost to both, logged as an error and counted `lost`.
    pub fn abandon_alerts(&self) -> Result<Dropped, BufferError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let dropped = drop_where(&tx, "?1", true)?;
        tx.commit()?;
        self.count_drops(dropped.count - dropped.lost);
        if dropped.lost > 0 {
            metrics::counter!(crate::telemetry::ALERTS_TOTAL, "outcome" => "lost")
                .increment(dropped.lost);
            tracing::error!(
                lost = dropped.lost,
                "alerts are off (mqtt.alerts): the alerts of NG parts whose frames the cloud \
                 refused (dead letters) are dropped: nobody alerts those parts; see the dead \
                 letters"
            );
        }
        self.end_drop_episode(&conn)?;
        Ok(dropped)
    }

    /// Counts `n` alerts the bound dropped; the first of an episode is logged.
    pub(super) fn alerts_dropped(&self, n: u64) {
        if self.count_drops(n) {
            tracing::warn!(
                dropped = n,
                "alert outbox: dropping the oldest alerts (past mqtt.outbox_max_alerts while the \
                 broker is away; the cloud alerts those parts); logged again once it has emptied"
            );
        }
    }

    /// Counts `n` dropped alerts: in the metric, and in the episode of drops (which ends once
    /// the outbox is empty). Whether they begin an episode.
    fn count_drops(&self, n: u64) -> bool {
        if n == 0 {
            return false;
        }
        metrics::counter!(crate::telemetry::ALERTS_TOTAL, "outcome" => "dropped").increment(n);
        self.alert_drops.fetch_add(n, Ordering::Relaxed) == 0
    }

    /// Ends an episode of drops once the outbox is empty: the next drop is logged again.
    fn end_drop_episode(&self, conn: &rusqlite::Connection) -> Result<(), BufferError> {
        if self.alert_drops.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let left: i64 = conn.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))?;
        if left == 0 {
            let dropped = self.alert_drops.swap(0, Ordering::Relaxed);
            tracing::info!(
                dropped,
                "the alert outbox is empty again; alerts dropped while it was full or late"
            );
        }
        Ok(())
    }

    /// Frees every lease, when the connection they were handed to ended: its alerts are sent
    /// again by the next (or dropped meanwhile by the outbox's bounds).
    pub fn release_alerts(&self) -> Result<(), BufferError> {
        self.conn()
            .execute("UPDATE alerts SET leased_until = NULL", [])?;
        Ok(())
    }

    /// Alerts waiting for the broker.
    pub fn alerts_queued(&self) -> Result<u64, BufferError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))?;
        Ok(n as u64)
    }
}
