//! "Two terminals": a real `natter serve` (embedded TURN on loopback) and two
//! `natter-cli` processes that register with codes, then one calls the other
//! (`call USER --play a.wav --record a-got.wav`, `answer --play b.wav --record
//! b-got.wav`) relay-only; each recording must hold the other side's tone.
//! And the same across two cluster nodes on PostgreSQL + Redis: the caller's
//! socket (and TURN server) on one node, the callee's on the other.

use natter_client::call::wav::Pcm;
use natter_tests::audio;
use natter_tests::cli::{register, spawn_callee, user_id};
use natter_tests::cluster::{LocalCluster, test_redis_url};
use natter_tests::server::ProcessServer;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_natter");

fn cli(server: &str, home: &Path, args: &[&str]) -> Command {
    natter_tests::cli::cli(Path::new(BIN), server, home, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_natter_cli_processes_call_and_record_each_other() {
    let server = ProcessServer::start(BIN.into(), None).await.unwrap();
    let (url, outbox) = (server.url(), server.sms_outbox());
    call_and_record([(&url, &outbox), (&url, &outbox)]);
}

/// The caller on node 0 (the calls leader), the callee on node 1: call
/// frames cross nodes, and each side relays through its own node's TURN
/// server, which relays to the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_two_cluster_nodes_carries_both_tones() {
    let c = LocalCluster::start(
        BIN.into(),
        2,
        &test_redis_url(),
        &[("NATTER_TURN__ALLOWED_PEERS", "127.0.0.0/8")],
    )
    .await
    .unwrap();
    let (a, b) = (
        (c.nodes[0].url(), c.sms_outbox(0)),
        (c.nodes[1].url(), c.sms_outbox(1)),
    );
    call_and_record([(&a.0, &a.1), (&b.0, &b.1)]);
}

/// Registers A at `ends[0]` and B at `ends[1]` (server URL, SMS outbox);
/// A calls B, relay-only; each recording holds the other's tone.
fn call_and_record(ends: [(&String, &PathBuf); 2]) {
    let work = natter_common::testing::TempDir::new("natter-cli-call");
    let (ha, hb) = (work.path().join("a"), work.path().join("b"));
    let (sa, sb) = (ends[0].0.as_str(), ends[1].0.as_str());
    for (home, number, (server, outbox)) in [
        (&ha, "+14155550301", ends[0]),
        (&hb, "+14155550302", ends[1]),
    ] {
        register(Path::new(BIN), server, home, number, outbox);
    }
    let (a_in, b_in) = (work.path().join("a.wav"), work.path().join("b.wav"));
    Pcm::tone(16_000, 440.0, 2.5, 0.5).write(&a_in).unwrap();
    Pcm::tone(48_000, 1000.0, 2.5, 0.5).write(&b_in).unwrap();
    let (a_out, b_out) = (work.path().join("a-got.wav"), work.path().join("b-got.wav"));
    let bob = user_id(&hb);
    let mut answer = cli(
        sb,
        &hb,
        &[
            "answer",
            "--relay-only",
            "--bind",
            "127.0.0.1:0",
            "--wait",
            "60",
            "--play",
        ],
    );
    answer.arg(&b_in).arg("--record").arg(&b_out);
    let answer = spawn_callee(answer);
    let call = cli(
        sa,
        &ha,
        &[
            "call",
            &bob,
            "--relay-only",
            "--bind",
            "127.0.0.1:0",
            "--duration",
            "4",
            "--play",
        ],
    )
    .arg(&a_in)
    .arg("--record")
    .arg(&a_out)
    .output()
    .unwrap();
    let answered = answer.wait_with_output().unwrap();
    assert!(
        call.status.success(),
        "call: {}",
        String::from_utf8_lossy(&call.stderr)
    );
    assert!(answered.status.success(), "answer failed");
    let said = String::from_utf8_lossy(&call.stdout);
    // Both ends are relay-only: our side sends from its relay to the far end's
    // relay (which the SDK names `relay` even when the far end's connectivity
    // check arrived before its trickled candidate).
    assert!(said.contains("path relay->relay"), "{said}");
    for (file, hz) in [(&a_out, 1000.0), (&b_out, 440.0)] {
        let rec = Pcm::read(file).unwrap();
        let (s, e) = audio::loud_span(&rec.samples, 16_000, 500.0).expect("a loud recording");
        let body = &rec.samples[s + 1_600..e - 1_600];
        let f = audio::dominant_frequency(body, 16_000, 100.0, 4_000.0);
        assert!(
            (f - hz).abs() <= 5.0,
            "{}: {f} Hz, expected {hz}",
            file.display()
        );
    }
    // Both ends see the call in their log.
    let log = cli(sb, &hb, &["calls"]).output().unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("incoming") && log.contains("answered"),
        "{log}"
    );
}
