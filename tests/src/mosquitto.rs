//! A Mosquitto broker of the test's own, on free ports of 127.0.0.1: a plain listener (for the
//! test's subscribers and the cloud), optionally a TLS listener with the certificates of a test
//! PKI (for the agent), and persistence in its directory, so retained messages survive a
//! restart. Stopped with SIGTERM (a clean stop: Mosquitto publishes its clients' Last Wills and
//! saves its state) or killed when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
pub use wiko_daemon::tls::testing::Pki;

use crate::{Process, free_port, wait_until};

/// The TLS listener's settings.
pub struct Tls<'a> {
    pub pki: &'a Pki,
    /// Clients must present a certificate signed by the PKI's CA.
    pub require_certificate: bool,
}

pub struct Mosquitto {
    /// The plain listener.
    pub port: u16,
    /// The TLS listener, when asked for.
    pub tls_port: Option<u16>,
    conf: PathBuf,
    log: PathBuf,
    process: Option<Process>,
}

impl Mosquitto {
    /// Writes `dir/mosquitto.conf` and starts the broker; returns once it accepts connections.
    pub async fn start(dir: &Path, tls: Option<Tls<'_>>) -> anyhow::Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let port = free_port();
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\n\
             # Run as the test's user (as root it would switch to `mosquitto`, who cannot read\n\
             # the test's files).\nuser {user}\n\
             persistence true\npersistence_location {dir}/\n\
             listener {port} 127.0.0.1\n",
            user = std::env::var("USER").unwrap_or_else(|_| "root".into()),
            dir = dir.display(),
        );
        let tls_port = tls.as_ref().map(|_| free_port());
        if let (Some(tls), Some(tls_port)) = (&tls, tls_port) {
            conf.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.pki.ca.display(),
                tls.pki.server_cert.display(),
                tls.pki.server_key.display(),
                tls.require_certificate,
            ));
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf)?;
        let mut broker = Mosquitto {
            port,
            tls_port,
            conf: path,
            log: dir.join("mosquitto.log"),
            process: None,
        };
        broker.run().await?;
        Ok(broker)
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let conf = self.conf.display().to_string();
        self.process = Some(Process::program(
            Path::new("mosquitto"),
            &["-c", &conf],
            self.log.clone(),
        )?);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(Duration::from_secs(10), "Mosquitto listening", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await
        .with_context(|| self.log_text())
    }

    /// A clean stop (SIGTERM): the broker publishes its clients' Last Wills and saves its state.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            anyhow::ensure!(process.terminate()?.success(), "{}", self.log_text());
        }
        Ok(())
    }

    /// Starts it again on the same ports, with the state it saved.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.run().await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
