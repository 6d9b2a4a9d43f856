//! Natter's STUN/TURN server: a thin tokio driver around the sans-IO
//! [`natter_turn_core`]. It listens on UDP and TCP (and TLS when configured), binds
//! one relay socket per allocation from the port range, and feeds everything to the
//! core from a single task (see `driver`).
//!
//! ```no_run
//! # async fn f() -> Result<(), natter_turn::TurnError> {
//! let config = natter_turn::TurnConfig::default();
//! let server = natter_turn::TurnServer::bind(config).await?;
//! println!("{:?}", server.local_addrs());
//! server.run(natter_common::shutdown::on_signals()).await
//! # }
//! ```

mod addrs;
mod config;
mod discover;
mod driver;
mod metrics;
mod ports;
mod relay;
mod stream;
mod tls;
mod udp;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use natter_common::Shutdown;
use natter_turn_core::auth::Credentials;
use natter_turn_core::policy::PeerPolicy;
use natter_turn_core::{Server, ServerConfig, WallClock};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tracing::{info, warn};

pub use config::{CidrList, DEFAULT_PORT_RANGE, PortRange, StaticUsers, TurnConfig};
pub use natter_turn_core as core;
pub use tls::TlsReloader;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The configuration is invalid; the message names the key.
    #[error("invalid TURN configuration: {0}")]
    Config(String),
    /// A listening socket could not be bound.
    #[error("cannot bind TURN {what} listener on {addr}: {source}")]
    Bind {
        /// `udp`, `tcp` or `tls`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TURN TLS: {0}")]
    Tls(String),
    /// `turn.external_ip_stun_server` gave no address and discovery is required.
    #[error(
        "turn.external_ip_stun_server: cannot discover the external IP: {0} \
         (set turn.external_ip_stun_required=false to start with the relay IP instead)"
    )]
    Discovery(String),
    /// Another I/O failure.
    #[error("TURN I/O: {0}")]
    Io(#[from] io::Error),
}

/// The bound listening addresses (with ephemeral ports resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    /// UDP listener.
    pub udp: SocketAddr,
    /// TCP listener (same port as UDP).
    pub tcp: SocketAddr,
    /// TLS listener, when configured.
    pub tls: Option<SocketAddr>,
}

/// A bound, not yet running, TURN server. Sockets are kept as std sockets until
/// [`TurnServer::run`] registers them with the server's own runtime.
pub struct TurnServer {
    config: TurnConfig,
    core: Server,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    tls: Option<(std::net::TcpListener, TlsReloader)>,
    relay_ip: IpAddr,
    /// IPv6 relay address: configured, or found on the host for a wildcard listener.
    relay_ipv6: Option<IpAddr>,
    /// How to re-read our own addresses while running (wildcard listeners only).
    own_refresh: Option<driver::OwnAddresses>,
    addrs: LocalAddrs,
}

/// Receive buffer asked for on the client-facing UDP socket.
const LISTEN_RECV_BUFFER: usize = 4 << 20;
/// Capacity of the channel from connection and relay tasks to the core task.
const INBOX_CAPACITY: usize = 4096;

impl TurnServer {
    /// Validates `config` and binds the listeners. With neither an auth secret nor
    /// static users the server still starts, refuses every allocation, and says so
    /// once in the log.
    pub async fn bind(mut config: TurnConfig) -> Result<TurnServer, TurnError> {
        config.validate().map_err(TurnError::Config)?;
        ports::check_host(config.port_range);
        let (udp, tcp) = bind_udp_and_tcp(config.listen)?;
        let udp_addr = udp.local_addr()?;
        let tcp_addr = tcp.local_addr()?;
        let tls = match (
            config.tls_listen,
            &config.tls_cert_path,
            &config.tls_key_path,
        ) {
            (Some(addr), Some(cert), Some(key)) => {
                let reloader = TlsReloader::load(cert, key)?;
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| TurnError::Bind {
                        what: "tls",
                        addr,
                        source,
                    })?;
                Some((listener, reloader))
            }
            _ => None,
        };
        let tls_addr = tls.as_ref().map(|(l, _)| l.local_addr()).transpose()?;
        let relay_ip = config
            .relay_ip
            .unwrap_or_else(|| relay_ip_for(config.listen.ip()));
        if let Some(server) = config.external_ip_stun_server.clone() {
            config.external_ip = discover_external_ip(&config, &server, relay_ip).await?;
        }

        let relay_ipv6 = if relay_ip.is_ipv6() {
            Some(relay_ip)
        } else {
            config.relay_ipv6.or_else(|| {
                config
                    .listen
                    .ip()
                    .is_unspecified()
                    .then(addrs::global_ipv6)
                    .flatten()
            })
        };
        if relay_ipv6.is_none() {
            warn!(
                "TURN relays to IPv4 peers only: IPv6 peers cannot be reached. Set \
                 turn.relay_ipv6 (on a wildcard listener it is found automatically when the \
                 host has a global IPv6 address; this one has none)"
            );
        }

        // Our own listening addresses are never valid peers. For a wildcard listener,
        // that is every address of the host (re-read while running, see `driver`).
        let listeners: Vec<SocketAddr> = [Some(udp_addr), Some(tcp_addr), tls_addr]
            .into_iter()
            .flatten()
            .collect();
        let mut own_ips: Vec<IpAddr> = vec![relay_ip];
        own_ips.extend(addrs::loopbacks());
        own_ips.extend(config.external_ip);
        own_ips.extend(relay_ipv6);
        own_ips.extend(config.external_ipv6);
        let wildcard = listeners.iter().any(|l| l.ip().is_unspecified());
        let own_refresh = wildcard.then(|| driver::OwnAddresses {
            listeners: listeners.clone(),
            fixed_ips: own_ips.clone(),
        });
        if wildcard {
            own_ips.extend(addrs::host_ips());
        }
        let own = addrs::own_addresses(&listeners, &own_ips);

        let static_users: Vec<(&str, &str)> = config
            .static_users
            .0
            .iter()
            .map(|(u, p)| (u.as_str(), p.expose()))
            .collect();
        let credentials = Credentials::new(
            &config.realm,
            Some(config.auth_secret.expose().as_bytes()),
            static_users,
        );
        if credentials.is_empty() {
            warn!(
                "TURN has no auth_secret (NATTER_TURN__AUTH_SECRET) and no static users: \
                 every allocation will be refused"
            );
        }
        let now = Instant::now();
        let unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let core = Server::new(ServerConfig {
            credentials,
            nonce_key: random_key()?,
            nonce_lifetime_secs: config.nonce_lifetime_secs,
            default_lifetime_secs: config.default_lifetime_secs,
            max_lifetime_secs: config.max_lifetime_secs,
            policy: PeerPolicy::new(config.allowed_peers.0.clone(), own),
            quotas: config.quotas(),
            external_ips: config
                .external_ip
                .into_iter()
                .chain(config.external_ipv6)
                .collect(),
            relay_ipv4: relay_ip.is_ipv4(),
            relay_ipv6: relay_ipv6.is_some(),
            alternate_server: config.alternate_server,
            clock: WallClock { at: now, unix_secs },
        });
        let addrs = LocalAddrs {
            udp: udp_addr,
            tcp: tcp_addr,
            tls: tls_addr,
        };
        Ok(TurnServer {
            config,
            core,
            udp,
            tcp,
            tls,
            relay_ip,
            relay_ipv6,
            own_refresh,
            addrs,
        })
    }

    /// Where the server listens.
    pub fn local_addrs(&self) -> LocalAddrs {
        self.addrs
    }

    /// The IP relay sockets bind to.
    pub fn relay_ip(&self) -> IpAddr {
        self.relay_ip
    }

    /// A handle that reloads the TLS certificate (the server also does so on SIGHUP).
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.tls.as_ref().map(|(_, r)| r.clone())
    }

    /// Serves until `shutdown` is cancelled, then drains: new allocations are
    /// refused with 508 and live ones keep relaying until the last one ends or
    /// `turn.drain_grace_secs` elapse; then every allocation's socket is closed.
    ///
    /// The server runs on a dedicated thread with a single-threaded tokio runtime:
    /// every relayed packet is handled by one task (the sans-IO core is one state
    /// machine), and keeping that task and its sockets on one thread avoids a
    /// cross-thread wake-up per packet. Dropping the returned future stops it at
    /// once, without a drain.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), TurnError> {
        let drain = shutdown.child_token();
        let stop = Shutdown::new();
        let _stop_on_drop = stop.clone().drop_guard();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("natter-turn".to_owned())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(TurnError::Io)
                    .and_then(|rt| rt.block_on(self.serve(drain, stop)));
                let _ = done_tx.send(result);
            })?;
        done_rx.await.unwrap_or_else(|_| {
            Err(TurnError::Io(io::Error::other(
                "the TURN server thread panicked",
            )))
        })
    }

    /// Serves until `stop`, or until the drain that `drain` starts is over.
    async fn serve(self, drain: Shutdown, shutdown: Shutdown) -> Result<(), TurnError> {
        let TurnServer {
            config,
            core,
            udp,
            tcp,
            tls,
            relay_ip,
            relay_ipv6,
            own_refresh,
            addrs,
        } = self;
        info!(
            udp = %addrs.udp, tcp = %addrs.tcp, tls = ?addrs.tls, relay_ip = %relay_ip,
            external_ip = ?config.external_ip, relay_ipv6 = ?relay_ipv6, port_range = %config.port_range, realm = %config.realm,
            drain_grace_secs = config.drain_grace_secs,
            "TURN server listening"
        );
        let udp = udp::ClientSocket::new(UdpSocket::from_std(udp)?)?;
        let tcp = TcpListener::from_std(tcp)?;
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let limit = Arc::new(Semaphore::new(config.max_tcp_connections as usize));
        let mut tasks = tokio::task::JoinSet::new();
        let accepting = shutdown.child_token();
        tasks.spawn(stream::accept_loop(
            tcp,
            None,
            inbox_tx.clone(),
            limit.clone(),
            accepting.clone(),
            shutdown.clone(),
        ));
        if let Some((listener, reloader)) = tls {
            let listener = TcpListener::from_std(listener)?;
            tasks.spawn(reload_on_sighup(reloader.clone(), shutdown.clone()));
            tasks.spawn(stream::accept_loop(
                listener,
                Some(reloader),
                inbox_tx.clone(),
                limit,
                accepting.clone(),
                shutdown.clone(),
            ));
        }
        let relay_ipv4 = relay_ip.is_ipv4().then_some(relay_ip);
        let binder = relay::RelayBinder::new(
            relay_ipv4,
            relay_ipv6,
            config.port_range,
            u64::from_le_bytes(random_bytes::<8>()?),
        );
        // The driver keeps a sender so its inbox never reports closed while it runs.
        let _inbox_keepalive = inbox_tx;
        let drain = driver::Drain {
            requested: drain,
            grace: std::time::Duration::from_secs(config.drain_grace_secs),
            accepting,
        };
        let driver = driver::Driver::new(
            core,
            Arc::new(udp),
            binder,
            own_refresh,
            shutdown.clone(),
            drain,
        );
        #[cfg(debug_assertions)]
        let fault = fault_injection::after_env_delay();
        #[cfg(not(debug_assertions))]
        let fault = std::future::pending::<()>();
        tokio::select! {
            () = driver.run(inbox_rx) => {}
            () = fault => panic!("injected fault: the TURN thread stops (NATTER_TURN_TEST_PANIC_AFTER_MS)"),
        }
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// The address `server` (`host:port`, a STUN server) sees for a UDP socket bound
/// on `from`: what `turn.external_ip_stun_server` discovery does at start, for
/// tools and tests. Retransmits on RFC 8489's schedule until `timeout`.
pub async fn stun_mapped_address(
    server: &str,
    from: IpAddr,
    timeout: std::time::Duration,
) -> Result<SocketAddr, TurnError> {
    discover::discover(server, from, timeout)
        .await
        .map_err(TurnError::Discovery)
}

/// `turn.external_ip_stun_server`: the external IP to advertise (`None` when the
/// server sees the relay IP itself: there is no NAT to cross).
async fn discover_external_ip(
    config: &TurnConfig,
    server: &str,
    relay_ip: IpAddr,
) -> Result<Option<IpAddr>, TurnError> {
    let timeout = std::time::Duration::from_secs(config.external_ip_stun_timeout_secs);
    match discover::discover(server, relay_ip, timeout).await {
        Ok(mapped) if mapped.ip() == relay_ip => {
            info!(stun_server = %server, relay_ip = %relay_ip,
                "external IP discovery: the STUN server sees the relay IP itself (no NAT); advertising it");
            Ok(None)
        }
        Ok(mapped) => {
            let ip = mapped.ip();
            if let Some(what) = discover::suspicious(ip) {
                warn!(stun_server = %server, external_ip = %ip,
                    "external IP discovery returned {what}: the STUN server is probably inside the \
                     same private network, and peers on the Internet cannot reach relays there. \
                     Point turn.external_ip_stun_server at a server outside it, or set turn.external_ip");
            } else {
                info!(stun_server = %server, external_ip = %ip, relay_ip = %relay_ip,
                    "external IP discovered; advertised in relayed addresses");
            }
            Ok(Some(ip))
        }
        Err(e) if config.external_ip_stun_required => Err(TurnError::Discovery(e)),
        Err(e) => {
            warn!(stun_server = %server, error = %e, relay_ip = %relay_ip,
                "external IP discovery failed; advertising the relay IP (turn.external_ip_stun_required=false)");
            Ok(None)
        }
    }
}

/// Binds UDP and TCP on the same address; with port 0, retries until both get the
/// same ephemeral port.
fn bind_udp_and_tcp(
    listen: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), TurnError> {
    let attempts = if listen.port() == 0 { 16 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let udp = std::net::UdpSocket::bind(listen).map_err(|source| TurnError::Bind {
            what: "udp",
            addr: listen,
            source,
        })?;
        let udp_addr = udp.local_addr()?;
        match std::net::TcpListener::bind(udp_addr) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(LISTEN_RECV_BUFFER);
                let _ = socket2::SockRef::from(&udp).set_send_buffer_size(LISTEN_RECV_BUFFER);
                return Ok((udp, tcp));
            }
            Err(e) => last_err = Some((udp_addr, e)),
        }
    }
    let (addr, source) = last_err.expect("at least one attempt was made");
    Err(TurnError::Bind {
        what: "tcp",
        addr,
        source,
    })
}

/// The relay IP when none is configured: the listen IP when specific, else the
/// address the host would use for outbound traffic. A UDP `connect` picks a route
/// and source address without sending anything; 192.0.2.1 is a documentation
/// address (RFC 5737) used only for that route lookup.
fn relay_ip_for(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let detected = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    detected.unwrap_or_else(|| {
        warn!("cannot determine this host's address for relaying; using 127.0.0.1 (set NATTER_TURN__RELAY_IP)");
        IpAddr::from(Ipv4Addr::LOCALHOST)
    })
}

async fn reload_on_sighup(reloader: TlsReloader, shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; TLS certificate reload disabled");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        match reloader.reload() {
            Ok(()) => {
                info!("TURN TLS certificate reloaded");
                ::metrics::counter!("natter_turn_tls_reloads_total", "result" => "ok").increment(1);
            }
            Err(e) => {
                warn!(error = %e, "TURN TLS certificate reload failed; keeping the previous one");
                ::metrics::counter!("natter_turn_tls_reloads_total", "result" => "error")
                    .increment(1);
            }
        }
    }
}

fn random_key() -> Result<[u8; 32], TurnError> {
    random_bytes::<32>()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TurnError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|e| TurnError::Io(io::Error::other(format!("random source: {e}"))))?;
    Ok(out)
}

/// Test-only fault injection, compiled into debug builds only: with
/// `NATTER_TURN_TEST_PANIC_AFTER_MS=N` the TURN thread panics N ms after it starts,
/// so a test can check that the process does not run on half-alive. Release builds
/// have no such switch.
#[cfg(debug_assertions)]
mod fault_injection {
    pub(crate) async fn after_env_delay() {
        match std::env::var("NATTER_TURN_TEST_PANIC_AFTER_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(ms) => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    }
}
