//! The embedded backend: one SQLite file in WAL mode.
//!
//! Every write goes through one writer thread that groups the writes waiting at that moment
//! into one transaction (group commit: one fsync for many requests). Each write runs in its
//! own savepoint, so one failing write does not undo the others; its caller hears back only
//! after the commit, so an answer always means "durable". Reads use a few connections of
//! their own, which WAL lets run beside the writer.
//!
//! The schema is versioned: `PRAGMA user_version` holds the last migration applied
//! (`cloud-api/migrations/sqlite/`), each applied in its own transaction on open.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params_from_iter};
use tokio::sync::oneshot;

use super::ts;
use super::{Arg, Backend, Conn, Dialect, Row, TxOp, Value};
use crate::store::StoreError;

/// The migrations, in order: (version, SQL). Append; never edit one that was released.
pub(super) const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_same_tables_as_postgres.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_keys_fairness_replay.sql"),
    ),
    (4, include_str!("../../../migrations/sqlite/0004_fleet.sql")),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_remote_analysis.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_dashboard_data.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_indexes_for_turns_and_defects.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/sqlite/0008_remote_windows.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/sqlite/0009_jobs_write_fewer_indexes.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/sqlite/0010_daily_stats_published_events.sql"),
    ),
    (
        11,
        include_str!("../../../migrations/sqlite/0011_partial_indexes.sql"),
    ),
    (
        12,
        include_str!("../../../migrations/sqlite/0012_defect_listing_event_retention.sql"),
    ),
];
/// Most writes grouped into one transaction.
const MAX_BATCH: usize = 256;
const READERS: usize = 4;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Runs a write's work on the writer thread; the result is handed back after the commit.
type Work = Box<dyn FnOnce(&mut Connection) -> Done + Send>;
type Done = Box<dyn FnOnce(bool) + Send>;

pub(super) struct Sqlite {
    writer: mpsc::Sender<Work>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: AtomicUsize,
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Every statement the rules run stays prepared (rusqlite keeps 16 by default, fewer than
    // the rules have: the rest would be parsed again on each use).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Applies the migrations past the file's `user_version`, each in one transaction. The first
/// creates its tables only if missing: files of versions before migrations were numbered hold
/// exactly its tables.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > newest {
        return Err(StoreError::Database(format!(
            "the database is of schema version {applied}, newer than this release's {newest}"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Database(format!("migration {version}: {e}")))?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "embedded store migrated");
    }
    Ok(())
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(e.to_string()))?;
        }
        let mut conn = connect(path)?;
        migrate(&mut conn)?;
        // One replica uses an embedded store: leases its previous run held are void.
        conn.execute_batch(
            "UPDATE jobs SET leased_until = NULL WHERE leased_until IS NOT NULL;
             UPDATE outbox SET leased_by = NULL, leased_until = NULL WHERE leased_by IS NOT NULL;",
        )?;
        let readers = Arc::new(
            (0..READERS)
                .map(|_| connect(path).map(Mutex::new))
                .collect::<Result<_, _>>()?,
        );
        let (tx, rx) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("wiko-store-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(work) => batch.push(work),
                            Err(_) => break,
                        }
                    }
                    write_batch(&mut conn, batch);
                }
            })
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Sqlite {
            writer: tx,
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }
}

/// One group transaction: each work in a savepoint of its own (rolled back alone if it
/// fails), then one commit; every caller hears whether it committed.
fn write_batch(conn: &mut Connection, batch: Vec<Work>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "starting a store transaction failed");
        for work in batch {
            work(conn)(false);
        }
        return;
    }
    let mut done: Vec<Done> = Vec::with_capacity(batch.len());
    for work in batch {
        match conn.execute_batch("SAVEPOINT work") {
            Ok(()) => {
                done.push(work(conn));
                if let Err(e) = conn.execute_batch("RELEASE work") {
                    tracing::error!(error = %e, "releasing a savepoint failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "opening a savepoint failed");
                done.push(Box::new(|_| {}));
            }
        }
    }
    let committed = match conn.execute_batch("COMMIT") {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "committing a store transaction failed");
            let _ = conn.execute_batch("ROLLBACK");
            false
        }
    };
    for d in done {
        d(committed);
    }
}

/// A connection inside the writer's savepoint, or a reader's.
struct SqliteConn<'a>(&'a mut Connection);

fn bind(arg: Arg) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match arg {
        Arg::Text(v) => v.map_or(V::Null, V::Text),
        Arg::Int(v) => v.map_or(V::Null, V::Integer),
        Arg::Real(v) => v.map_or(V::Null, V::Real),
        Arg::Bool(b) => V::Integer(i64::from(b)),
        Arg::Bytes(b) => V::Blob(b),
        Arg::Uuid(v) => v.map_or(V::Null, |u| V::Text(u.to_string())),
        Arg::Time(v) => v.map_or(V::Null, |t| V::Text(ts(t))),
        Arg::Json(s) => V::Text(s),
    }
}

fn value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

#[async_trait]
impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn execute(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let changed = stmt.execute(params_from_iter(args.into_iter().map(bind)))?;
        Ok(changed as u64)
    }

    async fn query(&mut self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(params_from_iter(args.into_iter().map(bind)))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = (0..width)
                .map(|i| r.get_ref(i).map(value))
                .collect::<Result<_, _>>()?;
            out.push(Row(row));
        }
        Ok(out)
    }
}

/// Runs `op` to the end on this thread: a SQLite connection never waits, so its futures are
/// ready when polled.
fn run<T>(conn: &mut Connection, op: TxOp<T>) -> Result<T, StoreError> {
    futures::executor::block_on(op(&mut SqliteConn(conn)))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store writer stopped".into())
}

impl Backend for Sqlite {
    fn write<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |conn: &mut Connection| {
            let result = run(conn, op);
            if result.is_err() {
                let _ = conn.execute_batch("ROLLBACK TO work");
            }
            Box::new(move |committed: bool| {
                let _ = reply.send(match (result, committed) {
                    (Ok(v), true) => Ok(v),
                    (Ok(_), false) => Err(StoreError::Database("commit failed".into())),
                    (Err(e), _) => Err(e),
                });
            })
        });
        let sent = self.writer.send(work);
        Box::pin(async move {
            sent.map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        })
    }

    fn write_one<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>> {
        self.write(op)
    }

    fn read<T: Send + 'static>(&self, op: TxOp<T>) -> BoxFuture<'_, Result<T, StoreError>> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % READERS;
        let readers = self.readers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // A panic inside a read leaves no transaction open, so a poisoned lock is
                // usable.
                let mut conn = readers[i].lock().unwrap_or_else(|p| p.into_inner());
                run(&mut conn, op)
            })
            .await
            .map_err(|e| StoreError::Database(format!("read task: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::Dialect;
    use super::*;

    /// The claim reads the stage's index in turn order and stops: no sort of the backlog; the
    /// publisher reads only the unpublished messages.
    #[test]
    fn a_claim_walks_its_stages_index_in_turn_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&dir.path().join("wiko.db")).unwrap();
        migrate(&mut conn).unwrap();
        let sql = super::super::parts::claim_sql(Dialect::Sqlite);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params!["", "local", "", "", 8], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("jobs_stage_fair")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        let sql = super::super::parts::outbox_claim_sql(Dialect::Sqlite);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params!["", "", "", "", 64], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The unpublished messages only (NULLs of `published_at`, in id order): no scan of
        // the published ones kept, no sort.
        assert!(
            plan.iter()
                .any(|step| step.contains("outbox_published (published_at=?)")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    /// The first page of one defect type reads the newest rows of that type's index and looks
    /// up their results, with other filters, a range and a cursor too: no walk of every result
    /// newest first (the listing before schema 12), no sort.
    // See: issue #23
    #[test]
    fn a_defect_types_first_page_walks_its_index_newest_first() {
        use chrono::Utc;

        use crate::store::ListFilter;

        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&dir.path().join("wiko.db")).unwrap();
        migrate(&mut conn).unwrap();
        let rust = ListFilter {
            defect_type: Some("rust".into()),
            ..ListFilter::default()
        };
        let narrower = ListFilter {
            facility: Some("f".into()),
            line: Some("l".into()),
            station: Some("s".into()),
            since: Some(Utc::now()),
            until: Some(Utc::now()),
            ..rust.clone()
        };
        let cursor = Some((Utc::now(), uuid::Uuid::now_v7()));
        for (filter, after) in [(&rust, None), (&rust, cursor), (&narrower, cursor)] {
            let (sql, args) = super::super::parts::list_query(filter, after, 51);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params_from_iter(args.into_iter().map(bind)), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan[0].starts_with("SEARCH d USING COVERING INDEX analysis_defects_type_time"),
                "{plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                "{plan:?}"
            );
        }
    }

    /// A file made by a release before numbered migrations: its tables, no `user_version`.
    #[test]
    fn a_file_from_before_numbered_migrations_is_brought_to_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wiko.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].1).unwrap();
            conn.execute(
                "INSERT INTO golden_samples (sku, image_blake3, image_key, created_at)
                 VALUES ('S', 'b', 'golden/b.jpg', '2026-11-01T00:00:00.000000Z'),
                        ('S', 'a', 'golden/a.jpg', '2026-11-01T00:00:00.000000Z')",
                [],
            )
            .unwrap();
        }
        let mut conn = connect(&path).unwrap();
        migrate(&mut conn).unwrap();
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.last().unwrap().0);
        // The order images were added in survives the rebuilt table.
        let order: Vec<String> = conn
            .prepare("SELECT image_blake3 FROM golden_samples ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(order, ["b", "a"]);
        // Opening again applies nothing.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn a_file_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wiko.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(Sqlite::open(&path).is_err());
    }
}
