//! Benchmark (not a test): our TURN server against coturn's `turnserver`, same load,
//! same machine, one run. Run with
//!
//! ```text
//! cargo bench -p natter-turn --bench relay_vs_coturn
//! ```
//!
//! Each server runs as its own process (ours: this binary re-executed with
//! `--serve-child`), so CPU time is read per process from /proc/<pid>/stat and
//! memory from /proc/<pid>/status. Both relay to the same `turnutils_peer` echo on
//! loopback with REST credentials. Measured:
//!
//! * relay: `turnutils_uclient -m 50 -n 4000 -l 1000 -z 0` (saturating: no pause
//!   between packets) and the same paced at 5 ms per client (`-z 5`); loads are set
//!   with `BENCH_UCLIENT_ARGS`, `;`-separated. Server CPU-seconds (user + system)
//!   per million relayed packets (each echoed message crosses the server twice),
//!   loss, round-trip delay and jitter;
//! * allocations: `BENCH_ALLOCATIONS` (default 1000) two-round-trip Allocates from
//!   distinct UDP sockets by 8 client threads: allocations per second, server CPU
//!   per allocation, and RSS growth per 1,000 live allocations.
//!
//! Needs the Debian package `coturn` (turnserver, turnutils_uclient, turnutils_peer).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use natter_turn::TurnConfig;
use natter_turn_core::auth::{long_term_key, rest_password};
use natter_turn_core::codec::{
    Attribute, AttributeType, Class, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
};

const SECRET: &str = "bench-secret-0123456789";
const REALM: &str = "natter";

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--serve-child") {
        return serve_child();
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a benchmark is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "relay_vs_coturn: benchmark only; run `cargo bench -p natter-turn --bench relay_vs_coturn`"
        );
        return Ok(());
    }
    for tool in ["turnserver", "turnutils_uclient", "turnutils_peer"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} not found: run the project's dependency script (apt package `coturn`)");
        }
    }
    let loads_arg = std::env::var("BENCH_UCLIENT_ARGS")
        .unwrap_or_else(|_| "-m 50 -n 4000 -l 1000 -z 0; -m 50 -n 4000 -l 1000 -z 5".to_owned());
    let loads: Vec<String> = loads_arg
        .split(';')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let allocations: usize = std::env::var("BENCH_ALLOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let ticks: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()?;

    let peer_port = free_port();
    let mut peer = Guard(
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let _ = &mut peer;

    let mut rows = Vec::new();
    for name in ["natter", "coturn"] {
        let (child, port) = match name {
            "natter" => start_natter()?,
            _ => start_coturn()?,
        };
        let server = Guard(child);
        let pid = server.0.id();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_ready(addr)?;

        let mut relays = Vec::new();
        for load in &loads {
            let (u0, s0) = cpu_split(pid)?;
            let relay = run_uclient(port, peer_port, load)?;
            let (u1, s1) = cpu_split(pid)?;
            let relayed = (relay.sent + relay.recv) as f64 / 1e6;
            relays.push(RelayRun {
                load: load.clone(),
                user_per_million: (u1 - u0) as f64 / ticks / relayed,
                sys_per_million: (s1 - s0) as f64 / ticks / relayed,
                relay,
            });
        }

        let rss0 = rss_kib(pid)?;
        let (u2, s2) = cpu_split(pid)?;
        let (alloc_secs, sockets) = allocate_many(addr, allocations)?;
        let (u3, s3) = cpu_split(pid)?;
        let rss1 = rss_kib(pid)?;
        drop(sockets);
        rows.push(Row {
            name,
            relays,
            allocs_per_sec: allocations as f64 / alloc_secs,
            cpu_ms_per_alloc: ((u3 + s3) - (u2 + s2)) as f64 / ticks * 1000.0 / allocations as f64,
            rss_kib_per_1000: (rss1.saturating_sub(rss0)) as f64 * 1000.0 / allocations as f64,
        });
        drop(server);
    }
    report(&rows, allocations);
    Ok(())
}

struct RelayRun {
    load: String,
    user_per_million: f64,
    sys_per_million: f64,
    relay: Uclient,
}

impl RelayRun {
    fn cpu_per_million(&self) -> f64 {
        self.user_per_million + self.sys_per_million
    }
}

struct Row {
    name: &'static str,
    relays: Vec<RelayRun>,
    allocs_per_sec: f64,
    cpu_ms_per_alloc: f64,
    rss_kib_per_1000: f64,
}

fn report(rows: &[Row], allocations: usize) {
    println!(
        "\nrelay: turnutils_uclient <load> with REST credentials over UDP; peer = turnutils_peer on loopback\n"
    );
    println!(
        "| load | server | CPU s / 1M relayed packets (user + sys) | sent | received | loss | avg RTT ms | avg jitter ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        for run in &r.relays {
            println!(
                "| `{}` | {} | {:.2} ({:.2} + {:.2}) | {} | {} | {:.3}% | {} | {} |",
                run.load,
                r.name,
                run.cpu_per_million(),
                run.user_per_million,
                run.sys_per_million,
                run.relay.sent,
                run.relay.recv,
                run.relay.loss_pct,
                run.relay.rtt_ms,
                run.relay.jitter_ms
            );
        }
    }
    println!(
        "\nallocations: {allocations} two-round-trip Allocates from distinct UDP sockets, 8 client threads\n"
    );
    println!("| server | allocations/s | CPU ms / allocation | RSS KiB / 1,000 allocations |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.3} | {:.0} |",
            r.name, r.allocs_per_sec, r.cpu_ms_per_alloc, r.rss_kib_per_1000
        );
    }
    if let [ours, coturn] = rows {
        println!("\nratios natter / coturn (lower is better, except allocations/s):");
        for (a, b) in ours.relays.iter().zip(&coturn.relays) {
            println!(
                "  CPU per relayed packet, `{}`: {:.2}",
                a.load,
                a.cpu_per_million() / b.cpu_per_million()
            );
        }
        println!(
            "  allocations per second: {:.2}",
            ours.allocs_per_sec / coturn.allocs_per_sec
        );
        println!(
            "  CPU per allocation:     {:.2}",
            ours.cpu_ms_per_alloc / coturn.cpu_ms_per_alloc
        );
        println!(
            "  RSS per allocation:     {:.2}",
            ours.rss_kib_per_1000 / coturn.rss_kib_per_1000.max(1.0)
        );
    }
}

/// Our server in a child process (this binary with `--serve-child`), configured
/// like coturn below: loopback, REST secret, loopback peers allowed, quotas high
/// enough not to interfere with the load.
fn start_natter() -> Result<(Child, u16)> {
    // BENCH_NATTER_LISTEN=0.0.0.0:0 measures the wildcard listener, which reads
    // each datagram's destination and answers from it (IP_PKTINFO).
    let listen = std::env::var("BENCH_NATTER_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-child")
        .env("NATTER_TURN__LISTEN", listen)
        .envs([
            ("NATTER_TURN__AUTH_SECRET", SECRET),
            ("NATTER_TURN__REALM", REALM),
            ("NATTER_TURN__ALLOWED_PEERS", "127.0.0.1/32"),
            ("NATTER_TURN__RELAY_IP", "127.0.0.1"),
            ("NATTER_TURN__PORT_RANGE", "40000-44999"),
            ("NATTER_TURN__MAX_ALLOCATIONS", "100000"),
            ("NATTER_TURN__MAX_ALLOCATIONS_PER_USER", "100000"),
            ("NATTER_TURN__BANDWIDTH_BYTES_PER_SEC", "1000000000"),
            ("NATTER_TURN__UNAUTHENTICATED_PER_SOURCE_PER_SEC", "1000000"),
            ("NATTER_TURN__UNAUTHENTICATED_BURST", "1000000"),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("READY ")
        .context("child did not report READY")?
        .parse()?;
    Ok((child, port))
}

fn start_coturn() -> Result<(Child, u16)> {
    let port = free_port();
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--no-cli",
            "--listening-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--relay-ip=127.0.0.1",
            "--min-port=45000",
            "--max-port=49999",
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            &format!("--realm={REALM}"),
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-stdout-log",
            "--log-file=/dev/null",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((child, port))
}

fn serve_child() -> Result<()> {
    use figment::Figment;
    use figment::providers::{Env, Serialized};
    let config: TurnConfig = Figment::from(Serialized::defaults(TurnConfig::default()))
        .merge(Env::prefixed("NATTER_TURN__"))
        .extract()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = natter_turn::TurnServer::bind(config).await?;
        println!("READY {}", server.local_addrs().udp.port());
        server.run(natter_common::shutdown::on_signals()).await?;
        Ok(())
    })
}

struct Uclient {
    sent: u64,
    recv: u64,
    loss_pct: f64,
    rtt_ms: String,
    jitter_ms: String,
}

fn run_uclient(port: u16, peer_port: u16, args: &str) -> Result<Uclient> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let user = format!("{}:bench", now + 3600);
    let pass = rest_password(SECRET.as_bytes(), &user);
    let out = Command::new("timeout")
        .args([
            "300",
            "turnutils_uclient",
            "-u",
            &user,
            "-w",
            &pass,
            "-p",
            &port.to_string(),
        ])
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(args.split_whitespace())
        .arg("127.0.0.1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last_num = |key: &str| -> Option<String> {
        text.match_indices(key).last().map(|(i, _)| {
            text[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect()
        })
    };
    let sent: u64 = last_num("tot_send_msgs=")
        .context("no tot_send_msgs in uclient output")?
        .parse()?;
    let recv: u64 = last_num("tot_recv_msgs=")
        .context("no tot_recv_msgs")?
        .parse()?;
    let loss_pct = text
        .lines()
        .rev()
        .find(|l| l.contains("Total lost packets"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Uclient {
        sent,
        recv,
        loss_pct,
        rtt_ms: last_num("Average round trip delay ").unwrap_or_default(),
        jitter_ms: last_num("Average jitter ").unwrap_or_default(),
    })
}

/// Allocates `n` times from `n` sockets with 8 threads; returns the wall time and
/// the sockets (kept open so the allocations stay live while RSS is read).
fn allocate_many(server: SocketAddr, n: usize) -> Result<(f64, Vec<UdpSocket>)> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let user = format!("{}:alloc", now + 3600);
    let pass = rest_password(SECRET.as_bytes(), &user);
    let threads = 8;
    let start = Instant::now();
    let results: Vec<Result<Vec<UdpSocket>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (user, pass) = (&user, &pass);
                s.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            // uclient's allocations outlive it on the server; an ephemeral
                            // port that lands on one of their 5-tuples gets 437. Keep such
                            // sockets open (so the port is not handed out again) and retry.
                            let mut taken = Vec::new();
                            loop {
                                let sock = UdpSocket::bind("127.0.0.1:0")?;
                                sock.set_read_timeout(Some(Duration::from_secs(2)))?;
                                match allocate(&sock, server, user, pass, i as u64) {
                                    Ok(()) => return Ok(sock),
                                    Err(e)
                                        if e.to_string().contains("code: 437")
                                            && taken.len() < 8 =>
                                    {
                                        taken.push(sock)
                                    }
                                    Err(e) => return Err(e),
                                }
                            }
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("client thread panicked"))?)
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut sockets = Vec::new();
    for r in results {
        sockets.extend(r?);
    }
    Ok((secs, sockets))
}

fn allocate(sock: &UdpSocket, server: SocketAddr, user: &str, pass: &str, seq: u64) -> Result<()> {
    let tid = |k: u8| {
        let mut t = [k; 12];
        t[..8].copy_from_slice(&seq.to_be_bytes());
        TransactionId(t)
    };
    let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid(1));
    b.add(&Attribute::RequestedTransport(17));
    sock.send_to(&b.finish(None, true), server)?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf)?;
    let challenge = Message::decode(&buf[..n]).map_err(|e| anyhow!("{e}"))?;
    if let Ok(Some(Attribute::ErrorCode(e))) = challenge.get(AttributeType::ERROR_CODE)
        && e.code != 401
    {
        bail!("allocation refused by {server}: code: {}", e.code);
    }
    let (Ok(Some(Attribute::Nonce(nonce))), Ok(Some(Attribute::Realm(realm)))) = (
        challenge.get(AttributeType::NONCE),
        challenge.get(AttributeType::REALM),
    ) else {
        bail!(
            "no 401 challenge from {server}: {:?} {:?}",
            challenge.class,
            challenge.attributes()
        );
    };
    let key = long_term_key(user, realm, pass);
    let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid(2));
    b.add(&Attribute::RequestedTransport(17))
        .add(&Attribute::Username(user))
        .add(&Attribute::Realm(realm))
        .add(&Attribute::Nonce(nonce));
    let req = b.finish(Some((IntegrityKind::Sha1, &key.0)), true);
    sock.send_to(&req, server)?;
    let (n, _) = sock.recv_from(&mut buf)?;
    let resp = Message::decode(&buf[..n]).map_err(|e| anyhow!("{e}"))?;
    if resp.class != Class::Success {
        bail!(
            "allocation refused by {server}: {:?}",
            resp.get(AttributeType::ERROR_CODE)
        );
    }
    Ok(())
}

fn wait_ready(server: SocketAddr) -> Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let req = MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([7; 12]))
        .finish(None, false);
    let mut buf = [0u8; 1500];
    for _ in 0..100 {
        sock.send_to(&req, server)?;
        if sock.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    bail!("{server} did not answer a Binding request")
}

/// (utime, stime) of a process, in clock ticks.
fn cpu_split(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok((fields[11].parse()?, fields[12].parse()?))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(3479)
}

/// Kills (by pid) and reaps a child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
