//! Steps of the metrics scenario: registration, waits, uploads, TURN traffic.

#![allow(dead_code)]

use super::*;

// ------------------------------------------------------------------ helpers

/// Registers `number` with the code from the SMS outbox (after a wrong code
/// when `wrong_first`).
pub(crate) async fn register(
    api: &Api,
    outbox: &Path,
    number: &str,
    wrong_first: bool,
) -> Credentials {
    let session = api.start_registration(number).await.expect("a session");
    let code = natter_client::code_from_outbox(outbox, &session.session_id)
        .await
        .expect("the code in the outbox");
    if wrong_first {
        let mut wrong: Vec<u8> = code.clone().into_bytes();
        wrong[0] = if wrong[0] == b'9' { b'0' } else { wrong[0] + 1 };
        let wrong = String::from_utf8(wrong).unwrap();
        assert_api_error(
            api.verify_code(&session.session_id, &wrong).await,
            400,
            "wrong_code",
        );
    }
    api.verify_code(&session.session_id, &code)
        .await
        .expect("the right code");
    api.create_account(&session.session_id, "metrics-test")
        .await
        .expect("an account")
}

pub(crate) fn assert_api_error<T: std::fmt::Debug>(
    r: Result<T, natter_client::Error>,
    status: u16,
    code: &str,
) {
    match r {
        Err(natter_client::Error::Api {
            status: s, code: c, ..
        }) if s == status && c == code => {}
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// The first event `pick` accepts (others are skipped), within the deadline.
pub(crate) async fn wait<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: not within {DEADLINE:?}"))
            .unwrap_or_else(|| panic!("{what}: the connection's events ended"));
        if let Some(t) = pick(&ev) {
            return t;
        }
    }
}

/// Waits for the push outbox to hold a `reason` notice for `user`.
pub(crate) async fn wait_push(outbox: &Path, user: &str, reason: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(outbox).unwrap_or_default();
        let found = text.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            v["user_id"] == user && v["reason"] == reason
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} push for {user} in {}: {text}",
            outbox.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `call` in the caller's call log (written once the call ended).
pub(crate) async fn wait_call_log(
    api: &Api,
    token: &str,
    call: &CallId,
) -> natter_client::CallLogEntry {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let log = api
            .call_log(token, None, None)
            .await
            .expect("GET /v1/calls");
        if let Some(entry) = log.calls.into_iter().find(|c| c.call_id == *call) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{call} not in the call log within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /v1/media`: status and JSON body.
pub(crate) async fn simple_upload(
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/media"))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("POST /v1/media");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

pub(crate) const TO_PEER: &[u8] = b"metrics: to the peer";
pub(crate) const TO_CLIENT: &[u8] = b"metrics: back to the client";

/// TURN clients still holding what the gauges count.
pub(crate) struct TurnHeld {
    pub(crate) honest: TurnClient,
    pub(crate) tcp: TurnClient,
}

/// Binding over UDP and TCP; an allocation relaying one datagram each way; a
/// denied peer; a wrong password; a datagram that is not STUN; an
/// unauthenticated request of an unknown method.
pub(crate) fn turn_traffic(server: SocketAddr, user: &str, pass: &str) -> TurnHeld {
    use natter_turn::core::codec::{Class, MessageBuilder, Method, TransactionId};
    let mut honest = TurnClient::udp("127.0.0.1", server);
    assert!(honest.binding().is_some(), "Binding over UDP");
    honest.login(user, pass);
    let (relayed, _) = honest.allocate(&[]).expect("an allocation");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    assert_eq!(honest.permit(peer_addr), Ok(()), "permission for the peer");
    assert_eq!(
        honest.permit("10.1.2.3:9".parse().unwrap()),
        Err(403),
        "a peer outside turn.allowed_peers"
    );
    honest.send_to_peer(peer_addr, TO_PEER);
    let mut buf = [0u8; 256];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer receives");
    assert_eq!((&buf[..n], from), (TO_PEER, relayed), "relayed to the peer");
    peer.send_to(TO_CLIENT, relayed).unwrap();
    let (p, data) = honest.recv_data().expect("the client receives");
    assert_eq!((p, data.as_slice()), (peer_addr, TO_CLIENT));

    let mut tcp = TurnClient::tcp(server).expect("TCP connect");
    assert!(tcp.binding().is_some(), "Binding over TCP");

    let mut wrong = TurnClient::udp("127.0.0.1", server);
    wrong.login(user, "not-the-password");
    assert_eq!(wrong.allocate(&[]), Err(401), "a wrong password");

    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    raw.send_to(&[0xFF; 24], server).unwrap();
    let unknown = MessageBuilder::new(Class::Request, Method(0x0FF), TransactionId([9; 12]))
        .finish(None, true);
    raw.send_to(&unknown, server).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    let (n, _) = raw
        .recv_from(&mut buf)
        .expect("an answer to the unknown method");
    let answer = natter_turn::core::codec::Message::decode(&buf[..n]).unwrap();
    assert_eq!(
        (answer.class, answer.transaction_id),
        (Class::Error, TransactionId([9; 12])),
        "400 to the unknown method (and nothing to the junk before it)"
    );
    TurnHeld { honest, tcp }
}
