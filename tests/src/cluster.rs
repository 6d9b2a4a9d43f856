//! A local cluster of real `natter serve` processes: one PostgreSQL database,
//! one Redis (with a key prefix of its own), N nodes on loopback ports. Used by
//! the distributed tests (SIGKILL needs real processes) and the benchmark.

use anyhow::{Context, bail};
use natter_client::{Account, Api};
use natter_common::testing::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `natter serve` process of a [`LocalCluster`].
pub struct Node {
    /// HTTP port on 127.0.0.1.
    pub port: u16,
    data_dir: TempDir,
    child: Option<Child>,
}

impl Node {
    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Several nodes sharing one database and one Redis.
pub struct LocalCluster {
    bin: PathBuf,
    /// The nodes, in start order.
    pub nodes: Vec<Node>,
    /// The shared database.
    pub database_url: String,
    /// The Redis the nodes use.
    pub redis_url: String,
    /// Their key prefix (unique per cluster, so tests can share a Redis).
    pub key_prefix: String,
    signing_key: String,
    extra_env: Vec<(String, String)>,
}

impl LocalCluster {
    /// Starts `n` nodes of `bin` on a fresh PostgreSQL database and `redis_url`.
    /// `extra_env` is passed to every node (e.g. chat limits).
    pub async fn start(
        bin: PathBuf,
        n: usize,
        redis_url: &str,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let database_url = crate::db::create_postgres_database().await?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut c = Self {
            bin,
            nodes: Vec::new(),
            database_url,
            redis_url: redis_url.to_owned(),
            key_prefix: format!("t{}:", &id[..12]),
            signing_key: natter_common::random::token(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        for i in 0..n {
            let port = free_port()?;
            let mut node = Node {
                port,
                data_dir: TempDir::new("natter-node"),
                child: None,
            };
            // The first node migrates alone; the others start once it is ready.
            c.spawn(&mut node, i).await?;
            c.nodes.push(node);
        }
        Ok(c)
    }

    async fn spawn(&self, node: &mut Node, index: usize) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir")
            .arg(node.data_dir.path())
            .arg("serve")
            .arg("all")
            .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{}", node.port))
            // Each node's embedded TURN server on an ephemeral port (not 3478 x 3).
            .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
            .env("NATTER_DATABASE__URL", &self.database_url)
            // Tests run clusters in parallel under PostgreSQL's 100 connections.
            .env("NATTER_DATABASE__MAX_CONNECTIONS", "6")
            .env("NATTER_REDIS__URL", &self.redis_url)
            .env("NATTER_REDIS__KEY_PREFIX", &self.key_prefix)
            .env(
                "NATTER_REDIS__NODE_ID",
                format!("node{index}-{}", node.port),
            )
            // Fast heartbeats: a killed node is noticed within a second.
            .env("NATTER_REDIS__HEARTBEAT_MS", "200")
            .env("NATTER_REDIS__NODE_TTL_MS", "1000")
            .env("NATTER_TOKENS__SIGNING_KEY", &self.signing_key)
            .env("NATTER_AUTH__ARGON2__MEMORY_KIB", "256")
            .env("NATTER_AUTH__ARGON2__ITERATIONS", "1")
            .env("NATTER_AUTH__LIMIT_PER_IP__COUNT", "100000")
            .env("NATTER_AUTH__LIMIT_VERIFY_PER_IP__COUNT", "100000")
            .env("NATTER_AUTH__LIMIT_LINK_PER_IP__COUNT", "100000")
            .env(
                "NATTER_LOG__FILTER",
                std::env::var("NATTER_TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(if std::env::var_os("NATTER_TEST_NODE_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        node.child = Some(
            cmd.spawn()
                .with_context(|| format!("start {}", self.bin.display()))?,
        );
        let url = format!("{}/readyz", node.url());
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(Some(status)) = node.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                bail!("node {index} exited during start-up: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("node {index} did not become ready on port {}", node.port)
    }

    /// Kills node `i` with SIGKILL (no drain, no goodbye to Redis).
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Sends node `i` SIGTERM and waits up to `limit` for it to exit; `None`
    /// when it is still running then (it is killed).
    pub fn terminate(
        &mut self,
        i: usize,
        limit: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let Some(mut c) = self.nodes[i].child.take() else {
            bail!("node {i} is not running");
        };
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()?;
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = c.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill()?;
        c.wait()?;
        Ok(None)
    }

    /// `GET /readyz` of node `i`: status and body.
    pub async fn readyz(&self, i: usize) -> anyhow::Result<(u16, String)> {
        let r = reqwest::get(format!("{}/readyz", self.nodes[i].url())).await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// Whether node `i`'s process has exited, with its status.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i].child.as_mut()?.try_wait().ok().flatten()
    }

    /// Freezes (`stop`) or thaws node `i` with SIGSTOP / SIGCONT: a process
    /// that is alive but silent, as one starved of CPU or paused by its host.
    pub fn freeze(&self, i: usize, stop: bool) -> anyhow::Result<()> {
        let Some(c) = &self.nodes[i].child else {
            bail!("node {i} is not running");
        };
        let sig = if stop { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .arg(sig)
            .arg(c.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill {sig} node {i}: {status}");
        }
        Ok(())
    }

    /// Where node `i` writes push notices.
    pub fn push_outbox(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.path().join("outbox/push.jsonl")
    }

    /// Starts node `i` again on its port (after [`LocalCluster::kill`]).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let mut node = std::mem::replace(
            &mut self.nodes[i],
            Node {
                port: 0,
                data_dir: TempDir::new("natter-node-placeholder"),
                child: None,
            },
        );
        let r = self.spawn(&mut node, i).await;
        self.nodes[i] = node;
        r
    }

    /// WebSocket URLs of every node, starting with node `first`.
    pub fn ws_urls_from(&self, first: usize) -> Vec<String> {
        let n = self.nodes.len();
        (0..n)
            .map(|k| self.nodes[(first + k) % n].ws_url())
            .collect()
    }

    /// Where node `i` writes registration codes.
    pub fn sms_outbox(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.path().join("outbox/sms.jsonl")
    }

    /// Registers a new account through node `i`.
    pub async fn register(&self, i: usize) -> anyhow::Result<Account> {
        let api = Api::new(&self.nodes[i].url())?;
        register_via(&api, &self.sms_outbox(i)).await
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Stop the nodes first (they would rewrite their entries), then remove
        // what they left in the shared Redis; best effort, keys expire anyway.
        self.nodes.clear();
        delete_prefix(&self.redis_url, &self.key_prefix);
        drop_database(&self.database_url);
    }
}

/// Drops a database made by [`crate::db::create_postgres_database`] (best
/// effort). On its own thread: `Drop` may run inside a tokio runtime.
fn drop_database(url: &str) {
    let Some(name) = url.rsplit('/').next().map(str::to_owned) else {
        return;
    };
    if !name.starts_with("natter_test_")
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return;
    }
    let admin = natter_common::testing::postgres_admin_url();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin).await {
                // The name was checked above: our prefix and [A-Za-z0-9_] only.
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    })
    .join();
}

/// Deletes every key under `prefix` (best effort, for test and benchmark clean-up).
pub fn delete_prefix(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = match redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
    {
        Ok(k) => k,
        Err(_) => return,
    };
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Registers a fresh number on `api`, reading the code from `outbox`.
pub async fn register_via(api: &Api, outbox: &Path) -> anyhow::Result<Account> {
    let r = uuid::Uuid::new_v4().as_u128();
    let number = format!(
        "+1415{:03}{:04}",
        200 + (r % 800) as u32,
        ((r >> 16) % 10_000) as u32
    );
    let outbox = outbox.to_owned();
    let creds = natter_client::register(api, &number, "cluster-test", |s| async move {
        natter_client::code_from_outbox(&outbox, &s.session_id).await
    })
    .await
    .context("register")?;
    Ok(Account::new(api.clone(), creds))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The shared Redis the tests use (`NATTER_TEST_REDIS_URL`, default the local one).
pub fn test_redis_url() -> String {
    std::env::var("NATTER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A redis-server of our own on a free port (for tests that restart Redis,
/// which must not disturb the shared one). Killed on drop.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// TLS only: the CA that signed the server's certificate.
    ca: Option<PathBuf>,
}

impl PrivateRedis {
    /// Starts `redis-server` (it must be installed: scripts/test-deps.sh).
    pub async fn start() -> anyhow::Result<Self> {
        let mut r = Self {
            port: free_port()?,
            dir: TempDir::new("natter-redis"),
            child: None,
            ca: None,
        };
        r.spawn().await?;
        Ok(r)
    }

    /// The same, TLS only, with a certificate for 127.0.0.1 from a CA made
    /// here with `openssl` (see [`PrivateRedis::ca_file`]).
    pub async fn start_tls() -> anyhow::Result<Self> {
        let mut r = Self {
            port: free_port()?,
            dir: TempDir::new("natter-redis-tls"),
            child: None,
            ca: None,
        };
        let d = r.dir.path().to_owned();
        std::fs::write(
            d.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=natter-test-ca",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=localhost",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "srv.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        ];
        for args in steps {
            let st = Command::new("openssl")
                .args(args)
                .current_dir(&d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("openssl is required for the TLS test")?;
            if !st.success() {
                bail!("openssl {} failed", args.join(" "));
            }
        }
        r.ca = Some(d.join("ca.pem"));
        r.spawn().await?;
        Ok(r)
    }

    /// The CA bundle a client must trust (TLS only).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// `redis://127.0.0.1:<port>/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("redis-server");
        if self.ca.is_some() {
            let d = self.dir.path();
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("srv.pem"))
                .arg("--tls-key-file")
                .arg(d.join("srv.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.pem"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("redis-server is required (run scripts/test-deps.sh)")?;
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not listen on {}", self.port)
    }

    /// Kills it (its data is gone: it keeps nothing on disk) and starts it
    /// again on the same port after `down_for`.
    pub async fn restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        tokio::time::sleep(down_for).await;
        self.spawn().await
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
