//! The peer's figure from the same machine: `chat-load`'s throughput and
//! latency runs against an XMPP server (ejabberd), so BENCHMARKS.md can give
//! ratios measured side by side rather than a reference taken elsewhere.
//!
//! Same shape as `chat-load`: per conversation a sender and a recipient
//! connection; the recipient answers every message with an XEP-0184 receipt,
//! which the sender reads back (our `delivered` receipt). 100-byte bodies
//! carry the send time; latency is send → the recipient's read of it. The
//! server's CPU comes from `/proc/<pid>/stat`. The server must accept SASL
//! ANONYMOUS without TLS on `--addr` (BENCHMARKS.md has the configuration).
//! XMPP routes a message to an online recipient in memory: nothing is made
//! durable, unlike natter's `sent`.
//!
//! ```sh
//! xmpp-load throughput --server-pid $(pgrep -f 'beam.*ejabberd') --conversations 100 --pipeline 32
//! xmpp-load latency --server-pid … --conversations 100 --rate 5000
//! ```

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use natter_tests::procstat::{process_cpu_us, rss_kib};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "chat-load's runs against an XMPP server (ejabberd), for side-by-side figures")]
struct Args {
    mode: Mode,
    /// The XMPP server's client port.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: String,
    /// Its domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// The server's process id, for its CPU time.
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 100)]
    conversations: usize,
    /// Messages in flight per conversation (throughput).
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// Total messages per second (latency).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    #[arg(long, default_value_t = 15)]
    measure_secs: u64,
    /// Sessions held (idle).
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Mode {
    /// As many messages as the pipeline allows.
    Throughput,
    /// A fixed rate.
    Latency,
    /// Memory per idle session: open `--connections`, compare the RSS.
    Idle,
}

/// Counters shared by every connection.
#[derive(Default)]
struct Stats {
    measuring: AtomicBool,
    delivered: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

/// A connected, authenticated and bound XMPP session.
struct Session {
    jid: String,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    /// Bytes read past the bind result.
    pending: String,
}

async fn read_until(
    read: &mut OwnedReadHalf,
    buf: &mut String,
    needle: &str,
) -> anyhow::Result<String> {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(at) = buf.find(needle) {
            let rest = buf.split_off(at + needle.len());
            return Ok(std::mem::replace(buf, rest));
        }
        let n = read.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the stream (waiting for {needle}): {buf}");
        }
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

async fn open(addr: &str, domain: &str) -> anyhow::Result<Session> {
    let sock = TcpStream::connect(addr).await.context("connect")?;
    sock.set_nodelay(true)?;
    let (mut read, mut write) = sock.into_split();
    let header = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    );
    let mut buf = String::new();
    write.write_all(header.as_bytes()).await?;
    read_until(&mut read, &mut buf, "</stream:features>").await?;
    write
        .write_all(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>")
        .await?;
    let answer = read_until(&mut read, &mut buf, "/>").await?;
    if !answer.contains("<success") {
        bail!("SASL ANONYMOUS refused: {answer}");
    }
    write.write_all(header.as_bytes()).await?;
    read_until(&mut read, &mut buf, "</stream:features>").await?;
    write
        .write_all(
            b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        )
        .await?;
    let bound = read_until(&mut read, &mut buf, "</iq>").await?;
    let jid = between(&bound, "<jid>", "</jid>")
        .with_context(|| format!("no jid in {bound}"))?
        .to_owned();
    Ok(Session {
        jid,
        read,
        write,
        pending: buf,
    })
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let from = s.find(open)? + open.len();
    let to = s[from..].find(close)? + from;
    Some(&s[from..to])
}

/// Calls `each` with every complete `<message …>…</message>` in `buf` and
/// keeps the incomplete rest.
fn take_messages(buf: &mut String, mut each: impl FnMut(&str)) {
    let mut used = 0;
    while let Some(end) = buf[used..].find("</message>") {
        let stop = used + end + "</message>".len();
        each(&buf[used..stop]);
        used = stop;
    }
    buf.drain(..used);
}

/// The recipient: records each message, answers it with a receipt (all of
/// one read's receipts in one write).
async fn recipient(mut s: Session, epoch: Instant, stats: Arc<Stats>) -> anyhow::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut buf = std::mem::take(&mut s.pending);
    let mut out = String::new();
    loop {
        let n = s.read.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        let now = epoch.elapsed().as_micros() as u64;
        let measuring = stats.measuring.load(Ordering::Relaxed);
        let mut lat = Vec::new();
        take_messages(&mut buf, |m| {
            let (Some(from), Some(id), Some(body)) = (
                between(m, "from='", "'"),
                between(m, " id='", "'"),
                between(m, "<body>", "</body>"),
            ) else {
                return;
            };
            if let Some(sent) = body.split(' ').next().and_then(|t| t.parse::<u64>().ok()) {
                lat.push(now.saturating_sub(sent));
            }
            out.push_str(&format!(
                "<message to='{from}' id='r{id}'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"
            ));
        });
        if measuring && !lat.is_empty() {
            stats
                .delivered
                .fetch_add(lat.len() as u64, Ordering::Relaxed);
            stats
                .latencies_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(lat);
        }
        if !out.is_empty() {
            s.write.write_all(out.as_bytes()).await?;
            out.clear();
        }
    }
}

/// The sender's reader: each receipt frees a pipeline slot.
async fn receipts(mut read: OwnedReadHalf, mut buf: String, slots: Arc<Semaphore>) {
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(n) = read.read(&mut chunk).await {
        if n == 0 {
            return;
        }
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        let mut got = 0;
        take_messages(&mut buf, |m| {
            if m.contains("<received") {
                got += 1;
            }
        });
        slots.add_permits(got);
    }
}

/// The sender's writer: as the pipeline allows (all ready messages in one
/// write), or one per tick at a fixed rate.
async fn sender(
    mut write: OwnedWriteHalf,
    to_jid: String,
    slots: Arc<Semaphore>,
    interval: Option<Duration>,
    epoch: Instant,
    padding: String,
) -> anyhow::Result<()> {
    let mut seq = 0u64;
    let mut out = String::new();
    let mut tick = interval.map(|d| {
        let mut t = tokio::time::interval(d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let n = match tick.as_mut() {
            Some(t) => {
                t.tick().await;
                1
            }
            None => {
                slots.acquire().await?.forget();
                let more = slots.available_permits().min(1000);
                if more > 0 {
                    slots.acquire_many(more as u32).await?.forget();
                }
                1 + more
            }
        };
        for _ in 0..n {
            seq += 1;
            let sent = epoch.elapsed().as_micros();
            out.push_str(&format!(
                "<message to='{to_jid}' id='{seq}' type='chat'><body>{sent} {padding}</body>\
                 <request xmlns='urn:xmpp:receipts'/></message>"
            ));
        }
        write.write_all(out.as_bytes()).await?;
        out.clear();
    }
}

/// Opens `--connections` authenticated, bound sessions (64 at a time) and
/// reports the server's RSS growth per session after `--warmup-secs`.
async fn idle(args: &Args) -> anyhow::Result<()> {
    let before = rss_kib(args.server_pid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.connections);
    let mut opening = tokio::task::JoinSet::new();
    let mut next = 0;
    while held.len() < args.connections {
        while next < args.connections && opening.len() < 64 {
            let (addr, domain) = (args.addr.clone(), args.domain.clone());
            opening.spawn(async move { open(&addr, &domain).await });
            next += 1;
        }
        match opening.join_next().await {
            Some(r) => held.push(r?.with_context(|| format!("session {}", held.len()))?),
            None => break,
        }
    }
    println!(
        "opened {} authenticated sessions in {:.1} s",
        held.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let after = rss_kib(args.server_pid);
    println!(
        "server RSS: {before} KiB idle, {after} KiB with {} sessions: {:.2} KiB per idle authenticated session",
        held.len(),
        after.saturating_sub(before) as f64 / held.len().max(1) as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !std::path::Path::new(&format!("/proc/{}", args.server_pid)).exists() {
        bail!("no process {}", args.server_pid);
    }
    if args.mode == Mode::Idle {
        return idle(&args).await;
    }
    let stats = Arc::new(Stats::default());
    let epoch = Instant::now();
    let padding = "x".repeat(80);
    let per_conv_interval = (args.mode == Mode::Latency)
        .then(|| Duration::from_secs_f64(args.conversations as f64 / args.rate.max(1) as f64));
    let mut tasks = Vec::new();
    for _ in 0..args.conversations {
        let to = open(&args.addr, &args.domain).await?;
        let from = open(&args.addr, &args.domain).await?;
        let to_jid = to.jid.clone();
        tasks.push(tokio::spawn(recipient(to, epoch, stats.clone())));
        let Session {
            read,
            write,
            pending,
            ..
        } = from;
        let slots = Arc::new(Semaphore::new(match args.mode {
            Mode::Throughput => args.pipeline,
            Mode::Latency | Mode::Idle => 0,
        }));
        tokio::spawn(receipts(read, pending, slots.clone()));
        tasks.push(tokio::spawn(sender(
            write,
            to_jid,
            slots,
            per_conv_interval,
            epoch,
            padding.clone(),
        )));
    }
    println!(
        "{} conversations open ({} sessions) against {}",
        args.conversations,
        2 * args.conversations,
        args.addr
    );
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let cpu0 = process_cpu_us(args.server_pid);
    let t0 = Instant::now();
    stats.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.measure_secs)).await;
    stats.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_us(args.server_pid) - cpu0;
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let mut lat =
        std::mem::take(&mut *stats.latencies_us.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    let at = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "delivered {delivered} messages in {secs:.1} s: {:.0} messages/s",
        delivered as f64 / secs
    );
    println!(
        "send->delivered latency: p50 {:.2} ms, p99 {:.2} ms",
        at(0.50),
        at(0.99)
    );
    println!(
        "server CPU: {:.1} µs per delivered message ({:.0} % of one core)",
        cpu as f64 / delivered.max(1) as f64,
        cpu as f64 / secs / 10_000.0
    );
    println!("server RSS: {} KiB", rss_kib(args.server_pid));
    for t in tasks {
        t.abort();
    }
    Ok(())
}
