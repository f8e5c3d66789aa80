//! The embedded MQTT broker (3.1.1, QoS 0 and 1), started when no external broker is
//! configured: enough broker for the cloud's messages, with the rules a plant needs.
//!
//! - **Who:** every client logs in. Two accounts, generated at the first start and kept in
//!   the data directory (`mqtt-credentials.json`, owner-readable only): the publisher (the
//!   cloud itself) and the subscriber (dashboards, line displays, MES). Anonymous clients are
//!   refused.
//! - **What:** only the publisher publishes; a subscriber that publishes is disconnected. The
//!   cloud's client id is the publisher's alone: nobody can knock the cloud off by connecting
//!   with it.
//! - **Sessions:** a subscriber that connects with `clean_session = false` keeps its
//!   subscriptions and the QoS 1 messages it has not acknowledged while it is away (up to
//!   `router::MAX_OWED`). The broker keeps its state in memory: across a restart of the cloud,
//!   the publisher publishes again what it published just before (`mqtt.replay_secs`), and for
//!   the grace after the start (`mqtt.replay_grace_secs`) a subscriber that comes back with a
//!   persistent session gets what was published since the start (the router's catch-up).
//! - **Where:** a plain listener (loopback by default), and optionally a TLS one.

mod connection;
mod router;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use connection::Shared;
use router::Role;

/// Largest MQTT packet accepted or sent.
const MAX_PACKET: usize = 256 * 1024;
/// Client connections at once, per listener.
const MAX_CONNECTIONS: usize = 1000;
/// How long the broker may take to listen after it was started.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// One account of the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// The broker's two accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Credentials {
    pub(crate) publisher: Account,
    pub(crate) subscriber: Account,
}

fn secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl Credentials {
    /// The accounts kept in `path`, generated (and written, owner-readable only) the first
    /// time.
    pub(crate) fn load_or_create(path: &Path) -> std::io::Result<Credentials> {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).map_err(std::io::Error::other);
        }
        let credentials = Credentials {
            publisher: Account {
                username: "wiko-cloud".into(),
                password: secret(),
            },
            subscriber: Account {
                username: "wiko-subscriber".into(),
                password: secret(),
            },
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec_pretty(&credentials).map_err(std::io::Error::other)?;
        let mut file = tempfile::NamedTempFile::new_in(path.parent().unwrap_or(Path::new(".")))?;
        file.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::io::Write::write_all(&mut file, &text)?;
        file.persist(path).map_err(|e| e.error)?;
        info!(path = %path.display(), "MQTT broker accounts created");
        Ok(credentials)
    }

    fn role(&self, username: &str, password: &str) -> Option<Role> {
        let is = |a: &Account| {
            a.username == username
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    a.password.as_bytes(),
                    password.as_bytes(),
                ))
        };
        if is(&self.publisher) {
            Some(Role::Publisher)
        } else if is(&self.subscriber) {
            Some(Role::Subscriber)
        } else {
            None
        }
    }
}

/// Where and how the embedded broker listens.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// A second listener speaking TLS, with its certificate and key (read from their PEM files
    /// when the configuration loaded).
    pub tls: Option<(SocketAddr, Arc<rumqttc::tokio_rustls::rustls::ServerConfig>)>,
    /// Where its two accounts are kept.
    pub credentials_file: PathBuf,
    /// The cloud's client id.
    pub publisher_id: String,
    /// How long after the start a returning persistent session catches up.
    pub catch_up: Duration,
}

/// Starts the broker; returns once it accepts connections (so the publisher's first connection
/// is not refused), with its accounts. It lives as long as the process.
pub(crate) async fn start(settings: &Settings) -> anyhow::Result<Credentials> {
    let credentials = Credentials::load_or_create(&settings.credentials_file)?;
    let shared = Arc::new(Shared {
        router: Mutex::new(router::Router::catching_up()),
        credentials: credentials.clone(),
        publisher_id: settings.publisher_id.clone(),
        clients: Mutex::default(),
    });
    let window = (shared.clone(), settings.catch_up);
    tokio::spawn(async move {
        tokio::time::sleep(window.1).await;
        window.0.end_catch_up();
    });
    let plain = TcpListener::bind(settings.listen).await?;
    tokio::spawn(accept(plain, None, shared.clone()));
    if let Some((addr, tls)) = &settings.tls {
        let acceptor = rumqttc::tokio_rustls::TlsAcceptor::from(tls.clone());
        tokio::spawn(accept(
            TcpListener::bind(addr).await?,
            Some(acceptor),
            shared,
        ));
    }
    let started = tokio::time::Instant::now();
    while tokio::net::TcpStream::connect(settings.listen)
        .await
        .is_err()
    {
        anyhow::ensure!(
            started.elapsed() < LISTEN_DEADLINE,
            "the embedded MQTT broker does not listen on {} after {LISTEN_DEADLINE:?}",
            settings.listen
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(credentials)
}

async fn accept(
    listener: TcpListener,
    tls: Option<rumqttc::tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => connection::serve(stream, shared).await,
                    Err(e) => warn!(%peer, error = %e, "MQTT TLS handshake failed"),
                },
                None => connection::serve(stream, shared).await,
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};

    use super::*;

    async fn broker() -> (SocketAddr, Credentials, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            credentials_file: dir.path().join("mqtt-credentials.json"),
            publisher_id: "wiko-cloud".into(),
            catch_up: Duration::from_secs(10),
        };
        let credentials = start(&settings).await.unwrap();
        (settings.listen, credentials, dir)
    }

    fn client(
        addr: SocketAddr,
        id: &str,
        account: Option<&Account>,
        clean: bool,
    ) -> (AsyncClient, rumqttc::EventLoop) {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_clean_session(clean);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some(a) = account {
            o.set_credentials(&a.username, &a.password);
        }
        AsyncClient::new(o, 64)
    }

    /// The CONNACK's code, or what ended the connection.
    async fn connack(events: &mut rumqttc::EventLoop) -> Result<ConnectReturnCode, String> {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return Ok(a.code),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Payloads received within `wait`.
    async fn received(events: &mut rumqttc::EventLoop, wait: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(wait, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        out.push(String::from_utf8_lossy(&p.payload).into_owned())
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
        .await;
        out
    }

    #[tokio::test]
    async fn only_known_accounts_connect_and_only_the_publisher_uses_its_id() {
        let (addr, c, _dir) = broker().await;
        let (_anon, mut e) = client(addr, "anon", None, true);
        assert!(connack(&mut e).await.is_err(), "anonymous refused");
        let wrong = Account {
            username: c.subscriber.username.clone(),
            password: "guess".into(),
        };
        let (_w, mut e) = client(addr, "w", Some(&wrong), true);
        assert!(connack(&mut e).await.is_err(), "a wrong password refused");
        let (_t, mut e) = client(addr, "wiko-cloud", Some(&c.subscriber), true);
        assert!(
            connack(&mut e).await.is_err(),
            "the cloud's id is not a subscriber's"
        );
        let (_p, mut e) = client(addr, "wiko-cloud", Some(&c.publisher), true);
        assert_eq!(connack(&mut e).await, Ok(ConnectReturnCode::Success));
    }

    #[tokio::test]
    async fn a_subscriber_that_publishes_is_cut_off_and_nothing_is_delivered() {
        let (addr, c, _dir) = broker().await;
        let (sub, mut sub_events) = client(addr, "display", Some(&c.subscriber), true);
        connack(&mut sub_events).await.unwrap();
        sub.subscribe("wiko/#", QoS::AtLeastOnce).await.unwrap();
        received(&mut sub_events, Duration::from_millis(200)).await;
        let (forger, mut forger_events) = client(addr, "forger", Some(&c.subscriber), true);
        connack(&mut forger_events).await.unwrap();
        forger
            .publish("wiko/yj/l1/s1/alert", QoS::AtLeastOnce, false, "forged")
            .await
            .unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if forger_events.poll().await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the forger is disconnected");
        assert!(
            received(&mut sub_events, Duration::from_millis(300))
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_persistent_subscriber_gets_what_was_published_while_it_was_away() {
        let (addr, c, _dir) = broker().await;
        let (sub, mut events) = client(addr, "mes", Some(&c.subscriber), false);
        connack(&mut events).await.unwrap();
        sub.subscribe("wiko/+/+/+/alert", QoS::AtLeastOnce)
            .await
            .unwrap();
        received(&mut events, Duration::from_millis(200)).await;
        drop((sub, events));
        let (publisher, mut p_events) = client(addr, "wiko-cloud", Some(&c.publisher), true);
        connack(&mut p_events).await.unwrap();
        for n in ["a1", "a2"] {
            publisher
                .publish("wiko/yj/l1/s1/alert", QoS::AtLeastOnce, false, n)
                .await
                .unwrap();
        }
        received(&mut p_events, Duration::from_millis(300)).await;
        let (_sub, mut events) = client(addr, "mes", Some(&c.subscriber), false);
        assert_eq!(
            received(&mut events, Duration::from_millis(500)).await,
            ["a1", "a2"]
        );
    }

    #[test]
    fn accounts_are_kept_owner_readable_and_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt-credentials.json");
        let first = Credentials::load_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Credentials::load_or_create(&path).unwrap(), first);
        assert_ne!(first.publisher.password, first.subscriber.password);
    }
}
