//! The alert outbox: an NG frame's alert is written in the frame's own transaction
//! ([`Buffer::insert_alerting`]), leased by the MQTT connection, and deleted on the broker's
//! acknowledgement, so an alert survives a broker outage and a restart, and is not sent again
//! once acknowledged. Delivery is at least once: an alert whose acknowledgement was lost with
//! the connection is sent again, under the same `result_id`.
//!
//! The outbox is bounded ([`OutboxLimits`]): while the broker is away it keeps at most
//! `max_alerts`, the oldest dropped first as a new one comes in, and an alert older than
//! `max_age` is dropped rather than sent late ([`Buffer::expire_alerts`]). Dropped alerts are
//! counted (`wiko_agent_alerts_total{outcome="dropped"}`, `alerts_dropped_total` in `/healthz`
//! and the heartbeat) and logged once per episode: from the first drop until the outbox is
//! empty again. A dropped alert's part still says `alerted` in its upload, so the cloud does
//! not alert it either.

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

/// Writes the alert of an NG frame in its transaction, then drops the oldest alerts past
/// `max_alerts`: whether one was written, and how many were dropped.
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
    let dropped = tx.execute(
        "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts ORDER BY seq DESC LIMIT -1 OFFSET ?1)",
        [max],
    )? as u64;
    count_dropped(tx, dropped)?;
    Ok((true, dropped))
}

/// Adds `dropped` to the buffer's count of dropped alerts (kept across restarts).
fn count_dropped(tx: &Transaction<'_>, dropped: u64) -> Result<(), BufferError> {
    if dropped > 0 {
        tx.execute(
            "UPDATE counters SET value = value + ?1 WHERE name = 'alerts_dropped'",
            [dropped as i64],
        )?;
    }
    Ok(())
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

    /// The broker acknowledged alert `seq`: it leaves the outbox. Whether it was there.
    pub fn ack_alert(&self, seq: i64) -> Result<bool, BufferError> {
        let conn = self.conn();
        let deleted = conn.execute("DELETE FROM alerts WHERE seq = ?1", [seq])? > 0;
        if self.alert_drops.load(Ordering::Relaxed) > 0 {
            let left: i64 = conn.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0))?;
            if left == 0 {
                let dropped = self.alert_drops.swap(0, Ordering::Relaxed);
                tracing::info!(
                    dropped,
                    "the alert outbox is empty again; alerts dropped while it was full or late"
                );
            }
        }
        Ok(deleted)
    }

    /// Drops the alerts of parts captured more than `max_age` ago: how many.
    pub fn expire_alerts(&self, max_age: Duration) -> Result<u64, BufferError> {
        let Some(cutoff) = chrono::Duration::from_std(max_age)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
        else {
            // An age beyond the calendar: nothing is that old.
            return Ok(0);
        };
        let dropped = {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let dropped = tx.execute(
                "DELETE FROM alerts WHERE julianday(captured_at) < julianday(?1)",
                [cutoff.to_rfc3339()],
            )? as u64;
            count_dropped(&tx, dropped)?;
            tx.commit()?;
            dropped
        };
        self.alerts_dropped(dropped);
        Ok(dropped)
    }

    /// Counts `n` dropped alerts; the first of an episode is logged.
    pub(super) fn alerts_dropped(&self, n: u64) {
        if n == 0 {
            return;
        }
        metrics::counter!(crate::telemetry::ALERTS_TOTAL, "outcome" => "dropped").increment(n);
        if self.alert_drops.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::warn!(
                dropped = n,
                "alert outbox: dropping the oldest alerts (past mqtt.outbox_max_alerts or \
                 mqtt.outbox_max_age_secs while the broker is away); logged again once it has \
                 emptied"
            );
        }
    }

    /// Frees every lease: what was handed to a lost connection is sent again by the next.
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
