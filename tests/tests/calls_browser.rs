//! A real browser calls a Rust client: headless Chromium (playwright-core,
//! fake media devices fed from a WAV tone, iceTransportPolicy 'relay') places
//! a call through natter signaling and our TURN server; the Rust client
//! answers and records. The recording must hold Chromium's microphone tone,
//! and both ends must have used relay candidates.
//! scripts/test-deps.sh installs chromium and playwright-core.

use natter_client::call::wav::Pcm;
use natter_client::call::{CallOptions, answer};
use natter_client::{Api, Chat, ConnectOptions, Event};
use natter_tests::audio;
use natter_tests::server::{InProcess, TurnSpot};
use std::path::PathBuf;
use std::time::Duration;

/// The tone Chromium's fake microphone plays.
const MIC_HZ: f64 = 660.0;

fn tools_dir() -> PathBuf {
    std::env::var_os("NATTER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/natter/tools")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_calls_a_rust_client_relay_only() {
    browser_calls_rust_client(TurnSpot::default()).await;
}

/// The same call with TURN on a wildcard listener reached through the host's
/// primary address: Chromium sends from that interface, and reported "TURN
/// server not answering" while replies left from another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_calls_through_a_wildcard_turn_listener() {
    let spot = TurnSpot::wildcard();
    eprintln!("TURN on 0.0.0.0, clients given {}", spot.url_host);
    browser_calls_rust_client(spot).await;
}

async fn browser_calls_rust_client(turn: TurnSpot) {
    let work = natter_common::testing::TempDir::new("natter-browser");
    let mic = work.path().join("mic.wav");
    Pcm::tone(48_000, MIC_HZ, 10.0, 0.5).write(&mic).unwrap();
    let server = InProcess::start_with_turn("sqlite", turn).await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let browser_user = server
        .registered(&api, "+14155550501", "browser-test")
        .await;
    let rust_user = server
        .registered(&api, "+14155550502", "browser-test")
        .await;
    let callee = rust_user.credentials().user();
    let (chat, mut events) = Chat::connect(rust_user.clone(), ConnectOptions::default());
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.recv().await {
            if ev == Event::Synced {
                return;
            }
        }
        panic!("the chat socket closed before it synced");
    })
    .await
    .expect("the callee's socket syncs within 30 s");
    let token = browser_user.token().await.unwrap();
    let script = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("browser/call.cjs");
    let node = tokio::process::Command::new("node")
        .env("NODE_PATH", tools_dir().join("node/node_modules"))
        .arg(&script)
        .arg(server.url())
        .arg(&token)
        .arg(callee.as_str())
        .arg(&mic)
        .arg("4")
        .output();
    let opts = CallOptions {
        relay_only: true,
        hangup_after: None,
        setup_timeout: Duration::from_secs(30),
        bind: "127.0.0.1:0".into(),
        ..CallOptions::default()
    };
    let (out, report) = tokio::join!(
        node,
        answer(
            &chat,
            &mut events,
            &rust_user,
            None,
            opts,
            Duration::from_secs(60)
        ),
    );
    let out = out.expect("node (run scripts/test-deps.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser script failed: {stdout}\n{stderr}"
    );
    let browser: serde_json::Value = serde_json::from_str(stdout.trim()).expect("browser result");
    assert_eq!(browser["connected"], true, "{browser}");
    assert_eq!(browser["localType"], "relay", "{browser}");
    assert_eq!(browser["remoteType"], "relay", "{browser}");
    let r = report.expect("rust client");
    assert_eq!(r.ended_by_peer, Some(natter_proto::EndReason::Hangup));
    let (l, rm) = r.stats.selected_pair.clone().expect("selected pair");
    assert_eq!((l.as_str(), rm.as_str()), ("relay", "relay"));
    let rec = &r.recording.samples;
    let (s, e) = audio::loud_span(rec, 16_000, 300.0).expect("the recording holds sound");
    let secs = (e - s) as f64 / 16_000.0;
    assert!(secs > 3.0, "only {secs:.2} s of browser audio");
    let body = &rec[s + 3_200..e - 1_600];
    let f = audio::dominant_frequency(body, 16_000, 100.0, 4_000.0);
    eprintln!(
        "browser mic {MIC_HZ} Hz received as {f:.2} Hz over {secs:.2} s; {}",
        browser
    );
    assert!(
        (f - MIC_HZ).abs() <= 5.0,
        "dominant {f:.1} Hz, expected {MIC_HZ} Hz"
    );
    chat.close();
    server.stop().await;
}
