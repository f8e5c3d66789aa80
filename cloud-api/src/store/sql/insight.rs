//! What the dashboard reads, written once for both backends: the hourly statistics (kept by
//! [`tally`] in the transaction that completes or enriches each result, read without scanning
//! the results), reviews, and the live feed's numbering of committed results.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use uuid::Uuid;
use wiko_wire::{Analysis, AnalysisStatus, Defect, Feedback, FeedbackVerdict, StatsDimension};

use super::parts::{get, get_many, parse_status};
use super::{Arg, Backend, Conn, Dialect, SqlStore, args, op, values};
use crate::store::{CellCounts, Insight, Reviewed, StatsCell, StatsQuery, StatsSource, StoreError};

/// The key of a row of `result_stats` but its shard: (hour, facility, line, station, SKU,
/// device, NG, defect type or '').
type StatsKey = (
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    String,
    bool,
    String,
);

/// The capture hour a result is counted in.
pub(crate) fn hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// The UTC day (its midnight) an hour is rolled up into, and a cost is counted in.
pub(crate) fn day(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::days(1)).unwrap_or(t)
}

/// Where counts are read from: the hourly table, or its rollup by UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Hours,
    Days,
}

impl Table {
    /// The table and its time column.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Table::Hours => ("result_stats", "hour"),
            Table::Days => ("result_stats_daily", "day"),
        }
    }
}

/// What a query reads, in time order: the whole UTC days of its range from the daily rollup
/// when the query allows it ([`StatsQuery::days`]), the hours before and after them (and
/// every hour otherwise) from the hourly table.
fn spans(q: &StatsQuery) -> Vec<(Table, DateTime<Utc>, DateTime<Utc>)> {
    let first = match day(q.since) {
        d if d < q.since => d + TimeDelta::days(1),
        d => d,
    };
    let last = day(q.until);
    if !q.days || first >= last {
        return vec![(Table::Hours, q.since, q.until)];
    }
    let mut spans = Vec::with_capacity(3);
    if q.since < first {
        spans.push((Table::Hours, q.since, first));
    }
    spans.push((Table::Days, first, last));
    if last < q.until {
        spans.push((Table::Hours, last, q.until));
    }
    spans
}

/// What a result adds to the statistics: its row, and a row per defect type on it.
fn contributions(a: &Analysis) -> Vec<(StatsKey, [i64; 4])> {
    let judged = matches!(
        a.status,
        AnalysisStatus::Provisional | AnalysisStatus::Final
    );
    let (judged, ng) = (i64::from(judged), i64::from(a.defect_detected));
    let key = |defect_type: &str| {
        (
            hour(a.timestamp),
            a.facility.clone(),
            a.line.clone(),
            a.station.clone(),
            a.product_sku.clone(),
            a.device_id.clone().unwrap_or_default(),
            a.defect_detected,
            defect_type.to_string(),
        )
    };
    let mut rows = vec![(key(""), [1, judged, ng, a.defects.len() as i64])];
    rows.extend(
        by_type(&a.defects)
            .into_iter()
            .map(|(t, n)| (key(t), [1, judged, ng, n])),
    );
    rows
}

/// How many defects of each type, by type.
pub(super) fn by_type(defects: &[Defect]) -> BTreeMap<&str, i64> {
    let mut types: BTreeMap<&str, i64> = BTreeMap::new();
    for d in defects {
        *types.entry(d.kind.as_str()).or_default() += 1;
    }
    types
}

/// Counts results into (`+1`) or out of (`-1`) the hourly statistics and their daily rollup,
/// one statement each whose rows are in key order (two transactions never lock the same rows
/// in opposite orders; every writer writes the hours before the days).
pub(super) async fn tally(
    c: &mut dyn Conn,
    changes: &[(&Analysis, i64)],
) -> Result<(), StoreError> {
    let mut hours: BTreeMap<StatsKey, [i64; 4]> = BTreeMap::new();
    let mut days: BTreeMap<StatsKey, [i64; 4]> = BTreeMap::new();
    for (a, sign) in changes {
        for (key, counts) in contributions(a) {
            let mut daily = key.clone();
            daily.0 = day(key.0);
            for sum in [
                hours.entry(key).or_default(),
                days.entry(daily).or_default(),
            ] {
                for (s, n) in sum.iter_mut().zip(counts) {
                    *s += sign * n;
                }
            }
        }
    }
    let shard = rand::random_range(0..c.dialect().stats_shards());
    upsert(c, Table::Hours, hours, shard).await?;
    upsert(c, Table::Days, days, shard).await
}

/// Adds `delta` to `table`'s rows (in `shard`).
async fn upsert(
    c: &mut dyn Conn,
    table: Table,
    mut delta: BTreeMap<StatsKey, [i64; 4]>,
    shard: i64,
) -> Result<(), StoreError> {
    delta.retain(|_, counts| counts.iter().any(|&n| n != 0));
    if delta.is_empty() {
        return Ok(());
    }
    let (table, time) = table.names();
    let sql = format!(
        "INSERT INTO {table} ({time}, facility, line, station, product_sku, device_id,
            defect_detected, defect_type, shard, parts, judged, ng, defects)
         VALUES {}
         ON CONFLICT ({time}, facility, line, station, product_sku, device_id, defect_detected,
            defect_type, shard) DO UPDATE SET
            parts = {table}.parts + excluded.parts,
            judged = {table}.judged + excluded.judged,
            ng = {table}.ng + excluded.ng,
            defects = {table}.defects + excluded.defects",
        values(delta.len(), 13)
    );
    let mut args = Vec::with_capacity(delta.len() * 13);
    for ((hour, facility, line, station, sku, device, ng, defect_type), counts) in delta {
        args.extend(args![
            hour,
            facility,
            line,
            station,
            sku,
            device,
            ng,
            defect_type,
            shard
        ]);
        args.extend(counts.into_iter().map(Arg::from));
    }
    c.execute(&sql, args).await?;
    Ok(())
}

/// A dimension's column in `result_stats` (the scan's names are the same, but the device's,
/// which the scan reads as `coalesce(device_id, '')`, and the defect type's, `d.type`). The
/// shift has none: it is the hour's, folded by `crate::stats` from each cell's hour.
fn column(d: StatsDimension, source: StatsSource) -> Option<&'static str> {
    Some(match (d, source) {
        (StatsDimension::Facility, _) => "facility",
        (StatsDimension::Line, _) => "line",
        (StatsDimension::Station, _) => "station",
        (StatsDimension::Sku, _) => "product_sku",
        (StatsDimension::Device, StatsSource::Aggregates) => "device_id",
        (StatsDimension::Device, StatsSource::Results) => "coalesce(device_id, '')",
        (StatsDimension::DefectType, StatsSource::Aggregates) => "defect_type",
        (StatsDimension::DefectType, StatsSource::Results) => "d.type",
        (StatsDimension::Shift, _) => return None,
    })
}

/// The statement reading `q`'s cells from `source` (the aggregates: from `table`, from `since`
/// until before `until`): rows of (hour or day, the groups' values, parts, judged, ng,
/// defects), in time order. An aggregate row whose parts were all taken back (a result
/// retyped by a later completion) is no group: a scan of the results would not find it.
fn stats_query(
    q: &StatsQuery,
    source: StatsSource,
    dialect: Dialect,
    (table, since, until): (Table, DateTime<Utc>, DateTime<Utc>),
) -> (String, Vec<Arg>) {
    let by_type =
        q.group_by.contains(&StatsDimension::DefectType) || q.filter.defect_type.is_some();
    let f = &q.filter;
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Arg> = Vec::new();
    for (d, value) in [
        (StatsDimension::Facility, &f.facility),
        (StatsDimension::Line, &f.line),
        (StatsDimension::Station, &f.station),
        (StatsDimension::Sku, &f.product_sku),
        (StatsDimension::Device, &f.device_id),
        (StatsDimension::DefectType, &f.defect_type),
    ] {
        if let (Some(v), Some(column)) = (value, column(d, source)) {
            clauses.push(format!("{column} = ?"));
            args.push(v.clone().into());
        }
    }
    if let Some(flag) = f.defect_detected {
        clauses.push("defect_detected = ?".into());
        args.push(flag.into());
    }
    let groups: Vec<&str> = q
        .group_by
        .iter()
        .filter_map(|&d| column(d, source))
        .collect();
    let group_list: String = groups.iter().map(|g| format!(", {g}")).collect();
    let sql = match source {
        StatsSource::Aggregates => {
            let (table, time) = table.names();
            clauses.push(format!("{time} >= ? AND {time} < ?"));
            args.extend(args![since, until]);
            clauses.push(
                if by_type {
                    "defect_type <> ''"
                } else {
                    "defect_type = ''"
                }
                .into(),
            );
            format!(
                "SELECT {time}{group_list}, CAST(sum(parts) AS BIGINT), CAST(sum(judged) AS BIGINT),
                    CAST(sum(ng) AS BIGINT), CAST(sum(defects) AS BIGINT)
                 FROM {table} WHERE {} GROUP BY {time}{group_list}
                 HAVING sum(parts) <> 0 ORDER BY {time}",
                clauses.join(" AND ")
            )
        }
        StatsSource::Results => {
            clauses.push("status <> 'pending' AND timestamp >= ? AND timestamp < ?".into());
            args.extend(args![q.since, q.until]);
            let hour = dialect.hour_of("timestamp");
            let (from, defects) = if by_type {
                (
                    "analyses JOIN analysis_defects d ON d.analysis_id = analyses.id",
                    "d.found".to_string(),
                )
            } else {
                ("analyses", dialect.json_len("defects"))
            };
            format!(
                "SELECT {hour} AS h{group_list}, CAST(count(*) AS BIGINT),
                    CAST(sum(CASE WHEN status IN ('provisional', 'final') THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(sum(CASE WHEN defect_detected THEN 1 ELSE 0 END) AS BIGINT),
                    CAST(sum({defects}) AS BIGINT)
                 FROM {from} WHERE {} GROUP BY h{group_list} ORDER BY h",
                clauses.join(" AND ")
            )
        }
    };
    (sql, args)
}

#[async_trait]
impl<B: Backend> Insight for SqlStore<B> {
    async fn stats(
        &self,
        query: &StatsQuery,
        source: StatsSource,
    ) -> Result<Vec<StatsCell>, StoreError> {
        let q = query.clone();
        // Values of the dimensions with a column (not the shift, the hour's).
        let width = q
            .group_by
            .iter()
            .filter(|d| column(**d, source).is_some())
            .count();
        let rows = self
            .backend
            .read(op(move |c| {
                Box::pin(async move {
                    let spans = match source {
                        StatsSource::Aggregates => spans(&q),
                        StatsSource::Results => vec![(Table::Hours, q.since, q.until)],
                    };
                    let mut rows = Vec::new();
                    for span in spans {
                        let (sql, args) = stats_query(&q, source, c.dialect(), span);
                        rows.extend(c.query(&sql, args).await?);
                    }
                    Ok(rows)
                })
            }))
            .await?;
        rows.iter()
            .map(|r| {
                let count = |i: usize| r.int(i).map(|n| n.max(0) as u64);
                Ok(StatsCell {
                    hour: r.time(0)?,
                    group: (1..=width).map(|i| r.text(i)).collect::<Result<_, _>>()?,
                    counts: CellCounts {
                        parts: count(width + 1)?,
                        judged: count(width + 2)?,
                        ng: count(width + 3)?,
                        defects: count(width + 4)?,
                    },
                })
            })
            .collect()
    }

    async fn review(&self, id: Uuid, feedback: Feedback) -> Result<Reviewed, StoreError> {
        self.backend
            .write(op(move |c| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT status, defect_detected FROM analyses WHERE id = ?{}",
                        c.dialect().for_update()
                    );
                    let (status, ng) = match c.query(&sql, args![id]).await?.first() {
                        Some(r) => (parse_status(&r.text(0)?), r.bool(1)?),
                        None => return Err(StoreError::NotFound),
                    };
                    if !matches!(status, AnalysisStatus::Provisional | AnalysisStatus::Final) {
                        return Ok(Reviewed::NotJudged(status));
                    }
                    if !feedback.verdict.fits(ng) {
                        return Ok(Reviewed::Mismatch {
                            defect_detected: ng,
                        });
                    }
                    let Feedback {
                        verdict,
                        comment,
                        by,
                        at,
                    } = feedback;
                    c.execute(
                        "INSERT INTO feedback (analysis_id, verdict, comment, by_key, at)
                         VALUES (?, ?, ?, ?, ?)",
                        args![id, verdict.as_str(), comment.clone(), by.clone(), at],
                    )
                    .await?;
                    c.execute(
                        "UPDATE analyses SET feedback_verdict = ?, feedback_comment = ?,
                            feedback_by = ?, feedback_at = ?
                         WHERE id = ?",
                        args![verdict.as_str(), comment, by, at, id],
                    )
                    .await?;
                    Ok(Reviewed::Recorded(Box::new(get(c, id).await?)))
                })
            }))
            .await
    }

    async fn capability(
        &self,
        sku: &str,
        model_version: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(Option<String>, [u64; 5])>, StoreError> {
        let mut clauses = vec!["product_sku = ?", "feedback_verdict IS NOT NULL"];
        let mut args = args![sku];
        if let Some(v) = model_version {
            clauses.push("model_version = ?");
            args.push(v.into());
        }
        if let Some(t) = since {
            clauses.push("timestamp >= ?");
            args.push(t.into());
        }
        let sql = format!(
            "SELECT model_version, defect_detected, feedback_verdict, CAST(count(*) AS BIGINT)
             FROM analyses WHERE {} GROUP BY model_version, defect_detected, feedback_verdict",
            clauses.join(" AND ")
        );
        let rows = self
            .backend
            .read(op(move |c| {
                Box::pin(async move { c.query(&sql, args).await })
            }))
            .await?;
        // Versions in their order (`v2` before `v10`).
        let mut by_version: BTreeMap<(usize, Option<String>), [u64; 5]> = BTreeMap::new();
        for r in &rows {
            let version = r.opt_text(0)?;
            let n = r.int(3)?.max(0) as u64;
            let slot = match (r.bool(1)?, FeedbackVerdict::parse(&r.text(2)?)) {
                (true, Some(FeedbackVerdict::Confirmed)) => 0,
                (true, Some(FeedbackVerdict::FalseNg)) => 1,
                (false, Some(FeedbackVerdict::Confirmed)) => 2,
                (false, Some(FeedbackVerdict::FalseOk)) => 3,
                _ => 4,
            };
            let order = version.as_ref().map_or(0, String::len);
            by_version.entry((order, version)).or_default()[slot] += n;
        }
        Ok(by_version
            .into_iter()
            .map(|((_, version), counts)| (version, counts))
            .collect())
    }

    async fn result_events_after(
        &self,
        seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Uuid, bool)>, StoreError> {
        let rows = self
            .select(
                "SELECT id, analysis_id, defect_detected FROM result_events
                 WHERE id > ? ORDER BY id LIMIT ?",
                args![seq, limit as i64],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.int(0)?, r.uuid(1)?, r.bool(2)?)))
            .collect()
    }

    async fn last_result_event(&self) -> Result<i64, StoreError> {
        let rows = self
            .select("SELECT max(id) FROM result_events", Vec::new())
            .await?;
        Ok(rows
            .first()
            .map(|r| r.opt_int(0))
            .transpose()?
            .flatten()
            .unwrap_or(0))
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Analysis>, StoreError> {
        let ids = ids.to_vec();
        self.backend
            .read(op(move |c| {
                Box::pin(async move { get_many(c, &ids).await })
            }))
            .await
    }

    async fn prune_result_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.change("DELETE FROM result_events WHERE at < ?", args![before])
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::ListFilter;

    #[test]
    fn a_result_counts_once_and_once_per_defect_type() {
        let mut a: Analysis = serde_json::from_value(serde_json::json!({
            "id": "0192d3a4-0000-7000-8000-000000000001", "defect_id": "DEF-8000000000000001",
            "timestamp": "2026-12-06T10:42:07Z", "facility": "f", "line": "l",
            "station": "s", "product_sku": "k", "part_id": null, "lot": null,
            "device_id": null, "frame_id": null, "seq": null, "status": "final",
            "defect_detected": true, "defects": [], "score": 2.0,
            "score_threshold": 1.0, "confidence": 0.9, "recommendation": "reject",
            "analyzer": "golden", "analyzer_version": "0", "model_version": "v1",
            "latency_ms": 3.0, "image_width": 640, "image_height": 480, "image_url": "",
            "created_at": "2026-12-06T10:00:00Z", "analyzed_at": null
        }))
        .unwrap();
        let defect = |kind| wiko_wire::Defect {
            kind,
            severity: "high".into(),
            confidence: 1.0,
            bbox: [0, 0, 1, 1],
            description: String::new(),
        };
        use wiko_wire::DefectType::{Chip, Rust};
        a.defects = vec![defect(Rust), defect(Chip), defect(Rust)];
        let rows = contributions(&a);
        let summary: Vec<(&str, [i64; 4])> = rows.iter().map(|(k, c)| (k.7.as_str(), *c)).collect();
        assert_eq!(
            summary,
            [
                ("", [1, 1, 1, 3]),
                ("chip", [1, 1, 1, 1]),
                ("rust", [1, 1, 1, 2])
            ]
        );
        assert_eq!(rows[0].0.0.to_rfc3339(), "2026-12-06T10:00:00+00:00");
        assert_eq!(rows[0].0.5, "", "no device is ''");
    }

    #[test]
    fn the_statistics_bind_one_argument_per_placeholder() {
        let q = StatsQuery {
            since: Utc::now(),
            until: Utc::now(),
            filter: ListFilter {
                facility: Some("f".into()),
                defect_type: Some("rust".into()),
                defect_detected: Some(true),
                ..ListFilter::default()
            },
            group_by: vec![StatsDimension::Station, StatsDimension::DefectType],
            days: true,
        };
        for source in [StatsSource::Aggregates, StatsSource::Results] {
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                for table in [Table::Hours, Table::Days] {
                    let span = (table, q.since, q.until);
                    let (sql, args) = stats_query(&q, source, dialect, span);
                    assert_eq!(sql.matches('?').count(), args.len(), "{sql}");
                }
            }
        }
    }

    #[test]
    fn whole_utc_days_are_read_from_the_rollup_and_the_hours_around_them_by_the_hour() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let q = |since: &str, until: &str, days: bool| StatsQuery {
            since: t(since),
            until: t(until),
            filter: ListFilter::default(),
            group_by: Vec::new(),
            days,
        };
        let shown = |q: &StatsQuery| -> Vec<(Table, String, String)> {
            spans(q)
                .into_iter()
                .map(|(table, a, b)| (table, a.to_rfc3339(), b.to_rfc3339()))
                .collect()
        };
        let s = |v: &str| v.to_string();
        // 7 plant days at UTC+8: from 16:00 UTC to 16:00 UTC.
        assert_eq!(
            shown(&q("2026-11-30T16:00:00Z", "2026-12-07T16:00:00Z", true)),
            [
                (
                    Table::Hours,
                    s("2026-11-30T16:00:00+00:00"),
                    s("2026-12-01T00:00:00+00:00")
                ),
                (
                    Table::Days,
                    s("2026-12-01T00:00:00+00:00"),
                    s("2026-12-07T00:00:00+00:00")
                ),
                (
                    Table::Hours,
                    s("2026-12-07T00:00:00+00:00"),
                    s("2026-12-07T16:00:00+00:00")
                ),
            ]
        );
        // Whole days only.
        assert_eq!(
            shown(&q("2026-12-01T00:00:00Z", "2026-12-03T00:00:00Z", true)),
            [(
                Table::Days,
                s("2026-12-01T00:00:00+00:00"),
                s("2026-12-03T00:00:00+00:00")
            )]
        );
        // No whole day inside, or hours asked for: every hour.
        for (since, until, days) in [
            ("2026-12-01T05:00:00Z", "2026-12-02T04:00:00Z", true),
            ("2026-11-30T16:00:00Z", "2026-12-07T16:00:00Z", false),
        ] {
            assert_eq!(
                shown(&q(since, until, days)),
                [(Table::Hours, t(since).to_rfc3339(), t(until).to_rfc3339())]
            );
        }
    }
}
