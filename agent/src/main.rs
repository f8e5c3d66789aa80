//! The `wiko-agent` binary: `run` (the daemon), `validate` (check a config), `cameras` (list
//! the cameras it can see), `synth` (write a labelled synthetic dataset).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wiko_agent::config::Config;

#[derive(Parser)]
#[command(
    name = "wiko-agent",
    version,
    about = "Wiko edge agent: capture, buffer, sync"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or Ctrl-C.
    Run {
        #[arg(long, default_value = "/etc/wiko/agent.toml")]
        config: PathBuf,
    },
    /// Check a configuration file (and environment overrides) and exit.
    Validate {
        #[arg(long, default_value = "/etc/wiko/agent.toml")]
        config: PathBuf,
    },
    /// List the V4L2 (USB/UVC) and GenICam (GigE Vision, USB3 Vision) cameras this machine can
    /// see, to fill in `[[camera]] source = { type = "v4l2" | "genicam", device = … }`.
    Cameras,
    /// Write synthetic knife images with labels and masks (manifest.csv) for tests and evaluation.
    Synth {
        #[arg(long)]
        out: PathBuf,
        /// Parts per SKU.
        #[arg(long, default_value_t = 100)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 0.3)]
        defect_rate: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            wiko_daemon::telemetry::init_tracing();
            let config =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(wiko_agent::run(config, wiko_daemon::shutdown_signal()))
        }
        Command::Validate { config } => {
            let cfg =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            println!(
                "{}: ok ({} cameras, device {})",
                config.display(),
                cfg.cameras.len(),
                cfg.device_id
            );
            Ok(())
        }
        Command::Cameras => {
            match wiko_agent::v4l2_devices() {
                None => {
                    println!("v4l2: not built in (this wiko-agent lacks the cargo feature `v4l2`)")
                }
                Some(devices) if devices.is_empty() => println!("v4l2: no camera found"),
                Some(devices) => {
                    for [device, name, node] in devices {
                        println!("v4l2     device = {device:?}  ({name}, {node})");
                    }
                }
            }
            match wiko_agent::genicam_devices() {
                None => println!(
                    "genicam: not built in (this wiko-agent lacks the cargo feature `genicam`)"
                ),
                Some(devices) if devices.is_empty() => println!("genicam: no camera found"),
                Some(devices) => {
                    for [id, vendor, model, address] in devices {
                        println!("genicam  device = {id:?}  ({vendor} {model}, {address})");
                    }
                }
            }
            Ok(())
        }
        Command::Synth {
            out,
            count,
            seed,
            defect_rate,
        } => {
            let n = wiko_synth::write_dataset(&out, &wiko_synth::SHAPES, count, seed, defect_rate)
                .with_context(|| format!("writing the dataset to {}", out.display()))?;
            println!(
                "wrote {n} images and {}",
                out.join("manifest.csv").display()
            );
            Ok(())
        }
    }
}
