//! A throwaway certificate authority and a TLS server for the fakes.
//!
//! Provider clients are tested over real TLS (and HTTP/2 via ALPN), not plain
//! HTTP, because connection setup, ALPN and connection reuse are part of what
//! the clients and the benchmark measure.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Concurrent HTTP/2 streams allowed per connection. Real FCM and APNs allow
/// on the order of 1000, and the benchmark multiplexes that many sends.
const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// A self-signed ECDSA P-256 CA and a server certificate it issued for
/// `127.0.0.1` and `localhost`. Clients trust [`TestCa::ca_pem`] only.
pub struct TestCa {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl TestCa {
    /// Generates a fresh CA and server certificate.
    ///
    /// # Panics
    /// If key generation or signing fails, which only happens when the
    /// crypto library itself is broken.
    pub fn new() -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Natter provider fakes test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        TestCa {
            ca_pem: ca_cert.pem(),
            server_cert: cert.der().clone(),
            server_key: key.serialize_der(),
        }
    }

    /// The CA certificate, PEM-encoded.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate as `natter-fakes-ca.pem` into `dir` and
    /// returns its path, for clients configured with a CA file.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("natter-fakes-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write CA file");
        path
    }

    fn server_config(&self, h2_only: bool) -> std::io::Result<ServerConfig> {
        // Explicit aws-lc-rs provider: the process-wide default may be unset or
        // ambiguous, and ring is not built in this workspace.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], key)
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = if h2_only {
            vec![b"h2".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        Ok(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A running TLS server. Dropping it stops accepting and closes every open
/// connection.
pub struct Server {
    /// The bound address, always on 127.0.0.1.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Server {
    /// `https://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// TLS connections accepted (handshake completed) so far; tells whether a
    /// client reuses connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Connection tasks live in a JoinSet owned by the accept task, so
        // aborting it drops (and aborts) them too.
        self.task.abort();
    }
}

/// Serves `router` over TLS on 127.0.0.1 with an ephemeral port.
///
/// ALPN offers `h2` and `http/1.1`, or only `h2` when `h2_only` (APNs refuses
/// HTTP/1.1, so a client offering only `http/1.1` fails the handshake and one
/// sending HTTP/1.1 without ALPN gets its connection closed).
pub async fn serve(ca: &TestCa, router: Router, h2_only: bool) -> std::io::Result<Server> {
    let acceptor = TlsAcceptor::from(Arc::new(ca.server_config(h2_only)?));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        router,
        h2_only,
        connections.clone(),
    ));
    Ok(Server {
        addr,
        connections,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    h2_only: bool,
    connections: Arc<AtomicUsize>,
) {
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so a long benchmark does not grow the set.
        while conns.try_join_next().is_some() {}
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Typically EMFILE under load: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let connections = connections.clone();
        // The handshake runs in the connection task so a slow or broken
        // client cannot stall accepting others.
        conns.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
            let builder = if h2_only {
                builder.http2_only()
            } else {
                builder
            };
            let service = TowerToHyperService::new(router);
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_round_trips() {
        let ca = TestCa::new();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let dir = std::env::temp_dir().join(format!("natter-fakes-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = ca.write_ca_file(&dir);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ca.ca_pem());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(TestCa::new().ca_pem(), ca.ca_pem(), "every CA is fresh");
    }
}
