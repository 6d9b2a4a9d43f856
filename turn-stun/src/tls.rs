//! TLS (TURNS) certificate loading and reloading. The acceptor reads the current
//! `ServerConfig` at each handshake, so a reload affects new connections only:
//! existing connections and their allocations are untouched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TurnError;

/// Reloads the TLS certificate and key from their files. The server calls it on
/// SIGHUP; the binary or tests may call it directly.
#[derive(Clone)]
pub struct TlsReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish()
    }
}

impl TlsReloader {
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<TlsReloader, TurnError> {
        let config = server_config(cert_path, key_path)?;
        Ok(TlsReloader {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; on error the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TurnError> {
        let config = server_config(&self.cert_path, &self.key_path)?;
        // A poisoned lock only means a reader panicked mid-clone; the value is still whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TurnError> {
    let tls_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        TurnError::Tls(format!("turn.{what}: {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| tls_err("tls_cert_path", cert_path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("tls_cert_path", cert_path, &e))?;
    if certs.is_empty() {
        return Err(tls_err(
            "tls_cert_path",
            cert_path,
            &"no CERTIFICATE block in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| tls_err("tls_key_path", key_path, &e))?;
    // An explicit provider: aws-lc-rs is the workspace's single crypto provider, and
    // passing it here works whether or not a process default was installed.
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TurnError::Tls(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err("tls_key_path", key_path, &e))?;
    Ok(Arc::new(config))
}
