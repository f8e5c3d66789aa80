//! Production statistics and the results list as results grow:
//! `cargo bench -p wiko-cloud --bench stats [-- --results N --through-store S --lists-only]`
//!
//! Seeds N completed results (30 days of capture times, 3 facilities × 4 stations × 3 SKUs,
//! an eighth NG with one defect type, an eighth with two) into the embedded store and, when
//! `WIKOTEST_DATABASE_URL` names a PostgreSQL database, into a fresh schema there. S of them go
//! through the store's own create and complete (timed: results per second, 64 at once); the
//! rest are copies of those rows made in SQL (new ids, capture times shifted within the 30
//! days, the same defects), and the aggregates are rebuilt from the results with the
//! migrations' own statements, first checked to give exactly what the store kept for the S.
//!
//! Then times what the dashboard asks: the Overview's four statistics requests over today, 7
//! days and 30 plant days (UTC+8, shifts at 06:00, 14:00 and 22:00), each answered from the
//! aggregates (what `GET /api/v1/stats` does) and, as the baseline in the same run, from a scan
//! of the results (the same figures; "same answer" compares the two), and the first page of
//! the results list (`GET /api/v1/analyses`, 50 rows) with and without filters (only these with
//! `--lists-only`). p50 and p95. Last, the first page of one defect type by its statement before
//! schema 12 (against a copy of the rows it read then) and now, in turn on the same data.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveTime, TimeDelta, Utc};
use clap::Parser;
use sqlx::{Connection, Row};
use uuid::Uuid;
use wiko_cloud::stats::{StatsRequest, stats};
use wiko_cloud::store::{
    Call, Image, Judgement, ListFilter, Origin, Outcome, PgSettings, StatsSource, Storage, Store,
    open_postgres, open_sqlite,
};
use wiko_wire::{AnalysisStatus, Defect, DefectType, StatsBucket, StatsDimension};

mod store_rig;
use store_rig::NoImages;

#[derive(Parser)]
struct Args {
    /// Completed results per store.
    #[arg(long, default_value_t = 1_000_000)]
    results: usize,
    /// Of which created and completed through the store; the rest are copies of these made
    /// in SQL (a whole number of copies each).
    #[arg(long, default_value_t = 10_000)]
    through_store: usize,
    /// Requests timed per figure (answered from the aggregates, and lists).
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Requests timed per scan of the results (the baseline).
    #[arg(long, default_value_t = 3)]
    scans: usize,
    /// Time only the results list (its first pages, and the defect type's statement before
    /// schema 12 and now), not the Overview's statistics.
    #[arg(long)]
    lists_only: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

const DAYS: i64 = 30;
const SECS: f64 = (DAYS * 86_400) as f64;

fn defect(kind: DefectType) -> Defect {
    Defect {
        kind,
        severity: "high".into(),
        confidence: 0.9,
        bbox: [1, 2, 3, 4],
        description: String::new(),
    }
}

/// The `i`th of `n` results spread over the 30 days before `now`: its part and its verdict.
fn result(i: usize, n: usize, now: DateTime<Utc>) -> (Origin, Image, Outcome) {
    let at = now - TimeDelta::seconds((i as i64 * DAYS * 86_400) / n as i64);
    let origin = Origin::Call(Call {
        facility: ["yangjiang", "shenzhen", "solingen"][i % 3].into(),
        line: "l1".into(),
        station: ["grinding", "polish", "etch", "pack"][i / 3 % 4].into(),
        product_sku: ["WK-KN-200", "WK-KN-150", "WK-SC-80"][i / 12 % 3].into(),
        part_id: None,
        received_at: at,
    });
    let image = Image {
        bytes: Bytes::new(),
        blake3: format!("{i:064}"),
        width: 640,
        height: 480,
    };
    let kinds = [
        DefectType::Scratch,
        DefectType::Chip,
        DefectType::Rust,
        DefectType::Burr,
    ];
    let defects = match i % 8 {
        0 => vec![defect(kinds[i / 8 % 4])],
        1 => vec![defect(kinds[i / 8 % 4]), defect(DefectType::Dent)],
        _ => Vec::new(),
    };
    let ng = !defects.is_empty();
    let outcome = Outcome {
        judgement: Judgement {
            status: AnalysisStatus::Final,
            defect_detected: ng,
            defects,
            score: Some(1.0),
            score_threshold: Some(1.0),
            confidence: Some(0.9),
            recommendation: String::new(),
            model_version: Some("v1".into()),
        },
        analyzer: "golden".into(),
        analyzer_version: "bench".into(),
        latency_ms: 1.0,
    };
    (origin, image, outcome)
}

/// Seeds `n` completed results through the store, 64 at once; results per second.
async fn seed(store: &Arc<dyn Store>, n: usize, now: DateTime<Utc>) -> f64 {
    let storage = Storage {
        records: store.clone(),
        images: Arc::new(NoImages),
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (storage, next) = (storage.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (origin, image, outcome) = result(i, n, now);
                    let (_, id) = storage
                        .put_part(origin, image, Duration::from_secs(86_400))
                        .await
                        .expect("create");
                    storage
                        .records
                        .complete(id, outcome)
                        .await
                        .expect("complete");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("seeder");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The database under a store, for the bulk statements the store has no call for.
enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    /// Runs `sql` (one or more statements) in one session.
    async fn run(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => {
                let (path, sql) = (path.clone(), sql.to_string());
                tokio::task::spawn_blocking(move || {
                    let c = rusqlite::Connection::open(path).expect("open");
                    c.busy_timeout(Duration::from_secs(60))
                        .expect("busy timeout");
                    c.execute_batch(&sql).expect("bulk statements");
                })
                .await
                .expect("sqlite task");
            }
            Db::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql)
                    .execute(&mut c)
                    .await
                    .expect("bulk statements");
            }
        }
    }

    /// The first column of `sql`'s rows, as text.
    async fn texts(&self, sql: &str) -> Vec<String> {
        match self {
            Db::Sqlite(path) => {
                let (path, sql) = (path.clone(), sql.to_string());
                tokio::task::spawn_blocking(move || {
                    let c = rusqlite::Connection::open(path).expect("open");
                    let mut q = c.prepare(&sql).expect("prepare");
                    q.query_map([], |r| r.get::<_, String>(0))
                        .expect("query")
                        .collect::<Result<Vec<_>, _>>()
                        .expect("rows")
                })
                .await
                .expect("sqlite task")
            }
            Db::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query(sql)
                    .fetch_all(&mut c)
                    .await
                    .expect("query")
                    .iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect()
            }
        }
    }

    /// The migrations' statements that count the results into the aggregates (the hourly
    /// table, then its daily rollup): what a store upgraded over existing results runs.
    fn rebuild_statements(&self) -> String {
        let migrations: [&str; 2] = match self {
            Db::Sqlite(_) => [
                include_str!("../migrations/sqlite/0006_dashboard_data.sql"),
                include_str!("../migrations/sqlite/0010_daily_stats_published_events.sql"),
            ],
            Db::Postgres(_) => [
                include_str!("../migrations/postgres/0006_dashboard_data.sql"),
                include_str!("../migrations/postgres/0010_daily_stats_published_events.sql"),
            ],
        };
        let mut sql = String::from("DELETE FROM result_stats; DELETE FROM result_stats_daily;\n");
        for m in migrations {
            let code: String = m
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for statement in code.split(';') {
                if statement
                    .trim_start()
                    .starts_with("INSERT INTO result_stats")
                {
                    // Schema 12 keeps one row per defect type, with its count (`found`),
                    // where 0006 counted one row per defect.
                    sql.push_str(&statement.replace(
                        "count(*) AS n FROM analysis_defects",
                        "sum(found) AS n FROM analysis_defects",
                    ));
                    sql.push_str(";\n");
                }
            }
        }
        sql
    }

    /// Runs each of `statements` `n` times in turn (one connection each, as the store's
    /// readers), reading every row; the times of each, in ms.
    async fn time_statements(&self, statements: &[&str], n: usize) -> Vec<Vec<f64>> {
        let statements: Vec<String> = statements.iter().map(|s| s.to_string()).collect();
        let mut ms = vec![Vec::with_capacity(n); statements.len()];
        match self {
            Db::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let connections: Vec<rusqlite::Connection> = statements
                        .iter()
                        .map(|_| rusqlite::Connection::open(&path).expect("open"))
                        .collect();
                    for _ in 0..n {
                        for (i, (c, sql)) in connections.iter().zip(&statements).enumerate() {
                            let started = Instant::now();
                            let mut q = c.prepare_cached(sql).expect("prepare");
                            let mut rows = q.query([]).expect("query");
                            while rows.next().expect("row").is_some() {}
                            ms[i].push(started.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    ms
                })
                .await
                .expect("sqlite task")
            }
            Db::Postgres(url) => {
                let mut connections = Vec::new();
                for _ in &statements {
                    connections.push(sqlx::PgConnection::connect(url).await.expect("connect"));
                }
                for _ in 0..n {
                    for (i, (c, sql)) in connections.iter_mut().zip(&statements).enumerate() {
                        let started = Instant::now();
                        sqlx::query(sql).fetch_all(&mut *c).await.expect("query");
                        ms[i].push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                ms
            }
        }
    }

    /// Every aggregate row (summed over shards), as text, in key order.
    async fn aggregates(&self) -> Vec<String> {
        let mut rows = Vec::new();
        for (table, time) in [("result_stats", "hour"), ("result_stats_daily", "day")] {
            let key = format!(
                "{time}, facility, line, station, product_sku, device_id, defect_detected, defect_type"
            );
            let text = key.replace(", ", " || '|' || ");
            rows.extend(
                self.texts(&format!(
                    "SELECT {text} || '|' || sum(parts) || '|' || sum(judged) || '|' || sum(ng)
                        || '|' || sum(defects)
                     FROM {table} GROUP BY {key} ORDER BY {key}"
                ))
                .await,
            );
        }
        rows
    }

    /// Adds `copies` copies of every completed result (new id, capture time `step_secs` ×
    /// copy number earlier, the same defects) in one transaction.
    async fn copy_results(&self, copies: usize, step_secs: f64) {
        let (columns_sql, make_copies, time) = match self {
            Db::Sqlite(_) => (
                "SELECT name FROM pragma_table_info('analyses') ORDER BY cid",
                format!(
                    "CREATE TEMP TABLE r AS
                     WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < {copies})
                     SELECT lower(hex(randomblob(16))) AS h, a.id AS old_id, k.n AS n
                     FROM analyses a CROSS JOIN k WHERE a.status <> 'pending';
                     CREATE TEMP TABLE copies AS
                     SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4)
                            || '-' || substr(h, 17, 4) || '-' || substr(h, 21) AS new_id, old_id, n
                     FROM r;"
                ),
                format!(
                    "strftime('%Y-%m-%dT%H:%M:%f', a.timestamp, printf('-%.3f seconds', c.n * {step_secs})) || '000Z'"
                ),
            ),
            Db::Postgres(_) => (
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'analyses'
                 ORDER BY ordinal_position",
                format!(
                    "CREATE TEMP TABLE copies AS
                     SELECT gen_random_uuid() AS new_id, a.id AS old_id, k.n AS n
                     FROM analyses a CROSS JOIN generate_series(1, {copies}) AS k(n)
                     WHERE a.status <> 'pending';"
                ),
                format!("a.timestamp - c.n * interval '{} microseconds'", (step_secs * 1e6).round()),
            ),
        };
        let defect_time = time.replace("a.timestamp", "d.captured_at");
        let columns = self.texts(columns_sql).await;
        let values: Vec<String> = columns
            .iter()
            .map(|column| match column.as_str() {
                "id" => "c.new_id".to_string(),
                "defect_id" => {
                    "'DEF-' || upper(substr(replace(CAST(c.new_id AS TEXT), '-', ''), 17))".into()
                }
                "timestamp" => time.clone(),
                other => format!("a.{other}"),
            })
            .collect();
        self.run(&format!(
            "BEGIN;
             {make_copies}
             INSERT INTO analyses ({}) SELECT {} FROM copies c JOIN analyses a ON a.id = c.old_id;
             INSERT INTO analysis_defects (analysis_id, type, captured_at, found)
             SELECT c.new_id, d.type, {defect_time}, d.found
             FROM copies c JOIN analysis_defects d ON d.analysis_id = c.old_id;
             DROP TABLE copies;
             COMMIT;",
            columns.join(", "),
            values.join(", ")
        ))
        .await;
    }
}

/// Seeds the store: the sample through the store, the rest copied in SQL, the aggregates
/// rebuilt (checked against the store's own on the sample first). Prints what it did.
async fn fill(store: &Arc<dyn Store>, db: &Db, args: &Args) -> usize {
    let sample = args.through_store.min(args.results).max(1);
    let copies = args.results / sample - 1;
    let now = Utc::now();
    let rate = seed(store, sample, now).await;
    println!(
        "{sample} results created and completed through the store at {rate:.0}/s (64 at once)"
    );
    let kept = db.aggregates().await;
    db.run(&db.rebuild_statements()).await;
    let rebuilt = db.aggregates().await;
    assert_eq!(
        kept, rebuilt,
        "the migrations' rebuild gives what the store kept"
    );
    println!(
        "the migrations' rebuild of the aggregates gives the store's own ({} rows): yes",
        kept.len()
    );
    let started = Instant::now();
    db.copy_results(copies, SECS / args.results as f64).await;
    db.run(&db.rebuild_statements()).await;
    if let Db::Postgres(_) = db {
        // As autovacuum would have by then.
        db.run("ANALYZE").await;
    }
    let total = sample * (copies + 1);
    println!(
        "{} copies of each made in SQL and the aggregates rebuilt in {:.0} s: {total} results",
        copies,
        started.elapsed().as_secs_f64()
    );
    total
}

/// The Overview's requests over `days` plant days ending today (UTC+8, the plant's shifts):
/// per line and station, the trend (by hour over up to two days, else by day), the Pareto
/// of defect types and the shifts; as `dashboard::overview` asks them.
fn overview(days: i64, now: DateTime<Utc>) -> Vec<(String, StatsRequest)> {
    let offset = TimeDelta::minutes(480);
    let local = now.naive_utc() + offset;
    let midnight = local.date().and_time(NaiveTime::MIN);
    let since = (midnight - TimeDelta::days(days - 1) - offset).and_utc();
    let shift = |h| NaiveTime::from_hms_opt(h, 0, 0).expect("a time");
    let request = |bucket, group_by| StatsRequest {
        since,
        until: now,
        bucket,
        utc_offset_minutes: 480,
        filter: ListFilter::default(),
        group_by,
        shift_starts: vec![shift(6), shift(14), shift(22)],
    };
    let trend = if now - since > TimeDelta::days(2) {
        StatsBucket::Day
    } else {
        StatsBucket::Hour
    };
    let range = if days == 1 {
        "today".to_string()
    } else {
        format!("{days} days")
    };
    use StatsDimension as D;
    vec![
        (
            format!("{range}: per line and station"),
            request(StatsBucket::All, vec![D::Line, D::Station]),
        ),
        (format!("{range}: trend"), request(trend, Vec::new())),
        (
            format!("{range}: Pareto of defect types"),
            request(StatsBucket::All, vec![D::DefectType]),
        ),
        (
            format!("{range}: per shift"),
            request(StatsBucket::All, vec![D::Shift]),
        ),
    ]
}

/// What is timed: the Overview's requests, and the API's 30 days by day per defect type (the
/// slowest request of the 100,000-result run).
fn requests() -> Vec<(String, StatsRequest)> {
    let now = Utc::now();
    let mut all = Vec::new();
    for days in [1, 7, 30] {
        all.extend(overview(days, now));
    }
    all.push((
        "API: 30 days by day, per defect type".into(),
        StatsRequest {
            since: now - TimeDelta::days(30),
            until: now,
            bucket: StatsBucket::Day,
            utc_offset_minutes: 480,
            filter: ListFilter::default(),
            group_by: vec![StatsDimension::DefectType],
            shift_starts: Vec::new(),
        },
    ));
    all
}

/// p50 and p95 of `ms`.
fn quantiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.95))
}

/// p50 and p95 of `n` answers, in ms, and the last answer.
async fn time(
    store: &dyn Store,
    r: &StatsRequest,
    source: StatsSource,
    n: usize,
) -> ((f64, f64), wiko_wire::Stats) {
    let mut ms = Vec::with_capacity(n);
    let mut last = None;
    for _ in 0..n.max(1) {
        let started = Instant::now();
        let answer = stats(store, r, source)
            .await
            .expect("store")
            .expect("request");
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        last = Some(answer);
    }
    (quantiles(ms), last.expect("one answer at least"))
}

async fn report(name: &str, store: &Arc<dyn Store>, db: &Db, args: &Args) {
    println!("## {name}");
    println!();
    let total = fill(store, db, args).await;
    println!();
    if !args.lists_only {
        overview_figures(store, args, total).await;
    }
    list_figures(store, args, total).await;
    defect_type_before_and_after(db, args, total).await;
}

/// The Overview's requests from the aggregates and, the baseline, from a scan.
async fn overview_figures(store: &Arc<dyn Store>, args: &Args, total: usize) {
    println!(
        "| {total} results: request | aggregates p50 / p95 ms | scan p50 / p95 ms | same answer |"
    );
    println!("|---|---|---|---|");
    for (what, r) in requests() {
        let ((a50, a95), kept) =
            time(store.as_ref(), &r, StatsSource::Aggregates, args.requests).await;
        let ((s50, s95), scanned) =
            time(store.as_ref(), &r, StatsSource::Results, args.scans).await;
        let same = if kept == scanned { "yes" } else { "NO" };
        println!("| {what} | {a50:.1} / {a95:.1} | {s50:.1} / {s95:.1} | {same} |");
    }
    println!();
}

/// The first page of the results list (what the Results page reads first), by filter.
async fn list_figures(store: &Arc<dyn Store>, args: &Args, total: usize) {
    println!("| {total} results: first page of the list (50 rows) | p50 / p95 ms |");
    println!("|---|---|");
    let lists = [
        ("every part", ListFilter::default()),
        (
            "NG parts",
            ListFilter {
                defect_detected: Some(true),
                ..ListFilter::default()
            },
        ),
        (
            "one station",
            ListFilter {
                facility: Some("yangjiang".into()),
                line: Some("l1".into()),
                station: Some("polish".into()),
                ..ListFilter::default()
            },
        ),
        (
            "one defect type",
            ListFilter {
                defect_type: Some("rust".into()),
                ..ListFilter::default()
            },
        ),
    ];
    for (what, filter) in lists {
        let mut ms = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let started = Instant::now();
            let (page, _) = store.list(&filter, None, 50).await.expect("list");
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(page.len(), 50, "{what}: a full first page");
        }
        let (p50, p95) = quantiles(ms);
        println!("| {what} | {p50:.1} / {p95:.1} |");
    }
    println!();
}

/// The first page of one defect type (51 rows, as the store asks for 50), by the statement
/// before schema 12 (every result newest first, each looked up in one row per defect, indexed
/// by type and result) against a copy of those rows, and by the statement now (the newest
/// rows of the type's index, their results looked up): in turn, on the same data.
async fn defect_type_before_and_after(db: &Db, args: &Args, total: usize) {
    db.run(
        "CREATE TABLE defects_before AS SELECT analysis_id, type FROM analysis_defects;
         CREATE INDEX defects_before_type ON defects_before (type, analysis_id);
         CREATE INDEX defects_before_analysis ON defects_before (analysis_id);",
    )
    .await;
    if let Db::Postgres(_) = db {
        db.run("ANALYZE defects_before").await;
    }
    let before = "SELECT analyses.* FROM analyses
        WHERE EXISTS (SELECT 1 FROM defects_before d
                      WHERE d.analysis_id = analyses.id AND d.type = 'rust')
        ORDER BY timestamp DESC, id DESC LIMIT 51";
    let now =
        "SELECT analyses.* FROM analysis_defects d JOIN analyses ON analyses.id = d.analysis_id
        WHERE d.type = 'rust' ORDER BY d.captured_at DESC, d.analysis_id DESC LIMIT 51";
    let ms = db.time_statements(&[before, now], args.requests).await;
    println!(
        "| {total} results: one defect type, first page, statement | p50 / p95 ms (in turn, {} each) |",
        args.requests
    );
    println!("|---|---|");
    for (what, ms) in ["before schema 12", "schema 12"].iter().zip(ms) {
        let (p50, p95) = quantiles(ms);
        println!("| {what} | {p50:.1} / {p95:.1} |");
    }
    println!();
}

async fn pg_schema(base: &str) -> PgSettings {
    let schema = format!("wiko_bench_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(base).await.expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    PgSettings {
        url: format!("{base}{sep}options[search_path]={schema}"),
        max_connections: 16,
        acquire_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(600),
        outbox_lease: Duration::from_secs(30),
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wiko.db");
        let sqlite = open_sqlite(&path).expect("sqlite");
        report("embedded SQLite", &sqlite, &Db::Sqlite(path), &args).await;
        let Ok(base) = std::env::var("WIKOTEST_DATABASE_URL") else {
            eprintln!("WIKOTEST_DATABASE_URL is not set: PostgreSQL figures skipped");
            return;
        };
        let settings = pg_schema(&base).await;
        let pg = open_postgres(&settings, true).await.expect("pg");
        report(
            "PostgreSQL",
            &pg,
            &Db::Postgres(settings.url.clone()),
            &args,
        )
        .await;
    });
}
