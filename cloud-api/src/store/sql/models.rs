//! Golden sets and models, written once for both backends.

use async_trait::async_trait;
use chrono::Utc;
use wiko_wire::{GoldenSample, ModelAnnouncement};

use super::parts::MQTT_MESSAGE;
use super::{Arg, Backend, Row, SqlStore, args, json_error, op};
use crate::store::{GoldenImage, ImageKey, Models, StoreError, StoredModel};

#[async_trait]
impl<B: Backend> Models for SqlStore<B> {
    async fn save_model(&self, m: StoredModel) -> Result<(), StoreError> {
        self.backend
            .write(op(move |c| {
                Box::pin(async move {
                    let now = Utc::now();
                    c.execute(
                        "INSERT INTO models (sku, version, body, created_at) VALUES (?, ?, ?, ?)
                         ON CONFLICT (sku) DO UPDATE SET version = excluded.version,
                            body = excluded.body, created_at = excluded.created_at",
                        args![m.sku.as_str(), m.version.as_str(), m.body.clone(), now],
                    )
                    .await?;
                    c.execute(
                        "INSERT INTO model_versions (sku, version, body, created_at)
                         VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        args![m.sku.as_str(), m.version.as_str(), m.body.clone(), now],
                    )
                    .await?;
                    let detail = serde_json::json!({
                        "sku": m.sku, "version": m.version, "bytes": m.body.len()
                    });
                    c.execute(
                        "INSERT INTO audit_log (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                        args![
                            now,
                            "golden",
                            "model_activated",
                            Arg::Json(detail.to_string())
                        ],
                    )
                    .await?;
                    // Agents judging this SKU pull the new model at once (retained on
                    // the broker, so an agent that connects later hears of it too).
                    let announcement = serde_json::to_vec(&ModelAnnouncement {
                        schema_version: wiko_wire::SCHEMA_VERSION,
                        sku: m.sku.clone(),
                        version: m.version.clone(),
                    })
                    .map_err(json_error)?;
                    c.execute(
                        "INSERT INTO outbox (kind, topic, payload, created_at) VALUES (?, ?, ?, ?)",
                        args![
                            MQTT_MESSAGE,
                            ModelAnnouncement::topic(&m.sku),
                            announcement,
                            now
                        ],
                    )
                    .await?;
                    Ok(())
                })
            }))
            .await
    }

    async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .backend
            .read(op(|c| {
                Box::pin(
                    async move { c.query("SELECT sku, version FROM models", Vec::new()).await },
                )
            }))
            .await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
    }

    async fn model(&self, sku: &str) -> Result<Option<StoredModel>, StoreError> {
        let rows = self
            .select(
                "SELECT sku, version, body FROM models WHERE sku = ?",
                args![sku],
            )
            .await?;
        rows.first().map(stored_model).transpose()
    }

    async fn model_version(
        &self,
        sku: &str,
        version: &str,
    ) -> Result<Option<StoredModel>, StoreError> {
        let rows = self
            .select(
                "SELECT sku, version, body FROM model_versions WHERE sku = ? AND version = ?",
                args![sku, version],
            )
            .await?;
        rows.first().map(stored_model).transpose()
    }

    async fn add_golden(
        &self,
        sku: &str,
        digest: &str,
        key: &ImageKey,
    ) -> Result<bool, StoreError> {
        let added = self
            .change(
                "INSERT INTO golden_samples (sku, image_blake3, image_key, created_at)
                 VALUES (?, ?, ?, ?) ON CONFLICT (sku, image_blake3) DO NOTHING",
                args![sku, digest, key.0.as_str(), Utc::now()],
            )
            .await?;
        Ok(added == 1)
    }

    async fn golden(&self, sku: &str) -> Result<Vec<GoldenImage>, StoreError> {
        let rows = self
            .select(
                "SELECT image_blake3, image_key, created_at FROM golden_samples
                 WHERE sku = ? ORDER BY seq",
                args![sku],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GoldenImage {
                    sample: GoldenSample {
                        digest: r.text(0)?,
                        added_at: r.time(2)?,
                    },
                    key: ImageKey(r.text(1)?),
                })
            })
            .collect()
    }

    async fn golden_sets(&self) -> Result<Vec<(String, usize)>, StoreError> {
        let rows = self
            .select(
                "SELECT sku, count(*) FROM golden_samples GROUP BY sku ORDER BY sku",
                Vec::new(),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text(0)?, r.int(1)? as usize)))
            .collect()
    }

    async fn remove_golden(&self, sku: &str, digest: &str) -> Result<bool, StoreError> {
        let removed = self
            .change(
                "DELETE FROM golden_samples WHERE sku = ? AND image_blake3 = ?",
                args![sku, digest],
            )
            .await?;
        Ok(removed == 1)
    }
}

/// A `SELECT sku, version, body` row.
fn stored_model(r: &Row) -> Result<StoredModel, StoreError> {
    Ok(StoredModel {
        sku: r.text(0)?,
        version: r.text(1)?,
        body: r.bytes(2)?,
    })
}
