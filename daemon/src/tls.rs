//! TLS settings from PEM files, for both daemons' MQTT connections: the agent's client
//! ([`client_config`]) and the cloud's embedded broker's listener ([`server_config`]). Each file
//! is read and checked when the configuration loads, so a missing file, a file without a
//! certificate or a key that does not match its certificate is refused at start with the key
//! named, never at the first connection.
//!
//! The configurations name their crypto provider (aws-lc-rs, the one rumqttc's rustls brings):
//! with more than one provider compiled in (the workspace's other crates enable ring too), the
//! builders without one would have no default to take.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ConfigError, invalid};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificates of the PEM file at `path` (`key` is the configuration key naming it): at
/// least one.
pub fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let unreadable = |e: rustls::pki_types::pem::Error| {
        invalid(
            key,
            format!("reading certificates from {}: {e}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    if certs.is_empty() {
        return Err(invalid(
            key,
            format!(
                "{} holds no certificate (a PEM file with -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The private key of the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(
            key,
            format!(
                "{} holds no private key (a PEM file with -----BEGIN PRIVATE KEY-----)",
                path.display()
            ),
        ),
        e => invalid(
            key,
            format!("reading a private key from {}: {e}", path.display()),
        ),
    })
}

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// The system's (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`); `key` is the
    /// configuration key that would name a file instead.
    System { key: &'a str },
    /// The certificates of a PEM file, named by its configuration key.
    File { key: &'a str, path: &'a Path },
}

/// A client certificate and its key, each named by its configuration key.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert_key: &'a str,
    pub cert: &'a Path,
    pub key_key: &'a str,
    pub key: &'a Path,
}

/// A TLS client trusting `roots`, presenting `identity` when given.
pub fn client_config(
    roots: Roots<'_>,
    identity: Option<Identity<'_>>,
) -> Result<ClientConfig, ConfigError> {
    let mut store = RootCertStore::empty();
    let (key, certs) = match roots {
        Roots::System { key } => (key, rustls_native_certs::load_native_certs().certs),
        Roots::File { key, path } => (key, certificates(key, path)?),
    };
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(invalid(
            key,
            match roots {
                Roots::System { .. } => {
                    "the system has no CA certificates: name the CA file (PEM) here".to_string()
                }
                Roots::File { path, .. } => {
                    format!("{} holds no usable CA certificate", path.display())
                }
            },
        ));
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(key, e.to_string()))?
        .with_root_certificates(store);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => {
            let chain = certificates(id.cert_key, id.cert)?;
            let private = private_key(id.key_key, id.key)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| invalid(id.key_key, format!("does not fit the certificate: {e}")))
        }
    }
}

/// A TLS server with the certificate chain and key of two PEM files, each named by its
/// configuration key; it asks clients for no certificate.
pub fn server_config(
    cert_key: &str,
    cert: &Path,
    key_key: &str,
    key: &Path,
) -> Result<ServerConfig, ConfigError> {
    let chain = certificates(cert_key, cert)?;
    let private = private_key(key_key, key)?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(cert_key, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| invalid(key_key, format!("does not fit the certificate: {e}")))
}

/// A test certificate authority (the `openssl` command), for the daemons' tests.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
