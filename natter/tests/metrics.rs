//! Every `/metrics` series against a real `natter serve` (the embedded shape:
//! SQLite, the file blob store, the embedded TURN server): one scrape at the
//! start, then every service is used for real (registration, tokens, keys, two
//! WebSocket clients with receipts, an offline device woken by push, a group,
//! media up and down with a thumbnail, two calls, a TURN allocation with relay
//! both ways and bad input), then a second scrape, which must show every series
//! the code registers either moved by exactly what was done or listed in
//! [`NOT_MOVABLE`] with the reason. A unit test reads the source tree, so a
//! metric added without a decision here fails the suite.

#[path = "support/metrics_flows.rs"]
mod metrics_flows;
#[path = "support/metrics_lists.rs"]
mod metrics_lists;
#[path = "support/png.rs"]
mod png;
#[path = "support/prom.rs"]
mod prom;
#[path = "support/turn_client.rs"]
mod turn_client;

use metrics_flows::*;
use metrics_lists::*;
use png::*;
use prom::*;

use natter_client::media::MediaClient;
use natter_client::proto::{
    CallAnswer, CallClientFrame, CallIce, CallId, CallOffer, CallRef, EndReason, GroupId,
    ReceiptStatus, ServerFrame, Target,
};
use natter_client::{Account, Api, Chat, ConnectOptions, Credentials, Event, Events};
use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;
use turn_client::TurnClient;

const BIN: &str = env!("CARGO_BIN_EXE_natter");

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ the process

/// A port free for both UDP and TCP on 127.0.0.1 (released before returning;
/// the child binds it moments later).
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// `natter serve` (every service, SQLite in the data dir, embedded TURN).
struct Natter {
    child: Child,
    data_dir: natter_common::testing::TempDir,
    url: String,
    turn: SocketAddr,
}

impl Natter {
    async fn start() -> Natter {
        let data_dir = natter_common::testing::TempDir::new("natter-metrics");
        let http_port = free_port();
        let turn_port = free_port();
        let url = format!("http://127.0.0.1:{http_port}");
        let child = Command::new(BIN)
            .arg("serve")
            .env("NATTER_DATA_DIR", data_dir.path())
            .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("NATTER_HTTP__PUBLIC_URL", &url)
            .env("NATTER_TURN__LISTEN", format!("127.0.0.1:{turn_port}"))
            .env("NATTER_TURN__AUTH_SECRET", "metrics-test-secret")
            .env("NATTER_TURN__ALLOWED_PEERS", "127.0.0.1/32")
            .env("NATTER_TURN__RELAY_IP", "127.0.0.1")
            .env("NATTER_AUTH__ARGON2__MEMORY_KIB", "256")
            .env("NATTER_AUTH__ARGON2__ITERATIONS", "1")
            .env("NATTER_AUTH__LIMIT_PER_IP__COUNT", "10000")
            .env("NATTER_AUTH__LIMIT_VERIFY_PER_IP__COUNT", "10000")
            .env("NATTER_MEDIA__GC_INTERVAL_SECS", "1")
            .env("NATTER_LOG__FORMAT", "text")
            .env(
                "RUST_LOG",
                std::env::var("NATTER_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("natter starts");
        let mut n = Natter {
            child,
            data_dir,
            url,
            turn: SocketAddr::from(([127, 0, 0, 1], turn_port)),
        };
        let http = reqwest::Client::new();
        let ready = format!("{}/readyz", n.url);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = n.child.try_wait().unwrap() {
                panic!("natter exited while starting: {status}");
            }
            if let Ok(r) = http.get(&ready).send().await
                && r.status().is_success()
            {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "natter not ready within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sms_outbox(&self) -> PathBuf {
        self.data_dir.path().join("outbox/sms.jsonl")
    }

    fn push_outbox(&self) -> PathBuf {
        self.data_dir.path().join("outbox/push.jsonl")
    }

    async fn scrape(&self) -> Scrape {
        let r = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("GET /metrics");
        assert_eq!(r.status().as_u16(), 200, "GET /metrics");
        Scrape::parse(&r.text().await.expect("/metrics body"))
    }

    /// Scrapes until `done` holds for a scrape; returns that scrape, or the last
    /// one after the deadline (the caller's assertions then say what is wrong).
    async fn scrape_until(&self, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.scrape().await;
            if done(&s) || Instant::now() >= deadline {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ expectations

/// What the second scrape must show for a series, against the first.
#[derive(Debug, Clone)]
enum Expect {
    /// Grew by exactly this much.
    Delta(f64),
    /// Grew; by how much depends on batching (group commits, fan-out).
    Grew,
    /// A gauge: exactly this value now (it was something else while the
    /// scenario held its sockets, calls and allocations: see `mid`).
    Now(f64),
}

struct Check {
    family: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    expect: Expect,
}

fn check(family: &'static str, labels: &[(&'static str, &'static str)], expect: Expect) -> Check {
    Check {
        family,
        labels: labels.to_vec(),
        expect,
    }
}

/// Sizes only known once the scenario ran.
struct Sizes {
    png: u64,
    thumbnail: u64,
    to_peer: u64,
    to_client: u64,
}

/// The final checks, against the first scrape.
fn expectations(sz: &Sizes) -> Vec<Check> {
    use Expect::*;
    vec![
        // common: every service's router counts its requests.
        check("http_requests_total", &[("service", "auth")], Grew),
        check("http_requests_total", &[("service", "chat")], Grew),
        check("http_requests_total", &[("service", "media")], Grew),
        check(
            "http_requests_total",
            &[
                ("service", "auth"),
                ("method", "POST"),
                ("route", "/v1/tokens/refresh"),
                ("status", "200"),
            ],
            Delta(2.0),
        ),
        check(
            "http_requests_total",
            &[
                ("service", "auth"),
                ("method", "POST"),
                ("route", "/v1/tokens/refresh"),
                ("status", "401"),
            ],
            Delta(2.0),
        ),
        check(
            "http_requests_total",
            &[
                ("service", "chat"),
                ("method", "GET"),
                ("route", "/v1/ws"),
                ("status", "101"),
            ],
            Delta(3.0),
        ),
        check(
            "http_requests_total",
            &[
                ("service", "media"),
                ("method", "POST"),
                ("route", "/v1/media"),
                ("status", "422"),
            ],
            Delta(3.0),
        ),
        // One explicit ICE-server fetch; the call log is polled until it shows
        // the call (so that count varies).
        check(
            "http_requests_total",
            &[("service", "signaling"), ("route", "/v1/calls/ice-servers")],
            Delta(1.0),
        ),
        check(
            "http_requests_total",
            &[("service", "signaling"), ("route", "/v1/calls")],
            Grew,
        ),
        check(
            "http_request_duration_seconds",
            &[("service", "auth"), ("route", "/v1/tokens/refresh")],
            Delta(4.0),
        ),
        check(
            "http_request_duration_seconds",
            &[("service", "media"), ("route", "/v1/media")],
            Delta(4.0),
        ),
        check(
            "http_request_duration_seconds",
            &[("service", "chat"), ("route", "/v1/groups")],
            Delta(1.0),
        ),
        // auth: alice, bob, carol, dave, dave again.
        check("auth_codes_sent_total", &[("transport", "sms")], Delta(5.0)),
        check(
            "auth_sms_provider_total",
            &[("provider", "outbox"), ("result", "ok")],
            Delta(5.0),
        ),
        check(
            "auth_code_checks_total",
            &[("outcome", "right")],
            Delta(5.0),
        ),
        check(
            "auth_code_checks_total",
            &[("outcome", "wrong")],
            Delta(1.0),
        ),
        check(
            "auth_registrations_total",
            &[("kind", "created")],
            Delta(4.0),
        ),
        check(
            "auth_registrations_total",
            &[("kind", "reregistered")],
            Delta(1.0),
        ),
        check(
            "auth_token_refreshes_total",
            &[("outcome", "ok")],
            Delta(2.0),
        ),
        check(
            "auth_token_refreshes_total",
            &[("outcome", "replayed")],
            Delta(1.0),
        ),
        check(
            "auth_token_refreshes_total",
            &[("outcome", "invalid")],
            Delta(1.0),
        ),
        check("auth_prekeys_exhausted_total", &[], Delta(1.0)),
        check("auth_accounts_deleted_total", &[], Delta(1.0)),
        // chat: alice and bob connect once each and close normally; a
        // socket with a token that is not one is closed with 4001.
        check("chat_ws_opened_total", &[], Delta(3.0)),
        check("chat_ws_closed_total", &[("code", "1000")], Delta(2.0)),
        check("chat_ws_closed_total", &[("code", "4001")], Delta(1.0)),
        check("chat_ws_closed_total", &[], Delta(3.0)),
        check("chat_ws_connections", &[], Now(0.0)),
        // alice->bob, bob->alice, alice->carol, alice->group.
        check("chat_messages_stored_total", &[], Delta(4.0)),
        // bob, alice, carol and the group message to bob; the group's system
        // message to alice and bob; receipts to the sender: bob's delivered
        // and read of alice's message, alice's delivered of bob's, bob's
        // delivered of the group message (system messages have none).
        check("chat_queue_entries_total", &[], Delta(10.0)),
        // One sample per group commit: how many depends on batching.
        check("chat_commit_batch_ops", &[], Grew),
        check("chat_commit_duration_seconds", &[], Grew),
        check("chat_commit_finish_seconds", &[], Grew),
        // carol (never connected): one message notice, one VoIP notice.
        check("chat_push_total", &[("result", "ok")], Delta(2.0)),
        check("chat_push_total", &[("result", "error")], Delta(0.0)),
        check("chat_push_total", &[("result", "dropped")], Delta(0.0)),
        // media: a resumable image upload, the same bytes again (deduplicated),
        // a PNG that does not decode, one whose header does not parse, one of
        // 400 megapixels; bob downloads the blob and its thumbnail.
        check(
            "media_uploads_total",
            &[("kind", "resumable"), ("outcome", "stored")],
            Delta(1.0),
        ),
        check(
            "media_uploads_total",
            &[("kind", "simple"), ("outcome", "stored")],
            Delta(1.0),
        ),
        check(
            "media_uploads_total",
            &[("kind", "simple"), ("outcome", "corrupt_image")],
            Delta(2.0),
        ),
        check(
            "media_uploads_total",
            &[("kind", "simple"), ("outcome", "image_too_large")],
            Delta(1.0),
        ),
        check("media_upload_seconds", &[("kind", "resumable")], Delta(1.0)),
        check("media_upload_seconds", &[("kind", "simple")], Delta(1.0)),
        check(
            "media_stored_bytes_total",
            &[("backend", "fs")],
            Delta(sz.png as f64),
        ),
        check("media_deduplicated_total", &[], Delta(1.0)),
        check("media_resumable_created_total", &[], Delta(1.0)),
        // The stored image and the one that did not decode.
        check("media_thumbnail_seconds", &[("kind", "image")], Delta(2.0)),
        // Two corrupt PNGs: one whose header does not parse, one that does not decode.
        check(
            "media_images_refused_total",
            &[("reason", "corrupt")],
            Delta(2.0),
        ),
        check(
            "media_images_refused_total",
            &[("reason", "too_many_pixels")],
            Delta(1.0),
        ),
        check(
            "media_downloads_total",
            &[("object", "blob"), ("method", "GET")],
            Delta(1.0),
        ),
        check(
            "media_downloads_total",
            &[("object", "thumbnail"), ("method", "GET")],
            Delta(1.0),
        ),
        check(
            "media_download_bytes_total",
            &[("backend", "fs")],
            Delta((sz.png + sz.thumbnail) as f64),
        ),
        // signaling: alice calls carol (offline: pushed, cancelled), then bob
        // (answered, hung up).
        check("signaling_offers_total", &[], Delta(2.0)),
        check("signaling_voip_pushes_total", &[], Delta(1.0)),
        check(
            "signaling_calls_ended_total",
            &[("outcome", "cancelled")],
            Delta(1.0),
        ),
        check(
            "signaling_calls_ended_total",
            &[("outcome", "answered")],
            Delta(1.0),
        ),
        check("signaling_calls_ended_total", &[], Delta(2.0)),
        check("signaling_live_calls", &[], Now(0.0)),
        // turn: one allocation relaying one datagram each way, a denied peer,
        // a wrong password, two Bindings (UDP, TCP), a datagram that is not
        // STUN and an unauthenticated request of an unknown method.
        check("natter_turn_allocations", &[], Now(0.0)),
        check("natter_turn_stream_connections", &[], Now(0.0)),
        check("natter_turn_allocations_created_total", &[], Delta(1.0)),
        check("natter_turn_allocations_closed_total", &[], Delta(1.0)),
        check(
            "natter_turn_relayed_packets_total",
            &[("direction", "to_peer")],
            Delta(1.0),
        ),
        check(
            "natter_turn_relayed_packets_total",
            &[("direction", "to_client")],
            Delta(1.0),
        ),
        check(
            "natter_turn_relayed_bytes_total",
            &[("direction", "to_peer")],
            Delta(sz.to_peer as f64),
        ),
        check(
            "natter_turn_relayed_bytes_total",
            &[("direction", "to_client")],
            Delta(sz.to_client as f64),
        ),
        check("natter_turn_binding_requests_total", &[], Delta(2.0)),
        check("natter_turn_challenges_total", &[], Delta(2.0)),
        check("natter_turn_malformed_total", &[], Delta(1.0)),
        check(
            "natter_turn_auth_failures_total",
            &[("reason", "bad_integrity")],
            Delta(1.0),
        ),
        check("natter_turn_auth_failures_total", &[], Delta(1.0)),
        check(
            "natter_turn_refusals_total",
            &[("reason", "peer_denied")],
            Delta(1.0),
        ),
        check(
            "natter_turn_refusals_total",
            &[("reason", "bad_request")],
            Delta(1.0),
        ),
        check("natter_turn_refusals_total", &[], Delta(2.0)),
    ]
}

/// Gauges while alice and bob are connected, in an answered call, and a TURN
/// client holds an allocation and a TCP connection.
const MID: &[(&str, f64)] = &[
    ("chat_ws_connections", 2.0),
    ("signaling_live_calls", 1.0),
    ("natter_turn_allocations", 1.0),
    ("natter_turn_stream_connections", 1.0),
];

/// Failures of `checks` between `before` and `after`, each naming its series.
fn failures(checks: &[Check], before: &Scrape, after: &Scrape) -> Vec<String> {
    let mut out = Vec::new();
    for c in checks {
        let name = show(c.family, &c.labels);
        let (b, a) = (
            before.level(c.family, &c.labels),
            after.level(c.family, &c.labels),
        );
        let present = after.has(c.family);
        match c.expect {
            _ if !present => out.push(format!("{name}: the family is not exported")),
            Expect::Delta(d) if a - b != d => out.push(format!(
                "{name}: moved by {} (from {b} to {a}), expected {d}",
                a - b
            )),
            Expect::Grew if a <= b => out.push(format!("{name}: did not grow (from {b} to {a})")),
            Expect::Now(v) if a != v => out.push(format!(
                "{name}: is {a}, expected {v} (was {b} at the start)"
            )),
            _ => continue,
        }
    }
    out
}

// ------------------------------------------------------------------ the scenario

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_exported_and_moves() {
    let natter = Natter::start().await;
    // The baseline: the TURN driver's first publish (once a second) registers
    // its series at zero, the media collector's first pass its own.
    let before = natter
        .scrape_until(|s| {
            s.has("natter_turn_malformed_total") && s.has("media_gc_blobs_deleted_total")
        })
        .await;
    let api = Api::new(&natter.url).unwrap();
    let outbox = natter.sms_outbox();

    // ---- auth
    let alice = register(&api, &outbox, "+14155550101", false).await;
    let bob = register(&api, &outbox, "+14155550102", false).await;
    let carol = register(&api, &outbox, "+14155550103", true).await;
    let dave = register(&api, &outbox, "+14155550104", false).await;
    let rotated = api.refresh(&dave.refresh_token).await.expect("refresh");
    assert_eq!(rotated.user_id, dave.user_id);
    assert_api_error(
        api.refresh(&dave.refresh_token).await,
        401,
        "refresh_token_reused",
    );
    assert_api_error(
        api.refresh("not-a-refresh-token-of-this-server").await,
        401,
        "invalid_refresh_token",
    );
    let dave_again = register(&api, &outbox, "+14155550104", false).await;
    assert_eq!(
        dave_again.user_id, dave.user_id,
        "re-registration keeps the account"
    );
    let deleted = reqwest::Client::new()
        .delete(format!("{}/v1/account", natter.url))
        .bearer_auth(&dave_again.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204, "DELETE /v1/account");

    let alice_acct = Account::new(api.clone(), alice.clone());
    alice_acct.force_refresh().await.expect("alice refreshes");
    assert_ne!(
        alice_acct.credentials().refresh_token,
        alice.refresh_token,
        "refresh tokens are single use"
    );
    let alice_token = alice_acct.token().await.unwrap();
    let bob_acct = Account::new(api.clone(), bob.clone());
    let bob_token = bob_acct.token().await.unwrap();
    api.put_keys(&alice_token, &natter_client::keys::DeviceKeys::generate(1))
        .await
        .expect("alice publishes keys");
    let first = api.key_bundles(&bob_token, &alice.user_id).await.unwrap();
    let second = api.key_bundles(&bob_token, &alice.user_id).await.unwrap();
    assert_eq!((first.len(), second.len()), (1, 1), "alice has one device");
    assert!(
        first[0].one_time_prekey.is_some(),
        "the one one-time prekey"
    );
    assert!(
        second[0].one_time_prekey.is_none(),
        "none left the second time"
    );

    // ---- chat
    let (a_chat, mut a_ev) = Chat::connect(alice_acct.clone(), ConnectOptions::default());
    let (b_chat, mut b_ev) = Chat::connect(bob_acct.clone(), ConnectOptions::default());
    for ev in [&mut a_ev, &mut b_ev] {
        wait(ev, "connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
        wait(ev, "synced", |e| (*e == Event::Synced).then_some(())).await;
    }
    // A socket whose token is not one: closed with 4001 (auth failed).
    let forged = Credentials {
        access_token: "not-a-token".into(),
        refresh_token: "not-a-token-either".into(),
        ..alice_acct.credentials()
    };
    let (_forged_chat, mut f_ev) =
        Chat::connect(Account::new(api.clone(), forged), ConnectOptions::default());
    let closed = wait(&mut f_ev, "the forged socket is closed", |e| match e {
        Event::Closed { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(closed, Some(4001), "a forged token");
    let to_bob = Target::User(bob.user());
    let id = a_chat.send_text(to_bob.clone(), "hello bob");
    let msg_id = wait(&mut a_ev, "alice's message stored", |e| match e {
        Event::Sent(s) if s.id == id => Some(s.msg_id),
        _ => None,
    })
    .await;
    wait(&mut b_ev, "bob gets alice's message", |e| match e {
        Event::Message(m) if m.msg_id == msg_id => Some(()),
        _ => None,
    })
    .await;
    wait(&mut a_ev, "delivered receipt", |e| match e {
        Event::Receipt(r) if r.msg_id == msg_id && r.status == ReceiptStatus::Delivered => Some(()),
        _ => None,
    })
    .await;
    b_chat.read(vec![msg_id]);
    wait(&mut a_ev, "read receipt", |e| match e {
        Event::Receipt(r) if r.msg_id == msg_id && r.status == ReceiptStatus::Read => Some(()),
        _ => None,
    })
    .await;
    let id = b_chat.send_text(Target::User(alice.user()), "hello alice");
    wait(&mut b_ev, "bob's message stored", |e| match e {
        Event::Sent(s) if s.id == id => Some(()),
        _ => None,
    })
    .await;
    wait(&mut a_ev, "alice gets bob's message", |e| match e {
        Event::Message(m) if m.id == id => Some(()),
        _ => None,
    })
    .await;
    // Carol never connects: her device is woken by push.
    let id = a_chat.send_text(Target::User(carol.user()), "hello carol");
    wait(&mut a_ev, "alice's message to carol stored", |e| match e {
        Event::Sent(s) if s.id == id => Some(()),
        _ => None,
    })
    .await;
    wait_push(&natter.push_outbox(), &carol.user_id, "message").await;
    let group = api
        .create_group(&alice_token, "metrics", &[bob.user()])
        .await
        .expect("create a group");
    let gid: GroupId = group.group_id.clone();
    wait(&mut b_ev, "bob sees the group created", |e| match e {
        Event::Message(m) if m.to == Target::Group(gid.clone()) && m.system.is_some() => Some(()),
        _ => None,
    })
    .await;
    let id = a_chat.send_text(Target::Group(gid.clone()), "hello group");
    wait(&mut b_ev, "bob gets the group message", |e| match e {
        Event::Message(m) if m.id == id => Some(()),
        _ => None,
    })
    .await;

    // ---- media
    let work = natter_common::testing::TempDir::new("natter-metrics-files");
    let png = png_image(400, 300);
    let png_path = work.path().join("photo.png");
    std::fs::write(&png_path, &png).unwrap();
    let alice_media = MediaClient::new(alice_acct.clone(), work.path().join("alice-state"));
    let uploaded = alice_media
        .upload(&png_path, false, &|_, _| {})
        .await
        .expect("resumable upload");
    assert_eq!(uploaded.info.size, png.len() as u64);
    assert_eq!(
        uploaded.info.thumbnail.status, "created",
        "{:?}",
        uploaded.info.thumbnail
    );
    let hash = uploaded.info.hash.clone();
    let again = simple_upload(&natter.url, &bob_token, png.clone()).await;
    assert_eq!(again.0, 200, "the same bytes again: {}", again.1);
    assert_eq!(again.1["deduplicated"], true, "{}", again.1);
    for (what, body, code) in [
        (
            "a PNG that does not decode",
            png_undecodable(),
            "corrupt_image",
        ),
        (
            "a PNG whose header does not parse",
            png_bad_header(),
            "corrupt_image",
        ),
        (
            "a 400-megapixel PNG",
            png_header_only(20_000, 20_000),
            "image_too_large",
        ),
    ] {
        let (status, body) = simple_upload(&natter.url, &alice_token, body).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some(code)),
            "{what}: {body}"
        );
    }
    let bob_media = MediaClient::new(bob_acct.clone(), work.path().join("bob-state"));
    let got = work.path().join("got.png");
    bob_media
        .download(&hash, &got, &|_, _| {})
        .await
        .expect("bob downloads");
    assert_eq!(std::fs::read(&got).unwrap(), png);
    let thumb_url = bob_media
        .info(&hash)
        .await
        .unwrap()
        .thumbnail
        .url
        .expect("a thumbnail URL");
    let thumb = reqwest::get(&thumb_url).await.unwrap();
    assert_eq!(thumb.status().as_u16(), 200, "GET the thumbnail");
    let thumbnail = thumb.bytes().await.unwrap().len() as u64;
    assert!(thumbnail > 0, "an empty thumbnail");

    // ---- turn (blocking client on its own thread)
    let ice = api.ice_servers(&alice_token).await.expect("ICE servers");
    let turn_server = ice
        .ice_servers
        .iter()
        .find(|s| s.credential.is_some())
        .expect("a TURN server with credentials")
        .clone();
    assert!(
        turn_server
            .urls
            .iter()
            .any(|u| u.ends_with(&format!(":{}?transport=udp", natter.turn.port()))),
        "the embedded TURN server's URL: {:?}",
        turn_server.urls
    );
    let (user, pass) = (
        turn_server.username.clone().unwrap(),
        turn_server.credential.clone().unwrap(),
    );
    let server = natter.turn;
    let held = tokio::task::spawn_blocking(move || turn_traffic(server, &user, &pass))
        .await
        .unwrap();

    // ---- calls
    let to_carol = CallId::new("metrics-call-carol");
    a_chat.call_frame(CallClientFrame::Offer(CallOffer {
        call_id: to_carol.clone(),
        to: carol.user(),
        media: Default::default(),
        sdp: "v=0 (an offer)".into(),
    }));
    let ringing = wait(&mut a_ev, "carol's call rings", |e| match e {
        Event::Call(ServerFrame::CallRinging(r)) if r.call_id == to_carol => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!((ringing.devices, ringing.pushed), (0, 1), "{ringing:?}");
    wait_push(&natter.push_outbox(), &carol.user_id, "call").await;
    a_chat.call_frame(CallClientFrame::Hangup(CallRef {
        call_id: to_carol.clone(),
    }));
    // The caller who hangs up hears nothing back; the call log says it ended.
    let carol_call = wait_call_log(&api, &alice_token, &to_carol).await;
    assert_eq!(
        (carol_call.outcome.as_str(), carol_call.reason),
        ("cancelled", EndReason::Cancelled),
        "{carol_call:?}"
    );

    let to_bob_call = CallId::new("metrics-call-bob");
    a_chat.call_frame(CallClientFrame::Offer(CallOffer {
        call_id: to_bob_call.clone(),
        to: bob.user(),
        media: Default::default(),
        sdp: "v=0 (an offer)".into(),
    }));
    wait(&mut b_ev, "bob's phone rings", |e| match e {
        Event::Call(ServerFrame::CallIncoming(c)) if c.call_id == to_bob_call => Some(()),
        _ => None,
    })
    .await;
    a_chat.call_frame(CallClientFrame::Ice(CallIce {
        call_id: to_bob_call.clone(),
        candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
    }));
    wait(&mut b_ev, "bob gets alice's candidate", |e| match e {
        Event::Call(ServerFrame::CallIce(c)) if c.call_id == to_bob_call => Some(()),
        _ => None,
    })
    .await;
    b_chat.call_frame(CallClientFrame::Answer(CallAnswer {
        call_id: to_bob_call.clone(),
        sdp: "v=0 (an answer)".into(),
    }));
    wait(&mut a_ev, "bob answers", |e| match e {
        Event::Call(ServerFrame::CallAnswered(c)) if c.call_id == to_bob_call => Some(()),
        _ => None,
    })
    .await;

    // ---- gauges while everything is held
    let mid = natter
        .scrape_until(|s| MID.iter().all(|(g, v)| s.level(g, &[]) == *v))
        .await;
    let wrong: Vec<String> = MID
        .iter()
        .filter(|(g, v)| mid.level(g, &[]) != *v)
        .map(|(g, v)| format!("{g}: is {}, expected {v} while held", mid.level(g, &[])))
        .collect();
    assert!(wrong.is_empty(), "gauges while held:\n{}", wrong.join("\n"));

    // ---- let go of everything
    a_chat.call_frame(CallClientFrame::Hangup(CallRef {
        call_id: to_bob_call.clone(),
    }));
    let ended = wait(&mut b_ev, "bob's call ends", |e| match e {
        Event::Call(ServerFrame::CallEnded(c)) if c.call_id == to_bob_call => Some(c.reason),
        _ => None,
    })
    .await;
    assert_eq!(ended, EndReason::Hangup);
    let bob_call = wait_call_log(&api, &alice_token, &to_bob_call).await;
    assert_eq!(
        (bob_call.outcome.as_str(), bob_call.reason),
        ("answered", EndReason::Hangup),
        "{bob_call:?}"
    );
    tokio::task::spawn_blocking(move || {
        let TurnHeld { mut honest, tcp } = held;
        assert_eq!(honest.refresh(0), Ok(()), "deleting the allocation");
        drop(tcp);
    })
    .await
    .unwrap();
    for (chat, ev) in [(&a_chat, &mut a_ev), (&b_chat, &mut b_ev)] {
        chat.close();
        wait(ev, "closed", |e| match e {
            Event::Closed { .. } => Some(()),
            _ => None,
        })
        .await;
    }

    // ---- the final scrape
    let checks = expectations(&Sizes {
        png: png.len() as u64,
        thumbnail,
        to_peer: TO_PEER.len() as u64,
        to_client: TO_CLIENT.len() as u64,
    });
    let checked: BTreeSet<&str> = checks.iter().map(|c| c.family).collect();
    let moved: BTreeSet<&str> = MOVED.iter().copied().collect();
    assert_eq!(checked, moved, "the checks cover exactly MOVED");
    let after = natter
        .scrape_until(|s| failures(&checks, &before, s).is_empty())
        .await;
    let mut failed = failures(&checks, &before, &after);
    for (family, still, why) in NOT_MOVABLE {
        let (b, a) = (before.level(family, &[]), after.level(family, &[]));
        match still {
            Still::Zero if (b, a) != (0.0, 0.0) => failed.push(format!(
                "{family}: {b} -> {a}; expected 0 in a healthy single-node run ({why})"
            )),
            Still::PresentZero if !after.has(family) || a != 0.0 => failed.push(format!(
                "{family}: {}; expected present and 0 ({why})",
                if after.has(family) {
                    a.to_string()
                } else {
                    "not exported".into()
                }
            )),
            _ => {}
        }
    }
    // Nothing exported that the code does not register (or this test does not know).
    let known: BTreeSet<&str> = MOVED
        .iter()
        .copied()
        .chain(NOT_MOVABLE.iter().map(|(f, _, _)| *f))
        .collect();
    for family in after.types.keys() {
        if !known.contains(family.as_str()) {
            failed.push(format!(
                "{family}: exported but neither in MOVED nor in NOT_MOVABLE"
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} series wrong:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
