//! The `wiko-cloud` binary: `serve` (the API), `validate` (check a config), `migrate`
//! (PostgreSQL schema), `backup`/`restore` (embedded store), `model` (fit, score, evaluate:
//! `wiko-eval`). The demo is its own binary, `wiko-demo`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use wiko_cloud::backup;
use wiko_cloud::config::{Config, Database};
use wiko_wire::{CreatedKey, NewKey, Scope};

#[derive(Parser)]
#[command(
    name = "wiko-cloud",
    version,
    about = "Wiko cloud API: ingest, analysis, results, alerts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or Ctrl-C.
    Serve {
        #[arg(long, default_value = "/etc/wiko/cloud.toml")]
        config: PathBuf,
    },
    /// Check a configuration file (and environment overrides) and exit.
    Validate {
        #[arg(long, default_value = "/etc/wiko/cloud.toml")]
        config: PathBuf,
    },
    /// Apply pending PostgreSQL migrations and exit (the embedded store needs none).
    Migrate {
        #[arg(long, default_value = "/etc/wiko/cloud.toml")]
        config: PathBuf,
    },
    /// Copy the embedded store (database and images) into a new directory, beside a running
    /// cloud. PostgreSQL and S3: see the README (pg_dump or PITR, bucket versioning).
    Backup {
        #[arg(long, default_value = "/etc/wiko/cloud.toml")]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into the configured `data_dir`, which must hold no store; run it with
    /// the cloud stopped.
    Restore {
        #[arg(long, default_value = "/etc/wiko/cloud.toml")]
        config: PathBuf,
        #[arg(long)]
        from: PathBuf,
    },
    /// Fit, score and evaluate golden-sample models from the command line.
    #[command(subcommand)]
    Model(wiko_eval::ModelCommand),
    /// Create, list and revoke API keys in the configured store (every replica sees a change
    /// within a second).
    Keys {
        #[arg(long, default_value = "/etc/wiko/cloud.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// A new key, printed once as JSON (`key` is the secret; `info.prefix` names it).
    Create {
        /// Who holds it, e.g. `yangjiang-line1-pc`.
        #[arg(long)]
        name: String,
        /// `device`, `viewer` or `admin`.
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// The facility a device key sends parts for (required for device keys).
        #[arg(long)]
        facility: Option<String>,
        /// The one device a device key may send frames as.
        #[arg(long)]
        device_id: Option<String>,
        /// Days until the key stops working (never when absent).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Every key (never a secret), one JSON object per line.
    List,
    /// Revokes the key with this prefix.
    Revoke { prefix: String },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("`{s}`: expected device, viewer or admin"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();

    wiko_daemon::telemetry::init_tracing();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cli.command {
        Command::Serve { config } => {
            let cfg = load(&config)?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("binding listen {}", cfg.listen))?;
                wiko_cloud::serve(cfg, listener, wiko_daemon::shutdown_signal()).await
            })
        }
        Command::Validate { config } => {
            let cfg = load(&config)?;
            let store = match cfg.database {
                Database::Embedded => "embedded SQLite".to_string(),
                // The URL carries the password: not printed.
                Database::Postgres { .. } => "PostgreSQL".to_string(),
            };
            let images = match &cfg.s3 {
                None => "local directory".to_string(),
                Some(s3) => format!("S3 bucket {}", s3.bucket),
            };
            println!(
                "{}: ok ({} API keys, store {store}, images {images}, broker {:?})",
                config.display(),
                cfg.keys.len(),
                cfg.broker
            );
            Ok(())
        }
        Command::Migrate { config } => {
            let cfg = load(&config)?;
            match &cfg.database {
                Database::Postgres { settings, .. } => runtime.block_on(async {
                    wiko_cloud::store::migrate_postgres(settings).await?;
                    println!("database schema up to date");
                    anyhow::Ok(())
                }),
                Database::Embedded => {
                    let db = cfg.data_dir.join("wiko.db");
                    wiko_cloud::store::open_sqlite(&db)
                        .with_context(|| format!("migrating {}", db.display()))?;
                    println!("embedded store schema up to date");
                    Ok(())
                }
            }
        }
        Command::Backup { config, out } => {
            let cfg = embedded(&config, "backup")?;
            let summary = backup::backup(&cfg.data_dir, &out).with_context(|| {
                format!(
                    "backing up {} into {}",
                    cfg.data_dir.display(),
                    out.display()
                )
            })?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Restore { config, from } => {
            let cfg = embedded(&config, "restore")?;
            let summary = backup::restore(&from, &cfg.data_dir).with_context(|| {
                format!(
                    "restoring {} into {}",
                    from.display(),
                    cfg.data_dir.display()
                )
            })?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Model(command) => wiko_eval::run(command),
        Command::Keys { config, command } => {
            let cfg = load(&config)?;
            runtime.block_on(keys(&cfg, command))
        }
    }
}

async fn keys(cfg: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let store = wiko_cloud::open_storage(cfg).await?.records;
    match command {
        KeysCommand::Create {
            name,
            scope,
            facility,
            device_id,
            expires_in_days,
        } => {
            let expires_at =
                expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
            let new = NewKey {
                name,
                scope,
                facility,
                device_id,
                expires_at,
            };
            let (key, info) = wiko_cloud::create_key(store.as_ref(), new).await?;
            println!("{}", serde_json::to_string(&CreatedKey { key, info })?);
        }
        KeysCommand::List => {
            for k in store.keys().await? {
                println!("{}", serde_json::to_string(&k.info)?);
            }
        }
        KeysCommand::Revoke { prefix } => match store.revoke_key(&prefix).await? {
            Some(k) => println!("{}", serde_json::to_string(&k.info)?),
            None => anyhow::bail!("no key with prefix {prefix}"),
        },
    }
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading {}", path.display()))
}

/// The configuration, refusing a production backend (it has its own backup tools).
fn embedded(path: &Path, what: &str) -> anyhow::Result<Config> {
    let cfg = load(path)?;
    if !matches!(cfg.database, Database::Embedded) || cfg.s3.is_some() {
        anyhow::bail!(
            "{what} covers the embedded store only: use pg_dump or PITR for PostgreSQL and bucket versioning for S3 (README, Backups)"
        );
    }
    Ok(cfg)
}
