//! Devices, their last heartbeats and the commands left for them, written once for both
//! backends.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use wiko_wire::{DeviceAction, DeviceCommand, Heartbeat};

use super::{Arg, Backend, Conn, Row, SqlStore, args, json_error, list, op};
use crate::store::{DeviceRecord, Fleet, StoreError};

/// Devices with their newest frame's time and their last heartbeat, where `$condition`.
macro_rules! device_query {
    ($condition:literal) => {
        concat!(
            "SELECT d.device_id, d.facility, d.line, d.station, d.first_seen,
                (SELECT f.received_at FROM frames f WHERE f.device_id = d.device_id
                 ORDER BY f.received_at DESC LIMIT 1),
                h.received_at, h.body
             FROM devices d LEFT JOIN heartbeats h ON h.device_id = d.device_id ",
            $condition,
            " ORDER BY d.device_id"
        )
    };
}

const PENDING: &str = "SELECT id, device_id, action, created_at, created_by FROM device_commands
     WHERE done_at IS NULL AND device_id = ? ORDER BY id";

fn command(r: &Row) -> Result<DeviceCommand, StoreError> {
    Ok(DeviceCommand {
        id: r.int(0)?,
        action: serde_json::from_str(&r.text(2)?).map_err(json_error)?,
        created_at: r.time(3)?,
        created_by: r.text(4)?,
    })
}

fn device(r: &Row, pending: Vec<DeviceCommand>) -> Result<DeviceRecord, StoreError> {
    let heartbeat = match r.opt_time(6)? {
        Some(at) => Some((at, serde_json::from_str(&r.text(7)?).map_err(json_error)?)),
        None => None,
    };
    Ok(DeviceRecord {
        device_id: r.text(0)?,
        facility: r.text(1)?,
        line: r.text(2)?,
        station: r.text(3)?,
        first_seen: r.time(4)?,
        last_frame_at: r.opt_time(5)?,
        heartbeat,
        pending,
    })
}

async fn pending(c: &mut dyn Conn, device_id: &str) -> Result<Vec<DeviceCommand>, StoreError> {
    c.query(PENDING, args![device_id])
        .await?
        .iter()
        .map(command)
        .collect()
}

#[async_trait]
impl<B: Backend> Fleet for SqlStore<B> {
    async fn heartbeat(
        &self,
        hb: &Heartbeat,
        received_at: DateTime<Utc>,
    ) -> Result<Vec<DeviceCommand>, StoreError> {
        let body = serde_json::to_string(hb).map_err(json_error)?;
        let hb = hb.clone();
        self.backend
            .write(op(move |c| {
                Box::pin(async move {
                    let id = hb.device_id.as_str();
                    c.execute(
                        "INSERT INTO devices (device_id, facility, line, station, first_seen)
                         VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING",
                        args![
                            id,
                            hb.facility.as_str(),
                            hb.line.as_str(),
                            hb.station.as_str(),
                            received_at
                        ],
                    )
                    .await?;
                    c.execute(
                        "INSERT INTO heartbeats (device_id, received_at, sent_at, body)
                         VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET
                         received_at = excluded.received_at, sent_at = excluded.sent_at,
                         body = excluded.body",
                        vec![
                            id.into(),
                            received_at.into(),
                            hb.sent_at.into(),
                            Arg::Json(body),
                        ],
                    )
                    .await?;
                    if !hb.commands_done.is_empty() {
                        let sql = format!(
                            "UPDATE device_commands SET done_at = ?
                             WHERE done_at IS NULL AND device_id = ? AND id IN {}",
                            list(hb.commands_done.len())
                        );
                        let mut a = args![received_at, id];
                        a.extend(hb.commands_done.iter().map(|&n| Arg::from(n)));
                        c.execute(&sql, a).await?;
                    }
                    pending(c, id).await
                })
            }))
            .await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.backend
            .read(op(move |c| {
                Box::pin(async move {
                    let rows = c.query(device_query!(""), Vec::new()).await?;
                    let commands = c
                        .query(
                            "SELECT id, device_id, action, created_at, created_by
                             FROM device_commands WHERE done_at IS NULL ORDER BY id",
                            Vec::new(),
                        )
                        .await?;
                    let mut waiting: BTreeMap<String, Vec<DeviceCommand>> = BTreeMap::new();
                    for r in &commands {
                        waiting.entry(r.text(1)?).or_default().push(command(r)?);
                    }
                    rows.iter()
                        .map(|r| device(r, waiting.remove(&r.text(0)?).unwrap_or_default()))
                        .collect()
                })
            }))
            .await
    }

    async fn device(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let id = device_id.to_string();
        self.backend
            .read(op(move |c| {
                Box::pin(async move {
                    let rows = c
                        .query(device_query!("WHERE d.device_id = ?"), args![id.as_str()])
                        .await?;
                    match rows.first() {
                        Some(r) => device(r, pending(c, &id).await?).map(Some),
                        None => Ok(None),
                    }
                })
            }))
            .await
    }

    async fn add_command(
        &self,
        device_id: &str,
        action: DeviceAction,
        created_by: &str,
    ) -> Result<DeviceCommand, StoreError> {
        let json = serde_json::to_string(&action).map_err(json_error)?;
        let (device_id, by) = (device_id.to_string(), created_by.to_string());
        // As stored: microseconds, so the answer equals what a later read returns.
        let created_at = Utc::now().trunc_subsecs(6);
        let rows = self
            .backend
            .write(op(move |c| {
                Box::pin(async move {
                    c.query(
                        "INSERT INTO device_commands (device_id, action, created_at, created_by)
                         VALUES (?, ?, ?, ?) RETURNING id",
                        vec![
                            device_id.into(),
                            Arg::Json(json),
                            created_at.into(),
                            by.into(),
                        ],
                    )
                    .await
                })
            }))
            .await?;
        let id = rows
            .first()
            .ok_or_else(|| StoreError::Database("INSERT … RETURNING gave no row".into()))?
            .int(0)?;
        Ok(DeviceCommand {
            id,
            action,
            created_at,
            created_by: created_by.to_string(),
        })
    }
}
