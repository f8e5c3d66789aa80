//! One SQL store for both backends. The rules (idempotent create, complete once, fail and give
//! up, list filters, paging, row decoding) are written once over [`Conn`] (run statements with
//! `?` placeholders and read rows of [`Value`]s), by concern: `parts` (analyses, jobs, the
//! outbox), `models` (golden sets and models), `access` (keys and the audit log), `fleet` (heartbeats and device commands), `insight` (hourly statistics kept with each
//! result, reviews, the live feed's numbering). A backend supplies only
//! connection handling ([`Backend`]: a transaction per write, a connection per read) and its
//! [`Dialect`]:
//! - `sqlite`: the embedded file, one writer thread with group commit;
//! - `postgres`: a pool shared by every replica, rows leased with `FOR UPDATE SKIP LOCKED`.
//!
//! Both schemas are versioned migrations (`cloud-api/migrations/{sqlite,postgres}/`) with the
//! same tables and columns; values differ only in storage type (SQLite keeps UUIDs and times as
//! text, PostgreSQL natively), which each backend's binding and decoding handles.

mod access;
mod fleet;
mod insight;
mod models;
mod parts;
mod postgres;
mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use uuid::Uuid;

pub(crate) use parts::check_cursor;
pub use postgres::PgSettings;

use super::{Store, StoreError};

/// How long the embedded store's replica holds the outbox events it publishes. (Its leases
/// matter only to two handles on one file, as in tests: a start voids the previous run's.)
const EMBEDDED_OUTBOX_LEASE: Duration = Duration::from_secs(30);

/// The embedded store in the SQLite file at `path` (created, and migrated, when needed).
pub fn open_sqlite(path: &Path) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqlStore::new(
        sqlite::Sqlite::open(path)?,
        Uuid::new_v4(),
        EMBEDDED_OUTBOX_LEASE,
    )))
}

/// The PostgreSQL store; with `migrate`, pending migrations are applied first. Connects
/// lazily: a replica starts (and answers `/ready` with the database down) while PostgreSQL is
/// unreachable, unless migrations must run.
pub async fn open_postgres(
    settings: &PgSettings,
    migrate: bool,
) -> Result<Arc<dyn Store>, StoreError> {
    let pg = postgres::Postgres::connect(settings)?;
    if migrate {
        pg.migrate().await?;
    }
    Ok(Arc::new(SqlStore::new(
        pg,
        Uuid::new_v4(),
        settings.outbox_lease,
    )))
}

/// Applies pending PostgreSQL migrations (`wiko-cloud migrate`).
pub async fn migrate_postgres(settings: &PgSettings) -> Result<(), StoreError> {
    postgres::Postgres::connect(settings)?.migrate().await
}

/// Where the two SQL dialects differ in the statements the rules run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Locks the rows a `SELECT` reads until the transaction ends. SQLite's one writer
    /// serialises every write already.
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// How many rows the hourly statistics of one group are spread over: PostgreSQL's
    /// concurrent completions then rarely wait on one row's lock; SQLite's one writer never
    /// waits.
    fn stats_shards(self) -> i64 {
        match self {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 8,
        }
    }

    /// The UTC hour of a time column (for a scan of the results).
    fn hour_of(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("substr({column}, 1, 13) || ':00:00.000000Z'"),
            Dialect::Postgres => {
                format!("date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
            }
        }
    }

    /// The length of a JSON array column.
    fn json_len(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_array_length({column})"),
            Dialect::Postgres => format!("jsonb_array_length({column})"),
        }
    }

    /// As [`Dialect::for_update`], skipping rows another transaction holds (job and outbox
    /// leases: replicas never wait on each other's rows).
    fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Run first in a claim's transaction: the claim walks the stage's jobs in turn order on
    /// the index and stops at the first it may take. PostgreSQL otherwise plans it from its
    /// estimates, and with none (a table never analysed, or analysed while the queue was
    /// empty) it read every job of the stage and sorted them on each claim: a backlog drained
    /// in quadratic time, the case where the queue must be fastest. SQLite walks the index
    /// anyway.
    fn walk_in_order(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(
                "SELECT set_config('enable_bitmapscan', 'off', true),
                        set_config('enable_sort', 'off', true)",
            ),
        }
    }
}

/// A statement's parameter. Each carries its type even when null: PostgreSQL types every
/// parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(bool),
    Bytes(Vec<u8>),
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
    /// JSON text (`jsonb` in PostgreSQL, text in SQLite).
    Json(String),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_string))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Arg {
        Arg::Int(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Arg {
        Arg::Real(Some(v))
    }
}
impl From<Option<f32>> for Arg {
    fn from(v: Option<f32>) -> Arg {
        Arg::Real(v.map(f64::from))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Bool(v)
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Arg {
        Arg::Bytes(v)
    }
}
impl From<Uuid> for Arg {
    fn from(v: Uuid) -> Arg {
        Arg::Uuid(Some(v))
    }
}
impl From<Option<Uuid>> for Arg {
    fn from(v: Option<Uuid>) -> Arg {
        Arg::Uuid(v)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Arg {
        Arg::Time(Some(v))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Arg {
        Arg::Time(v)
    }
}

/// Statement parameters: `args![a, b, …]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::store::sql::Arg::from($value)),*]
    };
}
pub(crate) use args;

/// A column's value as a backend read it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
    Uuid(Uuid),
    Time(DateTime<Utc>),
}

/// One row, its columns in the statement's order. The getters accept either backend's storage
/// type (a UUID as text or native, a time as RFC 3339 text or native, a boolean as 0/1).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub(crate) Vec<Value>);

fn bad(column: usize, want: &str, got: &Value) -> StoreError {
    StoreError::Database(format!("column {column}: expected {want}, found {got:?}"))
}

impl Row {
    fn value(&self, i: usize) -> Result<&Value, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Database(format!("no column {i}")))
    }

    fn nullable<T>(
        &self,
        i: usize,
        get: impl FnOnce(&Row, usize) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match self.value(i)? {
            Value::Null => Ok(None),
            _ => get(self, i).map(Some),
        }
    }

    pub(crate) fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.value(i)? {
            Value::Text(s) => Ok(s.clone()),
            other => Err(bad(i, "text", other)),
        }
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.nullable(i, Row::text)
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.value(i)? {
            Value::Int(n) => Ok(*n),
            other => Err(bad(i, "an integer", other)),
        }
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.nullable(i, Row::int)
    }

    pub(crate) fn real(&self, i: usize) -> Result<f64, StoreError> {
        match self.value(i)? {
            Value::Real(x) => Ok(*x),
            Value::Int(n) => Ok(*n as f64),
            other => Err(bad(i, "a number", other)),
        }
    }

    pub(crate) fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError> {
        self.nullable(i, Row::real)
    }

    pub(crate) fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.value(i)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(n) => Ok(*n != 0),
            other => Err(bad(i, "a boolean", other)),
        }
    }

    pub(crate) fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        match self.value(i)? {
            Value::Bytes(b) => Ok(b.clone()),
            other => Err(bad(i, "bytes", other)),
        }
    }

    pub(crate) fn uuid(&self, i: usize) -> Result<Uuid, StoreError> {
        match self.value(i)? {
            Value::Uuid(u) => Ok(*u),
            Value::Text(s) => {
                Uuid::parse_str(s).map_err(|_| bad(i, "a UUID", &Value::Text(s.clone())))
            }
            other => Err(bad(i, "a UUID", other)),
        }
    }

    pub(crate) fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>, StoreError> {
        self.nullable(i, Row::uuid)
    }

    pub(crate) fn time(&self, i: usize) -> Result<DateTime<Utc>, StoreError> {
        match self.value(i)? {
            Value::Time(t) => Ok(*t),
            Value::Text(s) => parse_ts(s),
            other => Err(bad(i, "a time", other)),
        }
    }

    pub(crate) fn opt_time(&self, i: usize) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.nullable(i, Row::time)
    }
}

/// An open transaction (or, for reads, a connection) of a backend.
#[async_trait]
pub(crate) trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; `?` placeholders take `args` in order. Rows changed.
    async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError>;
    /// Runs a statement and reads every row it returns.
    async fn query(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError>;
}

/// Work on one transaction: a closure handed the open [`Conn`].
pub(crate) type TxOp<T> =
    Box<dyn for<'c> FnOnce(&'c mut dyn Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send>;

/// Wraps `f` as a [`TxOp`] (so its signature is inferred for every `'c`).
pub(crate) fn op<T, F>(f: F) -> TxOp<T>
where
    F: for<'c> FnOnce(&'c mut dyn Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
{
    Box::new(f)
}

/// Connection handling: what a backend adds to the rules.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Runs `op` in one transaction; `Ok` means committed (durable).
    fn write<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>>;
    /// Runs `op`, which runs exactly one statement (atomic on its own), as a write: on
    /// PostgreSQL without a transaction around it (one round trip, not three), on SQLite in the
    /// writer's group commit like any write. `Ok` means committed.
    fn write_one<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>>;
    /// Runs `op`, which only reads, on a connection of its own.
    fn read<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>>;
}

/// The store over a backend; its `Store` methods are in `records`.
pub(crate) struct SqlStore<B> {
    backend: B,
    /// This replica, as the holder of outbox leases.
    replica: Uuid,
    /// How long this replica holds the outbox events it is publishing.
    outbox_lease: Duration,
}

impl<B: Backend> SqlStore<B> {
    fn new(backend: B, replica: Uuid, outbox_lease: Duration) -> SqlStore<B> {
        SqlStore {
            backend,
            replica,
            outbox_lease,
        }
    }
}

/// JSON that does not (de)serialise is a damaged row.
pub(crate) fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Fixed-width UTC timestamps (microseconds), so that text order is time order (SQLite
/// stores times as this text).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Database(format!("bad timestamp {s:?}: {e}")))
}

pub(crate) fn after(d: Duration) -> DateTime<Utc> {
    let now = Utc::now();
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// `(?, ?), (?, ?), …`: `rows` rows of `width` placeholders.
pub(crate) fn values(rows: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; rows].join(", ")
}

/// `(?, ?, …)`: `n` placeholders.
pub(crate) fn list(n: usize) -> String {
    values(1, n)
}

/// Statements that are a transaction of their own.
impl<B: Backend> SqlStore<B> {
    /// The rows of one statement, on a read connection.
    pub(crate) async fn select(
        &self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<Vec<Row>, StoreError> {
        self.backend
            .read(op(move |c| {
                Box::pin(async move { c.query(sql, args).await })
            }))
            .await
    }

    /// One statement, atomic on its own; rows changed.
    pub(crate) async fn change(
        &self,
        sql: &'static str,
        args: Vec<Arg>,
    ) -> Result<u64, StoreError> {
        self.backend
            .write_one(op(move |c| {
                Box::pin(async move { c.execute(sql, args).await })
            }))
            .await
    }
}
