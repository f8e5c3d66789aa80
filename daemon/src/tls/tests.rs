#![allow(clippy::unwrap_used)]

use super::testing::Pki;
use super::*;

fn pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path()).unwrap();
    (dir, pki)
}

#[test]
fn a_ca_file_and_a_client_certificate_make_a_client() {
    let (_dir, pki) = pki();
    let roots = Roots::File {
        key: "mqtt.ca_file",
        path: &pki.ca,
    };
    let client = client_config(
        roots,
        Some(Identity {
            cert_key: "mqtt.client_cert_file",
            cert: &pki.client_cert,
            key_key: "mqtt.client_key_file",
            key: &pki.client_key,
        }),
    )
    .unwrap();
    assert!(client.client_auth_cert_resolver.has_certs());
    let anonymous = client_config(roots, None).unwrap();
    assert!(!anonymous.client_auth_cert_resolver.has_certs());
    server_config("cert", &pki.server_cert, "key", &pki.server_key).unwrap();
}

#[test]
fn bad_files_are_refused_with_their_key_and_path() {
    let (dir, pki) = pki();
    let missing = dir.path().join("missing.pem");
    let e = certificates("mqtt.ca_file", &missing)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mqtt.ca_file") && e.contains("missing.pem"),
        "{e}"
    );
    // A key where a certificate belongs, and the other way round.
    let e = certificates("mqtt.ca_file", &pki.client_key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no certificate"), "{e}");
    let e = private_key("mqtt.client_key_file", &pki.client_cert)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mqtt.client_key_file") && e.contains("holds no private key"),
        "{e}"
    );
    // The server's key with the client's certificate.
    let e = client_config(
        Roots::File {
            key: "mqtt.ca_file",
            path: &pki.ca,
        },
        Some(Identity {
            cert_key: "mqtt.client_cert_file",
            cert: &pki.client_cert,
            key_key: "mqtt.client_key_file",
            key: &pki.server_key,
        }),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mqtt.client_key_file") && e.contains("does not fit"),
        "{e}"
    );
}
