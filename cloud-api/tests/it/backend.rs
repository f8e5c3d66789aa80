//! Where a test's data lives. By default the embedded backend in a temporary directory; with
//! `WIKOTEST_BACKEND=postgres`, a fresh schema in the database at `WIKOTEST_DATABASE_URL` and
//! a fresh key prefix in the bucket `WIKOTEST_S3_BUCKET` of the S3 server at
//! `WIKOTEST_S3_ENDPOINT` (credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`);
//! without `WIKOTEST_S3_ENDPOINT`, images stay in the temporary directory.
//! `.ci/run` runs this whole suite both ways.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use uuid::Uuid;
use wiko_cloud::store::blob::LocalDir;
use wiko_cloud::store::s3::{S3, S3Settings};
use wiko_cloud::store::{PgSettings, Storage, open_postgres, open_sqlite};

pub struct Place {
    pub dir: tempfile::TempDir,
    production: Option<(PgSettings, Option<S3Settings>)>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("WIKOTEST_BACKEND=postgres needs {name}"))
}

impl Place {
    pub async fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var("WIKOTEST_BACKEND").as_deref() != Ok("postgres") {
            return Place {
                dir,
                production: None,
            };
        }
        let base = env("WIKOTEST_DATABASE_URL");
        let schema = format!("wiko_it_{}", Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let pg = PgSettings {
            url: format!("{base}{sep}options[search_path]={schema}"),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            outbox_lease: Duration::from_secs(30),
        };
        let s3 = std::env::var("WIKOTEST_S3_ENDPOINT")
            .ok()
            .map(|endpoint| S3Settings {
                bucket: env("WIKOTEST_S3_BUCKET"),
                endpoint: Some(endpoint),
                region: "us-east-1".into(),
                prefix: format!("{schema}/"),
                path_style: true,
                allow_http: true,
                access_key_id: None,
                secret_access_key: None,
                request_timeout: Duration::from_secs(10),
            });
        Place {
            dir,
            production: Some((pg, s3)),
        }
    }

    /// The storage of this place; a second call is a restart, or a second replica.
    pub async fn open(&self) -> Storage {
        match &self.production {
            None => Storage {
                records: open_sqlite(&self.dir.path().join("wiko.db")).unwrap(),
                images: Arc::new(LocalDir::new(self.dir.path().to_path_buf()).unwrap()),
            },
            Some((pg, s3)) => Storage {
                records: open_postgres(pg, true).await.unwrap(),
                images: match s3 {
                    Some(s3) => Arc::new(S3::new(s3).unwrap()),
                    None => Arc::new(LocalDir::new(self.dir.path().to_path_buf()).unwrap()),
                },
            },
        }
    }
}
