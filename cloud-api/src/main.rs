//! The `wiko-cloud` binary: `serve` (the API), `validate` (check a config), `demo` (the whole
//! system on this machine with simulated stations).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wiko_cloud::config::Config;

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
    /// Run the cloud (embedded store and broker) and two simulated stations, printing a summary.
    Demo(wiko_cloud::demo::DemoArgs),
    /// Fit, score and evaluate golden-sample models from the command line.
    #[command(subcommand)]
    Model(wiko_cloud::model_cli::ModelCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();

    wiko_cloud::telemetry::init_tracing();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    match cli.command {
        Command::Serve { config } => {
            let cfg =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("binding listen {}", cfg.listen))?;
                wiko_cloud::serve(cfg, listener, shutdown_signal()).await
            })
        }
        Command::Validate { config } => {
            let cfg =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            println!(
                "{}: ok ({} API keys, broker {:?})",
                config.display(),
                cfg.keys.len(),
                cfg.broker
            );
            Ok(())
        }
        Command::Demo(args) => runtime.block_on(wiko_cloud::demo::run(args, shutdown_signal())),
        Command::Model(command) => wiko_cloud::model_cli::run(command),
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
