//! Hostile clients against a real `natter serve` process, on loopback with
//! bounded loops: slowloris heads and bodies, connection floods past the caps,
//! thousands of WebSocket upgrades that never authenticate, registrations
//! from many IPv6 addresses of one network, and floods of wrong codes (each an
//! argon2 hash of 19 MiB). After each, the same process still
//! serves a normal client (register, chat, upload) and its resident memory
//! stays under [`RSS_BOUND_KIB`] (the bound docs/security.md states).
//!
//! Attackers bind their own loopback source addresses (127.0.0.2 and up), so
//! the per-address limits they trip do not touch the normal client on 127.0.0.1.

#[path = "support/png.rs"]
mod png;
#[path = "support/turn_process.rs"]
mod turn_process;

use natter_client::media::MediaClient;
use natter_client::proto::Target;
use natter_client::{Api, Chat, ConnectOptions, Event};
use natter_tests::cluster::register_via;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use turn_process::TurnProcess;

/// Resident memory the process may reach under these attacks (docs/security.md).
const RSS_BOUND_KIB: u64 = 192 * 1024;

/// A TCP connection to the process's HTTP port from loopback address `src`.
async fn connect_from(src: &str, port: u16) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("connect from {src}: {e}"))
}

/// Reads until the server closes `s` (EOF or reset), at most `limit`; what it
/// sent before closing, or `None` if it was still open at the limit.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One response head (and a JSON body, if any) read from `s`.
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("no response head: {other:?} after {got:?}"),
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while got.len() < head_end + length {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!("body cut short: {other:?}"),
        }
    }
    (
        status,
        String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned(),
    )
}

const UPGRADE: &[u8] = b"GET /v1/ws HTTP/1.1\r\nHost: natter\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// An unauthenticated WebSocket upgrade from `src`: the status, the body of a
/// refusal, and the socket (kept open by the caller to hold its slot).
async fn upgrade_from(src: &str, port: u16) -> (u16, String, TcpStream) {
    let mut s = connect_from(src, port).await;
    s.write_all(UPGRADE).await.unwrap();
    let (status, body) = read_response(&mut s).await;
    (status, body, s)
}

/// Events until `Synced` (the session is up and drained), before `deadline`.
async fn synced(ev: &mut natter_client::Events, deadline: Instant, who: &str) {
    loop {
        match tokio::time::timeout_at(deadline, ev.recv()).await {
            Ok(Some(Event::Synced)) => return,
            Ok(Some(_)) => {}
            other => panic!("{who}: {other:?}"),
        }
    }
}

/// A normal client still gets everything done: two fresh accounts, a message
/// from one to the other, an upload; and the process's memory is bounded.
async fn still_serves(p: &TurnProcess, after: &str) {
    let api = Api::new(&p.http).unwrap();
    let outbox = p.data_dir().join("outbox").join("sms.jsonl");
    let alice = register_via(&api, &outbox)
        .await
        .unwrap_or_else(|e| panic!("after {after}: register: {e:#}"));
    let bob = register_via(&api, &outbox)
        .await
        .unwrap_or_else(|e| panic!("after {after}: register: {e:#}"));
    let bob_id = bob.credentials().user();
    let ws = format!("ws://127.0.0.1:{}/v1/ws", p.http_port());
    let opts = || ConnectOptions {
        ws_url: Some(ws.clone()),
        ..ConnectOptions::default()
    };
    let (a_chat, mut a_ev) = Chat::connect(alice.clone(), opts());
    let (_b_chat, mut b_ev) = Chat::connect(bob, opts());
    let deadline = Instant::now() + Duration::from_secs(20);
    for ev in [&mut a_ev, &mut b_ev] {
        synced(ev, deadline, &format!("after {after}: no session")).await;
    }
    let id = a_chat.send_text(Target::User(bob_id), "still here");
    loop {
        match tokio::time::timeout_at(deadline, b_ev.recv()).await {
            Ok(Some(Event::Message(m))) if m.id == id => break,
            Ok(Some(_)) => {}
            other => panic!("after {after}: the message never arrived: {other:?}"),
        }
    }
    let work = natter_common::testing::TempDir::new("natter-adversarial");
    let path = work.path().join("photo.png");
    std::fs::write(&path, png::png_image(64, 48)).unwrap();
    let media = MediaClient::new(alice, work.path().join("state"));
    let up = media
        .upload(&path, false, &|_, _| {})
        .await
        .unwrap_or_else(|e| panic!("after {after}: upload: {e}"));
    assert_eq!(up.info.size, std::fs::metadata(&path).unwrap().len());
    let rss = p.rss_kib();
    eprintln!("after {after}: RSS {rss} KiB");
    assert!(
        rss < RSS_BOUND_KIB,
        "after {after}: RSS {rss} KiB over the bound {RSS_BOUND_KIB} KiB"
    );
}

/// Request heads that never end, kept-alive connections that send nothing and
/// bodies that stall are closed after the configured timeouts; meanwhile and
/// afterwards a normal client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_idle_connections_and_stalled_bodies_are_cut_off() {
    let p = TurnProcess::start(
        "all",
        "127.0.0.1",
        &[
            ("NATTER_HTTP__HEADER_TIMEOUT_SECS", "2"),
            ("NATTER_HTTP__BODY_IDLE_TIMEOUT_SECS", "2"),
        ],
    );
    let port = p.http_port();
    let mut slow = JoinSet::new();
    for i in 0..150 {
        slow.spawn(async move {
            let mut s = connect_from("127.0.0.2", port).await;
            let kind = ["head", "idle", "body"][i % 3];
            match kind {
                // One more header line every 500 ms, forever.
                "head" => {
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\n")
                        .await
                        .unwrap();
                    for _ in 0..40 {
                        if let Some(got) = until_closed(&mut s, Duration::from_millis(500)).await {
                            return (kind, got);
                        }
                        if s.write_all(b"X-Drip: 1\r\n").await.is_err() {
                            return (kind, Vec::new());
                        }
                    }
                    panic!("a dripping head was never cut off");
                }
                "idle" => {}
                // A body that promises 1,000 bytes and stops after 11.
                _ => {
                    s.write_all(
                        b"POST /v1/registration/sessions HTTP/1.1\r\nHost: natter\r\n\
                          Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n\
                          {\"number\":",
                    )
                    .await
                    .unwrap();
                }
            }
            let got = until_closed(&mut s, Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("{kind}: still open after 20 s"));
            (kind, got)
        });
    }
    still_serves(&p, "slow clients (while they were connected)").await;
    while let Some(done) = slow.join_next().await {
        let (kind, got) = done.unwrap();
        let text = String::from_utf8_lossy(&got);
        match kind {
            // Cut off without an answer: the head never completed.
            "head" | "idle" => assert!(!text.contains(" 200 "), "{kind}: answered {text}"),
            // The request failed (a 4xx), never a 2xx from half a body.
            _ => assert!(
                got.is_empty() || text.starts_with("HTTP/1.1 4"),
                "{kind}: {text}"
            ),
        }
    }
    still_serves(&p, "slow clients").await;
}

/// Connections past the per-address cap are closed at once; past the total
/// cap, new ones wait until a slot frees. WebSockets hold their slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_per_address_and_in_all() {
    let p = TurnProcess::start(
        "all",
        "127.0.0.1",
        &[
            ("NATTER_HTTP__MAX_CONNECTIONS_PER_IP", "20"),
            ("NATTER_HTTP__MAX_CONNECTIONS", "60"),
            ("NATTER_HTTP__HEADER_TIMEOUT_SECS", "120"),
            ("NATTER_CHAT__AUTH_TIMEOUT_SECS", "120"),
        ],
    );
    let port = p.http_port();
    let mut held = Vec::new();
    // 10 WebSockets and 10 idle connections: 127.0.0.2's whole share.
    for _ in 0..10 {
        let (status, body, s) = upgrade_from("127.0.0.2", port).await;
        assert_eq!(status, 101, "{body}");
        held.push(s);
    }
    for _ in 0..10 {
        held.push(connect_from("127.0.0.2", port).await);
    }
    let mut over = connect_from("127.0.0.2", port).await;
    let got = until_closed(&mut over, Duration::from_secs(5))
        .await
        .expect("the 21st connection from one address is closed at once");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // Another address is not affected.
    let mut other = connect_from("127.0.0.3", port).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut other).await.0, 200);
    drop(other);
    // Fill the total: 20 more from each of two addresses (60 open in all).
    for src in ["127.0.0.4", "127.0.0.5"] {
        for _ in 0..20 {
            held.push(connect_from(src, port).await);
        }
    }
    // Wait until the probe's connection is gone from the count, then one more
    // waits in the backlog, unanswered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut waiting = connect_from("127.0.0.6", port).await;
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: natter\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut buf))
            .await
            .is_err(),
        "answered past the total cap"
    );
    // Closing held connections frees slots, and the waiting one is served.
    held.truncate(40);
    assert_eq!(read_response(&mut waiting).await.0, 200);
    drop(held);
    drop(waiting);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = reqwest::get(format!("{}/metrics", p.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_connections_refused_total{reason=\"per_ip\"} ")),
        "{metrics}"
    );
    still_serves(&p, "connection floods").await;
}

/// Two thousand upgrades from one address that never authenticate: the first
/// `chat.max_unauthenticated_per_ip` get sockets, the rest 429 with a JSON
/// error; others are served; closed sockets give their slots back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_unauthenticated_upgrades_are_refused_past_the_cap() {
    let p = TurnProcess::start(
        "all",
        "127.0.0.1",
        &[
            ("NATTER_CHAT__AUTH_TIMEOUT_SECS", "120"),
            ("NATTER_CHAT__MAX_UNAUTHENTICATED_PER_IP", "64"),
        ],
    );
    let port = p.http_port();
    let mut sockets = Vec::new();
    let mut refused = 0;
    for round in 0..40 {
        let mut batch = JoinSet::new();
        for _ in 0..50 {
            batch.spawn(upgrade_from("127.0.0.2", port));
        }
        while let Some(done) = batch.join_next().await {
            let (status, body, s) = done.unwrap();
            match status {
                101 => sockets.push(s),
                429 => {
                    refused += 1;
                    if refused == 1 {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        assert_eq!(v["error"]["code"], "too_many_connections", "{body}");
                    }
                }
                other => panic!("round {round}: {other} {body}"),
            }
        }
    }
    assert_eq!(sockets.len(), 64, "upgrades that got a socket");
    assert_eq!(refused, 2000 - 64);
    still_serves(&p, "2,000 unauthenticated upgrades").await;
    // Closed sockets free their slots (the server sees the close).
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _s) = upgrade_from("127.0.0.2", port).await;
        if status == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Behind a trusted proxy, registrations from hundreds of addresses of one
/// IPv6 /64 share one budget; another /64 has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_from_many_ipv6_addresses_of_one_network_share_a_limit() {
    let p = TurnProcess::start(
        "all",
        "127.0.0.1",
        &[
            ("NATTER_HTTP__TRUST_FORWARDED_FOR", "true"),
            ("NATTER_HTTP__FORWARDED_HOPS", "1"),
        ],
    );
    let http = reqwest::Client::new();
    let session = |addr: String, n: usize| {
        let http = http.clone();
        let url = format!("{}/v1/registration/sessions", p.http);
        async move {
            let body = serde_json::json!({"number": format!("+1415555{n:04}"), "transport": "sms"});
            http.post(url)
                .header("x-forwarded-for", addr)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..300usize {
        match session(format!("2001:db8:aa:bb:{:x}::{:x}", i % 7, i), i).await {
            200 | 201 => ok += 1,
            429 => limited += 1,
            other => panic!("address {i}: {other}"),
        }
    }
    // auth.limit_per_ip: 20 per hour for the whole /64.
    assert_eq!((ok, limited), (20, 280));
    assert!(
        matches!(session("2001:db8:aa:cc::1".into(), 9000).await, 200 | 201),
        "another /64 has its own budget"
    );
    still_serves(&p, "300 IPv6 registrations").await;
}

/// Fifty wrong registration codes at once, each an argon2 check of 19 MiB:
/// memory stays bounded (it once grew past 450 MB and was never returned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_wrong_codes_keep_memory_bounded() {
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let before = p.rss_kib();
    let http = reqwest::Client::new();
    let mut sessions = Vec::new();
    for n in 0..10 {
        let body =
            serde_json::json!({"number": format!("+1415555{:04}", 7000 + n), "transport": "sms"});
        let v: serde_json::Value = http
            .post(format!("{}/v1/registration/sessions", p.http))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sessions.push(v["session_id"].as_str().expect("a session").to_owned());
    }
    let mut checks = JoinSet::new();
    for id in &sessions {
        for _ in 0..5 {
            let url = format!("{}/v1/registration/sessions/{id}/verify", p.http);
            let http = http.clone();
            checks.spawn(async move {
                http.post(url)
                    .json(&serde_json::json!({"code": "000000"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            });
        }
    }
    let mut wrong = 0;
    while let Some(status) = checks.join_next().await {
        match status.unwrap() {
            400 => wrong += 1,
            429 => {}
            other => panic!("a wrong code answered {other}"),
        }
    }
    assert!(wrong >= 40, "only {wrong} codes were checked");
    eprintln!("wrong codes: RSS {before} KiB before");
    still_serves(&p, "50 wrong codes at once").await;
}

/// A stranger offering and hanging up in a loop rings the callee a bounded
/// number of times (`signaling.offers_per_pair`, default 10 per 10 min): the
/// rest are refused `rate_limited` with no push and no call-log entry. And a
/// callee whose presence privacy is `nobody` is not seen online through
/// `call.ringing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_floods_are_limited_and_ringing_keeps_presence_private() {
    use natter_client::proto::{
        CallClientFrame, CallId, CallMedia, CallOffer, CallRef, ServerFrame,
    };
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let api = Api::new(&p.http).unwrap();
    let outbox = p.data_dir().join("outbox").join("sms.jsonl");
    let mallory = register_via(&api, &outbox).await.unwrap();
    let ann = register_via(&api, &outbox).await.unwrap();
    let ann_id = ann.credentials().user();
    let ws = format!("ws://127.0.0.1:{}/v1/ws", p.http_port());
    let opts = || ConnectOptions {
        ws_url: Some(ws.clone()),
        ..ConnectOptions::default()
    };
    let (m_chat, mut m_ev) = Chat::connect(mallory, opts());
    let deadline = Instant::now() + Duration::from_secs(30);
    synced(&mut m_ev, deadline, "no session").await;
    let offer = |id: &CallId| {
        CallClientFrame::Offer(CallOffer {
            call_id: id.clone(),
            to: ann_id.clone(),
            media: CallMedia::Audio,
            sdp: "v=0\r\n".into(),
        })
    };
    let (mut rang, mut limited) = (0, 0);
    for _ in 0..50 {
        let id = CallId::new(uuid::Uuid::new_v4().to_string());
        m_chat.call_frame(offer(&id));
        loop {
            match tokio::time::timeout_at(deadline, m_ev.recv()).await {
                Ok(Some(Event::Call(ServerFrame::CallRinging(r)))) if r.call_id == id => {
                    rang += 1;
                    break;
                }
                Ok(Some(Event::Error(e))) if e.ref_type.as_deref() == Some("call.offer") => {
                    assert_eq!(
                        e.code,
                        natter_client::proto::ErrorCode::RateLimited,
                        "{e:?}"
                    );
                    assert!(e.retry_after_ms.is_some_and(|ms| ms > 0));
                    limited += 1;
                    break;
                }
                Ok(Some(_)) => {}
                other => panic!("no answer to an offer: {other:?}"),
            }
        }
        m_chat.call_frame(CallClientFrame::Hangup(CallRef { call_id: id }));
    }
    assert_eq!((rang, limited), (10, 40));
    // ann's phone (never connected) was pushed once per call that rang, and
    // her call log holds only those.
    let ann_token = ann.token().await.unwrap();
    let log: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/calls?limit=100", p.http))
        .bearer_auth(&ann_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let pushes = loop {
        let text = std::fs::read_to_string(p.data_dir().join("outbox").join("push.jsonl"))
            .unwrap_or_default();
        let n = text.lines().filter(|l| l.contains("\"call\"")).count();
        if n >= 10 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pushes, 10, "VoIP pushes to ann");
    let calls = log["calls"].as_array().expect("a call list");
    assert!(calls.len() <= 10, "{} call-log entries", calls.len());

    // ann hides her presence, then is online: a stranger's ringing says nothing.
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{}/v1/presence/privacy", p.http))
        .bearer_auth(&ann_token)
        .json(&serde_json::json!({"privacy": "nobody"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (_a_chat, mut a_ev) = Chat::connect(ann, opts());
    let deadline = Instant::now() + Duration::from_secs(30);
    synced(&mut a_ev, deadline, "ann: no session").await;
    let other = register_via(&api, &outbox).await.unwrap();
    let (o_chat, mut o_ev) = Chat::connect(other, opts());
    let id = CallId::new(uuid::Uuid::new_v4().to_string());
    synced(&mut o_ev, deadline, "caller: no session").await;
    o_chat.call_frame(offer(&id));
    let ringing = loop {
        match tokio::time::timeout_at(deadline, o_ev.recv()).await {
            Ok(Some(Event::Call(ServerFrame::CallRinging(r)))) if r.call_id == id => break r,
            Ok(Some(_)) => {}
            other => panic!("no ringing: {other:?}"),
        }
    };
    assert_eq!((ringing.devices, ringing.pushed), (0, 0), "{ringing:?}");
    loop {
        match tokio::time::timeout_at(deadline, a_ev.recv()).await {
            Ok(Some(Event::Call(ServerFrame::CallIncoming(i)))) if i.call_id == id => break,
            Ok(Some(_)) => {}
            other => panic!("ann's phone did not ring: {other:?}"),
        }
    }
}

/// The next frame the server sends on a raw WebSocket: (opcode, payload).
async fn read_ws_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let limit = Duration::from_secs(10);
    let mut head = [0u8; 2];
    tokio::time::timeout(limit, s.read_exact(&mut head))
        .await
        .expect("a frame within 10 s")
        .expect("the socket is open");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).await.unwrap();
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

/// A client frame: FIN, `opcode`, masked (as RFC 6455 requires of clients)
/// unless `masked` is false.
fn client_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n => {
            f.push(mask_bit | 126);
            f.extend((n as u16).to_be_bytes());
        }
    }
    if masked {
        let key = [0x11, 0x22, 0x33, 0x44];
        f.extend(key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Frames that break RFC 6455 are answered with the close code that names
/// the rule (1007 for text that is not UTF-8, 1002 for the rest), not a bare
/// dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_websocket_frames_get_the_close_code_that_names_them() {
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let port = p.http_port();
    for (what, frame, code) in [
        (
            "text that is not UTF-8",
            client_frame(0x1, &[0xff, 0xfe, 0x80], true),
            1007u16,
        ),
        (
            "an unmasked frame",
            client_frame(0x1, br#"{"type":"ping"}"#, false),
            1002,
        ),
        (
            "a ping of 200 bytes",
            client_frame(0x9, &[0u8; 200], true),
            1002,
        ),
    ] {
        let (status, body, mut s) = upgrade_from("127.0.0.2", port).await;
        assert_eq!(status, 101, "{what}: {body}");
        s.write_all(&frame).await.unwrap();
        let (opcode, payload) = read_ws_frame(&mut s).await;
        assert_eq!(opcode, 0x8, "{what}: a close frame");
        assert!(payload.len() >= 2, "{what}: a close code");
        assert_eq!(
            u16::from_be_bytes([payload[0], payload[1]]),
            code,
            "{what}: {}",
            String::from_utf8_lossy(&payload[2..])
        );
    }
}

/// A path parameter that does not parse is answered in the JSON error shape
/// (it was axum's plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_does_not_parse_gets_a_json_error() {
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let api = Api::new(&p.http).unwrap();
    let outbox = p.data_dir().join("outbox").join("sms.jsonl");
    let ann = register_via(&api, &outbox).await.unwrap();
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/devices/-1", p.http))
        .bearer_auth(ann.token().await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_path", "{v}");
}

/// A client that authenticates and then never reads, while 400 messages of
/// 48 KiB are sent to it: the server gives the socket up (a write that makes
/// no progress for 10 s), stays within its memory bound and serves others
/// meanwhile, and the device, reconnecting as a normal client, gets every
/// message (nothing is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_given_up_and_loses_nothing() {
    use natter_client::proto::Kind;
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let api = Api::new(&p.http).unwrap();
    let outbox = p.data_dir().join("outbox").join("sms.jsonl");
    let ann = register_via(&api, &outbox).await.unwrap();
    let bob = register_via(&api, &outbox).await.unwrap();
    let bob_id = bob.credentials().user();
    // Bob's device: authenticated by header, then never read.
    let mut stuck = connect_from("127.0.0.2", p.http_port()).await;
    let token = bob.token().await.unwrap();
    let upgrade = String::from_utf8_lossy(UPGRADE).replace(
        "\r\n\r\n",
        &format!("\r\nAuthorization: Bearer {token}\r\n\r\n"),
    );
    stuck.write_all(upgrade.as_bytes()).await.unwrap();
    let ws = format!("ws://127.0.0.1:{}/v1/ws", p.http_port());
    let opts = || ConnectOptions {
        ws_url: Some(ws.clone()),
        ..ConnectOptions::default()
    };
    let (a_chat, mut a_ev) = Chat::connect(ann, opts());
    let deadline = Instant::now() + Duration::from_secs(60);
    synced(&mut a_ev, deadline, "ann: no session").await;
    let body = vec![0x5a; 48 * 1024];
    let mut ids = std::collections::HashSet::new();
    for _ in 0..400 {
        ids.insert(a_chat.send(Target::User(bob_id.clone()), Kind::text(), body.clone()));
    }
    let mut sent = 0;
    while sent < 400 {
        match tokio::time::timeout_at(deadline, a_ev.recv()).await {
            Ok(Some(Event::Sent(s))) if ids.contains(&s.id) => sent += 1,
            Ok(Some(Event::Error(e))) => panic!("a send was refused: {e:?}"),
            Ok(Some(_)) => {}
            other => panic!("only {sent} of 400 stored: {other:?}"),
        }
    }
    still_serves(&p, "a client that never reads (while connected)").await;
    // The server gives the socket up (reading before that would unblock it).
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", p.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let closed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("chat_slow_consumer_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if closed >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the stuck socket was never given up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = until_closed(&mut stuck, Duration::from_secs(40))
        .await
        .expect("the server never closed the socket of a client that does not read");
    assert!(
        !got.is_empty(),
        "the server wrote nothing to the stuck socket"
    );
    // Bob reconnects as a normal client: all 400 arrive.
    let (_b_chat, mut b_ev) = Chat::connect(bob, opts());
    let mut got = std::collections::HashSet::new();
    while got.len() < 400 {
        match tokio::time::timeout_at(deadline, b_ev.recv()).await {
            Ok(Some(Event::Message(m))) if ids.contains(&m.id) => {
                got.insert(m.id.clone());
            }
            Ok(Some(_)) => {}
            other => panic!("bob got {} of 400: {other:?}", got.len()),
        }
    }
    still_serves(&p, "a client that never reads").await;
}

/// An authenticated socket that floods frames the server must refuse is
/// closed with 1008 (`chat.limit_refused`, 100 per 10 s), and the process
/// serves others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_frame_flood_is_closed_with_1008() {
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let api = Api::new(&p.http).unwrap();
    let outbox = p.data_dir().join("outbox").join("sms.jsonl");
    let eve = register_via(&api, &outbox).await.unwrap();
    let token = eve.token().await.unwrap();
    let mut s = connect_from("127.0.0.2", p.http_port()).await;
    let upgrade = String::from_utf8_lossy(UPGRADE).replace(
        "\r\n\r\n",
        &format!("\r\nAuthorization: Bearer {token}\r\n\r\n"),
    );
    s.write_all(upgrade.as_bytes()).await.unwrap();
    let (status, _) = read_response(&mut s).await;
    assert_eq!(status, 101);
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.extend(client_frame(0x1, b"{nope", true));
    }
    // The server may close before reading it all; a failed write is fine.
    let _ = s.write_all(&flood).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        assert!(Instant::now() < deadline, "never closed");
        let (opcode, payload) = read_ws_frame(&mut s).await;
        if opcode == 0x8 {
            break u16::from_be_bytes([payload[0], payload[1]]);
        }
    };
    assert_eq!(code, 1008);
    still_serves(&p, "an authenticated frame flood").await;
}
