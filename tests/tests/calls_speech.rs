//! Speech quality of a call: an espeak-ng sample is played one way, relay-only
//! through our TURN server, and the recording is scored with PESQ wide-band
//! (`natter_tests::speech`). Target: MOS-LQO ≥ 3.5 on a clean path, and
//! still ≥ 3.5 with in-band FEC when the talker's path loses 5 % of its
//! packets with 40 ms ± 20 ms of delay (so packets arrive out of order).
//! scripts/test-deps.sh installs espeak-ng and pesq; missing tools fail the test.

use natter_client::call::AudioOptions;
use natter_tests::impair::Impairment;
use natter_tests::server::InProcess;
use natter_tests::speech::{speech, speech_call};
use std::time::Duration;

const MIN_PESQ_WB: f64 = 3.5;
const TEXT: &str =
    "The quick brown fox jumps over the lazy dog. Natter carries voice calls end to end.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_through_a_call_scores_pesq_wideband_3_5_or_better() {
    let work = natter_common::testing::TempDir::new("natter-speech");
    let sample = speech(work.path(), TEXT).unwrap();
    let server = InProcess::start("sqlite").await.unwrap();
    let s = speech_call(&server, &sample, AudioOptions::default(), None, work.path())
        .await
        .unwrap();
    eprintln!("clean path: {s:?}");
    assert!(
        s.pesq >= MIN_PESQ_WB,
        "PESQ-WB {:.2} < {MIN_PESQ_WB}",
        s.pesq
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_a_lossy_jittery_path_scores_3_5_with_fec() {
    let work = natter_common::testing::TempDir::new("natter-speech-loss");
    let sample = speech(work.path(), TEXT).unwrap();
    let server = InProcess::start("sqlite").await.unwrap();
    let bad = Impairment {
        loss: 0.05,
        delay: Duration::from_millis(40),
        jitter: Duration::from_millis(20),
    };
    let s = speech_call(
        &server,
        &sample,
        AudioOptions::default(),
        Some(bad),
        work.path(),
    )
    .await
    .unwrap();
    eprintln!("5 % loss, 40 ± 20 ms, FEC: {s:?}");
    assert!(s.lost > 0, "the path lost nothing: {s:?}");
    assert!(s.recovered > 0, "FEC rebuilt nothing: {s:?}");
    assert!(
        s.pesq >= MIN_PESQ_WB,
        "PESQ-WB {:.2} < {MIN_PESQ_WB}",
        s.pesq
    );
    server.stop().await;
}
