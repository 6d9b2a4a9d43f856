//! Servers a scenario runs against: the same router as the binary, in process
//! on 127.0.0.1 (SQLite or PostgreSQL); a real `natter` process (for SIGKILL);
//! or any deployment by URL (QA).

pub use crate::db::create_postgres_database;
use anyhow::{Context, bail};
use natter_auth::AuthConfig;
use natter_auth::service::AuthService;
use natter_chat::{ChatConfig, ChatService};
use natter_common::testing::{TempDir, TestDb};
use natter_common::token::TokenKeys;
use natter_common::{Db, Shutdown, SystemClock};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a scenario runs.
pub enum Server {
    /// In this process.
    InProcess(InProcess),
    /// A `natter` child process.
    Process(ProcessServer),
    /// Several `natter` processes sharing PostgreSQL and Redis; devices are
    /// spread over the nodes in connect order.
    Cluster(crate::cluster::LocalCluster),
    /// A deployment.
    Remote {
        /// Base URL.
        url: String,
        /// Where the deployment's SMS outbox can be read (QA mode).
        sms_outbox: PathBuf,
    },
}

impl Server {
    /// Base URL (`http://…`).
    pub fn url(&self) -> String {
        match self {
            Server::InProcess(s) => format!("http://{}", s.addr),
            Server::Process(p) => format!("http://127.0.0.1:{}", p.port),
            Server::Cluster(c) => c.nodes[0].url(),
            Server::Remote { url, .. } => url.clone(),
        }
    }

    /// The WebSocket URL for the `n`th connection a scenario opens: a cluster
    /// spreads them over its nodes; other servers use the API's default.
    pub fn ws_url_for(&self, n: usize) -> Option<String> {
        match self {
            Server::Cluster(c) => Some(c.nodes[n % c.nodes.len()].ws_url()),
            _ => None,
        }
    }

    /// The SMS outbox file with registration codes.
    pub fn sms_outbox(&self) -> PathBuf {
        match self {
            Server::InProcess(s) => s.data_dir.path().join("outbox/sms.jsonl"),
            Server::Process(p) => p.data_dir.path().join("outbox/sms.jsonl"),
            Server::Cluster(c) => c.sms_outbox(0),
            Server::Remote { sms_outbox, .. } => sms_outbox.clone(),
        }
    }

    /// Restarts: gracefully in process, with SIGKILL for a child process.
    pub async fn restart(&mut self, kill: bool) -> anyhow::Result<()> {
        match self {
            Server::InProcess(s) if !kill => s.restart().await,
            Server::InProcess(_) => bail!(
                "a SIGKILL restart needs a real process (run this scenario with natter/tests)"
            ),
            Server::Process(p) => p.restart(kill).await,
            Server::Cluster(_) => bail!("restart one node of a cluster with LocalCluster"),
            Server::Remote { .. } => bail!("cannot restart a remote server"),
        }
    }

    /// Stops and cleans up.
    pub async fn stop(self) {
        match self {
            Server::InProcess(s) => s.stop().await,
            Server::Process(mut p) => p.kill(),
            Server::Cluster(c) => drop(c),
            Server::Remote { .. } => {}
        }
    }
}

/// Auth and chat in this process, on 127.0.0.1, with the binary's router shape.
pub struct InProcess {
    db: TestDb,
    data_dir: TempDir,
    addr: SocketAddr,
    keys: Arc<TokenKeys>,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ring_timeout_secs: u32,
    turn: TurnSpot,
}

/// Where the in-process TURN server listens and the address clients are given.
#[derive(Debug, Clone)]
pub struct TurnSpot {
    /// The listening IP (`127.0.0.1`, or a wildcard).
    pub listen_ip: std::net::IpAddr,
    /// The host in the TURN URLs handed to clients.
    pub url_host: String,
}

impl Default for TurnSpot {
    fn default() -> Self {
        Self {
            listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            url_host: "127.0.0.1".into(),
        }
    }
}

impl TurnSpot {
    /// TURN on `0.0.0.0`, reached through this host's primary (non-loopback)
    /// address, as a browser on the host reaches a TURN server on a wildcard
    /// listener; 127.0.0.2 when the host has no other address.
    pub fn wildcard() -> Self {
        let primary = std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
            .and_then(|s| s.local_addr())
            .map(|a| a.ip())
            .ok()
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
        Self {
            listen_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            url_host: primary.map_or_else(|| "127.0.0.2".to_owned(), |ip| ip.to_string()),
        }
    }
}

impl InProcess {
    /// A fresh database of `engine` (`sqlite` or `postgres`) and a server on it.
    pub async fn start(engine: &str) -> anyhow::Result<Self> {
        Self::start_with(engine, 60).await
    }

    /// Like [`InProcess::start`] with a call ring timeout (call scenarios that
    /// wait for a missed call set it low).
    pub async fn start_with(engine: &str, ring_timeout_secs: u32) -> anyhow::Result<Self> {
        Self::start_full(engine, ring_timeout_secs, TurnSpot::default()).await
    }

    /// Like [`InProcess::start`] with TURN where `turn` says.
    pub async fn start_with_turn(engine: &str, turn: TurnSpot) -> anyhow::Result<Self> {
        Self::start_full(engine, 60, turn).await
    }

    async fn start_full(
        engine: &str,
        ring_timeout_secs: u32,
        turn: TurnSpot,
    ) -> anyhow::Result<Self> {
        let db = match engine {
            "sqlite" => TestDb::sqlite().await,
            "postgres" => TestDb::postgres().await,
            other => bail!("unknown engine {other}"),
        };
        let data_dir = TempDir::new("natter-scenario");
        let keys = Arc::new(TokenKeys::new(
            natter_common::random::token().as_bytes(),
            &[],
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let tasks = serve(
            &db.db,
            &data_dir,
            keys.clone(),
            listener,
            shutdown.clone(),
            ring_timeout_secs,
            &turn,
        )
        .await?;
        Ok(Self {
            db,
            data_dir,
            addr,
            keys,
            shutdown,
            tasks,
            ring_timeout_secs,
            turn,
        })
    }

    /// Graceful restart on the same address and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.pause().await;
        self.resume().await
    }

    /// Stops serving (gracefully: sockets get 1001); the database stays.
    pub async fn pause(&mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }

    /// Serves again on the same address after [`InProcess::pause`].
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let listener = bind_retry(self.addr).await?;
        self.shutdown = Shutdown::new();
        self.tasks = serve(
            &self.db.db,
            &self.data_dir,
            self.keys.clone(),
            listener,
            self.shutdown.clone(),
            self.ring_timeout_secs,
            &self.turn,
        )
        .await?;
        Ok(())
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The SMS outbox with registration codes.
    pub fn sms_outbox(&self) -> PathBuf {
        self.data_dir.path().join("outbox/sms.jsonl")
    }

    /// Stops and drops the database.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        self.db.cleanup().await;
    }
}

async fn bind_retry(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    for _ in 0..50 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("cannot bind {addr} again")
}

async fn serve(
    db: &Db,
    data_dir: &TempDir,
    keys: Arc<TokenKeys>,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
    ring_timeout_secs: u32,
    turn_spot: &TurnSpot,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let clock: natter_common::SharedClock = Arc::new(SystemClock);
    let auth_cfg = AuthConfig {
        limit_per_ip: natter_common::ratelimit::Quota::new(10_000, 3600),
        limit_verify_per_ip: natter_common::ratelimit::Quota::new(10_000, 3600),
        limit_link_per_ip: natter_common::ratelimit::Quota::new(10_000, 3600),
        ..AuthConfig::for_tests()
    };
    let auth = AuthService::build(
        auth_cfg,
        db,
        true,
        data_dir.path(),
        clock.clone(),
        keys.clone(),
        900,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let keys_for_signaling = keys.clone();
    let chat = ChatService::build(
        ChatConfig::for_tests(),
        db,
        true,
        data_dir.path(),
        clock,
        keys,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    // TURN and signaling as `natter serve` composes them: loopback relays
    // allowed, so calls between clients on this host can be relay-only.
    let turn_cfg = natter_turn::TurnConfig {
        listen: SocketAddr::new(turn_spot.listen_ip, 0),
        allowed_peers: "127.0.0.0/8".parse().map_err(anyhow::Error::msg)?,
        ..natter_turn::TurnConfig::for_tests()
    };
    let turn = natter_turn::TurnServer::bind(turn_cfg.clone()).await?;
    let turn_port = turn.local_addrs().udp.port();
    let host = &turn_spot.url_host;
    let signaling = natter_signaling::SignalingService::build(
        natter_signaling::SignalingConfig {
            turn_urls: natter_signaling::config::UrlList(vec![
                format!("turn:{host}:{turn_port}?transport=udp"),
                format!("turn:{host}:{turn_port}?transport=tcp"),
            ]),
            ring_timeout_secs,
            // Raised like the auth limits above: call-bench places thousands
            // of calls per pair (the limits are tested on a real process, in
            // natter/tests/adversarial.rs).
            offers_per_caller: natter_common::ratelimit::Quota::new(1_000_000, 60),
            offers_per_pair: natter_common::ratelimit::Quota::new(1_000_000, 60),
            ..natter_signaling::SignalingConfig::default()
        },
        db,
        true,
        Arc::new(SystemClock),
        keys_for_signaling,
        turn_cfg.auth_secret.clone(),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    chat.state()
        .set_call_handler(Arc::new(signaling.attach(chat.state().device_link())));
    let router = auth
        .router()
        .merge(chat.router())
        .merge(signaling.router())
        .merge(natter_common::health::router(
            Vec::new(),
            shutdown.clone(),
            Default::default(),
        ));
    let mut parts = vec![auth.spawn_cleanup(shutdown.clone())];
    parts.extend(chat.spawn_background(shutdown.clone()));
    parts.extend(signaling.spawn_background(shutdown.clone()));
    let mut tasks: Vec<_> = parts.into_iter().map(|p| p.task).collect();
    {
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = turn.run(shutdown).await {
                tracing::error!(error = %e, "scenario TURN server failed");
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        if let Err(e) = natter_common::listener::serve(listener, router, shutdown).await {
            tracing::error!(error = %e, "scenario server failed");
        }
    }));
    Ok(tasks)
}

/// A real `natter serve` process.
pub struct ProcessServer {
    bin: PathBuf,
    data_dir: TempDir,
    port: u16,
    database_url: Option<String>,
    extra_env: Vec<(String, String)>,
    child: Option<std::process::Child>,
}

impl ProcessServer {
    /// Starts `bin` with a fresh data dir (SQLite there unless `database_url`).
    pub async fn start(bin: PathBuf, database_url: Option<String>) -> anyhow::Result<Self> {
        Self::start_with_env(bin, database_url, &[]).await
    }

    /// [`ProcessServer::start`] with more environment variables.
    pub async fn start_with_env(
        bin: PathBuf,
        database_url: Option<String>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut s = Self {
            bin,
            data_dir: TempDir::new("natter-process"),
            port,
            database_url,
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("serve")
            .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{}", self.port))
            // The embedded TURN server on an ephemeral port: tests run side by side.
            .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
            // Clients and relays all live on loopback here.
            .env("NATTER_TURN__ALLOWED_PEERS", "127.0.0.0/8")
            .env("NATTER_AUTH__ARGON2__MEMORY_KIB", "256")
            .env("NATTER_AUTH__ARGON2__ITERATIONS", "1")
            .env("NATTER_AUTH__LIMIT_PER_IP__COUNT", "10000")
            .env("NATTER_AUTH__LIMIT_VERIFY_PER_IP__COUNT", "10000")
            .env("NATTER_LOG__FILTER", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        if let Some(url) = &self.database_url {
            cmd.env("NATTER_DATABASE__URL", url);
        }
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        self.child = Some(
            cmd.spawn()
                .with_context(|| format!("start {}", self.bin.display()))?,
        );
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                bail!("natter exited during start-up: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("natter did not become ready on port {}", self.port)
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// The SMS outbox with registration codes.
    pub fn sms_outbox(&self) -> PathBuf {
        self.data_dir.path().join("outbox/sms.jsonl")
    }

    /// Stops the process (SIGKILL when `kill`, else SIGTERM) and starts it again.
    pub async fn restart(&mut self, kill: bool) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if kill {
                child.kill()?;
            } else {
                // SIGTERM through the kill(1) utility: std has no portable TERM.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
            child.wait()?;
        }
        self.spawn().await
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ProcessServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl InProcess {
    /// Registers `number` with the code from this server's SMS outbox and returns
    /// the account (what every call test does for each party).
    pub async fn registered(
        &self,
        api: &natter_client::Api,
        number: &str,
        device_name: &str,
    ) -> natter_client::Account {
        let outbox = self.sms_outbox();
        let creds = natter_client::register(api, number, device_name, |s| async move {
            natter_client::code_from_outbox(&outbox, &s.session_id).await
        })
        .await
        .expect("registration with the outbox code");
        natter_client::Account::new(api.clone(), creds)
    }
}

/// Waits (at most 20 s) for the `synced` event that ends a connection's queue drain.
pub async fn synced(events: &mut natter_client::Events) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("synced within 20 s")
            .expect("connection alive");
        if ev == natter_client::Event::Synced {
            return;
        }
    }
}
