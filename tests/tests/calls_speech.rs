//! Speech quality of a call: an espeak-ng sample is played one way on
//! loopback and the recording is scored against it with PESQ wide-band
//! (ITU-T P.862.2, PyPI `pesq`, both at 16 kHz). Target: MOS-LQO ≥ 3.5.
//! scripts/test-deps.sh installs espeak-ng and pesq; missing tools fail the test.

use natter_client::call::wav::Pcm;
use natter_client::call::{CallOptions, answer, place};
use natter_client::{Api, Chat, ConnectOptions};
use natter_tests::server::{InProcess, synced};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIN_PESQ_WB: f64 = 3.5;

fn tools_dir() -> PathBuf {
    std::env::var_os("NATTER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/natter/tools")
        })
}

const SCORE: &str = r#"
import sys, wave
import numpy as np
from pesq import pesq
def read(p):
    with wave.open(p) as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)
ref, deg = read(sys.argv[1]), read(sys.argv[2])
print(pesq(16000, ref, deg, 'wb'))
"#;

fn pesq_wb(reference: &Path, degraded: &Path) -> f64 {
    let py = tools_dir().join("pesq-venv/bin/python");
    let out = Command::new(&py)
        .args(["-c", SCORE])
        .arg(reference)
        .arg(degraded)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test-deps.sh", py.display()));
    assert!(
        out.status.success(),
        "pesq: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_through_a_call_scores_pesq_wideband_3_5_or_better() {
    let work = natter_common::testing::TempDir::new("natter-speech");
    let spoken = work.path().join("espeak.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&spoken)
        .arg("The quick brown fox jumps over the lazy dog. Natter carries voice calls end to end.")
        .status()
        .expect("espeak-ng (run scripts/test-deps.sh)");
    assert!(status.success());
    let speech = Pcm::read(&spoken).unwrap().resample(16_000);
    let secs = speech.samples.len() as f64 / 16_000.0;

    let server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let alice = server.registered(&api, "+14155550401", "speech-test").await;
    let bob = server.registered(&api, "+14155550402", "speech-test").await;
    let bob_id = bob.credentials().user();
    let (ac, mut ae) = Chat::connect(alice.clone(), ConnectOptions::default());
    let (bc, mut be) = Chat::connect(bob.clone(), ConnectOptions::default());
    synced(&mut ae).await;
    synced(&mut be).await;
    let opts = CallOptions {
        play: Some(speech.clone()),
        hangup_after: Some(Duration::from_secs_f64(secs + 1.0)),
        setup_timeout: Duration::from_secs(20),
        bind: "127.0.0.1:0".into(),
        ..CallOptions::default()
    };
    let listen = CallOptions {
        play: None,
        hangup_after: None,
        ..opts.clone()
    };
    let (a, b) = tokio::join!(
        place(&ac, &mut ae, &alice, bob_id, opts),
        answer(&bc, &mut be, &bob, None, listen, Duration::from_secs(20)),
    );
    a.expect("caller");
    let b = b.expect("callee");
    // The recording starts with the first packet, which carries the first
    // frame of the sample: cut it to the sample's length (plus a little).
    let mut got = b.recording.clone();
    got.samples.truncate(speech.samples.len() + 1_600);
    let (reference, degraded) = (work.path().join("ref.wav"), work.path().join("deg.wav"));
    speech.write(&reference).unwrap();
    got.write(&degraded).unwrap();
    let score = pesq_wb(&reference, &degraded);
    eprintln!(
        "PESQ-WB {score:.2} over {secs:.1} s of espeak-ng speech ({} packets, {} lost)",
        b.stats.packets_received, b.stats.lost
    );
    assert!(score >= MIN_PESQ_WB, "PESQ-WB {score:.2} < {MIN_PESQ_WB}");
    ac.close();
    bc.close();
    server.stop().await;
}
