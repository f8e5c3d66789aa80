//! Parts, written once for both backends: analyses, their jobs (fair between devices) and the
//! outbox. Each method is one transaction (or one read) of the statements below.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;
use wiko_wire::alert::defect_id;
use wiko_wire::{
    Analysis, AnalysisStatus, CostRow, Defect, Feedback, FeedbackVerdict, FrameMeta, IngestOutcome,
    VerdictSource,
};

use super::{
    Arg, Backend, Conn, Dialect, Row, SqlStore, after, args, insight, json_error, list, op,
    parse_ts, ts, values,
};
use crate::store::{
    CostFilter, Enrichment, Event, FeedbackFilter, ImageKey, Job, Judgement, ListFilter,
    NewAnalysis, OutboxItem, Outcome, Parts, Published, QueueStats, Stage, StoreError, WindowClaim,
};

/// The columns of an analysis, in the order [`analysis`] decodes them.
macro_rules! columns {
    () => {
        "id, defect_id, timestamp, facility, line, station, product_sku, part_id, lot, device_id,
        frame_id, seq, status, defect_detected, defects, score, score_threshold, confidence,
        recommendation, analyzer, analyzer_version, model_version, latency_ms, image_width,
        image_height, created_at, analyzed_at, verdicts, disagreement, feedback_verdict,
        feedback_comment, feedback_by, feedback_at"
    };
}

/// One analysis by id.
const GET: &str = concat!("SELECT ", columns!(), " FROM analyses WHERE id = ?");

/// Outbox event kinds.
const RESULT_EVENT: &str = "result";
/// An MQTT message as it is to be sent: a model announcement, or a row queued by a version
/// before events.
pub(super) const MQTT_MESSAGE: &str = "mqtt";

pub(super) fn status_str(s: AnalysisStatus) -> &'static str {
    match s {
        AnalysisStatus::Pending => "pending",
        AnalysisStatus::NotCalibrated => "not_calibrated",
        AnalysisStatus::Provisional => "provisional",
        AnalysisStatus::Final => "final",
        AnalysisStatus::Failed => "failed",
    }
}

pub(super) fn parse_status(s: &str) -> AnalysisStatus {
    match s {
        "not_calibrated" => AnalysisStatus::NotCalibrated,
        "provisional" => AnalysisStatus::Provisional,
        "final" => AnalysisStatus::Final,
        "failed" => AnalysisStatus::Failed,
        _ => AnalysisStatus::Pending,
    }
}

pub(super) fn analysis(r: &Row) -> Result<Analysis, StoreError> {
    let id = r.uuid(0)?;
    let defects: Vec<Defect> = serde_json::from_str(&r.text(14)?).map_err(json_error)?;
    Ok(Analysis {
        id,
        defect_id: r.text(1)?,
        timestamp: r.time(2)?,
        facility: r.text(3)?,
        line: r.text(4)?,
        station: r.text(5)?,
        product_sku: r.text(6)?,
        part_id: r.opt_text(7)?,
        lot: r.opt_text(8)?,
        device_id: r.opt_text(9)?,
        frame_id: r.opt_uuid(10)?,
        seq: r.opt_int(11)?.map(|s| s as u64),
        status: parse_status(&r.text(12)?),
        defect_detected: r.bool(13)?,
        defects,
        score: r.opt_real(15)?.map(|x| x as f32),
        score_threshold: r.opt_real(16)?.map(|x| x as f32),
        confidence: r.opt_real(17)?.map(|x| x as f32),
        recommendation: r.text(18)?,
        analyzer: r.text(19)?,
        analyzer_version: r.text(20)?,
        model_version: r.opt_text(21)?,
        latency_ms: r.opt_real(22)?,
        image_width: r.int(23)? as u32,
        image_height: r.int(24)? as u32,
        image_url: wiko_wire::alert::image_path(id),
        created_at: r.time(25)?,
        analyzed_at: r.opt_time(26)?,
        verdicts: serde_json::from_str(&r.text(27)?).map_err(json_error)?,
        disagreement: r.bool(28)?,
        thumbnail_url: format!("/api/v1/analyses/{id}/thumbnail"),
        feedback: feedback(r)?,
    })
}

/// The latest review stored on an analysis row.
fn feedback(r: &Row) -> Result<Option<Feedback>, StoreError> {
    let Some(verdict) = r.opt_text(29)? else {
        return Ok(None);
    };
    let verdict = FeedbackVerdict::parse(&verdict)
        .ok_or_else(|| StoreError::Database(format!("unknown feedback verdict {verdict:?}")))?;
    Ok(Some(Feedback {
        verdict,
        comment: r.opt_text(30)?,
        by: r.opt_text(31)?.unwrap_or_default(),
        at: r.time(32)?,
    }))
}

pub(super) async fn get(c: &mut dyn Conn, id: Uuid) -> Result<Analysis, StoreError> {
    match c.query(GET, args![id]).await?.first() {
        Some(r) => analysis(r),
        None => Err(StoreError::NotFound),
    }
}

/// The analyses of `ids` that exist, in no order.
pub(super) async fn get_many(c: &mut dyn Conn, ids: &[Uuid]) -> Result<Vec<Analysis>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM analyses WHERE id IN {}",
        columns!(),
        list(ids.len())
    );
    let rows = c
        .query(&sql, ids.iter().map(|&id| id.into()).collect())
        .await?;
    rows.iter().map(analysis).collect()
}

/// The frame stored and the one uploaded again differ at most in the edge verdict's `alerted`:
/// an agent says it only if the broker had acknowledged its alert when it built the upload, so
/// a retry may say it where the first attempt did not. The same frame: the first upload stands
/// (the cloud alerted the part if it did not say `alerted`; at worst a duplicate under one
/// result id).
fn same_but_alerted(stored: &str, frame: &FrameMeta) -> bool {
    // Compared as written (both texts from the same serialisation of the same parsed
    // upload), not parsed back: a float read back from text need not be the one written.
    let Some(alerted) = frame.edge.as_ref().map(|e| e.alerted) else {
        return false;
    };
    let mut other = frame.clone();
    if let Some(edge) = other.edge.as_mut() {
        edge.alerted = !alerted;
    }
    serde_json::to_string(&other).is_ok_and(|text| text == stored)
}

/// Records a part: its analysis (pending), its frame and device (agent frames), its job. A
/// frame the agent judged is `provisional` at once, with the agent's verdict; the cloud's own
/// verdict makes it final (and is the one published: one result message per part).
async fn create(c: &mut dyn Conn, n: &NewAnalysis) -> Result<(IngestOutcome, Uuid), StoreError> {
    let frame = n.origin.frame();
    let meta_json = frame
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_error)?;
    if let (Some(frame), Some(meta_json)) = (frame, &meta_json) {
        // The frame as uploaded before, and any result already holding its id (another
        // device's, or a call's): one round trip.
        let sql = "SELECT meta_json, analysis_id FROM frames WHERE frame_id = ?
                   UNION ALL SELECT NULL, id FROM analyses WHERE id = ?";
        let rows = c.query(sql, args![frame.frame_id, frame.frame_id]).await?;
        for r in &rows {
            if let Some(stored) = r.opt_text(0)? {
                return if &stored == meta_json || same_but_alerted(&stored, frame) {
                    Ok((IngestOutcome::Duplicate, r.uuid(1)?))
                } else {
                    Err(StoreError::Conflict(frame.frame_id))
                };
            }
        }
        if !rows.is_empty() {
            return Err(StoreError::Conflict(frame.frame_id));
        }
    }
    // An agent's frame is its part's result under its own id: the agent alerts an NG part
    // under that id before the cloud has seen it.
    let id = wiko_wire::alert::result_id(frame.map(|f| f.frame_id));
    let now = Utc::now();
    let o = &n.origin;
    let edge = frame.and_then(|f| f.edge.as_ref());
    // A frame the agent judged is its provisional result at once; any other is pending.
    let (status, recommendation, verdicts) = match edge {
        Some(e) => (
            AnalysisStatus::Provisional,
            if e.defect_detected {
                "reject (edge verdict; the cloud's follows)"
            } else {
                "accept (edge verdict; the cloud's follows)"
            },
            serde_json::to_string(&[e.verdict()]).map_err(json_error)?,
        ),
        None => (AnalysisStatus::Pending, "", "[]".to_string()),
    };
    let defects = match edge {
        Some(e) => serde_json::to_string(&e.defects).map_err(json_error)?,
        None => "[]".to_string(),
    };
    c.execute(
        &format!(
            "INSERT INTO analyses (id, defect_id, timestamp, facility, line, station, product_sku,
                part_id, lot, device_id, frame_id, seq, status, defect_detected, defects, score,
                score_threshold, recommendation, analyzer, analyzer_version, model_version,
                latency_ms, verdicts, image_key, image_blake3, image_width, image_height,
                created_at)
             VALUES {}",
            list(28)
        ),
        args![
            id,
            defect_id(id),
            o.timestamp(),
            o.facility(),
            o.line(),
            o.station(),
            o.sku(),
            o.part_id(),
            o.lot(),
            frame.map(|f| f.device_id.clone()),
            frame.map(|f| f.frame_id),
            frame.map(|f| f.seq as i64),
            status_str(status),
            edge.is_some_and(|e| e.defect_detected),
            Arg::Json(defects),
            edge.map(|e| e.score),
            edge.map(|e| e.score_threshold),
            recommendation,
            if edge.is_some() { "golden" } else { "" },
            "",
            edge.map(|e| e.model_version.as_str()),
            Arg::Real(edge.map(|e| e.latency_ms)),
            Arg::Json(verdicts),
            n.image_key.0.as_str(),
            n.image_blake3.as_str(),
            i64::from(n.image_width),
            i64::from(n.image_height),
            now,
        ],
    )
    .await?;
    if let Some(e) = edge {
        index_defects(c, id, o.timestamp(), &e.defects).await?;
    }
    if let (Some(frame), Some(meta_json)) = (frame, meta_json) {
        c.execute(
            "INSERT INTO frames (frame_id, analysis_id, device_id, seq, meta_json, received_at)
             VALUES (?, ?, ?, ?, ?, ?)",
            args![
                frame.frame_id,
                id,
                frame.device_id.as_str(),
                frame.seq as i64,
                meta_json,
                now
            ],
        )
        .await?;
        // Registers the device on its first frame; DO NOTHING takes no row lock, so a busy
        // device's uploads do not queue behind each other here.
        c.execute(
            "INSERT INTO devices (device_id, facility, line, station, first_seen)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING",
            args![
                frame.device_id.as_str(),
                o.facility(),
                o.line(),
                o.station(),
                now
            ],
        )
        .await?;
    }
    let device = frame.map(|f| f.device_id.as_str());
    let turn = match device {
        Some(device) => {
            let sql = "SELECT count(*), max(fair_at) FROM (
                           SELECT fair_at FROM jobs WHERE device_id = ?
                           ORDER BY fair_at DESC LIMIT ?) latest";
            let rows = c.query(sql, args![device, FAIR_COUNTED]).await?;
            let r = rows.first().ok_or(StoreError::NotFound)?;
            fair_turn(
                now,
                r.int(0)?,
                r.opt_time(1)?,
                n.image_width,
                n.image_height,
            )
        }
        None => now,
    };
    c.execute(
        "INSERT INTO jobs (analysis_id, run_after, attempts, device_id, fair_at)
         VALUES (?, ?, 0, ?, ?)",
        args![id, after(n.run_after), device, turn],
    )
    .await?;
    Ok((IngestOutcome::Created, id))
}

/// Whether the local analyzer is still to judge this analysis: it is pending, or provisional
/// with the agent's verdict only.
fn awaits_cloud(a: &Analysis) -> bool {
    match a.status {
        AnalysisStatus::Pending => true,
        AnalysisStatus::Provisional => a.verdicts.iter().all(|v| v.source == VerdictSource::Edge),
        _ => false,
    }
}

/// Virtual time a device's job stands behind for each job of the device already waiting, per
/// megapixel of its image (at least one): jobs are taken in order of their turn (`fair_at`),
/// so a device with a backlog, or with huge images, does not hold the workers while another
/// device's parts wait.
const FAIR_SLOT_PER_MEGAPIXEL: Duration = Duration::from_millis(25);

/// Jobs of a device counted at most: counting costs a step per job (a count of the whole
/// backlog made each upload slower the longer the queue), so past this many a new job's turn
/// is one slot after the device's latest.
const FAIR_COUNTED: i64 = 64;

/// The turn of a device's new job, from its jobs waiting (counted up to [`FAIR_COUNTED`]) and
/// the latest turn among them: one slot per job waiting after now; with a deeper backlog, one
/// slot after its latest job's turn (and never sooner than a counted backlog's turn), so the
/// turns of a backlog of any depth stay one slot apart.
fn fair_turn(
    now: DateTime<Utc>,
    waiting: i64,
    latest: Option<DateTime<Utc>>,
    width: u32,
    height: u32,
) -> DateTime<Utc> {
    let megapixels = (f64::from(width) * f64::from(height) / 1e6).max(1.0);
    let slot = |jobs: i64| {
        let delay = FAIR_SLOT_PER_MEGAPIXEL.mul_f64(megapixels * jobs.max(0) as f64);
        chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
    };
    let plus = |t: DateTime<Utc>, d| t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let counted = plus(now, slot(waiting.min(FAIR_COUNTED)));
    match latest {
        Some(latest) if waiting >= FAIR_COUNTED => counted.max(plus(latest, slot(1))),
        _ => counted,
    }
}

/// The claim of up to `?5` runnable jobs of stage `?2`, first turn first, leased until `?1`
/// (`?3`, `?4`: now). Run after [`Dialect::walk_in_order`], in the same transaction.
pub(super) fn claim_sql(dialect: Dialect) -> String {
    format!(
        "UPDATE jobs SET leased_until = ?, attempts = attempts + 1
         WHERE analysis_id IN (
             SELECT analysis_id FROM jobs
             WHERE stage = ? AND run_after <= ?
               AND (leased_until IS NULL OR leased_until < ?)
             ORDER BY fair_at LIMIT ?{})
         RETURNING analysis_id, attempts,
             (SELECT product_sku FROM analyses a WHERE a.id = jobs.analysis_id),
             (SELECT image_key FROM analyses a WHERE a.id = jobs.analysis_id)",
        dialect.skip_locked()
    )
}

/// The lease of up to `?5` unpublished messages, oldest first, for replica `?1` until `?2`
/// (`?3`: now; `?4`: the replica again, whose own leases it may take back). It reads the
/// unpublished messages only (on PostgreSQL their partial index, migration 0011), not the
/// published ones kept for replay.
pub(super) fn outbox_claim_sql(dialect: Dialect) -> String {
    format!(
        "UPDATE outbox SET leased_by = ?, leased_until = ?
         WHERE id IN (
             SELECT id FROM outbox
             WHERE published_at IS NULL
               AND (leased_until IS NULL OR leased_until < ? OR leased_by = ?)
             ORDER BY id LIMIT ?{})
         RETURNING id, kind, topic, payload",
        dialect.skip_locked()
    )
}

/// An analysis as stored, its row locked until the transaction ends (PostgreSQL; SQLite's
/// writer is alone anyway): two workers finishing the same part take turns.
async fn locked(c: &mut dyn Conn, id: Uuid) -> Result<Analysis, StoreError> {
    let sql = format!(
        "SELECT {} FROM analyses WHERE id = ?{}",
        columns!(),
        c.dialect().for_update()
    );
    match c.query(&sql, args![id]).await?.first() {
        Some(r) => analysis(r),
        None => Err(StoreError::NotFound),
    }
}

/// Writes the result and queues its event; a no-op for an analysis already done. The agent's
/// verdict, if any, stays in `verdicts`; a different OK/NG from the cloud's is a
/// `disagreement`. The row lock (PostgreSQL) serialises two workers completing the same
/// analysis.
async fn complete(c: &mut dyn Conn, id: Uuid, outcome: &Outcome) -> Result<Analysis, StoreError> {
    let current = locked(c, id).await?;
    if !awaits_cloud(&current) {
        return Ok(current);
    }
    let cloud = outcome.verdict();
    let disagreement = cloud.as_ref().is_some_and(|cloud| {
        current
            .verdicts
            .iter()
            .any(|edge| edge.defect_detected != cloud.defect_detected)
    });
    let mut verdicts = current.verdicts;
    verdicts.extend(cloud);
    let o: &Judgement = &outcome.judgement;
    let defects = serde_json::to_string(&o.defects).map_err(json_error)?;
    let verdicts = serde_json::to_string(&verdicts).map_err(json_error)?;
    let rows = c
        .query(
            concat!(
                "UPDATE analyses SET status = ?, defect_detected = ?, defects = ?, score = ?,
                    score_threshold = ?, confidence = ?, recommendation = ?, analyzer = ?,
                    analyzer_version = ?, model_version = ?, latency_ms = ?, analyzed_at = ?,
                    verdicts = ?, disagreement = ?
                 WHERE id = ? RETURNING ",
                columns!()
            ),
            args![
                status_str(o.status),
                o.defect_detected,
                Arg::Json(defects),
                o.score,
                o.score_threshold,
                o.confidence,
                o.recommendation.as_str(),
                outcome.analyzer.as_str(),
                outcome.analyzer_version.as_str(),
                o.model_version.as_deref(),
                outcome.latency_ms,
                Utc::now(),
                Arg::Json(verdicts),
                disagreement,
                id,
            ],
        )
        .await?;
    let done = analysis(rows.first().ok_or(StoreError::NotFound)?)?;
    // The agent's defects, indexed when its verdict came in, and any row left behind: always
    // deleted (by key, cheap), or its (analysis_id, type) would fail every retry.
    c.execute(
        "DELETE FROM analysis_defects WHERE analysis_id = ?",
        args![id],
    )
    .await?;
    index_defects(c, id, done.timestamp, &o.defects).await?;
    insight::tally(c, &[(&done, 1)]).await?;
    c.execute("DELETE FROM jobs WHERE analysis_id = ?", args![id])
        .await?;
    if o.status == AnalysisStatus::Provisional {
        // The remote stage's job: taken by the remote workers, oldest first.
        let now = Utc::now();
        c.execute(
            "INSERT INTO jobs (analysis_id, run_after, attempts, device_id, fair_at, stage)
             VALUES (?, ?, 0, ?, ?, ?)",
            args![id, now, done.device_id.clone(), now, Stage::Remote.as_str()],
        )
        .await?;
    }
    queue_result(c, &done).await?;
    Ok(done)
}

/// The defect types of a result, how many of each and its capture time, for the listing's
/// `defect_type` filter ([`list_query`]).
async fn index_defects(
    c: &mut dyn Conn,
    id: Uuid,
    captured_at: DateTime<Utc>,
    defects: &[Defect],
) -> Result<(), StoreError> {
    let types = insight::by_type(defects);
    if types.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO analysis_defects (analysis_id, type, captured_at, found) VALUES {}",
        values(types.len(), 4)
    );
    let args = types
        .into_iter()
        .flat_map(|(kind, found)| args![id, kind, captured_at, found])
        .collect();
    c.execute(&sql, args).await?;
    Ok(())
}

/// Queues the `result` event of a result as stored now, and numbers it for the live feed.
async fn queue_result(c: &mut dyn Conn, done: &Analysis) -> Result<(), StoreError> {
    let event = serde_json::to_vec(done).map_err(json_error)?;
    let now = Utc::now();
    c.execute(
        "INSERT INTO outbox (kind, payload, created_at, analysis_id) VALUES (?, ?, ?, ?)",
        args![RESULT_EVENT, event, now, done.id],
    )
    .await?;
    c.execute(
        "INSERT INTO result_events (analysis_id, defect_detected, at) VALUES (?, ?, ?)",
        args![done.id, done.defect_detected, now],
    )
    .await?;
    Ok(())
}

/// Adds a remote verdict to a provisional result and makes it final, counts its cost, and
/// queues the update; a no-op for a result that is not provisional (enriched already).
async fn enrich(c: &mut dyn Conn, id: Uuid, e: &Enrichment) -> Result<Analysis, StoreError> {
    let current = locked(c, id).await?;
    if current.status != AnalysisStatus::Provisional {
        return Ok(current);
    }
    let mut verdicts = current.verdicts.clone();
    verdicts.push(e.verdict.clone());
    let rows = c
        .query(
            concat!(
                "UPDATE analyses SET status = ?, defects = ?, verdicts = ?, disagreement = ?
                 WHERE id = ? RETURNING ",
                columns!()
            ),
            args![
                status_str(AnalysisStatus::Final),
                Arg::Json(serde_json::to_string(&e.defects).map_err(json_error)?),
                Arg::Json(serde_json::to_string(&verdicts).map_err(json_error)?),
                // The agent's verdict may have disagreed already.
                current.disagreement || e.disagreement,
                id,
            ],
        )
        .await?;
    let done = analysis(rows.first().ok_or(StoreError::NotFound)?)?;
    c.execute(
        "DELETE FROM analysis_defects WHERE analysis_id = ?",
        args![id],
    )
    .await?;
    index_defects(c, id, done.timestamp, &e.defects).await?;
    insight::tally(c, &[(&current, -1), (&done, 1)]).await?;
    c.execute("DELETE FROM jobs WHERE analysis_id = ?", args![id])
        .await?;
    let usage = e.verdict.usage.unwrap_or_default();
    c.execute(
        "INSERT INTO remote_costs (day, analyzer, facility, product_sku, parts, failures,
            disagreements, input_tokens, output_tokens, cost_usd)
         VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)
         ON CONFLICT (day, analyzer, facility, product_sku) DO UPDATE SET
            parts = remote_costs.parts + 1,
            failures = remote_costs.failures + excluded.failures,
            disagreements = remote_costs.disagreements + excluded.disagreements,
            input_tokens = remote_costs.input_tokens + excluded.input_tokens,
            output_tokens = remote_costs.output_tokens + excluded.output_tokens,
            cost_usd = remote_costs.cost_usd + excluded.cost_usd",
        args![
            day_key(Utc::now()),
            e.verdict.analyzer.as_str(),
            done.facility.as_str(),
            done.product_sku.as_str(),
            i64::from(e.verdict.error.is_some()),
            i64::from(e.disagreement),
            usage.input_tokens as i64,
            usage.output_tokens as i64,
            usage.cost_usd,
        ],
    )
    .await?;
    queue_result(c, &done).await?;
    Ok(done)
}

/// Makes a leased job of `stage` runnable again from `not_before` on.
async fn requeue(
    c: &mut dyn Conn,
    job: &Job,
    stage: Stage,
    not_before: DateTime<Utc>,
    error: String,
) -> Result<(), StoreError> {
    // Only the worker holding the latest claim: a lease that ran out may have been claimed
    // again (one more attempt), and that worker's lease stays.
    c.execute(
        "UPDATE jobs SET run_after = ?, leased_until = NULL, last_error = ?
         WHERE analysis_id = ? AND stage = ? AND attempts = ?",
        args![
            not_before,
            error,
            job.analysis_id,
            stage.as_str(),
            i64::from(job.attempts)
        ],
    )
    .await
    .map(|_| ())
}

/// A UTC day ([`insight::day`]) as the cost table keys it.
fn day_key(t: DateTime<Utc>) -> String {
    insight::day(t).format("%Y-%m-%d").to_string()
}

fn select_one(c: &mut dyn Conn) -> BoxFuture<'_, Result<(), StoreError>> {
    Box::pin(async move { c.query("SELECT 1", Vec::new()).await.map(|_| ()) })
}

/// The outcome stored for a job given up after `attempts`.
fn gave_up(attempts: u32, error: &str) -> Outcome {
    Outcome {
        judgement: Judgement::failed(format!("gave up after {attempts} attempts: {error}"), None),
        analyzer: String::new(),
        analyzer_version: String::new(),
        latency_ms: 0.0,
    }
}

/// The cursor after `a`: listings are ordered by (timestamp, id), newest first.
fn encode_cursor(a: &Analysis) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", ts(a.timestamp), a.id))
}

/// Checks that `cursor` is one a listing gave (before an export's stream begins).
pub(crate) fn check_cursor(cursor: &str) -> Result<(), StoreError> {
    decode_cursor(cursor).map(|_| ())
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), StoreError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::BadCursor)?;
    let text = String::from_utf8(raw).map_err(|_| StoreError::BadCursor)?;
    let (t, id) = text.split_once('|').ok_or(StoreError::BadCursor)?;
    let t = parse_ts(t).map_err(|_| StoreError::BadCursor)?;
    let id = Uuid::parse_str(id).map_err(|_| StoreError::BadCursor)?;
    Ok((t, id))
}

/// The listing's statement for `filter`, after `cursor`, fetching `limit` rows, newest first.
/// With a defect type it walks that type's rows of `analysis_defects` in time order
/// (`analysis_defects_type_time`, whose capture time and id are the result's) and looks up
/// only their results: a page of one type reads about its own rows, where a filter on the
/// results walked every result in time order and looked each one up there.
pub(super) fn list_query(
    filter: &ListFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> (String, Vec<Arg>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    // The columns the order, the range and the cursor are read from.
    let (from, time, id) = match &filter.defect_type {
        Some(kind) => {
            clauses.push("d.type = ?");
            args.push(kind.clone().into());
            (
                "analysis_defects d JOIN analyses ON analyses.id = d.analysis_id",
                "d.captured_at",
                "d.analysis_id",
            )
        }
        None => ("analyses", "timestamp", "id"),
    };
    for (clause, value) in [
        ("facility = ?", &filter.facility),
        ("line = ?", &filter.line),
        ("station = ?", &filter.station),
        ("product_sku = ?", &filter.product_sku),
        ("device_id = ?", &filter.device_id),
    ] {
        if let Some(v) = value {
            clauses.push(clause);
            args.push(v.clone().into());
        }
    }
    if let Some(flag) = filter.defect_detected {
        clauses.push("defect_detected = ?");
        args.push(flag.into());
    }
    match filter.feedback {
        None => {}
        Some(FeedbackFilter::None) => clauses.push("feedback_verdict IS NULL"),
        Some(FeedbackFilter::Any) => clauses.push("feedback_verdict IS NOT NULL"),
        Some(FeedbackFilter::Is(v)) => {
            clauses.push("feedback_verdict = ?");
            args.push(v.as_str().into());
        }
    }
    let (since, until, cursor) = (
        format!("{time} >= ?"),
        format!("{time} < ?"),
        format!("({time}, {id}) < (?, ?)"),
    );
    if let Some(t) = filter.since {
        clauses.push(&since);
        args.push(t.into());
    }
    if let Some(t) = filter.until {
        clauses.push(&until);
        args.push(t.into());
    }
    if let Some((t, after_id)) = after {
        clauses.push(&cursor);
        args.extend(args![t, after_id]);
    }
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    args.push((limit as i64).into());
    let sql = format!(
        "SELECT {} FROM {from} {where_sql} ORDER BY {time} DESC, {id} DESC LIMIT ?",
        columns!()
    );
    (sql, args)
}

fn outbox_item(r: &Row) -> Result<OutboxItem, StoreError> {
    let payload = r.bytes(3)?;
    let event = match r.text(1)?.as_str() {
        RESULT_EVENT => Event::Result(Box::new(
            serde_json::from_slice(&payload).map_err(json_error)?,
        )),
        MQTT_MESSAGE => Event::Message {
            topic: r.opt_text(2)?.unwrap_or_default(),
            payload,
        },
        other => {
            return Err(StoreError::Database(format!(
                "unknown outbox kind {other:?}"
            )));
        }
    };
    Ok(OutboxItem {
        id: r.int(0)?,
        event,
    })
}

#[async_trait]
impl<B: Backend> Parts for SqlStore<B> {
    async fn create(&self, n: NewAnalysis) -> Result<(IngestOutcome, Uuid), StoreError> {
        // Two tries: a frame inserted by another replica between our check and our insert
        // makes the first fail on the unique key; the second finds it.
        let mut tries = 2;
        loop {
            let new = n.clone();
            match self
                .backend
                .write(op(move |c| Box::pin(async move { create(c, &new).await })))
                .await
            {
                Err(StoreError::Concurrent(_)) if tries > 1 && n.origin.frame().is_some() => {
                    tries -= 1;
                }
                Err(StoreError::Concurrent(detail)) => return Err(StoreError::Unavailable(detail)),
                other => return other,
            }
        }
    }

    async fn complete(&self, id: Uuid, outcome: Outcome) -> Result<Analysis, StoreError> {
        self.backend
            .write(op(move |c| {
                Box::pin(async move { complete(c, id, &outcome).await })
            }))
            .await
    }

    async fn claim_jobs(
        &self,
        stage: Stage,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Job>, StoreError> {
        let rows = self
            .backend
            .write(op(move |c| {
                Box::pin(async move {
                    if let Some(settings) = c.dialect().walk_in_order() {
                        c.query(settings, Vec::new()).await?;
                    }
                    let now = Utc::now();
                    let sql = claim_sql(c.dialect());
                    c.query(
                        &sql,
                        args![after(lease), stage.as_str(), now, now, limit as i64],
                    )
                    .await
                })
            }))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Job {
                    analysis_id: r.uuid(0)?,
                    attempts: r.int(1)? as u32,
                    product_sku: r.text(2)?,
                    image: ImageKey(r.text(3)?),
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
    ) -> Result<(), StoreError> {
        let (job, error) = (job.clone(), error.to_string());
        self.backend
            .write(op(move |c| {
                Box::pin(async move {
                    if job.attempts >= max_attempts {
                        complete(c, job.analysis_id, &gave_up(job.attempts, &error)).await?;
                    } else {
                        // Local jobs only: a part completed meanwhile may have a remote job.
                        requeue(c, &job, Stage::Local, after(retry_in), error).await?;
                    }
                    Ok(())
                })
            }))
            .await
    }

    async fn defer_job(
        &self,
        job: &Job,
        reason: &str,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let (job, reason) = (job.clone(), reason.to_string());
        self.backend
            .write_one(op(move |c| {
                Box::pin(
                    async move { requeue(c, &job, Stage::Remote, after(retry_in), reason).await },
                )
            }))
            .await
    }

    async fn reserve_remote(&self, claim: &WindowClaim) -> Result<bool, StoreError> {
        let claim = claim.clone();
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.backend
            .write(op(move |c| {
                Box::pin(async move {
                    // Inserts the window's first reservation, or adds to it only if the sum
                    // stays under both limits (no row returned otherwise). Concurrent upserts
                    // of one row are serialised by its lock, so the sum holds across replicas.
                    let rows = c
                        .query(
                            "INSERT INTO remote_windows (deployment, slot, tokens, requests)
                             VALUES (?, ?, ?, 1)
                             ON CONFLICT (deployment, slot) DO UPDATE SET
                                tokens = remote_windows.tokens + excluded.tokens,
                                requests = remote_windows.requests + 1
                             WHERE remote_windows.tokens + excluded.tokens <= ?
                               AND remote_windows.requests + 1 <= ?
                             RETURNING requests",
                            args![
                                claim.deployment.as_str(),
                                claim.slot,
                                int(claim.tokens.min(claim.max_tokens)),
                                int(claim.max_tokens),
                                int(claim.max_requests),
                            ],
                        )
                        .await?;
                    let Some(row) = rows.first() else {
                        return Ok(false);
                    };
                    if row.int(0)? == 1 {
                        // A window begins: the ones before the previous are done with.
                        c.execute(
                            "DELETE FROM remote_windows WHERE deployment = ? AND slot < ?",
                            args![claim.deployment.as_str(), claim.slot - 1],
                        )
                        .await?;
                    }
                    Ok(true)
                })
            }))
            .await
    }

    async fn settle_remote(
        &self,
        deployment: &str,
        slot: i64,
        tokens: i64,
        requests: i64,
    ) -> Result<(), StoreError> {
        self.change(
            "UPDATE remote_windows SET tokens = tokens + ?, requests = requests + ?
             WHERE deployment = ? AND slot = ?",
            args![tokens, requests, deployment, slot],
        )
        .await
        .map(|_| ())
    }

    async fn enrich(&self, id: Uuid, enrichment: Enrichment) -> Result<Analysis, StoreError> {
        self.backend
            .write(op(move |c| {
                Box::pin(async move { enrich(c, id, &enrichment).await })
            }))
            .await
    }

    async fn remote_spent(&self, analyzer: &str, since: DateTime<Utc>) -> Result<f64, StoreError> {
        let rows = self
            .select(
                "SELECT sum(cost_usd) FROM remote_costs WHERE analyzer = ? AND day >= ?",
                args![analyzer, day_key(since)],
            )
            .await?;
        Ok(rows
            .first()
            .map(|r| r.opt_real(0))
            .transpose()?
            .flatten()
            .unwrap_or(0.0))
    }

    async fn costs(&self, filter: &CostFilter) -> Result<Vec<CostRow>, StoreError> {
        let mut clauses = vec!["day >= ?", "day <= ?"];
        let mut args = args![day_key(filter.since), day_key(filter.until)];
        for (clause, value) in [
            ("facility = ?", &filter.facility),
            ("product_sku = ?", &filter.product_sku),
        ] {
            if let Some(v) = value {
                clauses.push(clause);
                args.push(v.clone().into());
            }
        }
        let sql = format!(
            "SELECT day, analyzer, facility, product_sku, parts, failures, disagreements,
                input_tokens, output_tokens, cost_usd
             FROM remote_costs WHERE {} ORDER BY day, analyzer, facility, product_sku",
            clauses.join(" AND ")
        );
        let rows = self
            .backend
            .read(op(move |c| {
                Box::pin(async move { c.query(&sql, args).await })
            }))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CostRow {
                    day: r.text(0)?,
                    analyzer: r.text(1)?,
                    facility: r.text(2)?,
                    product_sku: r.text(3)?,
                    parts: r.int(4)? as u64,
                    failures: r.int(5)? as u64,
                    disagreements: r.int(6)? as u64,
                    input_tokens: r.int(7)? as u64,
                    output_tokens: r.int(8)? as u64,
                    cost_usd: r.real(9)?,
                })
            })
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Analysis, StoreError> {
        let rows = self.select(GET, args![id]).await?;
        analysis(rows.first().ok_or(StoreError::NotFound)?)
    }

    async fn list(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Analysis>, Option<String>), StoreError> {
        let after = cursor.map(decode_cursor).transpose()?;
        // One row more than asked: whether there is a next page.
        let (sql, args) = list_query(filter, after, limit + 1);
        let rows = self
            .backend
            .read(op(move |c| {
                Box::pin(async move { c.query(&sql, args).await })
            }))
            .await?;
        let mut items = rows.iter().map(analysis).collect::<Result<Vec<_>, _>>()?;
        if items.len() <= limit {
            return Ok((items, None));
        }
        items.truncate(limit);
        let next = items.last().map(encode_cursor);
        Ok((items, next))
    }

    async fn image_key(&self, id: Uuid) -> Result<ImageKey, StoreError> {
        let rows = self
            .select("SELECT image_key FROM analyses WHERE id = ?", args![id])
            .await?;
        Ok(ImageKey(rows.first().ok_or(StoreError::NotFound)?.text(0)?))
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let (replica, lease) = (self.replica, self.outbox_lease);
        let rows = self
            .backend
            .write_one(op(move |c| {
                Box::pin(async move {
                    let now = Utc::now();
                    let sql = outbox_claim_sql(c.dialect());
                    c.query(
                        &sql,
                        args![replica, after(lease), now, replica, limit as i64],
                    )
                    .await
                })
            }))
            .await?;
        let mut items = rows
            .iter()
            .map(outbox_item)
            .collect::<Result<Vec<_>, _>>()?;
        items.sort_by_key(|i| i.id);
        Ok(items)
    }

    async fn outbox_done(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.backend
            .write_one(op(move |c| {
                Box::pin(async move {
                    let now = Utc::now();
                    let ids: Vec<Arg> = ids.into_iter().map(Arg::from).collect();
                    // Kept with the part: the outbox forgets its rows after the replay window.
                    let sql = format!(
                        "INSERT INTO published_events (event_id, analysis_id, payload, published_at)
                         SELECT id, analysis_id, payload, ? FROM outbox
                         WHERE id IN {} AND analysis_id IS NOT NULL AND published_at IS NULL
                         ON CONFLICT (event_id) DO NOTHING",
                        list(ids.len())
                    );
                    let mut args = args![now];
                    args.extend(ids.iter().cloned());
                    c.execute(&sql, args).await?;
                    let sql = format!(
                        "UPDATE outbox SET published_at = ?, leased_by = NULL, leased_until = NULL
                         WHERE id IN {}",
                        list(ids.len())
                    );
                    let mut args = args![now];
                    args.extend(ids);
                    c.execute(&sql, args).await?;
                    Ok(())
                })
            }))
            .await
    }

    async fn published_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = self
            .select(
                "SELECT id, kind, topic, payload FROM outbox
                 WHERE published_at >= ? AND published_at < ? ORDER BY id",
                args![since, until],
            )
            .await?;
        rows.iter().map(outbox_item).collect()
    }

    async fn published_for(&self, id: Uuid) -> Result<Vec<Published>, StoreError> {
        let rows = self
            .select(
                "SELECT event_id, payload, published_at FROM published_events
                 WHERE analysis_id = ? ORDER BY event_id",
                args![id],
            )
            .await?;
        let mut kept = Vec::with_capacity(rows.len());
        for r in &rows {
            kept.extend(published(r.int(0)?, &r.bytes(1)?, r.time(2)?));
        }
        Ok(kept)
    }

    async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.change("DELETE FROM outbox WHERE published_at < ?", args![before])
            .await
    }

    async fn prune_published_events(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        // The oldest first, from `published_events_at` (migration 0012).
        self.change(
            "DELETE FROM published_events WHERE event_id IN (
                 SELECT event_id FROM published_events WHERE published_at < ?
                 ORDER BY published_at LIMIT ?)",
            args![before, limit as i64],
        )
        .await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let rows = self
            .select("SELECT count(*), min(run_after) FROM jobs", Vec::new())
            .await?;
        let r = rows.first().ok_or(StoreError::NotFound)?;
        Ok(QueueStats {
            waiting: r.int(0)? as u64,
            oldest_due: r.opt_time(1)?.and_then(|t| (Utc::now() - t).to_std().ok()),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.backend.read(op(select_one)).await?;
        // The writer answers too (SQLite's writer thread; a PostgreSQL transaction).
        self.backend.write(op(select_one)).await
    }
}

/// A kept event as its result, or `None` (logged) for a payload this version no longer reads:
/// the part's page shows the others rather than failing.
fn published(event_id: i64, payload: &[u8], at: DateTime<Utc>) -> Option<Published> {
    match serde_json::from_slice(payload) {
        Ok(result) => Some(Published { result, at }),
        Err(e) => {
            tracing::warn!(event_id, error = %e, "a published event no longer decodes; not shown");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_published_event_that_no_longer_decodes_is_left_out() {
        let at = Utc::now();
        assert!(published(7, b"{\"not\": \"a result\"}", at).is_none());
        assert!(published(8, b"\xff", at).is_none());
    }

    #[test]
    fn defect_ids_follow_the_prototype_format() {
        let id = defect_id(Uuid::now_v7());
        assert!(id.starts_with("DEF-"));
        assert_eq!(id.len(), 4 + 16);
        assert!(id[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let t = parse_ts(&ts(Utc::now())).unwrap();
        let id = Uuid::now_v7();
        let raw =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{id}", ts(t)));
        assert_eq!(decode_cursor(&raw).unwrap(), (t, id));
        assert!(matches!(decode_cursor("!!!"), Err(StoreError::BadCursor)));
        let junk = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("x|y");
        assert!(matches!(decode_cursor(&junk), Err(StoreError::BadCursor)));
    }

    #[test]
    fn every_status_survives_its_column() {
        for s in [
            AnalysisStatus::Pending,
            AnalysisStatus::NotCalibrated,
            AnalysisStatus::Provisional,
            AnalysisStatus::Final,
            AnalysisStatus::Failed,
        ] {
            assert_eq!(parse_status(status_str(s)), s);
        }
    }

    #[test]
    fn the_listing_binds_one_argument_per_placeholder() {
        let filter = ListFilter {
            facility: Some("f".into()),
            defect_type: Some("rust".into()),
            defect_detected: Some(true),
            since: Some(Utc::now()),
            ..ListFilter::default()
        };
        let (sql, args) = list_query(&filter, Some((Utc::now(), Uuid::now_v7())), 51);
        assert_eq!(sql.matches('?').count(), args.len());
        assert_eq!(args.last(), Some(&Arg::Int(Some(51))));
        assert_eq!(values(2, 3), "(?, ?, ?), (?, ?, ?)");
    }

    #[test]
    fn a_backlog_gets_turns_one_slot_apart_at_any_depth() {
        let now = Utc::now();
        let slot = chrono::Duration::milliseconds(25);
        // Counted: one slot per job waiting, from now.
        assert_eq!(fair_turn(now, 0, None, 640, 480), now);
        assert_eq!(fair_turn(now, 3, Some(now), 640, 480), now + slot * 3);
        // Four megapixels: four slots per job.
        assert_eq!(fair_turn(now, 2, Some(now), 2000, 2000), now + slot * 8);
        // Past the count: one slot after the latest turn...
        let latest = now + slot * 500;
        assert_eq!(
            fair_turn(now, FAIR_COUNTED, Some(latest), 640, 480),
            latest + slot
        );
        // ...never sooner than the counted jobs' turn (a backlog drained meanwhile).
        assert_eq!(
            fair_turn(now, FAIR_COUNTED, Some(now), 640, 480),
            now + slot * FAIR_COUNTED as i32
        );
        // A turn past the calendar's end is its end, not a panic.
        assert_eq!(
            fair_turn(now, FAIR_COUNTED, Some(DateTime::<Utc>::MAX_UTC), 640, 480),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
