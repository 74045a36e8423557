//! TLS and mutual TLS for the gRPC port, from PEM files named by
//! `--tls-cert`, `--tls-key` and `--tls-client-ca` (or `server.tls_*`).
//! Everything is read and checked at startup, so a missing file, a file
//! without the expected PEM block or a key that does not fit the certificate
//! stops the server with the flag (or the config file and key), the path
//! and the reason.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{ServerSettings, SettingOrigins};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS setting that cannot be used. `setting` names where the path came
/// from: the flag (`--tls-cert`), or the file and key
/// (``profile.toml: `server.tls_cert`:``).
#[derive(Debug, thiserror::Error)]
#[error("{setting} {path}: {reason}")]
pub struct TlsError {
    pub setting: String,
    pub path: String,
    pub reason: String,
}

/// One of the three TLS paths.
#[derive(Debug, Clone, Copy)]
enum Which {
    Cert,
    Key,
    ClientCa,
}

impl Which {
    fn flag(self) -> &'static str {
        match self {
            Which::Cert => "--tls-cert",
            Which::Key => "--tls-key",
            Which::ClientCa => "--tls-client-ca",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Which::Cert => "server.tls_cert",
            Which::Key => "server.tls_key",
            Which::ClientCa => "server.tls_client_ca",
        }
    }
}

/// Names settings the way the operator set them.
struct Names<'a> {
    settings: &'a ServerSettings,
}

impl Names<'_> {
    fn file(&self, which: Which) -> Option<&str> {
        let origins = &self.settings.origins;
        match which {
            Which::Cert => origins.tls_cert.as_deref(),
            Which::Key => origins.tls_key.as_deref(),
            Which::ClientCa => origins.tls_client_ca.as_deref(),
        }
    }

    /// The error's subject: the flag, or the file and key.
    fn setting(&self, which: Which) -> String {
        SettingOrigins::name(self.file(which), which.key(), which.flag())
    }

    /// Another setting, mentioned in a reason about `about`: in the
    /// vocabulary `about` was set in.
    fn other(&self, about: Which, other: Which) -> String {
        match self.file(about) {
            Some(_) => format!("`{}` (or {})", other.key(), other.flag()),
            None => other.flag().to_owned(),
        }
    }

    fn error(&self, which: Which, path: &Path, reason: String) -> TlsError {
        TlsError {
            setting: self.setting(which),
            path: path.display().to_string(),
            reason,
        }
    }

    fn read(&self, which: Which, path: &Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path)
            .map_err(|error| self.error(which, path, format!("cannot read: {error}")))
    }

    fn certificates(&self, which: Which, path: &Path, pem: &[u8]) -> Result<(), TlsError> {
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(pem) {
            certificate.map_err(|e| {
                self.error(
                    which,
                    path,
                    format!("not a valid PEM certificate file: {e}"),
                )
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(self.error(which, path, "holds no PEM `CERTIFICATE` block".into()));
        }
        Ok(())
    }
}

/// The server's TLS configuration, or `None` for plaintext. Both the
/// certificate and the key are needed; the client CA needs them too.
pub fn server_tls_config(settings: &ServerSettings) -> Result<Option<ServerTlsConfig>, TlsError> {
    use Which::{Cert, ClientCa, Key};
    let names = Names { settings };
    let (cert_path, key_path) = match (&settings.tls_cert, &settings.tls_key) {
        (None, None) => {
            if let Some(ca) = &settings.tls_client_ca {
                return Err(names.error(
                    ClientCa,
                    ca,
                    format!(
                        "requires {} and {} (mutual TLS is TLS first)",
                        names.other(ClientCa, Cert),
                        names.other(ClientCa, Key)
                    ),
                ));
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(cert), None) => {
            return Err(names.error(
                Cert,
                cert,
                format!("requires {} too", names.other(Cert, Key)),
            ));
        }
        (None, Some(key)) => {
            return Err(names.error(Key, key, format!("requires {} too", names.other(Key, Cert))));
        }
    };
    let cert_pem = names.read(Cert, cert_path)?;
    names.certificates(Cert, cert_path, &cert_pem)?;
    let key_pem = names.read(Key, key_path)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        names.error(
            Key,
            key_path,
            format!("holds no usable PEM private key: {e}"),
        )
    })?;

    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca_path) = &settings.tls_client_ca {
        let ca_pem = names.read(ClientCa, ca_path)?;
        names.certificates(ClientCa, ca_path, &ca_pem)?;
        config = config.client_ca_root(Certificate::from_pem(ca_pem));
    }
    // Building the acceptor checks that the key fits the certificate.
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|error| {
            names.error(
                Key,
                key_path,
                format!(
                    "cannot be used with {} {}: {}",
                    names.other(Key, Cert),
                    cert_path.display(),
                    std::error::Error::source(&error)
                        .map_or_else(|| error.to_string(), ToString::to_string)
                ),
            )
        })?;
    Ok(Some(config))
}
