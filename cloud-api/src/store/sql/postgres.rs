//! The production backend: PostgreSQL through `sqlx`, shared by every replica.
//!
//! - Migrations are embedded in the binary (`cloud-api/migrations/postgres/`) and applied by
//!   `wiko-cloud migrate` or on start; an applied migration is never edited.
//! - Each write is one transaction; an answer means "committed".
//! - Lost connections, pool timeouts and statement timeouts are [`StoreError::Unavailable`]
//!   (HTTP 503 with `Retry-After`): the agent retries and nothing half-written is acknowledged.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::value::RawValue;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Column, PgConnection, Row as _, TypeInfo};
use uuid::Uuid;

use super::{Arg, Backend, Conn, Dialect, Row, TxOp, Value};
use crate::store::StoreError;

/// The migrations, in order. Append; never edit one that was released.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "outbox events",
        include_str!("../../../migrations/postgres/0002_outbox_events.sql"),
    ),
    (
        3,
        "keys, fair queueing, replay",
        include_str!("../../../migrations/postgres/0003_keys_fairness_replay.sql"),
    ),
    (
        4,
        "fleet",
        include_str!("../../../migrations/postgres/0004_fleet.sql"),
    ),
    (
        5,
        "remote analysis",
        include_str!("../../../migrations/postgres/0005_remote_analysis.sql"),
    ),
    (
        6,
        "dashboard data",
        include_str!("../../../migrations/postgres/0006_dashboard_data.sql"),
    ),
    (
        7,
        "indexes for fair turns and defects",
        include_str!("../../../migrations/postgres/0007_indexes_for_turns_and_defects.sql"),
    ),
    (
        8,
        "remote deployment windows",
        include_str!("../../../migrations/postgres/0008_remote_windows.sql"),
    ),
    (
        9,
        "jobs write fewer indexes",
        include_str!("../../../migrations/postgres/0009_jobs_write_fewer_indexes.sql"),
    ),
    (
        10,
        "daily statistics, published events",
        include_str!("../../../migrations/postgres/0010_daily_stats_published_events.sql"),
    ),
    (
        11,
        "partial indexes",
        include_str!("../../../migrations/postgres/0011_partial_indexes.sql"),
    ),
    (
        12,
        "defect listing, event retention",
        include_str!("../../../migrations/postgres/0012_defect_listing_event_retention.sql"),
    ),
];

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
    /// How long a replica holds outbox events it is publishing before another may take them.
    pub outbox_lease: Duration,
}

pub(super) struct Postgres {
    pool: PgPool,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
            _ => None,
        };
        let transient = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Connection exceptions, shutdown, too many connections, statement timeout,
            // serialization failure and deadlock: all worth a retry.
            _ => code.as_deref().is_some_and(|c| {
                c.starts_with("08")
                    || matches!(
                        c,
                        "57P01" | "57P02" | "57P03" | "53300" | "57014" | "40001" | "40P01"
                    )
            }),
        };
        if code.as_deref() == Some("23505") {
            StoreError::Concurrent(e.to_string())
        } else if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

impl Postgres {
    /// Connects lazily: the pool opens connections when first used.
    pub(super) fn connect(settings: &PgSettings) -> Result<Postgres, StoreError> {
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
        Ok(Postgres { pool })
    }

    /// Applies the migrations not applied yet (several replicas may call this at once: sqlx
    /// takes an advisory lock). Refuses a database whose applied migrations differ from ours.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|e| StoreError::Database(format!("migrations: {e}")))?;
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(format!("migrating: {e}")))
    }
}

/// `?` placeholders as PostgreSQL's `$1`, `$2`, … (the rules' statements hold no `?` in a
/// literal).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

fn bind(
    query: Query<'_, sqlx::Postgres, PgArguments>,
    arg: Arg,
) -> Result<Query<'_, sqlx::Postgres, PgArguments>, StoreError> {
    Ok(match arg {
        Arg::Text(v) => query.bind(v),
        Arg::Int(v) => query.bind(v),
        Arg::Real(v) => query.bind(v),
        Arg::Bool(v) => query.bind(v),
        Arg::Bytes(v) => query.bind(v),
        Arg::Uuid(v) => query.bind(v),
        Arg::Time(v) => query.bind(v),
        Arg::Json(text) => {
            let raw = RawValue::from_string(text)
                .map_err(|e| StoreError::Database(format!("JSON parameter: {e}")))?;
            query.bind(Json(raw))
        }
    })
}

fn value(row: &PgRow, i: usize) -> Result<Value, StoreError> {
    let type_name = row.column(i).type_info().name().to_string();
    let v = match type_name.as_str() {
        "BOOL" => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
        "INT2" => row
            .try_get::<Option<i16>, _>(i)?
            .map(|n| Value::Int(n.into())),
        "INT4" => row
            .try_get::<Option<i32>, _>(i)?
            .map(|n| Value::Int(n.into())),
        "INT8" => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
        "FLOAT4" => row
            .try_get::<Option<f32>, _>(i)?
            .map(|x| Value::Real(x.into())),
        "FLOAT8" => row.try_get::<Option<f64>, _>(i)?.map(Value::Real),
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => {
            row.try_get::<Option<String>, _>(i)?.map(Value::Text)
        }
        "BYTEA" => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
        "UUID" => row.try_get::<Option<Uuid>, _>(i)?.map(Value::Uuid),
        "TIMESTAMPTZ" => row.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Value::Time),
        "JSON" | "JSONB" => row
            .try_get::<Option<Json<Box<RawValue>>>, _>(i)?
            .map(|j| Value::Text(j.0.get().to_string())),
        other => {
            return Err(StoreError::Database(format!(
                "column {i}: type {other} is not read by the store"
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// `sql` (placeholders numbered) with `args` bound.
fn statement(
    sql: &str,
    args: Vec<Arg>,
) -> Result<Query<'_, sqlx::Postgres, PgArguments>, StoreError> {
    args.into_iter().try_fold(sqlx::query(sql), bind)
}

/// A transaction, or a pooled connection for reads.
struct PgConn<'a>(&'a mut PgConnection);

#[async_trait]
impl Conn for PgConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        let sql = numbered(sql);
        let done = statement(&sql, args)?.execute(&mut *self.0).await?;
        Ok(done.rows_affected())
    }

    async fn query(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        let sql = numbered(sql);
        let rows = statement(&sql, args)?.fetch_all(&mut *self.0).await?;
        rows.iter()
            .map(|r| {
                Ok(Row((0..r.len())
                    .map(|i| value(r, i))
                    .collect::<Result<_, _>>()?))
            })
            .collect()
    }
}

impl Backend for Postgres {
    fn write<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            match op(&mut PgConn(&mut tx)).await {
                Ok(v) => {
                    tx.commit().await?;
                    Ok(v)
                }
                Err(e) => {
                    // Dropping the transaction rolls it back too; this says so at once.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            }
        })
    }

    fn write_one<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>> {
        // A statement outside a transaction commits when it ends.
        self.read(op)
    }

    fn read<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            op(&mut PgConn(&mut conn)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    /// A store on a schema of its own, migrated; `None` (the test skipped) without
    /// `WIKOTEST_BACKEND=postgres` (`.ci/run`'s PostgreSQL stage).
    async fn plan_store() -> Option<Postgres> {
        if std::env::var("WIKOTEST_BACKEND").as_deref() != Ok("postgres") {
            eprintln!("skipped: needs WIKOTEST_BACKEND=postgres and WIKOTEST_DATABASE_URL");
            return None;
        }
        let base = std::env::var("WIKOTEST_DATABASE_URL").expect("WIKOTEST_DATABASE_URL");
        let schema = format!("wiko_plan_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base).await.expect("database");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let store = Postgres::connect(&PgSettings {
            url: format!("{base}{sep}options[search_path]={schema}"),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            outbox_lease: Duration::from_secs(30),
        })
        .expect("settings");
        store.migrate().await.expect("migrations");
        Some(store)
    }

    /// The claim walks the stage's jobs in turn order on the index and stops, also when the
    /// planner knows nothing of the table (never analysed) and plans it once for any
    /// parameters: without [`Dialect::walk_in_order`] it read every job of the stage and
    /// sorted them on each claim. The publisher reads only the unpublished messages.
    #[tokio::test]
    async fn a_claim_walks_its_stages_index_in_turn_order() {
        let Some(store) = plan_store().await else {
            return;
        };
        let mut conn = store.pool.acquire().await.expect("connection");
        // A backlog in tables never analysed (the jobs' parts are left out: no triggers).
        for setup in [
            "SET session_replication_role = replica",
            "INSERT INTO jobs (analysis_id, run_after, attempts, fair_at, stage)
             SELECT gen_random_uuid(), clock_timestamp(), 0, clock_timestamp(),
                    CASE WHEN i % 10 = 0 THEN 'remote' ELSE 'local' END
             FROM generate_series(1, 3000) AS i",
            "SET plan_cache_mode = force_generic_plan",
            "BEGIN",
            Dialect::Postgres.walk_in_order().expect("settings"),
        ] {
            sqlx::query(setup).execute(&mut *conn).await.expect(setup);
        }
        let sql = numbered(&super::super::parts::claim_sql(Dialect::Postgres));
        sqlx::query(&format!(
            "PREPARE claim (timestamptz, text, timestamptz, timestamptz, bigint) AS {sql}"
        ))
        .execute(&mut *conn)
        .await
        .expect("prepare");
        for stage in ["local", "remote"] {
            let plan: Vec<String> = sqlx::query_scalar(&format!(
                "EXPLAIN EXECUTE claim (now(), '{stage}', now(), now(), 8)"
            ))
            .fetch_all(&mut *conn)
            .await
            .expect("explain");
            let plan = plan.join("\n");
            assert!(plan.contains("Index Scan using jobs_stage_fair"), "{plan}");
            assert!(!plan.contains("Sort"), "{plan}");
        }
        sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .expect("commit");
        // The publisher with many published messages kept for replay: it reads the few
        // unpublished ones, not the primary key over all.
        for setup in [
            "INSERT INTO outbox (kind, payload, created_at, published_at)
             SELECT 'result', '\\x00', now(), now() FROM generate_series(1, 3000)",
            "INSERT INTO outbox (kind, payload, created_at)
             SELECT 'result', '\\x00', now() FROM generate_series(1, 10)",
        ] {
            sqlx::query(setup).execute(&mut *conn).await.expect(setup);
        }
        let sql = numbered(&super::super::parts::outbox_claim_sql(Dialect::Postgres));
        sqlx::query(&format!(
            "PREPARE outbox_claim (uuid, timestamptz, timestamptz, uuid, bigint) AS {sql}"
        ))
        .execute(&mut *conn)
        .await
        .expect("prepare");
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN EXECUTE outbox_claim (gen_random_uuid(), now(), now(), gen_random_uuid(), 64)",
        )
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
        let plan = plan.join("\n");
        assert!(plan.contains("outbox_unpublished"), "{plan}");
    }

    /// The first page of one defect type reads the newest rows of that type's index and looks
    /// up their results, after a cursor too, as autovacuum's estimates have it: no walk of
    /// every result newest first (the listing before schema 12), no sort. With a station and a
    /// week as well, the type's rows of the week are read from that index (the planner may
    /// sort the few it expects). Runs with `WIKOTEST_BACKEND=postgres`.
    // See: issue #23
    #[tokio::test]
    async fn a_defect_types_first_page_walks_its_index_newest_first() {
        use crate::store::ListFilter;

        let Some(store) = plan_store().await else {
            return;
        };
        let mut conn = store.pool.acquire().await.expect("connection");
        // 20,000 results over 20 days, an eighth NG, a fifth of those with rust.
        for setup in [
            "INSERT INTO analyses (id, defect_id, timestamp, facility, line, station,
                product_sku, status, defect_detected, defects, recommendation, analyzer,
                analyzer_version, image_key, image_blake3, image_width, image_height, created_at)
             SELECT gen_random_uuid(), 'DEF-' || i, now() - i * interval '86 seconds',
                'f' || i % 3, 'l', 's' || i % 4, 'k', 'final', i % 8 = 0, '[]', '', 'golden',
                '', 'k', 'b', 640, 480, now()
             FROM generate_series(1, 20000) AS i",
            "INSERT INTO analysis_defects (analysis_id, type, captured_at, found)
             SELECT id, CASE WHEN defect_id LIKE '%6' THEN 'rust' ELSE 'scratch' END,
                timestamp, 1
             FROM analyses WHERE defect_detected",
            "ANALYZE",
        ] {
            sqlx::query(setup).execute(&mut *conn).await.expect(setup);
        }
        let rust = ListFilter {
            defect_type: Some("rust".into()),
            ..ListFilter::default()
        };
        let narrower = ListFilter {
            facility: Some("f1".into()),
            line: Some("l".into()),
            station: Some("s2".into()),
            since: Some(Utc::now() - chrono::TimeDelta::days(7)),
            until: Some(Utc::now()),
            ..rust.clone()
        };
        let cursor = Some((Utc::now(), Uuid::now_v7()));
        for (filter, after, sorted) in [
            (&rust, None, false),
            (&rust, cursor, false),
            (&narrower, cursor, true),
        ] {
            let (sql, args) = super::super::parts::list_query(filter, after, 51);
            let explain = format!("EXPLAIN {}", numbered(&sql));
            let plan: Vec<String> = statement(&explain, args)
                .expect("arguments")
                .fetch_all(&mut *conn)
                .await
                .expect("explain")
                .iter()
                .map(|r| r.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("analysis_defects_type_time"), "{plan}");
            assert!(!plan.contains("analyses_time"), "{plan}");
            assert!(sorted || !plan.contains("Sort"), "{plan}");
        }
    }

    #[test]
    fn both_dialects_number_their_migrations_one_to_n_alike() {
        // The embedded store applies only versions above its file's: a gap filled later would
        // be skipped there, while PostgreSQL would apply it.
        let postgres: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        let sqlite: Vec<i64> = super::super::sqlite::MIGRATIONS
            .iter()
            .map(|m| i64::from(m.0))
            .collect();
        let expected: Vec<i64> = (1..=postgres.len() as i64).collect();
        assert_eq!(postgres, expected);
        assert_eq!(sqlite, expected);
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND (c, d) < (?, ?) LIMIT ?"),
            "SELECT a FROM t WHERE b = $1 AND (c, d) < ($2, $3) LIMIT $4"
        );
    }
}
