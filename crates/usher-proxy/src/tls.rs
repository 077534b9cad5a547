//! TLS termination: loading the PEM certificate chain and private key into a rustls
//! [`ServerConfig`] (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1` only), and the handshake
//! every accepted connection goes through before hyper sees it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// Why the TLS certificate or key could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (missing, unreadable); the I/O error is the source.
    #[error("cannot read TLS {what} file {}", path.display())]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("TLS {what} file {} is not valid PEM: {message}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// No `CERTIFICATE` block in the certificate file.
    #[error("no certificate (-----BEGIN CERTIFICATE-----) in TLS certificate file {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// No PKCS#8, PKCS#1 or SEC1 private key block in the key file.
    #[error(
        "no private key (PKCS#8 \"PRIVATE KEY\", PKCS#1 \"RSA PRIVATE KEY\" or SEC1 \"EC PRIVATE KEY\") in TLS key file {}",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind or size the crypto provider cannot sign with.
    #[error("private key in {} cannot be used: {message}", path.display())]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// rustls' message.
        message: String,
    },
    /// The first certificate cannot be parsed.
    #[error("server certificate in {} cannot be used: {message}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// rustls' message.
        message: String,
    },
    /// The private key is not the one the server certificate was issued for.
    #[error(
        "private key in {} does not match the server certificate in {} (the first certificate in the file)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration for another reason (the source says which).
    #[error("TLS configuration rejected")]
    Config(#[from] rustls::Error),
}

/// The ALPN protocols offered: HTTP/1.1 only (the data plane does not speak HTTP/2).
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Reads `tls.cert` and `tls.key` and builds the server configuration.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = certified_key(certs, key, &provider, tls)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("certificate", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate",
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        e => TlsError::Pem {
            what: "private key",
            path: path.to_owned(),
            message: e.to_string(),
        },
    })
}

/// Pairs the chain with its signing key, refusing a key that is not the certificate's.
fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: &CryptoProvider,
    tls: &TlsConfig,
) -> Result<CertifiedKey, TlsError> {
    let signing =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnusableKey {
                path: tls.key.clone(),
                message: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: tls.cert.clone(),
                key: tls.key.clone(),
            })
        }
        Err(e) => Err(TlsError::BadCertificate {
            path: tls.cert.clone(),
            message: e.to_string(),
        }),
    }
}

/// The listener's TLS side: hands every accepted connection through a bounded handshake.
#[derive(Clone)]
pub struct Terminator {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator").finish_non_exhaustive()
    }
}

impl Terminator {
    /// Loads the files named in `tls`.
    pub fn new(tls: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            acceptor: TlsAcceptor::from(server_config(tls)?),
        })
    }

    /// Runs the server handshake on `stream`, giving up after `limit`.
    pub async fn handshake<IO>(&self, stream: IO, limit: Duration) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(limit, self.acceptor.accept(stream)).await {
            Ok(res) => res,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake not finished in time",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, cert: &str, key: &str) -> TlsConfig {
        TlsConfig {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = server_config(&cfg(dir.path(), "nope.pem", "key.pem")).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("nope.pem") && msg.contains("certificate"),
            "{msg}"
        );
    }

    #[test]
    fn files_without_a_certificate_or_key_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = "just some text\n";
        std::fs::write(dir.path().join("empty.pem"), text).unwrap();
        let err = server_config(&cfg(dir.path(), "empty.pem", "empty.pem")).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        assert!(err.to_string().contains("empty.pem"), "{err}");

        // A certificate file given as the key file: a PEM file, but no key in it.
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
        let err = server_config(&cfg(dir.path(), "cert.pem", "cert.pem")).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("cert.pem") && msg.contains("no private key"),
            "{msg}"
        );
    }

    #[test]
    fn a_key_for_another_certificate_is_refused_and_a_good_pair_offers_http1_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("a.pem"), a.cert.pem()).unwrap();
        std::fs::write(dir.path().join("a.key"), a.key_pair.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("b.key"), b.key_pair.serialize_pem()).unwrap();
        let err = server_config(&cfg(dir.path(), "a.pem", "b.key")).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("b.key"), "{err}");

        let good = server_config(&cfg(dir.path(), "a.pem", "a.key")).unwrap();
        assert_eq!(good.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn broken_pem_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let text = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("bad.pem"), text).unwrap();
        let err = server_config(&cfg(dir.path(), "bad.pem", "bad.pem")).unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");
        assert!(err.to_string().contains("bad.pem"), "{err}");
    }
}
