//! The production store: PostgreSQL through `sqlx`, shared by every replica.
//!
//! - Migrations are embedded in the binary (`cloud-api/migrations/`) and applied by
//!   `wiko-cloud migrate` or on start; an applied migration is never edited.
//! - Each write is one transaction; an answer means "committed".
//! - The analysis queue is the `jobs` table: workers lease runnable rows with
//!   `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other's jobs; a lease that runs out
//!   (its worker died) makes the job runnable again. Completing locks the analysis row first, so
//!   a job done twice writes one result and queues one set of messages.
//! - The outbox is leased the same way, per replica, so one message is published by one replica.
//! - Lost connections, pool timeouts and statement timeouts are [`StoreError::Unavailable`]
//!   (HTTP 503 with `Retry-After`): the agent retries and nothing half-written is acknowledged.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, QueryBuilder, Row};
use uuid::Uuid;
use wiko_wire::{Analysis, AnalysisStatus, Defect, IngestOutcome};

use super::record::{decode_cursor, defect_id, gave_up, messages, page, parse_status, status_str};
use super::{
    GoldenSample, Job, ListFilter, NewAnalysis, OutboxItem, Outcome, QueueStats, Store, StoreError,
    StoredModel,
};

/// The migrations, in order. Append; never edit one that was released.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../../migrations/0001_initial.sql"),
)];

/// The embedded migrations as a `sqlx` migration source.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Connection settings (see `[database]` in `config/cloud.example.toml`).
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// How long a replica holds outbox rows it is publishing before another may take them.
    pub outbox_lease: Duration,
}

pub struct PgStore {
    pool: PgPool,
    /// This replica, as the holder of outbox leases.
    replica: Uuid,
    outbox_lease: Duration,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Connection exceptions, shutdown, too many connections, statement timeout,
            // serialization failure and deadlock: all worth a retry.
            sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                c.starts_with("08")
                    || matches!(
                        &*c,
                        "57P01" | "57P02" | "57P03" | "53300" | "57014" | "40001" | "40P01"
                    )
            }),
            _ => false,
        };
        if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

impl PgStore {
    /// Connects lazily: the pool opens connections when first used, so a replica starts (and
    /// answers `/ready` with the database down) while PostgreSQL is unreachable.
    pub fn connect(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        let options: PgConnectOptions = settings
            .url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::Database(format!("database url: {e}")))?
            .application_name("wiko-cloud")
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(PgStore {
            pool,
            replica: Uuid::new_v4(),
            outbox_lease: settings.outbox_lease,
        })
    }

    /// Applies the migrations not applied yet (several replicas may call this at once: sqlx
    /// takes an advisory lock). Refuses a database whose applied migrations differ from ours.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(format!("migrating: {e}")))
    }
}

const COLUMNS: &str = "id, defect_id, timestamp, facility, line, station, product_sku, part_id,
    lot, device_id, frame_id, seq, status, defect_detected, defects::text AS defects, score,
    score_threshold, confidence, recommendation, analyzer, analyzer_version, model_version,
    latency_ms, image_width, image_height, created_at, analyzed_at";

fn row_to_analysis(r: &PgRow) -> Result<Analysis, StoreError> {
    let id: Uuid = r.try_get("id")?;
    let defects: String = r.try_get("defects")?;
    let defects: Vec<Defect> =
        serde_json::from_str(&defects).map_err(|e| StoreError::Database(e.to_string()))?;
    let width: i32 = r.try_get("image_width")?;
    let height: i32 = r.try_get("image_height")?;
    Ok(Analysis {
        id,
        defect_id: r.try_get("defect_id")?,
        timestamp: r.try_get("timestamp")?,
        facility: r.try_get("facility")?,
        line: r.try_get("line")?,
        station: r.try_get("station")?,
        product_sku: r.try_get("product_sku")?,
        part_id: r.try_get("part_id")?,
        lot: r.try_get("lot")?,
        device_id: r.try_get("device_id")?,
        frame_id: r.try_get("frame_id")?,
        seq: r.try_get::<Option<i64>, _>("seq")?.map(|s| s as u64),
        status: parse_status(r.try_get("status")?),
        defect_detected: r.try_get("defect_detected")?,
        defects,
        score: r.try_get("score")?,
        score_threshold: r.try_get("score_threshold")?,
        confidence: r.try_get("confidence")?,
        recommendation: r.try_get("recommendation")?,
        analyzer: r.try_get("analyzer")?,
        analyzer_version: r.try_get("analyzer_version")?,
        model_version: r.try_get("model_version")?,
        latency_ms: r.try_get("latency_ms")?,
        image_width: width as u32,
        image_height: height as u32,
        image_url: format!("/api/v1/analyses/{id}/image"),
        created_at: r.try_get("created_at")?,
        analyzed_at: r.try_get("analyzed_at")?,
    })
}

async fn get_analysis(conn: &mut PgConnection, id: Uuid) -> Result<Analysis, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM analyses WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(row_to_analysis)
        .unwrap_or(Err(StoreError::NotFound))
}

fn after(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or_default()
}

/// Writes the result and queues its messages, inside `tx`; a no-op for an analysis already
/// done. The row lock serialises two workers completing the same analysis.
async fn complete_in(
    tx: &mut PgConnection,
    id: Uuid,
    outcome: &Outcome,
    public_url: &str,
) -> Result<Analysis, StoreError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM analyses WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let status = status.ok_or(StoreError::NotFound)?;
    if parse_status(&status) != AnalysisStatus::Pending {
        return get_analysis(tx, id).await;
    }
    let o = &outcome.judgement;
    let defects =
        serde_json::to_string(&o.defects).map_err(|e| StoreError::Database(e.to_string()))?;
    let row = sqlx::query(&format!(
        "UPDATE analyses SET status = $2, defect_detected = $3, defects = $4::jsonb, score = $5,
            score_threshold = $6, confidence = $7, recommendation = $8, analyzer = $9,
            analyzer_version = $10, model_version = $11, latency_ms = $12, analyzed_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(status_str(o.status))
    .bind(o.defect_detected)
    .bind(defects)
    .bind(o.score)
    .bind(o.score_threshold)
    .bind(o.confidence)
    .bind(&o.recommendation)
    .bind(&outcome.analyzer)
    .bind(&outcome.analyzer_version)
    .bind(&o.model_version)
    .bind(outcome.latency_ms)
    .fetch_one(&mut *tx)
    .await?;
    let done = row_to_analysis(&row)?;
    let types: Vec<&str> = o.defects.iter().map(|d| d.kind.as_str()).collect();
    sqlx::query("INSERT INTO analysis_defects (analysis_id, type) SELECT $1, unnest($2::text[])")
        .bind(id)
        .bind(&types)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM jobs WHERE analysis_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let (topics, payloads): (Vec<String>, Vec<Vec<u8>>) =
        messages(&done, public_url)?.into_iter().unzip();
    sqlx::query(
        "INSERT INTO outbox (topic, payload, created_at)
         SELECT t, p, now() FROM unnest($1::text[], $2::bytea[]) AS m (t, p)",
    )
    .bind(&topics)
    .bind(&payloads)
    .execute(&mut *tx)
    .await?;
    Ok(done)
}

/// Inserts a new part in `tx`. A unique violation means another replica inserted the same
/// frame concurrently.
async fn insert_new(
    tx: &mut PgConnection,
    n: &NewAnalysis,
    meta_json: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO analyses (id, defect_id, timestamp, facility, line, station, product_sku,
            part_id, lot, device_id, frame_id, seq, status, defect_detected, defects,
            recommendation, analyzer, analyzer_version, image_key, image_blake3, image_width,
            image_height, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', false, '[]', '',
            '', '', $13, $14, $15, $16, now())",
    )
    .bind(id)
    .bind(defect_id(id))
    .bind(n.timestamp)
    .bind(&n.facility)
    .bind(&n.line)
    .bind(&n.station)
    .bind(&n.product_sku)
    .bind(&n.part_id)
    .bind(&n.lot)
    .bind(n.frame.as_ref().map(|f| f.device_id.clone()))
    .bind(n.frame.as_ref().map(|f| f.frame_id))
    .bind(n.frame.as_ref().map(|f| f.seq as i64))
    .bind(&n.image_key)
    .bind(&n.image_blake3)
    .bind(n.image_width as i32)
    .bind(n.image_height as i32)
    .execute(&mut *tx)
    .await?;
    if let (Some(frame), Some(meta_json)) = (&n.frame, meta_json) {
        sqlx::query(
            "INSERT INTO frames (frame_id, analysis_id, device_id, seq, meta_json, received_at)
             VALUES ($1, $2, $3, $4, $5, now())",
        )
        .bind(frame.frame_id)
        .bind(id)
        .bind(&frame.device_id)
        .bind(frame.seq as i64)
        .bind(meta_json)
        .execute(&mut *tx)
        .await?;
        // Registers the device on its first frame; DO NOTHING takes no row lock, so a busy
        // device's uploads do not queue behind each other here.
        sqlx::query(
            "INSERT INTO devices (device_id, facility, line, station, first_seen)
             VALUES ($1, $2, $3, $4, now()) ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(&frame.device_id)
        .bind(&n.facility)
        .bind(&n.line)
        .bind(&n.station)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("INSERT INTO jobs (analysis_id, run_after, attempts) VALUES ($1, $2, 0)")
        .bind(id)
        .bind(after(n.run_after))
        .execute(&mut *tx)
        .await?;
    Ok(id)
}

#[async_trait]
impl Store for PgStore {
    async fn create(&self, n: NewAnalysis) -> Result<(IngestOutcome, Uuid), StoreError> {
        let meta_json = n
            .frame
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        // Two tries: a frame inserted by another replica between our check and our insert
        // makes the first fail on the unique key; the second finds it.
        for _ in 0..2 {
            let mut tx = self.pool.begin().await?;
            if let Some(frame) = &n.frame {
                let existing: Option<(String, Uuid)> =
                    sqlx::query_as("SELECT meta_json, analysis_id FROM frames WHERE frame_id = $1")
                        .bind(frame.frame_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((stored_meta, analysis_id)) = existing {
                    return if Some(&stored_meta) == meta_json.as_ref() {
                        Ok((IngestOutcome::Duplicate, analysis_id))
                    } else {
                        Err(StoreError::Conflict(frame.frame_id))
                    };
                }
            }
            match insert_new(&mut tx, &n, meta_json.as_deref()).await {
                Ok(id) => {
                    tx.commit().await?;
                    return Ok((IngestOutcome::Created, id));
                }
                Err(e) if is_unique_violation(&e) && n.frame.is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(
            "a concurrent upload of the same frame did not settle".into(),
        ))
    }

    async fn complete(
        &self,
        id: Uuid,
        outcome: Outcome,
        public_url: &str,
    ) -> Result<Analysis, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = complete_in(&mut tx, id, &outcome, public_url).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn claim_jobs(&self, limit: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "WITH claimed AS (
                 UPDATE jobs SET leased_until = $1, attempts = attempts + 1
                 WHERE analysis_id IN (
                     SELECT analysis_id FROM jobs
                     WHERE run_after <= now() AND (leased_until IS NULL OR leased_until < now())
                     ORDER BY run_after LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING analysis_id, attempts)
             SELECT c.analysis_id, c.attempts, a.product_sku, a.image_key
             FROM claimed c JOIN analyses a ON a.id = c.analysis_id",
        )
        .bind(after(lease))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Job {
                    analysis_id: r.try_get("analysis_id")?,
                    product_sku: r.try_get("product_sku")?,
                    image_key: r.try_get("image_key")?,
                    attempts: r.try_get::<i32, _>("attempts")? as u32,
                })
            })
            .collect()
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Duration,
        max_attempts: u32,
        public_url: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if job.attempts >= max_attempts {
            let outcome = gave_up(job.attempts, error);
            complete_in(&mut tx, job.analysis_id, &outcome, public_url).await?;
        } else {
            sqlx::query(
                "UPDATE jobs SET run_after = $2, leased_until = NULL, last_error = $3
                 WHERE analysis_id = $1",
            )
            .bind(job.analysis_id)
            .bind(after(retry_in))
            .bind(error)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Analysis, StoreError> {
        let mut conn = self.pool.acquire().await?;
        get_analysis(&mut conn, id).await
    }

    async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Analysis>, Option<String>), StoreError> {
        let after = cursor.map(decode_cursor).transpose()?;
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM analyses WHERE true"));
        for (col, value) in [
            ("facility", &filter.facility),
            ("line", &filter.line),
            ("station", &filter.station),
            ("product_sku", &filter.product_sku),
            ("device_id", &filter.device_id),
        ] {
            if let Some(v) = value {
                q.push(format!(" AND {col} = ")).push_bind(v.clone());
            }
        }
        if let Some(t) = &filter.defect_type {
            q.push(
                " AND EXISTS (SELECT 1 FROM analysis_defects d
                   WHERE d.analysis_id = analyses.id AND d.type = ",
            )
            .push_bind(t.clone())
            .push(")");
        }
        if let Some(flag) = filter.defect_detected {
            q.push(" AND defect_detected = ").push_bind(flag);
        }
        if let Some(since) = filter.since {
            q.push(" AND timestamp >= ").push_bind(since);
        }
        if let Some(until) = filter.until {
            q.push(" AND timestamp < ").push_bind(until);
        }
        if let Some((t, id)) = after {
            q.push(" AND (timestamp, id) < (")
                .push_bind(t)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY timestamp DESC, id DESC LIMIT ")
            .push_bind(limit as i64 + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        let items = rows
            .iter()
            .map(row_to_analysis)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, limit))
    }

    async fn image_key(&self, id: Uuid) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT image_key FROM analyses WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "UPDATE outbox SET leased_by = $1, leased_until = $3
             WHERE id IN (
                 SELECT id FROM outbox
                 WHERE leased_until IS NULL OR leased_until < now() OR leased_by = $1
                 ORDER BY id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, topic, payload",
        )
        .bind(self.replica)
        .bind(limit as i64)
        .bind(after(self.outbox_lease))
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(|r| {
                Ok(OutboxItem {
                    id: r.try_get("id")?,
                    topic: r.try_get("topic")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    async fn outbox_done(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_model(&self, m: StoredModel) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO models (sku, version, body, created_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (sku) DO UPDATE SET version = excluded.version, body = excluded.body,
                created_at = excluded.created_at",
        )
        .bind(&m.sku)
        .bind(&m.version)
        .bind(&m.body)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO model_versions (sku, version, body, created_at)
             VALUES ($1, $2, $3, now()) ON CONFLICT DO NOTHING",
        )
        .bind(&m.sku)
        .bind(&m.version)
        .bind(&m.body)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, detail)
             VALUES (now(), 'golden', 'model_activated',
                     jsonb_build_object('sku', $1::text, 'version', $2::text, 'bytes', $3::int))",
        )
        .bind(&m.sku)
        .bind(&m.version)
        .bind(m.body.len() as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT sku, version FROM models")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn model(&self, sku: &str) -> Result<Option<StoredModel>, StoreError> {
        let row: Option<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT sku, version, body FROM models WHERE sku = $1")
                .bind(sku)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(sku, version, body)| StoredModel { sku, version, body }))
    }

    async fn add_golden(
        &self,
        sku: &str,
        digest: &str,
        image_key: &str,
    ) -> Result<bool, StoreError> {
        let added = sqlx::query(
            "INSERT INTO golden_samples (sku, image_blake3, image_key, created_at)
             VALUES ($1, $2, $3, now()) ON CONFLICT (sku, image_blake3) DO NOTHING",
        )
        .bind(sku)
        .bind(digest)
        .bind(image_key)
        .execute(&self.pool)
        .await?;
        Ok(added.rows_affected() == 1)
    }

    async fn golden(&self, sku: &str) -> Result<Vec<GoldenSample>, StoreError> {
        let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT image_blake3, image_key, created_at FROM golden_samples
             WHERE sku = $1 ORDER BY seq",
        )
        .bind(sku)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(digest, image_key, added_at)| GoldenSample {
                digest,
                image_key,
                added_at,
            })
            .collect())
    }

    async fn golden_sets(&self) -> Result<Vec<(String, usize)>, StoreError> {
        let sets: Vec<(String, i64)> =
            sqlx::query_as("SELECT sku, count(*) FROM golden_samples GROUP BY sku ORDER BY sku")
                .fetch_all(&self.pool)
                .await?;
        Ok(sets.into_iter().map(|(sku, n)| (sku, n as usize)).collect())
    }

    async fn remove_golden(&self, sku: &str, digest: &str) -> Result<bool, StoreError> {
        let removed =
            sqlx::query("DELETE FROM golden_samples WHERE sku = $1 AND image_blake3 = $2")
                .bind(sku)
                .bind(digest)
                .execute(&self.pool)
                .await?;
        Ok(removed.rows_affected() == 1)
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let (waiting, oldest): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), min(run_after) FROM jobs")
                .fetch_one(&self.pool)
                .await?;
        Ok(QueueStats {
            waiting: waiting as u64,
            oldest_due: oldest.and_then(|t| (Utc::now() - t).to_std().ok()),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
