//! External address discovery (`turn.external_ip_stun_server`) against real STUN
//! servers on loopback: natter's own TURN server, and a responder that plays a
//! 1:1 NAT (it reports a public address for the request's source); then the
//! advertised relayed address of a real allocation. Failure refuses to start
//! unless discovery is optional.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use natter_turn::core::auth::long_term_key;
use natter_turn::core::codec::{
    Attribute, AttributeType, Class, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
};
use natter_turn::{TurnConfig, TurnError, TurnServer};
use tokio::net::UdpSocket;

const USER: &str = "alice";
const PASSWORD: &str = "wonderland";
/// The public address the fake NAT reports (TEST-NET-3).
const PUBLIC: &str = "203.0.113.7";

async fn serve(config: TurnConfig) -> (SocketAddr, natter_common::Shutdown) {
    let server = TurnServer::bind(config).await.expect("bind");
    let addr = server.local_addrs().udp;
    let shutdown = natter_common::Shutdown::new();
    tokio::spawn(server.run(shutdown.clone()));
    (addr, shutdown)
}

fn config_discovering(stun_server: SocketAddr) -> TurnConfig {
    TurnConfig {
        static_users: format!("{USER}:{PASSWORD}").parse().unwrap(),
        external_ip_stun_server: Some(stun_server.to_string()),
        external_ip_stun_timeout_secs: 2,
        ..TurnConfig::for_tests()
    }
}

/// A STUN server that answers every Binding request with `PUBLIC` and the
/// request's source port, as a server seen through 1:1 NAT would; it reports the
/// sources it saw on the returned channel.
async fn fake_nat_stun_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<SocketAddr>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(req) = Message::decode(&buf[..n]) else {
                continue;
            };
            if (req.class, req.method) != (Class::Request, Method::BINDING) {
                continue;
            }
            let _ = tx.send(from);
            let seen = SocketAddr::new(PUBLIC.parse().unwrap(), from.port());
            let mut b = MessageBuilder::new(Class::Success, Method::BINDING, req.transaction_id);
            b.add(&Attribute::XorMappedAddress(seen));
            let _ = socket.send_to(&b.finish(None, true), from).await;
        }
    });
    (addr, rx)
}

async fn exchange(sock: &UdpSocket, server: SocketAddr, request: Vec<u8>) -> Vec<u8> {
    sock.send_to(&request, server).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf[..n].to_vec()
}

/// Allocates on `server` (challenge, then the authenticated request) and returns
/// the advertised relayed address.
async fn relayed_address(server: SocketAddr) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |tid: u8, auth: Option<(&str, &str)>| {
        let mut b = MessageBuilder::new(Class::Request, Method::ALLOCATE, TransactionId([tid; 12]));
        b.add(&Attribute::RequestedTransport(17));
        match auth {
            None => b.finish(None, true),
            Some((realm, nonce)) => {
                b.add(&Attribute::Username(USER))
                    .add(&Attribute::Realm(realm))
                    .add(&Attribute::Nonce(nonce));
                let key = long_term_key(USER, realm, PASSWORD);
                b.finish(Some((IntegrityKind::Sha1, &key.0[..])), true)
            }
        }
    };
    let challenge = exchange(&sock, server, ask(1, None)).await;
    let msg = Message::decode(&challenge).unwrap();
    let (Ok(Some(Attribute::Realm(realm))), Ok(Some(Attribute::Nonce(nonce)))) =
        (msg.get(AttributeType::REALM), msg.get(AttributeType::NONCE))
    else {
        panic!("401 with REALM and NONCE expected")
    };
    let (realm, nonce) = (realm.to_owned(), nonce.to_owned());
    let answer = exchange(&sock, server, ask(2, Some((&realm, &nonce)))).await;
    let msg = Message::decode(&answer).unwrap();
    assert_eq!(msg.class, Class::Success, "Allocate succeeds");
    match msg.get(AttributeType::XOR_RELAYED_ADDRESS) {
        Ok(Some(Attribute::XorRelayedAddress(a))) => a,
        other => panic!("no XOR-RELAYED-ADDRESS: {other:?}"),
    }
}

#[tokio::test]
async fn behind_1_to_1_nat_the_discovered_address_is_advertised() {
    let (stun, mut seen) = fake_nat_stun_server().await;
    let (turn, shutdown) = serve(config_discovering(stun)).await;
    // The request left from the relay IP: the mapping of that address is the one
    // peers must use.
    let from = seen.recv().await.expect("the STUN server was asked");
    assert_eq!(from.ip(), IpAddr::from([127, 0, 0, 1]));
    let relayed = relayed_address(turn).await;
    assert_eq!(relayed.ip(), PUBLIC.parse::<IpAddr>().unwrap());
    assert_ne!(relayed.port(), 0);
    shutdown.cancel();
}

#[tokio::test]
async fn natters_own_turn_server_answers_discovery() {
    let (stun, stop_stun) = serve(TurnConfig::for_tests()).await;
    // From another loopback address: the server reports that one.
    let mapped = natter_turn::stun_mapped_address(
        &stun.to_string(),
        IpAddr::from([127, 0, 0, 3]),
        Duration::from_secs(5),
    )
    .await
    .expect("a mapped address");
    assert_eq!(mapped.ip(), IpAddr::from([127, 0, 0, 3]));
    assert_ne!(mapped.port(), 0);
    // A TURN server that discovers through it sees no NAT (the relay IP itself)
    // and advertises the relay IP.
    let (turn, shutdown) = serve(config_discovering(stun)).await;
    assert_eq!(
        relayed_address(turn).await.ip(),
        IpAddr::from([127, 0, 0, 1])
    );
    shutdown.cancel();
    stop_stun.cancel();
}

#[tokio::test]
async fn without_an_answer_start_is_refused_unless_discovery_is_optional() {
    // Bound but never read: requests vanish as they would at a dead server.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stun = silent.local_addr().unwrap();
    let config = TurnConfig {
        external_ip_stun_timeout_secs: 1,
        ..config_discovering(stun)
    };
    let err = TurnServer::bind(config.clone())
        .await
        .err()
        .expect("start refused");
    assert!(matches!(err, TurnError::Discovery(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("turn.external_ip_stun_server")
            && text.contains(&stun.to_string())
            && text.contains("no answer"),
        "{text}"
    );

    let optional = TurnConfig {
        external_ip_stun_required: false,
        ..config
    };
    let (turn, shutdown) = serve(optional).await;
    assert_eq!(
        relayed_address(turn).await.ip(),
        IpAddr::from([127, 0, 0, 1]),
        "falls back to the relay IP"
    );
    shutdown.cancel();
    drop(silent);
}

#[tokio::test]
async fn a_name_without_an_address_of_the_relay_family_is_refused() {
    // `localhost` may resolve to ::1 and 127.0.0.1; an IPv6-only literal cannot
    // serve an IPv4 relay.
    let err = natter_turn::stun_mapped_address(
        "[::1]:3478",
        IpAddr::from([127, 0, 0, 1]),
        Duration::from_secs(1),
    )
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("no IPv4 address"), "{err}");
}
