//! The alert outbox: an NG frame's alert is written in the frame's own transaction
//! ([`Buffer::insert_alerting`]), leased by the MQTT connection, and deleted on the broker's
//! acknowledgement, so an alert survives a broker outage and a restart, and is not sent again
//! once acknowledged. Delivery is at least once: an alert whose acknowledgement was lost with
//! the connection is sent again, under the same `result_id`.

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

/// Writes the alert of an NG frame in its transaction; whether one was written.
pub(super) fn queue(
    tx: &Transaction<'_>,
    meta: &FrameMeta,
    base_url: &str,
) -> Result<bool, BufferError> {
    let Some(edge) = meta.edge.as_ref().filter(|e| e.defect_detected) else {
        return Ok(false);
    };
    let message = AlertMessage::from_edge(meta, edge, base_url);
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
    Ok(true)
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
        Ok(self
            .conn()
            .execute("DELETE FROM alerts WHERE seq = ?1", [seq])?
            > 0)
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
