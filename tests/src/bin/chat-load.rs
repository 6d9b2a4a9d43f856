//! `chat-load`: load generator for chat-core (a benchmark, not a test).
//!
//! It provisions users directly in a fresh SQLite data dir (accounts + devices,
//! as auth would write them), starts `natter serve` as a separate process (so
//! its CPU and memory can be read from /proc), mints access tokens with the
//! server's signing key, and then:
//!
//! - `throughput`: M conversations (a sender and a recipient socket each), every
//!   sender keeping `--pipeline` messages in flight; recipients acknowledge
//!   (`delivered`), senders acknowledge receipts (`ack`). Reports delivered
//!   messages/s, send→delivered latency p50/p99, server CPU-µs per delivered message.
//! - `latency`: the same at a fixed total rate (`--rate`), open loop.
//! - `idle`: N authenticated idle sockets from 127.0.0.x source addresses;
//!   reports server RSS per connection.
//!
//! With `--nodes N` the server is the distributed shape instead: a fresh
//! PostgreSQL database (`--postgres-admin-url`), Redis (`--redis-url`, its own
//! key prefix) and N `natter serve chat` processes on loopback ports. Each
//! conversation's sender and recipient then sit on different nodes (sender on
//! node c mod N, recipient on node c+1 mod N), so every message crosses the
//! Redis bus; server CPU and RSS are summed over the nodes. `--nodes 1` runs
//! one node on PostgreSQL + Redis (the same code path without crossings).
//!
//! Run in release mode, with the file limit raised: `ulimit -n 20000`.

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use natter_common::token::{Claims, TokenKeys};
use natter_proto::{ClientFrame, MsgIds, ReceiptIds, ServerFrame};
use natter_tests::procstat::{process_cpu_us, rss_kib};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Mode {
    Throughput,
    Latency,
    Idle,
    /// No server: how long the data dir's disk takes to make a small write
    /// durable (write + fdatasync, as each group commit does), for telling
    /// the disk's stalls from the server's in a latency run.
    Disk,
}

#[derive(Parser)]
#[command(about = "Load generator for Natter chat-core")]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    /// The natter binary (release build).
    #[arg(long, default_value = "target/release/natter")]
    natter_bin: PathBuf,
    /// Conversations (throughput, latency): two sockets each.
    #[arg(long, default_value_t = 200)]
    conversations: usize,
    /// Messages in flight per conversation (throughput).
    #[arg(long, default_value_t = 64)]
    pipeline: usize,
    /// Total send rate in messages/s (latency).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Idle sockets (idle).
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+n) are used round-robin.
    #[arg(long, default_value_t = 8)]
    source_addresses: u8,
    /// Warm-up before measuring.
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Measurement window.
    #[arg(long, default_value_t = 20)]
    measure_secs: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Extra `NATTER_…=value` settings for the server.
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// Distributed shape with this many chat nodes (PostgreSQL + Redis);
    /// without it, one embedded node on SQLite.
    #[arg(long)]
    nodes: Option<usize>,
    /// PostgreSQL to create the benchmark database in (distributed shape).
    #[arg(
        long,
        env = "NATTER_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_admin_url: String,
    /// Where the disk probe writes (disk); by default the system's temporary
    /// directory, where the other modes keep the server's data dir.
    #[arg(long)]
    probe_dir: Option<PathBuf>,
    /// Redis for the registry and bus (distributed shape).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
}

const KEY: &str = "chat-load-signing-key-0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.mode == Mode::Disk {
        return disk_probe(&args);
    }
    let users = match args.mode {
        Mode::Idle => args.connections,
        _ => args.conversations * 2,
    };
    let dir = natter_common::testing::TempDir::new("chat-load");
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    let prefix = format!("chat-load-{}:", std::process::id());
    match args.nodes {
        None => {
            let port = free_port()?;
            run_natter(&args, dir.path(), port, &["migrate"], &[])?.wait()?;
            provision(dir.path(), users).await?;
            servers.push(run_natter(
                &args,
                dir.path(),
                port,
                &["serve", "chat"],
                &[],
            )?);
            addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        Some(n) => {
            let db = create_database(&args.postgres_admin_url).await?;
            let env = [
                ("NATTER_DATABASE__URL".to_owned(), db.clone()),
                ("NATTER_REDIS__URL".to_owned(), args.redis_url.clone()),
                ("NATTER_REDIS__KEY_PREFIX".to_owned(), prefix.clone()),
            ];
            run_natter(&args, dir.path(), free_port()?, &["migrate"], &env)?.wait()?;
            provision_pg(&db, users).await?;
            for i in 0..n.max(1) {
                let port = free_port()?;
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir)?;
                servers.push(run_natter(
                    &args,
                    &node_dir,
                    port,
                    &["serve", "chat"],
                    &env,
                )?);
                addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
    }
    for a in &addrs {
        wait_ready(a.port()).await?;
    }
    let pids: Vec<u32> = servers.iter().map(std::process::Child::id).collect();
    println!("machine: {} cores, {}", num_cpus(), mem_total());
    println!(
        "server pids {pids:?} ({} node(s), {}), data dir {}, fd limit {}",
        addrs.len(),
        if args.nodes.is_some() {
            "PostgreSQL + Redis"
        } else {
            "SQLite"
        },
        dir.path().display(),
        fd_limit()
    );
    let keys = TokenKeys::new(KEY.as_bytes(), &[]);
    let result = match args.mode {
        Mode::Idle => idle(&args, &addrs, &keys, &pids).await,
        Mode::Throughput | Mode::Latency => traffic(&args, &addrs, &keys, &pids).await,
        Mode::Disk => unreachable!("the disk probe runs without a server"),
    };
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    if args.nodes.is_some() {
        natter_tests::cluster::delete_prefix(&args.redis_url, &prefix);
        if let Err(e) = drop_database(&args.postgres_admin_url).await {
            println!("could not drop the benchmark database: {e:#}");
        }
    }
    result
}

/// Appends 32 KiB (about one group commit's WAL frames at 5,000 messages/s)
/// and syncs it, over and over for the measurement window, in a 4 MiB file
/// that is reused from its start like a restarting WAL. Prints the sync
/// latency distribution: a commit cannot be faster than its disk's sync.
fn disk_probe(args: &Args) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 32 * 1024;
    const SPAN: u64 = 4 * 1024 * 1024;
    let dir = natter_common::testing::TempDir::new("chat-load-disk");
    let under = args
        .probe_dir
        .clone()
        .unwrap_or_else(|| dir.path().to_owned());
    let path = under.join(format!("chat-load-probe-{}.wal", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let chunk = vec![0x5au8; CHUNK];
    let mut offset = 0u64;
    let mut us = Vec::new();
    let until = Instant::now() + Duration::from_secs(args.measure_secs);
    while Instant::now() < until {
        let t = Instant::now();
        file.write_all_at(&chunk, offset)?;
        file.sync_data()?;
        us.push(t.elapsed().as_micros() as u64);
        offset = (offset + CHUNK as u64) % SPAN;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    us.sort_unstable();
    let at = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)] as f64 / 1000.0;
    println!("machine: {} cores, {}", num_cpus(), mem_total());
    println!("disk under {}", under.display());
    println!(
        "{} syncs of {} KiB in {} s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} over 100 ms",
        us.len(),
        CHUNK / 1024,
        args.measure_secs,
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0),
        us.iter().filter(|&&u| u > 100_000).count()
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn database_name() -> String {
    format!("chat_load_{}", std::process::id())
}

/// Drops the run's database (the nodes are gone).
async fn drop_database(admin: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    // The name is ours (digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        database_name()
    )))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// A fresh database for the run; returns its URL.
async fn create_database(admin: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .with_context(|| format!("PostgreSQL not reachable at {admin}"))?;
    let name = database_name();
    // The name is ours (digits), never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    // Keep query parameters (e.g. `?host=/var/run/postgresql` for a Unix socket).
    let (path, query) = admin.split_once('?').unwrap_or((admin, ""));
    let base = path.rsplit_once('/').map(|(b, _)| b).unwrap_or(path);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{base}/{name}{query}"))
}

fn run_natter(
    args: &Args,
    dir: &std::path::Path,
    port: u16,
    cmd: &[&str],
    env: &[(String, String)],
) -> anyhow::Result<std::process::Child> {
    let mut c = std::process::Command::new(&args.natter_bin);
    c.arg("--data-dir")
        .arg(dir)
        .args(cmd)
        .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NATTER_TOKENS__SIGNING_KEY", KEY)
        .env("NATTER_LOG__FILTER", "warn")
        // The generator is one client per socket at rates far above a person's.
        .env("NATTER_CHAT__LIMIT_SENDS__COUNT", "100000000")
        .env("NATTER_CHAT__LIMIT_SENDS_PER_USER__COUNT", "100000000")
        .env("NATTER_CHAT__LIMIT_FRAMES__COUNT", "100000000")
        // 19,000 sockets from 8 loopback addresses, opened as fast as it can.
        .env("NATTER_HTTP__MAX_CONNECTIONS_PER_IP", "0")
        .env("NATTER_CHAT__MAX_UNAUTHENTICATED_PER_IP", "100000");
    for (k, v) in env {
        c.env(k, v);
    }
    for kv in &args.server_env {
        let (k, v) = kv.split_once('=').context("--server-env KEY=VALUE")?;
        c.env(k, v);
    }
    c.spawn()
        .with_context(|| format!("start {}", args.natter_bin.display()))
}

fn user(i: usize) -> String {
    format!("load-user-{i:06}")
}

/// Inserts `n` accounts with one device each, as auth would write them.
macro_rules! provision_rows {
    ($db:ty, $tx:expr, $n:expr) => {
        for chunk in (0..$n).collect::<Vec<usize>>().chunks(1000) {
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO accounts (user_id, number, created_at) ",
            );
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(user(*i))
                    .push_bind(format!("+1555{i:07}"))
                    .push_bind(0i64);
            });
            qb.build().execute(&mut *$tx).await?;
            let mut qb = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation) ",
            );
            qb.push_values(chunk, |mut b, i| {
                b.push_bind(user(*i))
                    .push_bind(1i64)
                    .push_bind("load")
                    .push_bind(0i64)
                    .push_bind(0i64)
                    .push_bind(1i64);
            });
            qb.build().execute(&mut *$tx).await?;
        }
    };
}

/// Writes accounts and devices as auth would (the benchmark is about chat).
async fn provision(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("natter.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    let mut tx = conn.begin().await?;
    provision_rows!(sqlx::Sqlite, tx, n);
    tx.commit().await?;
    Ok(())
}

/// The same in PostgreSQL (distributed shape).
async fn provision_pg(url: &str, n: usize) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut tx = conn.begin().await?;
    provision_rows!(sqlx::Postgres, tx, n);
    tx.commit().await?;
    Ok(())
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("server not ready")
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(
    addr: SocketAddr,
    keys: &TokenKeys,
    i: usize,
    source: Ipv4Addr,
) -> anyhow::Result<Socket> {
    let token = keys.sign(&Claims {
        sub: user(i),
        dev: 1,
        generation: 1,
        iat: 0,
        exp: 4_000_000_000,
    });
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((source, 0)))?;
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut req = format!("ws://{addr}/v1/ws").into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await?;
    // hello, then synced.
    loop {
        match ws.next().await {
            Some(Ok(Ws::Text(t))) => {
                if let Ok(ServerFrame::Synced(_)) = natter_proto::decode_server_frame(&t) {
                    return Ok(ws);
                }
            }
            Some(Ok(_)) => {}
            other => bail!("connect {i}: {other:?}"),
        }
    }
}

fn source(args: &Args, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        0,
        0,
        2 + (i % args.source_addresses.max(1) as usize) as u8,
    )
}

fn cpu_total(pids: &[u32]) -> u64 {
    pids.iter().map(|p| process_cpu_us(*p)).sum()
}

fn rss_total(pids: &[u32]) -> u64 {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .map(|kb| format!("MemTotal {kb}"))
        .unwrap_or_default()
}

fn fd_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .map(|x| {
                    x.split_whitespace()
                        .skip(3)
                        .take(2)
                        .collect::<Vec<_>>()
                        .join("/")
                })
        })
        .unwrap_or_default()
}

async fn idle(
    args: &Args,
    addrs: &[SocketAddr],
    keys: &TokenKeys,
    pids: &[u32],
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_total(pids);
    let mut sockets = Vec::with_capacity(args.connections);
    let started = Instant::now();
    let mut failed = None;
    for i in 0..args.connections {
        match connect(addrs[i % addrs.len()], keys, i, source(args, i)).await {
            Ok(ws) => sockets.push(ws),
            Err(e) => {
                failed = Some(format!("connection {i} failed: {e:#}"));
                break;
            }
        }
    }
    let held = sockets.len();
    println!(
        "opened {held} authenticated sockets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(f) = &failed {
        println!("stopped early: {f}");
    }
    // Keep reading (answers the server's pings) while the server settles.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let after = rss_total(pids);
    println!(
        "server RSS: {before} KiB idle, {after} KiB with {held} sockets: {:.2} KiB per idle authenticated connection",
        (after.saturating_sub(before)) as f64 / held.max(1) as f64
    );
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// Microseconds from the send time carried in a client id (`conv-seq-micros`) to now.
fn latency_since(epoch: Instant, client_id: &str) -> Option<u64> {
    let sent_us = client_id.rsplit('-').next()?.parse::<u64>().ok()?;
    Some((epoch.elapsed().as_micros() as u64).saturating_sub(sent_us))
}

/// Adds a latency sample (µs).
fn record(samples: &std::sync::Mutex<Vec<u64>>, us: u64) {
    samples.lock().unwrap_or_else(|e| e.into_inner()).push(us);
}

/// A copy of the samples taken so far.
fn samples(samples: &std::sync::Mutex<Vec<u64>>) -> Vec<u64> {
    samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

struct Stats {
    delivered: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
    /// send -> `sent` (the durable acknowledgement to the sender).
    sent_us: std::sync::Mutex<Vec<u64>>,
    measuring: std::sync::atomic::AtomicBool,
}

async fn traffic(
    args: &Args,
    addrs: &[SocketAddr],
    keys: &TokenKeys,
    pids: &[u32],
) -> anyhow::Result<()> {
    let stats = Arc::new(Stats {
        delivered: AtomicU64::new(0),
        latencies_us: std::sync::Mutex::new(Vec::new()),
        sent_us: std::sync::Mutex::new(Vec::new()),
        measuring: std::sync::atomic::AtomicBool::new(false),
    });
    let epoch = Instant::now();
    let body = natter_proto::Body::new(vec![b'x'; args.body_bytes]);
    let mut tasks = Vec::new();
    let per_conv_interval = (args.mode == Mode::Latency)
        .then(|| Duration::from_secs_f64(args.conversations as f64 / args.rate.max(1) as f64));
    for c in 0..args.conversations {
        // With several nodes the recipient is always on another node than the sender.
        let n = addrs.len();
        let sender = connect(addrs[c % n], keys, 2 * c, source(args, 2 * c)).await?;
        let recipient =
            connect(addrs[(c + 1) % n], keys, 2 * c + 1, source(args, 2 * c + 1)).await?;
        let permits = Arc::new(Semaphore::new(if per_conv_interval.is_some() {
            1 << 20
        } else {
            args.pipeline
        }));
        let (mut s_tx, mut s_rx) = sender.split();
        let (mut r_tx, mut r_rx) = recipient.split();
        let to = natter_proto::Target::User(natter_proto::UserId::new(user(2 * c + 1)));
        let body = body.clone();
        let p = permits.clone();
        // Sender's reader: receipts to acknowledge go to the sender's writer.
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let stats_s = stats.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(m)) = s_rx.next().await {
                let Ws::Text(t) = m else { continue };
                match natter_proto::decode_server_frame(&t) {
                    Ok(ServerFrame::Receipt(r)) if ack_tx.send(r.receipt_id).is_err() => break,
                    Ok(ServerFrame::Sent(s)) if stats_s.measuring.load(Ordering::Relaxed) => {
                        if let Some(lat) = latency_since(epoch, s.id.as_str()) {
                            record(&stats_s.sent_us, lat);
                        }
                    }
                    _ => {}
                }
            }
        }));
        // Sender's writer: sends as permits allow (or at a fixed rate) and
        // acknowledges receipts in batches. Frames that are ready together
        // leave in one write, as a client's socket library would send them.
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut tick = per_conv_interval.map(|d| {
                let mut t = tokio::time::interval(d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let send_frame = |seq: &mut u64| {
                *seq += 1;
                // A UUID v7 as the SDK makes, then the send time for the
                // latency (`latency_since`); `seq` keeps the two apart in a
                // trace. 32 + 1 + ~8 + 1 + ~10 characters of the 64 allowed.
                let id = format!(
                    "{}-{seq}-{}",
                    uuid::Uuid::now_v7().simple(),
                    epoch.elapsed().as_micros()
                );
                ClientFrame::Send(natter_proto::Send {
                    id: natter_proto::ClientMsgId::new(id),
                    to: to.clone(),
                    kind: natter_proto::Kind::text(),
                    body: body.clone(),
                })
            };
            let ack_frame = |first: u64, rx: &mut tokio::sync::mpsc::UnboundedReceiver<u64>| {
                let mut ids = vec![first];
                while ids.len() < 1000
                    && let Ok(more) = rx.try_recv()
                {
                    ids.push(more);
                }
                ClientFrame::Ack(ReceiptIds { ids })
            };
            loop {
                let frame = tokio::select! {
                    Some(first) = ack_rx.recv() => ack_frame(first, &mut ack_rx),
                    _ = async {
                        match &mut tick {
                            Some(t) => { t.tick().await; }
                            None => p.acquire().await.expect("semaphore open").forget(),
                        }
                    } => send_frame(&mut seq),
                };
                if s_tx.feed(Ws::Text(frame.to_json().into())).await.is_err() {
                    break;
                }
                // More already due: acknowledgements waiting, permits free.
                let mut failed = false;
                for _ in 0..64 {
                    let next = if let Ok(first) = ack_rx.try_recv() {
                        ack_frame(first, &mut ack_rx)
                    } else if tick.is_none()
                        && let Ok(permit) = p.try_acquire()
                    {
                        permit.forget();
                        send_frame(&mut seq)
                    } else {
                        break;
                    };
                    if s_tx.feed(Ws::Text(next.to_json().into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed || s_tx.flush().await.is_err() {
                    break;
                }
            }
        }));
        // Recipient: record, release a permit, and acknowledge what arrived
        // together in one `delivered` frame.
        let stats2 = stats.clone();
        tasks.push(tokio::spawn(async move {
            use futures_util::FutureExt;
            let mut pending: Vec<u64> = Vec::new();
            let on_frame = |m: Ws, pending: &mut Vec<u64>| {
                let Ws::Text(t) = m else { return };
                if let Ok(ServerFrame::Msg(msg)) = natter_proto::decode_server_frame(&t) {
                    pending.push(msg.msg_id);
                    permits.add_permits(1);
                    if stats2.measuring.load(Ordering::Relaxed) {
                        stats2.delivered.fetch_add(1, Ordering::Relaxed);
                        if let Some(lat) = latency_since(epoch, msg.id.as_str()) {
                            record(&stats2.latencies_us, lat);
                        }
                    }
                }
            };
            while let Some(Ok(m)) = r_rx.next().await {
                on_frame(m, &mut pending);
                while pending.len() < 1000
                    && let Some(Some(Ok(m))) = r_rx.next().now_or_never()
                {
                    on_frame(m, &mut pending);
                }
                if pending.is_empty() {
                    continue;
                }
                let f = ClientFrame::Delivered(MsgIds {
                    ids: std::mem::take(&mut pending),
                });
                if r_tx.send(Ws::Text(f.to_json().into())).await.is_err() {
                    break;
                }
            }
        }));
    }
    println!(
        "{} conversations connected; warming up {} s",
        args.conversations, args.warmup_secs
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let cpu0 = cpu_total(pids);
    let commits0 = commit_metrics(addrs).await;
    stats.measuring.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.measure_secs)).await;
    stats.measuring.store(false, Ordering::SeqCst);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_total(pids) - cpu0;
    let commits = commit_metrics(addrs).await.since(&commits0);
    let n = stats.delivered.load(Ordering::SeqCst);
    let mut lat = samples(&stats.latencies_us);
    lat.sort_unstable();
    let mut sent_lat = samples(&stats.sent_us);
    sent_lat.sort_unstable();
    let pct_of = |v: &[u64], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let pct = |p: f64| pct_of(&lat, p);
    println!(
        "mode {:?}: {} conversations, body {} B",
        args.mode, args.conversations, args.body_bytes
    );
    println!(
        "delivered {n} messages in {secs:.1} s: {:.0} messages/s",
        n as f64 / secs
    );
    println!(
        "send->delivered latency: p50 {:.2} ms, p99 {:.2} ms",
        pct(0.50) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0
    );
    println!(
        "send->sent (durable ack) latency: p50 {:.2} ms, p99 {:.2} ms",
        pct_of(&sent_lat, 0.50) as f64 / 1000.0,
        pct_of(&sent_lat, 0.99) as f64 / 1000.0
    );
    println!(
        "server CPU: {:.1} µs per delivered message ({:.0} % of one core)",
        cpu as f64 / n.max(1) as f64,
        cpu as f64 / secs / 10_000.0
    );
    println!("server RSS: {} KiB", rss_total(pids));
    println!("{}", commits.describe(secs));
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// The server's group-commit counters (from `/metrics`), summed over nodes.
#[derive(Default)]
struct CommitMetrics {
    count: f64,
    seconds: f64,
    ops: f64,
    /// Time spent in the final COMMIT (WAL write + fsync).
    finish_seconds: f64,
    /// Cumulative histogram buckets: (upper bound in seconds, commits).
    buckets: Vec<(f64, f64)>,
}

impl CommitMetrics {
    fn since(self, before: &CommitMetrics) -> CommitMetrics {
        CommitMetrics {
            count: self.count - before.count,
            seconds: self.seconds - before.seconds,
            ops: self.ops - before.ops,
            finish_seconds: self.finish_seconds - before.finish_seconds,
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let b = before
                        .buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |x| x.1);
                    (*le, n - b)
                })
                .collect(),
        }
    }

    /// The smallest bucket bound that holds fraction `p` of the commits.
    fn quantile_bound(&self, p: f64) -> Option<f64> {
        let want = self.count * p;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map(|(le, _)| *le)
    }

    fn describe(&self, secs: f64) -> String {
        if self.count <= 0.0 {
            return "commits: no metrics from the server".into();
        }
        let ms = |v: Option<f64>| v.map_or("?".into(), |s| format!("{:.1}", s * 1000.0));
        // The slowest commit tells a latency run hit by a disk stall (every
        // message behind it waits) from one where the server was slow.
        format!(
            "commits: {:.0}/s, {:.1} operations each, mean {:.2} ms (final COMMIT {:.2} ms), p50 <= {} ms, p99 <= {} ms, slowest <= {} ms (histogram bounds)",
            self.count / secs,
            self.ops / self.count,
            self.seconds / self.count * 1000.0,
            self.finish_seconds / self.count * 1000.0,
            ms(self.quantile_bound(0.50)),
            ms(self.quantile_bound(0.99)),
            ms(self.quantile_bound(1.0)),
        )
    }
}

async fn commit_metrics(addrs: &[SocketAddr]) -> CommitMetrics {
    let http = reqwest::Client::new();
    let mut total = CommitMetrics::default();
    for a in addrs {
        let Ok(r) = http.get(format!("http://{a}/metrics")).send().await else {
            continue;
        };
        let Ok(text) = r.text().await else { continue };
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            if name == "chat_commit_duration_seconds_count" {
                total.count += v;
            } else if name == "chat_commit_duration_seconds_sum" {
                total.seconds += v;
            } else if name == "chat_commit_finish_seconds_sum" {
                total.finish_seconds += v;
            } else if name == "chat_commit_batch_ops_sum" {
                total.ops += v;
            } else if let Some(le) = name
                .strip_prefix("chat_commit_duration_seconds_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                match total.buckets.iter_mut().find(|(l, _)| *l == le) {
                    Some(b) => b.1 += v,
                    None => total.buckets.push((le, v)),
                }
            }
        }
    }
    total
        .buckets
        .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    total
}
