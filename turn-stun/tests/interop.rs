//! Interop with coturn's client tools (an independent implementation), against our
//! server started in-process on loopback with ephemeral ports. Asserts what
//! /work/shared/checks/turn-interop.sh asserts: STUN binding; relaying over UDP and
//! TCP with REST credentials, all packets relayed; wrong password and expired
//! username refused; and, on the default peer policy, relaying to 127.0.0.1 refused.
//!
//! Needs the Debian package `coturn` (its client tools only). Missing tools fail
//! the test: run the project's dependency script.

use std::net::UdpSocket;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use natter_turn::{TurnConfig, TurnServer};
use natter_turn_core::auth::rest_password;
use natter_turn_core::codec::{Attribute, AttributeType, Class, Message, Method};
use tokio::process::{Child, Command};

const SECRET: &str = "interop-secret";

fn require_tools() {
    for tool in [
        "turnutils_stunclient",
        "turnutils_uclient",
        "turnutils_peer",
        "timeout",
    ] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{tool} not found on PATH: run the project's dependency script \
             (it installs the Debian package `coturn`, whose client tools these tests use)"
        );
    }
}

async fn start(allow_loopback: bool) -> (u16, natter_common::Shutdown) {
    start_on("127.0.0.1:0", allow_loopback).await
}

async fn start_on(listen: &str, allow_loopback: bool) -> (u16, natter_common::Shutdown) {
    let mut config = TurnConfig::for_tests();
    config.listen = listen.parse().unwrap();
    config.auth_secret = natter_common::Secret::new(SECRET);
    if allow_loopback {
        config.allowed_peers = "127.0.0.1/32".parse().unwrap();
    }
    let server = TurnServer::bind(config).await.expect("bind");
    let port = server.local_addrs().udp.port();
    let shutdown = natter_common::Shutdown::new();
    tokio::spawn(server.run(shutdown.clone()));
    (port, shutdown)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_peer() -> (u16, Child) {
    let port = free_udp_port();
    let child = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_peer starts");
    // Wait until the peer's UDP port is taken, rather than sleeping a fixed time.
    for _ in 0..100 {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return (port, child);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("turnutils_peer did not bind 127.0.0.1:{port}");
}

fn creds(offset_secs: i64, user: &str) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let username = format!("{}:{user}", now + offset_secs);
    let password = rest_password(SECRET.as_bytes(), &username);
    (username, password)
}

/// Runs a tool under `timeout` (coturn's clients hang instead of failing).
async fn run(secs: u32, args: &[&str]) -> String {
    run_status(secs, args).await.1
}

/// Like [`run`], with whether the tool exited successfully.
async fn run_status(secs: u32, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("timeout(1) runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// One answer seen on the wire: method, class, error code.
type Answer = (Method, Class, Option<u16>);

/// A UDP relay between coturn's client and our server that records what the
/// server answered (method, class, error code): coturn's client says only
/// "Cannot complete Allocation" when refused, so the wire is the witness that
/// the refusal was the right one.
struct WireTap {
    port: u16,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
}

impl WireTap {
    fn start(server_port: u16) -> WireTap {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(("127.0.0.1", server_port)).unwrap();
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        let port = front.local_addr().unwrap().port();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (answers.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut client = None;
            let mut buf = [0u8; 65_536];
            while !stopped.load(Ordering::Relaxed) {
                let mut idle = true;
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    client = Some(from);
                    let _ = back.send(&buf[..n]);
                    idle = false;
                }
                if let Ok(n) = back.recv(&mut buf) {
                    if let Ok(msg) = Message::decode(&buf[..n]) {
                        let code = match msg.get(AttributeType::ERROR_CODE) {
                            Ok(Some(Attribute::ErrorCode(e))) => Some(e.code),
                            _ => None,
                        };
                        seen.lock().unwrap().push((msg.method, msg.class, code));
                    }
                    if let Some(c) = client {
                        let _ = front.send_to(&buf[..n], c);
                    }
                    idle = false;
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        WireTap {
            port,
            answers,
            stop,
        }
    }

    fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A refused Allocate seen on the wire: answered 401 (more than the first
/// challenge), never with success.
fn assert_refused_with_401(tap: &WireTap, what: &str, out: &str) {
    let answers = tap.answers();
    let allocate: Vec<_> = answers
        .iter()
        .filter(|(m, _, _)| *m == Method::ALLOCATE)
        .collect();
    assert!(
        !allocate.iter().any(|(_, c, _)| *c == Class::Success),
        "{what}: an Allocate succeeded: {answers:?}"
    );
    let unauthorized = allocate.iter().filter(|(_, _, c)| *c == Some(401)).count();
    assert!(
        unauthorized >= 2,
        "{what}: expected the challenge and a 401 refusal, saw {answers:?}\n{}",
        tail(out)
    );
}

/// The last `tot_send_msgs` / `tot_recv_msgs` figures of a uclient run.
fn totals(out: &str) -> (Option<u64>, Option<u64>) {
    let last = |key: &str| {
        out.match_indices(key).last().and_then(|(i, _)| {
            out[i + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
    };
    (last("tot_send_msgs="), last("tot_recv_msgs="))
}

async fn uclient(
    port: u16,
    peer_port: u16,
    user: &str,
    pass: &str,
    tcp: bool,
    messages: &str,
) -> String {
    uclient_to("127.0.0.1", port, peer_port, user, pass, tcp, messages).await
}

async fn uclient_to(
    server: &str,
    port: u16,
    peer_port: u16,
    user: &str,
    pass: &str,
    tcp: bool,
    messages: &str,
) -> String {
    uclient_status(server, port, peer_port, user, pass, tcp, messages)
        .await
        .1
}

/// Runs coturn's client; whether it exited successfully, and its output.
async fn uclient_status(
    server: &str,
    port: u16,
    peer_port: u16,
    user: &str,
    pass: &str,
    tcp: bool,
    messages: &str,
) -> (bool, String) {
    let (port, peer_port) = (port.to_string(), peer_port.to_string());
    let mut args = vec!["turnutils_uclient"];
    if tcp {
        args.push("-t");
    }
    args.extend([
        "-u",
        user,
        "-w",
        pass,
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
    ]);
    if messages == "full" {
        args.extend(["-m", "10", "-n", "300", "-l", "200", "-z", "5"]);
    } else {
        args.extend(["-m", "1", "-n", "5"]);
    }
    args.push(server);
    run_status(if messages == "full" { 30 } else { 10 }, &args).await
}

/// On a wildcard listener the server must answer from the address it was asked
/// on: coturn's client talks to 127.0.0.2 (the kernel would pick 127.0.0.1 for an
/// unpinned reply) over UDP and TCP, and every message is relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_clients_relay_through_a_wildcard_listener() {
    require_tools();
    let (port, shutdown) = start_on("0.0.0.0:0", true).await;
    let (peer_port, _peer) = start_peer().await;
    let out = run(
        10,
        &["turnutils_stunclient", "-p", &port.to_string(), "127.0.0.2"],
    )
    .await;
    assert!(
        out.contains("reflexive addr"),
        "STUN binding failed:\n{out}"
    );
    let (user, pass) = creds(600, "alice");
    for tcp in [false, true] {
        let out = uclient_to("127.0.0.2", port, peer_port, &user, &pass, tcp, "full").await;
        let (sent, recv) = totals(&out);
        assert!(
            sent.is_some_and(|s| s > 0) && sent == recv,
            "relay via 127.0.0.2 (tcp={tcp}): sent={sent:?} recv={recv:?}\n{}",
            tail(&out)
        );
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_clients_bind_relay_and_are_refused_when_they_should_be() {
    require_tools();
    let (port, shutdown) = start(true).await;
    let (peer_port, _peer) = start_peer().await;

    let out = run(
        10,
        &["turnutils_stunclient", "-p", &port.to_string(), "127.0.0.1"],
    )
    .await;
    assert!(
        out.contains("reflexive addr"),
        "STUN binding failed:\n{out}"
    );

    let (user, pass) = creds(600, "alice");
    for tcp in [false, true] {
        let out = uclient(port, peer_port, &user, &pass, tcp, "full").await;
        let (sent, recv) = totals(&out);
        let transport = if tcp { "tcp" } else { "udp" };
        assert!(
            sent.is_some_and(|s| s > 0) && sent == recv,
            "relay over {transport}: sent={sent:?} recv={recv:?}\n{}",
            tail(&out)
        );
    }

    // Refusals must be the right ones: coturn's client fails (non-zero exit,
    // "Cannot complete Allocation") and the wire shows 401s, not silence or a
    // crash.
    let tap = WireTap::start(port);
    let (user, _) = creds(600, "mallory");
    let (ok, out) = uclient_status(
        "127.0.0.1",
        tap.port,
        peer_port,
        &user,
        "d3JvbmcgcGFzc3dvcmQ=",
        false,
        "short",
    )
    .await;
    assert!(
        !ok && out.contains("Cannot complete Allocation"),
        "wrong password:\n{}",
        tail(&out)
    );
    assert!(
        !relayed_any(&out),
        "wrong password relayed:\n{}",
        tail(&out)
    );
    assert_refused_with_401(&tap, "wrong password", &out);
    drop(tap);

    let tap = WireTap::start(port);
    let (user, pass) = creds(-60, "alice");
    let (ok, out) = uclient_status(
        "127.0.0.1",
        tap.port,
        peer_port,
        &user,
        &pass,
        false,
        "short",
    )
    .await;
    assert!(
        !ok && out.contains("Cannot complete Allocation"),
        "expired credentials:\n{}",
        tail(&out)
    );
    assert!(
        !relayed_any(&out),
        "expired credentials relayed:\n{}",
        tail(&out)
    );
    assert_refused_with_401(&tap, "expired credentials", &out);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_refuses_relaying_to_loopback() {
    require_tools();
    let (port, shutdown) = start(false).await;
    let (peer_port, _peer) = start_peer().await;
    let (user, pass) = creds(600, "alice");
    for tcp in [false, true] {
        let (ok, out) =
            uclient_status("127.0.0.1", port, peer_port, &user, &pass, tcp, "short").await;
        // The allocation succeeds; the peer is refused with 403 Forbidden.
        assert!(
            !ok && out.contains("error 403"),
            "loopback peer not refused with 403 (tcp={tcp}):\n{}",
            tail(&out)
        );
        assert!(
            !relayed_any(&out),
            "relayed to 127.0.0.1 (tcp={tcp}):\n{}",
            tail(&out)
        );
    }
    shutdown.cancel();
}

/// RFC 6156: an IPv4 client asks for an IPv6 relay (`-x`) and relays to a peer on ::1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_relay_from_an_ipv4_client() {
    require_tools();
    assert!(
        UdpSocket::bind("[::1]:0").is_ok(),
        "this test needs IPv6 loopback (::1), which the project's machines have"
    );
    let mut config = TurnConfig::for_tests();
    config.auth_secret = natter_common::Secret::new(SECRET);
    config.allowed_peers = "::1/128".parse().unwrap();
    config.relay_ipv6 = Some("::1".parse().unwrap());
    let server = TurnServer::bind(config).await.expect("bind");
    let port = server.local_addrs().udp.port().to_string();
    let shutdown = natter_common::Shutdown::new();
    tokio::spawn(server.run(shutdown.clone()));

    let peer_port = UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let _peer = Command::new("turnutils_peer")
        .args(["-L", "::1", "-p", &peer_port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_peer starts");
    for _ in 0..100 {
        if UdpSocket::bind(format!("[::1]:{peer_port}")).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (user, pass) = creds(600, "v6");
    let out = run(
        30,
        &[
            "turnutils_uclient",
            "-x",
            "-u",
            &user,
            "-w",
            &pass,
            "-p",
            &port,
            "-e",
            "::1",
            "-r",
            &peer_port,
            "-m",
            "2",
            "-n",
            "100",
            "-l",
            "100",
            "-z",
            "5",
            "127.0.0.1",
        ],
    )
    .await;
    let (sent, recv) = totals(&out);
    assert!(
        sent.is_some_and(|s| s > 0) && sent == recv,
        "IPv6 relay: sent={sent:?} recv={recv:?}\n{}",
        tail(&out)
    );
    shutdown.cancel();
}

fn relayed_any(out: &str) -> bool {
    totals(out).1.is_some_and(|r| r > 0)
}

fn tail(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}
