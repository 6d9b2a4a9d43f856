//! Attacks on a real `natter serve turn` process (issue 17). After each, an
//! honest client must still get an allocation and relay both ways.
//!
//! Many source addresses come from 127.0.0.0/8: every address in it is local on
//! Linux, so one test host can play thousands of (spoofed-looking) sources.

#[path = "support/turn_client.rs"]
mod turn_client;
#[path = "support/turn_process.rs"]
mod turn_process;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use natter_turn::core::codec::{
    Attribute, Class, IntegrityKind, MessageBuilder, Method, TransactionId,
};
use turn_client::{TurnClient, relay_round_trip, rest_credentials};
use turn_process::{SECRET, TurnProcess};

fn honest_client(server: SocketAddr) -> TurnClient {
    let mut c = TurnClient::udp("127.0.0.1", server);
    let (user, pass) = rest_credentials(SECRET, "alice", 600);
    c.login(&user, &pass);
    c
}

/// The unauthenticated datagram that used to panic the TURN thread: an Allocate
/// with USERNAME, REALM, a 40-byte NONCE holding a two-byte character across
/// byte 16, and a MESSAGE-INTEGRITY of garbage.
fn malformed_nonce_allocate() -> Vec<u8> {
    let nonce = format!("{}é{}", "0".repeat(15), "1".repeat(23));
    assert_eq!(nonce.len(), 40);
    let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, TransactionId([7; 12]));
    b.add(&Attribute::RequestedTransport(17))
        .add(&Attribute::Username("1:x"))
        .add(&Attribute::Realm("natter"))
        .add(&Attribute::Nonce(&nonce));
    b.finish(Some((IntegrityKind::Sha1, &[0u8; 16])), false)
}

#[test]
fn a_malformed_nonce_datagram_does_not_stop_turn() {
    let p = TurnProcess::start("turn", "127.0.0.1", &[]);
    let server = p.turn_addr("127.0.0.1");
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        attacker
            .send_to(&malformed_nonce_allocate(), server)
            .unwrap();
    }
    let mut probe = TurnClient::udp("127.0.0.1", server);
    assert!(
        probe.binding().is_some(),
        "Binding answered after the attack"
    );
    relay_round_trip(&mut honest_client(server));
    assert_eq!(p.readyz().0, 200);
}

/// Every fuzz seed (valid and malformed STUN, ChannelData, TCP framing, whole
/// lifecycles) and thousands of mutations of them, over UDP and TCP: the server
/// keeps answering and relaying.
#[test]
fn malformed_datagrams_and_streams_leave_turn_serving() {
    let p = TurnProcess::start("turn", "127.0.0.1", &[]);
    let server = p.turn_addr("127.0.0.1");
    let seeds_dir = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../turn-stun/fuzz/seeds");
    let mut seeds = Vec::new();
    for target in std::fs::read_dir(&seeds_dir).expect("turn-stun/fuzz/seeds") {
        for seed in std::fs::read_dir(target.unwrap().path()).unwrap() {
            seeds.push(std::fs::read(seed.unwrap().path()).unwrap());
        }
    }
    assert!(seeds.len() > 40, "{} seeds", seeds.len());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // The garbage comes from its own address: it spends that source's budget of
    // unauthenticated answers, which must not be mistaken for a stopped server.
    let udp = UdpSocket::bind("127.0.0.66:0").unwrap();
    let tcp_from = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        s.bind(&SocketAddr::from(([127, 0, 0, 66], 0)).into())
            .ok()?;
        s.connect(&server.into()).ok()?;
        Some(std::net::TcpStream::from(s))
    };
    let mut sent = 0;
    for round in 0..60 {
        let mut tcp = tcp_from();
        for seed in &seeds {
            let mut d = seed.clone();
            if round > 0 && !d.is_empty() {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % d.len();
                    d[i] ^= (next() as u8) | 1;
                }
                if next() % 5 == 0 {
                    d.truncate((next() as usize) % d.len());
                }
            }
            let _ = udp.send_to(&d, server);
            if let Some(t) = &mut tcp
                && std::io::Write::write_all(t, &d).is_err()
            {
                tcp = tcp_from();
            }
            sent += 1;
        }
    }
    assert!(sent > 2_000);
    let mut probe = TurnClient::udp("127.0.0.1", server);
    assert!(
        probe.binding().is_some(),
        "Binding answered after {sent} bad inputs"
    );
    relay_round_trip(&mut honest_client(server));
    let mut tcp = TurnClient::tcp(server).expect("TCP still accepted");
    let (user, pass) = rest_credentials(SECRET, "alice", 600);
    tcp.login(&user, &pass);
    tcp.allocate(&[]).expect("TCP allocation after the garbage");
    assert_eq!(p.readyz().0, 200);
}

/// Unauthenticated requests from thousands of sources (more than the limiter
/// remembers) must neither lock new clients out nor grow memory without bound,
/// and one source gets its burst of answers, not one per request.
#[test]
fn a_flood_from_many_sources_leaves_room_for_honest_clients() {
    let p = TurnProcess::start(
        "turn",
        "0.0.0.0",
        &[
            ("NATTER_TURN__UNAUTHENTICATED_SOURCES", "256"),
            ("NATTER_TURN__UNAUTHENTICATED_BURST", "20"),
            ("NATTER_TURN__UNAUTHENTICATED_PER_SOURCE_PER_SEC", "5"),
        ],
    );
    // 3,000 sources, three requests each, sent to the wildcard listener.
    let mut allocate =
        MessageBuilder::new(Class::Request, Method::ALLOCATE, TransactionId([1; 12]));
    allocate.add(&Attribute::RequestedTransport(17));
    let allocate = allocate.finish(None, true);
    let port = p.turn_port;
    for n in 0..3_000u32 {
        let ip = std::net::Ipv4Addr::from(0x7F02_0000 + n);
        let s = UdpSocket::bind((ip, 0)).expect("every 127/8 address is local");
        for _ in 0..3 {
            let _ = s.send_to(&allocate, (ip, port));
        }
    }
    // Barrier: a Binding from a fresh source is answered only once the server
    // has read the flood queued before it (on a busy machine that takes a
    // while, and requests sent meanwhile would be dropped by the full socket
    // buffer, not by the limiter).
    let probe = UdpSocket::bind("127.4.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let binding = MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([9; 12]))
        .finish(None, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 1500];
    loop {
        probe
            .send_to(&binding, (std::net::Ipv4Addr::new(127, 4, 0, 1), port))
            .unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never caught up with the flood"
        );
    }
    // One source asking 200 times gets its burst (20) and a few more from the
    // refill, not 200 answers.
    let noisy = UdpSocket::bind("127.3.0.1:0").unwrap();
    let server = SocketAddr::from(([127, 3, 0, 1], port));
    noisy
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let started = Instant::now();
    for _ in 0..200 {
        noisy.send_to(&allocate, server).unwrap();
    }
    let mut answers = 0;
    while noisy.recv_from(&mut buf).is_ok() {
        answers += 1;
    }
    let allowed = 20 + 5 * (started.elapsed().as_secs() as usize + 1);
    assert!(
        (20..=allowed).contains(&answers),
        "{answers} answers to 200 requests (burst 20, 5/s)"
    );
    // A new client is challenged, allocates and relays.
    relay_round_trip(&mut honest_client(p.turn_addr("127.0.0.1")));
}

/// TCP and TLS clients that never read: with every connection slot taken by
/// clients whose receive windows are full, new clients must get slots once the
/// server gives up on them (write timeout), instead of never.
#[test]
fn tcp_and_tls_clients_that_never_read_lose_their_slots() {
    let certs = natter_common::testing::TempDir::new("natter-turn-tls");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/test-deps.sh installs it)");
    assert!(made.status.success(), "openssl req failed");
    let tls_port = turn_process::free_port("127.0.0.1");
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let p = TurnProcess::start(
        "turn",
        "127.0.0.1",
        &[
            ("NATTER_TURN__MAX_TCP_CONNECTIONS", "3"),
            ("NATTER_TURN__BANDWIDTH_BYTES_PER_SEC", "100000000"),
            ("NATTER_TURN__TLS_LISTEN", tls_listen.as_str()),
            ("NATTER_TURN__TLS_CERT_PATH", cert_s.as_str()),
            ("NATTER_TURN__TLS_KEY_PATH", key_s.as_str()),
        ],
    );
    let server = p.turn_addr("127.0.0.1");
    let tls_server: SocketAddr = tls_listen.parse().unwrap();
    let blaster = UdpSocket::bind("127.0.0.1:0").unwrap();
    let blaster_addr = blaster.local_addr().unwrap();
    let mut stuck = Vec::new();
    let mut relays = Vec::new();
    for n in 0..3 {
        let mut c = if n == 2 {
            TurnClient::tls(tls_server).expect("TLS client")
        } else {
            TurnClient::tcp_small_buffer(server).expect("connect")
        };
        let (user, pass) = rest_credentials(SECRET, "sleepy", 600);
        c.login(&user, &pass);
        let (relayed, _) = c.allocate(&[]).expect("allocate over TCP/TLS");
        c.permit(blaster_addr).expect("permission");
        relays.push(relayed);
        stuck.push(c); // never read from again
    }
    // The peer keeps sending to every relay (as a call's media would), so the
    // server's queues and the clients' windows fill and stay full.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let payload = [0x55u8; 1200];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for r in &relays {
                    let _ = blaster.send_to(&payload, r);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    // While they are held, the slots are taken.
    let early = TurnClient::tcp(server).ok().and_then(|mut c| c.binding());
    assert!(
        early.is_none(),
        "a fourth connection got a slot while three are held"
    );
    // Within the write timeout (10 s) and some slack, the slots free up: a new
    // TCP client and a new TLS client both get in.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut tcp_served, mut tls_served) = (None, None);
    while Instant::now() < deadline && (tcp_served.is_none() || tls_served.is_none()) {
        if tcp_served.is_none()
            && let Ok(mut c) = TurnClient::tcp(server)
            && c.binding().is_some()
        {
            let (user, pass) = rest_credentials(SECRET, "alice", 600);
            c.login(&user, &pass);
            c.allocate(&[]).expect("a fresh TCP client allocates");
            tcp_served = Some(c);
        }
        if tls_served.is_none()
            && let Ok(mut c) = TurnClient::tls(tls_server)
            && c.binding().is_some()
        {
            let (user, pass) = rest_credentials(SECRET, "alice", 600);
            c.login(&user, &pass);
            c.allocate(&[]).expect("a fresh TLS client allocates");
            tls_served = Some(c);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.join().unwrap();
    assert!(
        tcp_served.is_some(),
        "no TCP slot came free from clients that never read"
    );
    assert!(
        tls_served.is_some(),
        "no TLS slot came free from clients that never read"
    );
    drop(stuck);
    relay_round_trip(&mut honest_client(server));
}

/// One account looping Allocate(EVEN-PORT R) + Refresh(0), and fetching a new
/// REST credential for each allocation, meets its quota; the relay port range
/// is not drained and other users still allocate.
#[test]
fn allocation_and_reservation_loops_meet_their_quotas() {
    let base = 30_000 + (std::process::id() % 200) as u16 * 64;
    let range = format!("{base}-{}", base + 39);
    let p = TurnProcess::start(
        "turn",
        "127.0.0.1",
        &[
            ("NATTER_TURN__PORT_RANGE", range.as_str()),
            ("NATTER_TURN__MAX_ALLOCATIONS_PER_USER", "8"),
        ],
    );
    let server = p.turn_addr("127.0.0.1");
    let mut refused = 0;
    for n in 0..60 {
        let mut c = TurnClient::udp("127.0.0.1", server);
        let (user, pass) = rest_credentials(SECRET, "mallory", 600 + n);
        c.login(&user, &pass);
        match c.allocate(&[Attribute::EvenPort(true)]) {
            Ok(_) => c.refresh(0).expect("delete"),
            Err(486) => refused += 1,
            Err(other) => panic!("attempt {n}: unexpected {other}"),
        }
        // And plain allocations with fresh credentials, left standing.
        let mut c = TurnClient::udp("127.0.0.1", server);
        let (user, pass) = rest_credentials(SECRET, "mallory", 1_000 + n);
        c.login(&user, &pass);
        match c.allocate(&[]) {
            Ok(_) | Err(486) => {}
            Err(other) => panic!("attempt {n}: unexpected {other}"),
        }
    }
    assert!(refused > 40, "the quota held only {refused} times of 60");
    for _ in 0..3 {
        relay_round_trip(&mut honest_client(server));
    }
}

/// A TURN thread that stops (here by an injected panic, debug builds only) must
/// not leave the process running half-alive: /readyz turns 503 naming TURN,
/// and the process exits non-zero within 5 s.
#[test]
fn a_stopped_turn_thread_fails_readiness_and_ends_the_process() {
    for service in ["turn", "all"] {
        let mut p = TurnProcess::start(
            service,
            "127.0.0.1",
            &[("NATTER_TURN_TEST_PANIC_AFTER_MS", "4000")],
        );
        let mut seen_503 = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && p.running() {
            let (status, body) = p.readyz();
            if status == 503 {
                assert!(body.contains("turn"), "{service}: {body}");
                assert!(body.contains("TURN server stopped"), "{service}: {body}");
                seen_503 = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let seen = seen_503.unwrap_or_else(|| panic!("{service}: /readyz never turned 503"));
        let status = p
            .wait_exit(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{service}: still running 5 s after TURN stopped"));
        assert!(!status.success(), "{service}: exit status {status}");
        assert!(seen.elapsed() < Duration::from_secs(5));
    }
}

/// On a wildcard listener each request is answered from the address it was sent
/// to (127.0.0.2 here, while the kernel would pick 127.0.0.1), over a connected
/// socket that drops anything else, and relaying works through any address.
#[test]
fn a_wildcard_listener_answers_from_the_address_it_was_asked_on() {
    let p = TurnProcess::start("turn", "0.0.0.0", &[]);
    for ip in ["127.0.0.2", "127.0.0.1"] {
        let server = p.turn_addr(ip);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let b = MessageBuilder::new(Class::Request, Method::BINDING, TransactionId([3; 12]));
        sock.send(&b.finish(None, true)).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a reply from the address asked");
        assert!(n >= 20, "{ip}");
        relay_round_trip(&mut honest_client(server));
    }
}

/// On a wildcard listener, the host's own addresses at the TURN port are never
/// peers, even when the allow-list admits everything: the primary address, a
/// loopback alias, and the loopback address itself.
#[test]
fn a_wildcard_listener_never_relays_to_its_own_port() {
    let p = TurnProcess::start(
        "turn",
        "0.0.0.0",
        &[("NATTER_TURN__ALLOWED_PEERS", "0.0.0.0/0,::/0")],
    );
    let server = p.turn_addr("127.0.0.1");
    let mut c = honest_client(server);
    c.allocate(&[]).expect("allocate");
    let primary = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    let mut own: Vec<std::net::IpAddr> = vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()];
    own.extend(primary);
    for ip in own {
        assert_eq!(
            c.permit(SocketAddr::new(ip, p.turn_port)),
            Err(403),
            "{ip}:{} is this server",
            p.turn_port
        );
        assert_eq!(
            c.permit(SocketAddr::new(ip, p.turn_port.wrapping_add(1).max(1))),
            Ok(()),
            "another port of {ip} is a fine peer under this allow-list"
        );
    }
}
