//! TURN's drain on SIGTERM (issue 20), on real `natter` processes: a relayed
//! stream allocated before the signal keeps flowing both ways, over UDP and TCP,
//! while new allocations are refused with 508 and new TCP connections are not
//! accepted; readiness says 503 (draining) and /metrics stays up; the process
//! exits 0 once the last allocation ends, or when the grace period is over.

#[path = "support/turn_client.rs"]
mod turn_client;
#[path = "support/turn_process.rs"]
mod turn_process;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use turn_client::{TurnClient, rest_credentials};
use turn_process::{SECRET, TurnProcess};

fn logged_in(mut c: TurnClient, user: &str) -> TurnClient {
    let (username, password) = rest_credentials(SECRET, user, 600);
    c.login(&username, &password);
    c
}

/// A peer on 127.0.0.1 that `client` (already allocated, at `relayed`) may reach.
fn permitted_peer(client: &mut TurnClient) -> UdpSocket {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    client
        .permit(peer.local_addr().unwrap())
        .expect("permission for the peer");
    peer
}

/// Relays `count` numbered datagrams each way between `client` and `peer`,
/// checking every one arrives intact and from the relayed port.
fn stream(client: &mut TurnClient, peer: &UdpSocket, relayed: SocketAddr, tag: &str, count: u32) {
    let peer_addr = peer.local_addr().unwrap();
    let mut buf = [0u8; 256];
    for i in 0..count {
        let out = format!("{tag} to the peer {i}");
        client.send_to_peer(peer_addr, out.as_bytes());
        let (n, from) = peer
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{tag}: the peer receives datagram {i}: {e}"));
        assert_eq!(&buf[..n], out.as_bytes(), "{tag}");
        assert_eq!(from.port(), relayed.port(), "{tag}: from the relayed port");
        let back = format!("{tag} to the client {i}");
        peer.send_to(back.as_bytes(), from).unwrap();
        let (p, data) = client
            .recv_data()
            .unwrap_or_else(|| panic!("{tag}: the client receives datagram {i}"));
        assert_eq!((p, data.as_slice()), (peer_addr, back.as_bytes()), "{tag}");
    }
}

/// Polls `probe` until it holds (bounded: the process has a few seconds).
fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if probe() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within 10 s");
}

/// The value of an unlabelled gauge in a /metrics body.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn after_sigterm_live_relays_keep_flowing_new_allocations_get_508_and_the_last_one_ends_it() {
    // A grace period far longer than the test waits: the exit must come from
    // the last allocation ending.
    let mut p = TurnProcess::start(
        "turn",
        "127.0.0.1",
        &[("NATTER_TURN__DRAIN_GRACE_SECS", "600")],
    );
    let server = p.turn_addr("127.0.0.1");
    let metrics_url = format!("{}/metrics", p.http);

    let mut udp = logged_in(TurnClient::udp("127.0.0.1", server), "alice");
    let (udp_relayed, _) = udp.allocate(&[]).expect("UDP allocation");
    let udp_peer = permitted_peer(&mut udp);
    let mut tcp = logged_in(TurnClient::tcp(server).expect("TCP connect"), "carol");
    let (tcp_relayed, _) = tcp.allocate(&[]).expect("TCP allocation");
    let tcp_peer = permitted_peer(&mut tcp);
    stream(&mut udp, &udp_peer, udp_relayed, "udp before", 5);
    stream(&mut tcp, &tcp_peer, tcp_relayed, "tcp before", 5);
    eventually("natter_turn_allocations 2, draining 0", || {
        let m = turn_process::get(&metrics_url);
        gauge(&m, "natter_turn_allocations") == Some(2.0)
            && gauge(&m, "natter_turn_draining") == Some(0.0)
    });

    p.terminate();
    // Readiness fails at once, while the listener stays up for probes and scrapes.
    eventually("readyz 503 draining", || {
        let (status, body) = p.readyz();
        status == 503 && body.contains("draining")
    });
    eventually("natter_turn_draining 1", || {
        gauge(&turn_process::get(&metrics_url), "natter_turn_draining") == Some(1.0)
    });

    // The live streams keep flowing both ways.
    stream(&mut udp, &udp_peer, udp_relayed, "udp draining", 50);
    stream(&mut tcp, &tcp_peer, tcp_relayed, "tcp draining", 50);

    // A new client authenticates and is refused with 508 Insufficient Capacity.
    let mut late = logged_in(TurnClient::udp("127.0.0.1", server), "bob");
    assert_eq!(
        late.allocate(&[]),
        Err(508),
        "a new allocation while draining"
    );
    // New TCP connections are no longer accepted.
    assert!(
        TcpStream::connect_timeout(&server, Duration::from_secs(2)).is_err(),
        "the TCP listener is closed while draining"
    );
    // A binding still answers (it costs nothing and helps ICE checks in flight).
    assert!(late.binding().is_some(), "Binding while draining");

    // The live allocations still refresh, add permissions and relay.
    udp.refresh(600).expect("Refresh while draining");
    let second_peer = permitted_peer(&mut udp);
    stream(&mut udp, &second_peer, udp_relayed, "udp second peer", 5);
    stream(&mut tcp, &tcp_peer, tcp_relayed, "tcp still", 5);
    // Metrics are published once a second.
    eventually("the refusal counted, both allocations live", || {
        let m = turn_process::get(&metrics_url);
        gauge(&m, "natter_turn_allocations") == Some(2.0)
            && m.contains(r#"natter_turn_refusals_total{reason="draining"} 1"#)
    });
    assert!(p.running(), "still running with live allocations");

    // The last allocations end: the process stops, exit 0.
    udp.refresh(0).expect("delete the UDP allocation");
    assert!(p.running(), "one allocation is still live");
    drop(tcp); // closing the connection ends its allocation (RFC 8656 §3.1)
    let status = p
        .wait_exit(Duration::from_secs(20))
        .expect("exits once the last allocation has ended");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn the_drain_ends_when_the_grace_period_is_over() {
    let mut p = TurnProcess::start(
        "turn",
        "127.0.0.1",
        &[("NATTER_TURN__DRAIN_GRACE_SECS", "2")],
    );
    let server = p.turn_addr("127.0.0.1");
    let mut client = logged_in(TurnClient::udp("127.0.0.1", server), "alice");
    let (relayed, _) = client.allocate(&[]).expect("allocation");
    let peer = permitted_peer(&mut client);
    stream(&mut client, &peer, relayed, "before", 3);
    p.terminate();
    stream(&mut client, &peer, relayed, "draining", 3);
    let status = p
        .wait_exit(Duration::from_secs(30))
        .expect("exits when the grace period is over, allocation or not");
    assert!(status.success(), "exit status {status}");
    // The relay is gone with the process.
    client.send_to_peer(peer.local_addr().unwrap(), b"after");
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        peer.recv_from(&mut buf).is_err(),
        "nothing relayed after exit"
    );
}

/// `serve all` waits for TURN's drain as well: with an allocation live, the
/// process outlives its other parts' stop budget and still exits 0.
#[test]
fn the_embedded_shape_waits_for_the_turn_drain() {
    let mut p = TurnProcess::start(
        "all",
        "127.0.0.1",
        &[("NATTER_TURN__DRAIN_GRACE_SECS", "8")],
    );
    let server = p.turn_addr("127.0.0.1");
    let mut client = logged_in(TurnClient::udp("127.0.0.1", server), "alice");
    // `serve all` generates its own TURN secret unless given one: the process
    // was started with SECRET, so the REST credentials match.
    let (relayed, _) = client.allocate(&[]).expect("allocation");
    let peer = permitted_peer(&mut client);
    p.terminate();
    stream(&mut client, &peer, relayed, "embedded draining", 5);
    let mut late = logged_in(TurnClient::udp("127.0.0.1", server), "bob");
    assert_eq!(late.allocate(&[]), Err(508));
    let status = p
        .wait_exit(Duration::from_secs(40))
        .expect("exits after the grace period");
    assert!(status.success(), "exit status {status}");
}
