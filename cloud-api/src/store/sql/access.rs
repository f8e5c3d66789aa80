//! API keys and the audit log, written once for both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use wiko_wire::{KeyInfo, Scope};

use super::{Arg, Backend, Row, SqlStore, args, json_error, op, values};
use crate::store::{Access, AuditEntry, StoreError, StoredKey};

/// The columns of a key, in the order [`key`] decodes them.
macro_rules! key_columns {
    () => {
        "prefix, sha256, name, scope, facility, device_id, created_at, expires_at, last_used_at,
        revoked_at"
    };
}

fn key(r: &Row) -> Result<StoredKey, StoreError> {
    let sha256: [u8; 32] = r
        .bytes(1)?
        .try_into()
        .map_err(|_| StoreError::Database("an api_keys.sha256 is not 32 bytes".into()))?;
    let scope = r.text(3)?;
    Ok(StoredKey {
        sha256,
        info: KeyInfo {
            prefix: r.text(0)?,
            name: r.text(2)?,
            scope: Scope::parse(&scope)
                .ok_or_else(|| StoreError::Database(format!("unknown key scope {scope:?}")))?,
            facility: r.opt_text(4)?,
            device_id: r.opt_text(5)?,
            created_at: r.time(6)?,
            expires_at: r.opt_time(7)?,
            last_used_at: r.opt_time(8)?,
            revoked_at: r.opt_time(9)?,
        },
    })
}

#[async_trait]
impl<B: Backend> Access for SqlStore<B> {
    async fn create_key(&self, k: StoredKey) -> Result<(), StoreError> {
        let i = k.info;
        self.change(
            "INSERT INTO api_keys (prefix, sha256, name, scope, facility, device_id, created_at,
                expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            args![
                i.prefix,
                k.sha256.to_vec(),
                i.name,
                i.scope.as_str(),
                i.facility,
                i.device_id,
                i.created_at,
                i.expires_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        const ALL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys ORDER BY created_at, prefix"
        );
        self.select(ALL, Vec::new())
            .await?
            .iter()
            .map(key)
            .collect()
    }

    async fn revoke_key(&self, prefix: &str) -> Result<Option<StoredKey>, StoreError> {
        let prefix = prefix.to_string();
        let rows = self
            .backend
            .write(op(move |c| {
                Box::pin(async move {
                    c.execute(
                        "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                        args![Utc::now(), prefix.as_str()],
                    )
                    .await?;
                    const ONE: &str =
                        concat!("SELECT ", key_columns!(), " FROM api_keys WHERE prefix = ?");
                    c.query(ONE, args![prefix]).await
                })
            }))
            .await?;
        rows.first().map(key).transpose()
    }

    async fn touch_keys(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.backend
            .write(op(move |c| {
                Box::pin(async move {
                    for (prefix, at) in used {
                        c.execute(
                            "UPDATE api_keys SET last_used_at = ? WHERE prefix = ?",
                            args![at, prefix],
                        )
                        .await?;
                    }
                    Ok(())
                })
            }))
            .await
    }

    async fn audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO audit_log (at, actor, action, detail) VALUES {}",
            values(entries.len(), 4)
        );
        let args = entries
            .into_iter()
            .flat_map(|e| args![e.at, e.actor, e.action, Arg::Json(e.detail.to_string())])
            .collect();
        self.backend
            .write(op(move |c| {
                Box::pin(async move { c.execute(&sql, args).await })
            }))
            .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self
            .select(
                "SELECT at, actor, action, detail FROM audit_log ORDER BY id DESC LIMIT ?",
                args![limit as i64],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.time(0)?,
                    actor: r.text(1)?,
                    action: r.text(2)?,
                    detail: serde_json::from_str(&r.text(3)?).map_err(json_error)?,
                })
            })
            .collect()
    }
}
