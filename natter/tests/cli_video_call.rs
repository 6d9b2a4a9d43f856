//! Video calls from two terminals: a real `natter serve` (embedded TURN on
//! loopback) and two `natter-cli` processes, each with a 640×480 30 fps test
//! card as its camera (`--video`), call each other relay-only for 20 s and
//! record what they receive (`--record-video`). Each recording is read back:
//! the test card's stamped frame numbers say which pictures arrived, that
//! they advance without a long freeze, and PSNR against the source card says
//! how well. And the same across two cluster nodes.

use natter_tests::cli::{register, spawn_callee, user_id};
use natter_tests::cluster::{LocalCluster, test_redis_url};
use natter_tests::server::ProcessServer;
use natter_tests::video::analyse;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_natter");
const SIZE: (u32, u32) = (640, 480);
const CALL_SECS: u32 = 20;

fn cli(server: &str, home: &Path, args: &[&str]) -> Command {
    natter_tests::cli::cli(Path::new(BIN), server, home, args)
}

/// The number before `word` in the CLI's `video:` line (`sent 600 frames`).
fn figure(said: &str, before: &str) -> u64 {
    let line = said
        .lines()
        .find(|l| l.starts_with("video:"))
        .unwrap_or_else(|| panic!("no video line in {said:?}"));
    let words: Vec<&str> = line.split([' ', ',', ';', '(', ')']).collect();
    words
        .windows(2)
        .find(|w| w[1] == before)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no number before {before:?} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_natter_cli_processes_make_a_video_call() {
    let server = ProcessServer::start(BIN.into(), None).await.unwrap();
    let (url, outbox) = (server.url(), server.sms_outbox());
    video_call([(&url, &outbox), (&url, &outbox)], "+1415555061");
}

/// Caller on node 0, callee on node 1 (PostgreSQL + Redis): the call's
/// frames cross nodes and each side relays through its own node's TURN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_call_between_two_cluster_nodes() {
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
    video_call([(&a.0, &a.1), (&b.0, &b.1)], "+1415555062");
}

fn video_call(ends: [(&String, &PathBuf); 2], numbers: &str) {
    let work = natter_common::testing::TempDir::new("natter-cli-video");
    let (ha, hb) = (work.path().join("a"), work.path().join("b"));
    let (sa, sb) = (ends[0].0.as_str(), ends[1].0.as_str());
    for (home, number, (server, outbox)) in [
        (&ha, format!("{numbers}1"), ends[0]),
        (&hb, format!("{numbers}2"), ends[1]),
    ] {
        register(Path::new(BIN), server, home, &number, outbox);
    }
    // The camera: a little longer than the call, so it does not loop.
    let card = work.path().join("card.y4m");
    let out = cli(
        sa,
        &ha,
        &["test-card", "--size", "640x480", "--fps", "30", "--seconds"],
    )
    .arg((CALL_SECS + 4).to_string())
    .arg(&card)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a_out, b_out) = (work.path().join("a-got.y4m"), work.path().join("b-got.y4m"));
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
            "--video",
        ],
    );
    answer.arg(&card).arg("--record-video").arg(&b_out);
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
        ],
    )
    .arg(CALL_SECS.to_string())
    .arg("--video")
    .arg(&card)
    .arg("--record-video")
    .arg(&a_out)
    .output()
    .unwrap();
    let answered = answer.wait_with_output().unwrap();
    let (said_a, said_b) = (
        String::from_utf8_lossy(&call.stdout).into_owned(),
        String::from_utf8_lossy(&answered.stdout).into_owned(),
    );
    assert!(
        call.status.success(),
        "call: {}\n{said_a}",
        String::from_utf8_lossy(&call.stderr)
    );
    assert!(answered.status.success(), "answer failed: {said_b}");
    eprintln!("caller: {said_a}\ncallee: {said_b}");
    assert!(said_a.contains("path relay->relay"), "{said_a}");
    for (who, file, said_me, said_peer) in [
        ("caller", &a_out, &said_a, &said_b),
        ("callee", &b_out, &said_b, &said_a),
    ] {
        let sent = figure(said_peer, "frames");
        let shown = figure(said_me, "pictures");
        let a = analyse(file, SIZE).unwrap();
        eprintln!(
            "{who}: peer sent {sent} frames, {shown} decoded and shown; {}",
            a.summary()
        );
        assert!(
            sent >= u64::from(CALL_SECS) * 30 * 9 / 10,
            "{who}: the peer sent only {sent} frames"
        );
        assert!(
            shown * 100 >= sent * 95,
            "{who}: decoded {shown} of {sent} frames (< 95 %)"
        );
        assert_eq!(a.backwards, 0, "{who}: frame numbers went backwards");
        assert!(
            a.longest_freeze_ms <= 500,
            "{who}: a {} ms freeze at {} ms",
            a.longest_freeze_ms,
            a.longest_freeze_at_ms
        );
        let span = a.last.unwrap_or(0) - a.first.unwrap_or(0);
        assert!(
            span >= (CALL_SECS - 2) * 30,
            "{who}: frame numbers only advanced by {span}"
        );
        // A/V sync: video arrives within 100 ms of the audio captured with it.
        let offset: i64 = said_me
            .split("A/V offset ")
            .nth(1)
            .and_then(|r| r.split(" ms").next()?.parse().ok())
            .unwrap_or_else(|| panic!("{who}: no A/V offset in {said_me}"));
        assert!(offset.abs() <= 100, "{who}: A/V offset {offset} ms");
        assert!(
            a.mean_psnr() >= 32.0,
            "{who}: mean PSNR {:.1} dB < 32 dB",
            a.mean_psnr()
        );
    }
}
