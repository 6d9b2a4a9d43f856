//! Benchmark (not a test) of calls, in one process on loopback:
//!
//! * **signaling**: `--pairs` caller/callee pairs (SDK clients over the chat
//!   WebSocket of an in-process server, SQLite), each placing `--calls` calls in
//!   a row: offer → ringing → answer → answered → hang-up → ended. Reports call
//!   set-ups per second (offer to `call.answered`, all pairs at once) and the
//!   p50/p99 offer → `call.ringing` latency.
//! * **relay**: `--relayed` concurrent calls held by our TURN server: each is two
//!   UDP clients with an allocation each (TURN REST credentials), a permission
//!   and a channel to the other's relayed address, sending 50 packets/s of
//!   `--payload` bytes each way for `--secs` seconds. Reports loss per direction
//!   and the worst call. The target is ≤ 1 % loss.
//!
//! With `--cluster N`, the signaling part runs against N `natter serve`
//! processes (`--natter`, a release build) on PostgreSQL and Redis instead,
//! each caller and its callee on different nodes when N > 1.
//!
//! `cargo run --release -p natter-tests --bin call-bench -- --pairs 50 --calls 20 --relayed 200 --secs 10`

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use natter_client::{Account, Api, Chat, ConnectOptions, Event};
use natter_proto::{
    CallAnswer, CallClientFrame, CallId, CallMedia, CallOffer, CallRef, ServerFrame,
};
use natter_tests::server::InProcess;
use natter_turn_core::auth::{long_term_key, rest_password};
use natter_turn_core::codec::{
    Attribute, AttributeType, ChannelData, Class, IntegrityKind, Message, MessageBuilder, Method,
    TransactionId,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[derive(Parser)]
struct Args {
    /// Caller/callee pairs placing calls at once.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Calls each pair places in a row.
    #[arg(long, default_value_t = 20)]
    calls: usize,
    /// Concurrent relayed calls (0 skips the relay part).
    #[arg(long, default_value_t = 200)]
    relayed: usize,
    /// Seconds each relayed call sends for.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Bytes per relayed packet (an Opus 20 ms frame at 32 kbit/s is 80).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Signaling against this many `natter serve` nodes on PostgreSQL +
    /// Redis (0: one in-process server on SQLite).
    #[arg(long, default_value_t = 0)]
    cluster: usize,
    /// The `natter` binary for `--cluster`.
    #[arg(long, default_value = "target/release/natter")]
    natter: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.pairs > 0 {
        signaling(&args).await?;
    }
    if args.relayed > 0 {
        relay(&args).await?;
    }
    Ok(())
}

// --- signaling ---

async fn signaling(args: &Args) -> Result<()> {
    let (server, cluster) = if args.cluster == 0 {
        (Some(InProcess::start("sqlite").await?), None)
    } else {
        let no_limits = "1000000000";
        let env = [
            ("NATTER_SIGNALING__OFFERS_PER_CALLER__COUNT", no_limits),
            ("NATTER_SIGNALING__OFFERS_PER_PAIR__COUNT", no_limits),
        ];
        let c = natter_tests::cluster::LocalCluster::start(
            args.natter.clone(),
            args.cluster,
            &natter_tests::cluster::test_redis_url(),
            &env,
        )
        .await?;
        (None, Some(c))
    };
    // Where each account registers and connects: node i % N.
    let nodes = args.cluster.max(1);
    let url_of = |i: usize| match (&server, &cluster) {
        (Some(s), _) => (s.url(), None),
        (_, Some(c)) => (c.nodes[i % nodes].url(), Some(c.nodes[i % nodes].ws_url())),
        _ => unreachable!("one of the two is running"),
    };
    let mut accounts = Vec::new();
    for i in 0..args.pairs * 2 {
        let (url, ws) = url_of(i);
        let api = Api::new(&url)?;
        let o = match (&server, &cluster) {
            (Some(s), _) => s.sms_outbox(),
            (_, Some(c)) => c.sms_outbox(i % nodes),
            _ => unreachable!("one of the two is running"),
        };
        // Spread over number ranges: auth rate-limits codes per range.
        let number = format!("+1415{}{:04}", 200 + i / 50, i % 50);
        let creds = natter_client::register(&api, &number, "bench", |s| async move {
            natter_client::code_from_outbox(&o, &s.session_id).await
        })
        .await
        .with_context(|| format!("register user {i}"))?;
        accounts.push((Account::new(api.clone(), creds), ws));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.pairs {
        let caller = accounts[2 * p].clone();
        let callee = accounts[2 * p + 1].clone();
        let calls = args.calls;
        tasks.push(tokio::spawn(
            async move { pair(p, caller, callee, calls).await },
        ));
    }
    let mut ringing = Vec::new();
    let mut setups = Vec::new();
    for t in tasks {
        let (r, s) = t.await??;
        ringing.extend(r);
        setups.extend(s);
    }
    let secs = start.elapsed().as_secs_f64();
    ringing.sort();
    setups.sort();
    let pct = |v: &[Duration], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "## signaling ({})",
        match args.cluster {
            0 => "one in-process server, SQLite".to_owned(),
            n => format!("{n} natter serve nodes, PostgreSQL + Redis"),
        }
    );
    println!(
        "{} calls ({} pairs x {}) in {secs:.2} s: {:.0} call set-ups/s (offer -> answered, hang-up included)",
        setups.len(),
        args.pairs,
        args.calls,
        setups.len() as f64 / secs
    );
    println!(
        "offer -> ringing: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pct(&ringing, 0.5)),
        ms(pct(&ringing, 0.99)),
        ms(*ringing.last().unwrap())
    );
    println!(
        "offer -> answered: p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&setups, 0.5)),
        ms(pct(&setups, 0.99))
    );
    if let Some(s) = server {
        s.stop().await;
    }
    drop(cluster);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One pair placing `calls` calls; returns offer→ringing and offer→answered times.
async fn pair(
    p: usize,
    (caller, caller_ws): (Account, Option<String>),
    (callee, callee_ws): (Account, Option<String>),
    calls: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let to = callee.credentials().user();
    let opts = |ws_url| ConnectOptions {
        ws_url,
        ..ConnectOptions::default()
    };
    let (a, mut ae) = Chat::connect(caller, opts(caller_ws));
    let (b, mut be) = Chat::connect(callee, opts(callee_ws));
    wait(&mut ae, |e| matches!(e, Event::Synced)).await?;
    wait(&mut be, |e| matches!(e, Event::Synced)).await?;
    let mut ringing = Vec::with_capacity(calls);
    let mut setups = Vec::with_capacity(calls);
    for c in 0..calls {
        let id = CallId::new(format!("bench-{p}-{c}"));
        let t0 = Instant::now();
        a.call_frame(CallClientFrame::Offer(CallOffer {
            call_id: id.clone(),
            to: to.clone(),
            media: CallMedia::Audio,
            sdp: "v=0".into(),
        }));
        wait(
            &mut ae,
            |e| matches!(e, Event::Call(ServerFrame::CallRinging(r)) if r.call_id == id),
        )
        .await?;
        ringing.push(t0.elapsed());
        wait(
            &mut be,
            |e| matches!(e, Event::Call(ServerFrame::CallIncoming(i)) if i.call_id == id),
        )
        .await?;
        b.call_frame(CallClientFrame::Answer(CallAnswer {
            call_id: id.clone(),
            sdp: "v=0".into(),
        }));
        wait(
            &mut ae,
            |e| matches!(e, Event::Call(ServerFrame::CallAnswered(x)) if x.call_id == id),
        )
        .await?;
        setups.push(t0.elapsed());
        a.call_frame(CallClientFrame::Hangup(CallRef {
            call_id: id.clone(),
        }));
        wait(
            &mut be,
            |e| matches!(e, Event::Call(ServerFrame::CallEnded(x)) if x.call_id == id),
        )
        .await?;
    }
    a.close();
    b.close();
    Ok((ringing, setups))
}

async fn wait(ev: &mut natter_client::Events, f: impl Fn(&Event) -> bool) -> Result<()> {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), ev.recv())
            .await
            .map_err(|_| anyhow!("no event in 30 s"))?
            .ok_or_else(|| anyhow!("connection closed"))?;
        if let Event::Call(ServerFrame::Error(_)) | Event::Error(_) = &e {
            bail!("refused: {e:?}");
        }
        if f(&e) {
            return Ok(());
        }
    }
}

// --- relay ---

const SECRET: &str = "bench-secret";

async fn relay(args: &Args) -> Result<()> {
    let cfg = natter_turn::TurnConfig {
        auth_secret: natter_common::Secret::new(SECRET),
        allowed_peers: "127.0.0.0/8".parse().map_err(|e: String| anyhow!(e))?,
        max_allocations: (args.relayed * 2 + 16) as u32,
        max_allocations_per_user: (args.relayed * 2 + 16) as u32,
        ..natter_turn::TurnConfig::for_tests()
    };
    let server = natter_turn::TurnServer::bind(cfg).await?;
    let addr = server.local_addrs().udp;
    let shutdown = natter_common::Shutdown::new();
    let stop = shutdown.clone();
    let running = tokio::spawn(async move { server.run(stop).await });
    let user = format!("{}:bench", unix_now() + 3600);
    let pass = rest_password(SECRET.as_bytes(), &user);
    // Set up every call first, then send from all of them at once.
    let mut calls = Vec::new();
    for i in 0..args.relayed {
        let a = Client::allocate(addr, &user, &pass, (2 * i) as u64).await?;
        let b = Client::allocate(addr, &user, &pass, (2 * i + 1) as u64).await?;
        a.bind(b.relayed, 0x4000).await?;
        b.bind(a.relayed, 0x4000).await?;
        calls.push((a, b));
    }
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (a, b) in calls {
        let (a, b) = (Arc::new(a), Arc::new(b));
        let n = args.secs * 50;
        tasks.push(tokio::spawn(stream(a.clone(), b.clone(), n, args.payload)));
        tasks.push(tokio::spawn(stream(b, a, n, args.payload)));
    }
    let mut worst = 0.0f64;
    let (mut sent, mut got) = (0u64, 0u64);
    for t in tasks {
        let (s, g) = t.await??;
        sent += s;
        got += g;
        worst = worst.max(1.0 - g as f64 / s as f64);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    shutdown.cancel();
    let _ = running.await;
    let loss = 1.0 - got as f64 / sent as f64;
    println!("## relay");
    println!(
        "{} concurrent relayed calls, 50 packets/s of {} bytes each way for {} s: {sent} sent, {got} received, loss {:.3} % overall, worst direction {:.3} %",
        args.relayed,
        args.payload,
        args.secs,
        loss * 100.0,
        worst * 100.0
    );
    println!(
        "{:.0} packets/s relayed; process CPU {:.1} s over {wall:.1} s (server and clients together)",
        got as f64 / wall,
        cpu
    );
    if worst > 0.01 {
        println!("TARGET MISSED: a direction lost more than 1 %");
    }
    Ok(())
}

/// Sends `n` packets at 50/s from `from` to `to` over its channel; counts what `to` receives.
async fn stream(from: Arc<Client>, to: Arc<Client>, n: u64, payload: usize) -> Result<(u64, u64)> {
    let counter = Arc::new(AtomicU64::new(0));
    let rx = {
        let counter = counter.clone();
        let to = to.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok(Ok(len)) =
                tokio::time::timeout(Duration::from_secs(2), to.sock.recv(&mut buf)).await
            {
                if ChannelData::decode(&buf[..len]).is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let data = vec![0xA5u8; payload];
    let mut frame = Vec::with_capacity(payload + 4);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..n {
        tick.tick().await;
        frame.clear();
        ChannelData {
            channel: 0x4000,
            data: &data,
        }
        .encode(false, &mut frame);
        from.sock.send(&frame).await?;
    }
    let _ = rx.await;
    Ok((n, counter.load(Ordering::Relaxed)))
}

struct Client {
    sock: UdpSocket,
    relayed: SocketAddr,
    key: [u8; 16],
    user: String,
    realm: String,
    nonce: String,
    seq: u64,
}

impl Client {
    async fn allocate(server: SocketAddr, user: &str, pass: &str, seq: u64) -> Result<Client> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        sock.connect(server).await?;
        let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid(seq, 1));
        b.add(&Attribute::RequestedTransport(17));
        let challenge = request(&sock, &b.finish(None, true)).await?;
        let m = Message::decode(&challenge).map_err(|e| anyhow!("{e}"))?;
        let (Ok(Some(Attribute::Nonce(nonce))), Ok(Some(Attribute::Realm(realm)))) =
            (m.get(AttributeType::NONCE), m.get(AttributeType::REALM))
        else {
            bail!("no 401 challenge");
        };
        let (nonce, realm) = (nonce.to_owned(), realm.to_owned());
        let key = long_term_key(user, &realm, pass).0;
        let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, tid(seq, 2));
        b.add(&Attribute::RequestedTransport(17))
            .add(&Attribute::Username(user))
            .add(&Attribute::Realm(&realm))
            .add(&Attribute::Nonce(&nonce));
        let resp = request(&sock, &b.finish(Some((IntegrityKind::Sha1, &key)), true)).await?;
        let m = Message::decode(&resp).map_err(|e| anyhow!("{e}"))?;
        let Ok(Some(Attribute::XorRelayedAddress(relayed))) =
            m.get(AttributeType::XOR_RELAYED_ADDRESS)
        else {
            bail!("allocation refused: {:?}", m.get(AttributeType::ERROR_CODE));
        };
        Ok(Client {
            sock,
            relayed,
            key,
            user: user.to_owned(),
            realm,
            nonce,
            seq,
        })
    }

    /// ChannelBind (which also installs the permission) to `peer`.
    async fn bind(&self, peer: SocketAddr, channel: u16) -> Result<()> {
        let mut b = MessageBuilder::new(Class::Request, Method::CHANNEL_BIND, tid(self.seq, 3));
        b.add(&Attribute::ChannelNumber(channel))
            .add(&Attribute::XorPeerAddress(peer))
            .add(&Attribute::Username(&self.user))
            .add(&Attribute::Realm(&self.realm))
            .add(&Attribute::Nonce(&self.nonce));
        let resp = request(
            &self.sock,
            &b.finish(Some((IntegrityKind::Sha1, &self.key)), true),
        )
        .await?;
        let m = Message::decode(&resp).map_err(|e| anyhow!("{e}"))?;
        if m.class != Class::Success {
            bail!(
                "channel bind refused: {:?}",
                m.get(AttributeType::ERROR_CODE)
            );
        }
        Ok(())
    }
}

async fn request(sock: &UdpSocket, req: &[u8]) -> Result<Vec<u8>> {
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        sock.send(req).await?;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
            return Ok(buf[..r?].to_vec());
        }
    }
    bail!("no answer from the TURN server")
}

fn tid(seq: u64, k: u8) -> TransactionId {
    let mut t = [k; 12];
    t[..8].copy_from_slice(&seq.to_be_bytes());
    TransactionId(t)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat (12 and 13 after the name).
    (ticks(11) + ticks(12)) / 100.0
}
