//! The embedded store: one SQLite file in WAL mode.
//!
//! Every write goes through one writer thread that groups the writes waiting at that moment
//! into one transaction (group commit: one fsync for many requests). Each write runs in its
//! own savepoint, so one failing write does not undo the others; its caller hears back only
//! after the commit, so an answer always means "durable". Reads use a few connections of
//! their own, which WAL lets run beside the writer.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Row, Savepoint, params, params_from_iter};
use tokio::sync::oneshot;
use uuid::Uuid;
use wiko_wire::{Analysis, AnalysisStatus, Defect, IngestOutcome};

use super::record::{
    decode_cursor, defect_id, gave_up, messages, page, parse_status, parse_ts, status_str, ts,
};
use super::{
    GoldenSample, Job, ListFilter, NewAnalysis, OutboxItem, Outcome, QueueStats, Store, StoreError,
    StoredModel,
};

const SCHEMA: &str = include_str!("sqlite_schema.sql");
/// Most writes grouped into one transaction.
const MAX_BATCH: usize = 256;
const READERS: usize = 4;

type Done = Box<dyn FnOnce(bool) + Send>;
type Op = Box<dyn FnOnce(&mut Savepoint<'_>) -> Done + Send>;

pub struct SqliteStore {
    writer: mpsc::Sender<Op>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.to_string()))?;
        }
        let mut conn = open(path)?;
        conn.execute_batch(SCHEMA)?;
        let readers = Arc::new(
            (0..READERS)
                .map(|_| open(path).map(Mutex::new))
                .collect::<Result<_, _>>()?,
        );
        let (tx, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("wiko-store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                    write_batch(&mut conn, batch);
                }
            })
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(SqliteStore {
            writer: tx,
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in the writer thread, inside a savepoint of the current group transaction;
    /// answers after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Savepoint<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op: Op = Box::new(move |sp: &mut Savepoint<'_>| {
            let result = f(sp);
            let result = match result {
                Ok(v) => Ok(v),
                Err(e) => {
                    let _ = sp.rollback();
                    Err(e)
                }
            };
            Box::new(move |committed: bool| {
                let _ = reply.send(match (result, committed) {
                    (Ok(v), true) => Ok(v),
                    (Ok(_), false) => Err(StoreError::Database("commit failed".into())),
                    (Err(e), _) => Err(e),
                });
            })
        });
        self.writer
            .send(op)
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer stopped".into()))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % READERS;
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            // A panic inside a read leaves no transaction open, so a poisoned lock is usable.
            let conn = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task: {e}")))?
    }
}

fn write_batch(conn: &mut Connection, batch: Vec<Op>) {
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    let committed = match conn.transaction() {
        Ok(mut tx) => {
            for op in batch {
                match tx.savepoint() {
                    Ok(mut sp) => {
                        done.push(op(&mut sp));
                        let _ = sp.commit();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "opening a savepoint failed");
                        done.push(Box::new(|_| {}));
                    }
                }
            }
            tx.commit().is_ok()
        }
        Err(e) => {
            tracing::error!(error = %e, "starting a store transaction failed");
            false
        }
    };
    for d in done {
        d(committed);
    }
}

const COLUMNS: &str = "id, defect_id, timestamp, facility, line, station, product_sku, part_id, lot,
    device_id, frame_id, status, defect_detected, defects_json, score, score_threshold, confidence,
    recommendation, analyzer, analyzer_version, model_version, latency_ms, image_width, image_height,
    created_at, analyzed_at, seq";

fn row_to_analysis(r: &Row<'_>) -> Result<Analysis, StoreError> {
    let id: String = r.get(0)?;
    let id = Uuid::parse_str(&id).map_err(|e| StoreError::Database(e.to_string()))?;
    let frame_id: Option<String> = r.get(10)?;
    let defects_json: String = r.get(13)?;
    let defects: Vec<Defect> =
        serde_json::from_str(&defects_json).map_err(|e| StoreError::Database(e.to_string()))?;
    let analyzed_at: Option<String> = r.get(25)?;
    Ok(Analysis {
        id,
        defect_id: r.get(1)?,
        timestamp: parse_ts(&r.get::<_, String>(2)?)?,
        facility: r.get(3)?,
        line: r.get(4)?,
        station: r.get(5)?,
        product_sku: r.get(6)?,
        part_id: r.get(7)?,
        lot: r.get(8)?,
        device_id: r.get(9)?,
        frame_id: frame_id.and_then(|f| Uuid::parse_str(&f).ok()),
        seq: r.get::<_, Option<i64>>(26)?.map(|s| s as u64),
        status: parse_status(&r.get::<_, String>(11)?),
        defect_detected: r.get(12)?,
        defects,
        score: r.get(14)?,
        score_threshold: r.get(15)?,
        confidence: r.get(16)?,
        recommendation: r.get(17)?,
        analyzer: r.get(18)?,
        analyzer_version: r.get(19)?,
        model_version: r.get(20)?,
        latency_ms: r.get(21)?,
        image_width: r.get(22)?,
        image_height: r.get(23)?,
        image_url: format!("/api/v1/analyses/{id}/image"),
        created_at: parse_ts(&r.get::<_, String>(24)?)?,
        analyzed_at: analyzed_at.map(|s| parse_ts(&s)).transpose()?,
    })
}

fn get_analysis(conn: &Connection, id: Uuid) -> Result<Analysis, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM analyses WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id.to_string()])?;
    match rows.next()? {
        Some(r) => row_to_analysis(r),
        None => Err(StoreError::NotFound),
    }
}

/// Writes the result and queues its messages; a no-op for an analysis already done.
fn complete_in(
    sp: &Savepoint<'_>,
    id: Uuid,
    outcome: &Outcome,
    public_url: &str,
) -> Result<Analysis, StoreError> {
    let o = &outcome.judgement;
    let current = get_analysis(sp, id)?;
    if current.status != AnalysisStatus::Pending {
        return Ok(current);
    }
    sp.execute(
        "UPDATE analyses SET status = ?2, defect_detected = ?3, defects_json = ?4, score = ?5,
            score_threshold = ?6, confidence = ?7, recommendation = ?8, analyzer = ?9,
            analyzer_version = ?10, model_version = ?11, latency_ms = ?12, analyzed_at = ?13
         WHERE id = ?1",
        params![
            id.to_string(),
            status_str(o.status),
            o.defect_detected,
            serde_json::to_string(&o.defects).map_err(|e| StoreError::Database(e.to_string()))?,
            o.score,
            o.score_threshold,
            o.confidence,
            o.recommendation,
            outcome.analyzer,
            outcome.analyzer_version,
            o.model_version,
            outcome.latency_ms,
            ts(Utc::now()),
        ],
    )?;
    for d in &o.defects {
        sp.execute(
            "INSERT INTO analysis_defects (analysis_id, type) VALUES (?1, ?2)",
            params![id.to_string(), d.kind.as_str()],
        )?;
    }
    sp.execute("DELETE FROM jobs WHERE analysis_id = ?1", [id.to_string()])?;
    let done = get_analysis(sp, id)?;
    for (topic, payload) in messages(&done, public_url)? {
        sp.execute(
            "INSERT INTO outbox (topic, payload, created_at) VALUES (?1, ?2, ?3)",
            params![topic, payload, ts(Utc::now())],
        )?;
    }
    Ok(done)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, n: NewAnalysis) -> Result<(IngestOutcome, Uuid), StoreError> {
        self.write(move |sp| {
            let meta_json = n
                .frame
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| StoreError::Database(e.to_string()))?;
            if let Some(frame) = &n.frame {
                let existing: Option<(String, String)> = sp
                    .query_row(
                        "SELECT meta_json, analysis_id FROM frames WHERE frame_id = ?1",
                        [frame.frame_id.to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((stored_meta, analysis_id)) = existing {
                    return if Some(&stored_meta) == meta_json.as_ref() {
                        let id = Uuid::parse_str(&analysis_id).map_err(|e| StoreError::Database(e.to_string()))?;
                        Ok((IngestOutcome::Duplicate, id))
                    } else {
                        Err(StoreError::Conflict(frame.frame_id))
                    };
                }
            }
            let id = Uuid::now_v7();
            let now = Utc::now();
            sp.execute(
                "INSERT INTO analyses (id, defect_id, timestamp, facility, line, station, product_sku,
                    part_id, lot, device_id, frame_id, status, defect_detected, defects_json,
                    recommendation, analyzer, analyzer_version, image_key, image_blake3,
                    image_width, image_height, created_at, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', 0, '[]', '', '', '',
                         ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    id.to_string(),
                    defect_id(id),
                    ts(n.timestamp),
                    n.facility,
                    n.line,
                    n.station,
                    n.product_sku,
                    n.part_id,
                    n.lot,
                    n.frame.as_ref().map(|f| f.device_id.clone()),
                    n.frame.as_ref().map(|f| f.frame_id.to_string()),
                    n.image_key,
                    n.image_blake3,
                    n.image_width,
                    n.image_height,
                    ts(now),
                    n.frame.as_ref().map(|f| f.seq as i64),
                ],
            )?;
            if let (Some(frame), Some(meta_json)) = (&n.frame, &meta_json) {
                sp.execute(
                    "INSERT INTO frames (frame_id, analysis_id, device_id, seq, meta_json, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![frame.frame_id.to_string(), id.to_string(), frame.device_id, frame.seq as i64, meta_json, ts(now)],
                )?;
            }
            let run_after = now + chrono::Duration::from_std(n.run_after).unwrap_or_default();
            sp.execute(
                "INSERT INTO jobs (analysis_id, run_after, attempts) VALUES (?1, ?2, 0)",
                params![id.to_string(), ts(run_after)],
            )?;
            Ok((IngestOutcome::Created, id))
        })
        .await
    }

    async fn complete(
        &self,
        id: Uuid,
        outcome: Outcome,
        public_url: &str,
    ) -> Result<Analysis, StoreError> {
        let public_url = public_url.to_string();
        self.write(move |sp| complete_in(sp, id, &outcome, &public_url))
            .await
    }

    async fn claim_jobs(&self, limit: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        self.write(move |sp| {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
            let mut stmt = sp.prepare_cached(
                "UPDATE jobs SET leased_until = ?1, attempts = attempts + 1
                 WHERE analysis_id IN (
                     SELECT analysis_id FROM jobs
                     WHERE run_after <= ?2 AND (leased_until IS NULL OR leased_until < ?2)
                     ORDER BY run_after LIMIT ?3)
                 RETURNING analysis_id, attempts",
            )?;
            let claimed: Vec<(String, u32)> = stmt
                .query_map(params![ts(until), ts(now), limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut jobs = Vec::with_capacity(claimed.len());
            for (id, attempts) in claimed {
                let (sku, key): (String, String) = sp.query_row(
                    "SELECT product_sku, image_key FROM analyses WHERE id = ?1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                jobs.push(Job {
                    analysis_id: Uuid::parse_str(&id)
                        .map_err(|e| StoreError::Database(e.to_string()))?,
                    product_sku: sku,
                    image_key: key,
                    attempts,
                });
            }
            Ok(jobs)
        })
        .await
    }

    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_in: Duration,
        max_attempts: u32,
        public_url: &str,
    ) -> Result<(), StoreError> {
        let (id, attempts, error, public_url) = (
            job.analysis_id,
            job.attempts,
            error.to_string(),
            public_url.to_string(),
        );
        self.write(move |sp| {
            if attempts >= max_attempts {
                complete_in(sp, id, &gave_up(attempts, &error), &public_url)?;
            } else {
                let run_after = Utc::now() + chrono::Duration::from_std(retry_in).unwrap_or_default();
                sp.execute(
                    "UPDATE jobs SET run_after = ?2, leased_until = NULL, last_error = ?3 WHERE analysis_id = ?1",
                    params![id.to_string(), ts(run_after), error],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Analysis, StoreError> {
        self.read(move |conn| get_analysis(conn, id)).await
    }

    async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Analysis>, Option<String>), StoreError> {
        let filter = filter.clone();
        let after = cursor.map(decode_cursor).transpose()?;
        self.read(move |conn| {
            let mut clauses: Vec<String> = Vec::new();
            let mut args: Vec<String> = Vec::new();
            let mut eq = |col: &str, v: &Option<String>| {
                if let Some(v) = v {
                    args.push(v.clone());
                    clauses.push(format!("{col} = ?{}", args.len()));
                }
            };
            eq("facility", &filter.facility);
            eq("line", &filter.line);
            eq("station", &filter.station);
            eq("product_sku", &filter.product_sku);
            eq("device_id", &filter.device_id);
            if let Some(t) = &filter.defect_type {
                args.push(t.clone());
                clauses.push(format!(
                    "EXISTS (SELECT 1 FROM analysis_defects d WHERE d.analysis_id = analyses.id AND d.type = ?{})",
                    args.len()
                ));
            }
            if let Some(flag) = filter.defect_detected {
                clauses.push(format!("defect_detected = {}", i32::from(flag)));
            }
            if let Some(since) = filter.since {
                args.push(ts(since));
                clauses.push(format!("timestamp >= ?{}", args.len()));
            }
            if let Some(until) = filter.until {
                args.push(ts(until));
                clauses.push(format!("timestamp < ?{}", args.len()));
            }
            if let Some((t, id)) = &after {
                args.push(ts(*t));
                let a = args.len();
                args.push(id.to_string());
                clauses.push(format!("(timestamp, id) < (?{a}, ?{})", args.len()));
            }
            let where_sql = if clauses.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", clauses.join(" AND "))
            };
            let sql = format!("SELECT {COLUMNS} FROM analyses {where_sql} ORDER BY timestamp DESC, id DESC LIMIT {}", limit + 1);
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(args.iter()))?;
            let mut items = Vec::with_capacity(limit + 1);
            while let Some(r) = rows.next()? {
                items.push(row_to_analysis(r)?);
            }
            Ok(page(items, limit))
        })
        .await
    }

    async fn image_key(&self, id: Uuid) -> Result<String, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT image_key FROM analyses WHERE id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?1")?;
            let items = stmt
                .query_map([limit as i64], |r| {
                    Ok(OutboxItem {
                        id: r.get(0)?,
                        topic: r.get(1)?,
                        payload: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(items)
        })
        .await
    }

    async fn outbox_done(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(move |sp| {
            let mut stmt = sp.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
            Ok(())
        })
        .await
    }

    async fn save_model(&self, m: StoredModel) -> Result<(), StoreError> {
        self.write(move |sp| {
            sp.execute(
                "INSERT INTO models (sku, version, body, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sku) DO UPDATE SET version = excluded.version, body = excluded.body,
                    created_at = excluded.created_at",
                params![m.sku, m.version, m.body, ts(Utc::now())],
            )?;
            Ok(())
        })
        .await
    }

    async fn model_versions(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT sku, version FROM models")?;
            let versions = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(versions)
        })
        .await
    }

    async fn model(&self, sku: &str) -> Result<Option<StoredModel>, StoreError> {
        let sku = sku.to_string();
        self.read(move |conn| {
            let model = conn
                .query_row(
                    "SELECT sku, version, body FROM models WHERE sku = ?1",
                    [sku],
                    |r| {
                        Ok(StoredModel {
                            sku: r.get(0)?,
                            version: r.get(1)?,
                            body: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            Ok(model)
        })
        .await
    }

    async fn add_golden(
        &self,
        sku: &str,
        digest: &str,
        image_key: &str,
    ) -> Result<bool, StoreError> {
        let (sku, digest, key) = (sku.to_string(), digest.to_string(), image_key.to_string());
        self.write(move |sp| {
            let added = sp.execute(
                "INSERT INTO golden_samples (sku, image_blake3, image_key, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (sku, image_blake3) DO NOTHING",
                params![sku, digest, key, ts(Utc::now())],
            )?;
            Ok(added == 1)
        })
        .await
    }

    async fn golden(&self, sku: &str) -> Result<Vec<GoldenSample>, StoreError> {
        let sku = sku.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT image_blake3, image_key, created_at FROM golden_samples
                 WHERE sku = ?1 ORDER BY rowid",
            )?;
            let rows = stmt
                .query_map([sku], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(digest, image_key, added)| {
                    Ok(GoldenSample {
                        digest,
                        image_key,
                        added_at: parse_ts(&added)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn golden_sets(&self) -> Result<Vec<(String, usize)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sku, count(*) FROM golden_samples GROUP BY sku ORDER BY sku",
            )?;
            let sets = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?
                .collect::<Result<_, _>>()?;
            Ok(sets)
        })
        .await
    }

    async fn remove_golden(&self, sku: &str, digest: &str) -> Result<bool, StoreError> {
        let (sku, digest) = (sku.to_string(), digest.to_string());
        self.write(move |sp| {
            let removed = sp.execute(
                "DELETE FROM golden_samples WHERE sku = ?1 AND image_blake3 = ?2",
                params![sku, digest],
            )?;
            Ok(removed == 1)
        })
        .await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let (waiting, oldest): (i64, Option<String>) = self
            .read(|conn| {
                Ok(
                    conn.query_row("SELECT count(*), min(run_after) FROM jobs", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?,
                )
            })
            .await?;
        let oldest = oldest.map(|t| parse_ts(&t)).transpose()?;
        Ok(QueueStats {
            waiting: waiting as u64,
            oldest_due: oldest.and_then(|t| (Utc::now() - t).to_std().ok()),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await?;
        self.write(|_| Ok(())).await
    }
}
