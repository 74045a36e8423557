//! TLS and mutual TLS for the gRPC port, from PEM files named by
//! `--tls-cert`, `--tls-key` and `--tls-client-ca` (or `server.tls_*`).
//! Everything is read and checked at startup, so a missing file, a file
//! without the expected PEM block or a key that does not fit the certificate
//! stops the server with the flag, the path and the reason.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::ServerSettings;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {reason}")]
pub struct TlsError {
    pub flag: &'static str,
    pub path: String,
    pub reason: String,
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError {
        flag,
        path: path.display().to_string(),
        reason: format!("cannot read: {error}"),
    })
}

fn certificates(flag: &'static str, path: &Path, pem: &[u8]) -> Result<(), TlsError> {
    let fail = |reason: String| TlsError {
        flag,
        path: path.display().to_string(),
        reason,
    };
    let mut found = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| fail(format!("not a valid PEM certificate file: {e}")))?;
        found += 1;
    }
    if found == 0 {
        return Err(fail("holds no PEM `CERTIFICATE` block".into()));
    }
    Ok(())
}

/// The server's TLS configuration, or `None` for plaintext. Both the
/// certificate and the key are needed; the client CA needs them too.
pub fn server_tls_config(settings: &ServerSettings) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (cert_path, key_path) = match (&settings.tls_cert, &settings.tls_key) {
        (None, None) => {
            if let Some(ca) = &settings.tls_client_ca {
                return Err(TlsError {
                    flag: "--tls-client-ca",
                    path: ca.display().to_string(),
                    reason: "requires --tls-cert and --tls-key (mutual TLS is TLS first)".into(),
                });
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(cert), None) => {
            return Err(TlsError {
                flag: "--tls-cert",
                path: cert.display().to_string(),
                reason: "requires --tls-key too".into(),
            });
        }
        (None, Some(key)) => {
            return Err(TlsError {
                flag: "--tls-key",
                path: key.display().to_string(),
                reason: "requires --tls-cert too".into(),
            });
        }
    };
    let cert_pem = read("--tls-cert", cert_path)?;
    certificates("--tls-cert", cert_path, &cert_pem)?;
    let key_pem = read("--tls-key", key_path)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError {
        flag: "--tls-key",
        path: key_path.display().to_string(),
        reason: format!("holds no usable PEM private key: {e}"),
    })?;

    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca_path) = &settings.tls_client_ca {
        let ca_pem = read("--tls-client-ca", ca_path)?;
        certificates("--tls-client-ca", ca_path, &ca_pem)?;
        config = config.client_ca_root(Certificate::from_pem(ca_pem));
    }
    // Building the acceptor checks that the key fits the certificate.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|error| TlsError {
            flag: "--tls-key",
            path: key_path.display().to_string(),
            reason: format!(
                "cannot be used with --tls-cert {}: {}",
                cert_path.display(),
                std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), ToString::to_string)
            ),
        })?;
    Ok(Some(config))
}
