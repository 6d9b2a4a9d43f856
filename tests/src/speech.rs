//! Speech quality of a call, for tests and benchmarks: an espeak-ng sample is
//! played from one SDK client to another (relay-only through our TURN
//! server, optionally across an [`ImpairedPath`]), and the recording is
//! scored against it with PESQ wide-band (ITU-T P.862.2, PyPI `pesq`, both at
//! 16 kHz). scripts/test-deps.sh installs espeak-ng and pesq.

use crate::impair::{ImpairedPath, Impairment, through, turn_udp_addr};
use crate::server::{InProcess, synced};
use natter_client::call::wav::Pcm;
use natter_client::call::{AudioOptions, CallOptions, answer, place};
use natter_client::{Api, Chat, ConnectOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn tools_dir() -> PathBuf {
    std::env::var_os("NATTER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/natter/tools")
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

/// PESQ-WB (MOS-LQO) of `degraded` against `reference`, both 16 kHz mono WAV.
pub fn pesq_wb(reference: &Path, degraded: &Path) -> anyhow::Result<f64> {
    let py = tools_dir().join("pesq-venv/bin/python");
    let out = Command::new(&py)
        .args(["-c", SCORE])
        .arg(reference)
        .arg(degraded)
        .output()
        .map_err(|e| anyhow::anyhow!("{}: {e}; run scripts/test-deps.sh", py.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "pesq: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// espeak-ng's reading of `text`, at 16 kHz.
pub fn speech(dir: &Path, text: &str) -> anyhow::Result<Pcm> {
    let spoken = dir.join("espeak.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&spoken)
        .arg(text)
        .status()
        .map_err(|e| anyhow::anyhow!("espeak-ng: {e} (run scripts/test-deps.sh)"))?;
    anyhow::ensure!(status.success(), "espeak-ng failed");
    Ok(Pcm::read(&spoken)?.resample(16_000))
}

/// What one speech call measured.
#[derive(Debug, Clone, Copy)]
pub struct SpeechScore {
    /// PESQ-WB MOS-LQO.
    pub pesq: f64,
    /// Packets the listener received.
    pub packets: u64,
    /// Frames the listener lost (after waiting for reordered packets).
    pub lost: u64,
    /// Of those, rebuilt from in-band FEC.
    pub recovered: u64,
    /// The loss the talker's encoder last planned FEC for, percent.
    pub fec_planned: i32,
}

static NUMBERS: AtomicU32 = AtomicU32::new(0);

/// Plays `sample` from a caller to a callee on `server` and scores what the
/// callee recorded. With `impairment`, the caller's media crosses an
/// impairment relay in front of the TURN server.
pub async fn speech_call(
    server: &InProcess,
    sample: &Pcm,
    audio: AudioOptions,
    impairment: Option<Impairment>,
    dir: &Path,
) -> anyhow::Result<SpeechScore> {
    let api = Api::new(&server.url())?;
    let n = NUMBERS.fetch_add(1, Ordering::Relaxed);
    let alice = server
        .registered(&api, &format!("+1415555{:04}", 4000 + 2 * n), "speech")
        .await;
    let bob = server
        .registered(&api, &format!("+1415555{:04}", 4001 + 2 * n), "speech")
        .await;
    let bob_id = bob.credentials().user();
    let (ac, mut ae) = Chat::connect(alice.clone(), ConnectOptions::default());
    let (bc, mut be) = Chat::connect(bob.clone(), ConnectOptions::default());
    synced(&mut ae).await;
    synced(&mut be).await;
    let path = match impairment {
        Some(imp) => {
            let ice = api.ice_servers(&alice.token().await?).await?;
            let turn = turn_udp_addr(&ice.ice_servers)
                .ok_or_else(|| anyhow::anyhow!("no turn: URL over UDP"))?;
            // One seed for every call: the relay loses the same media packets in
            // each (by their place in the stream), so calls compare fairly.
            let path = ImpairedPath::start(turn, imp, 0x5eed).await?;
            Some((path, ice.ice_servers))
        }
        None => None,
    };
    let secs = sample.samples.len() as f64 / f64::from(sample.rate);
    let talk = CallOptions {
        audio,
        play: Some(sample.clone()),
        relay_only: true,
        hangup_after: Some(Duration::from_secs_f64(secs + 1.0)),
        setup_timeout: Duration::from_secs(30),
        bind: "127.0.0.1:0".into(),
        ice_servers: path.as_ref().map(|(p, ice)| through(ice, p.addr())),
        ..CallOptions::default()
    };
    let listen = CallOptions {
        play: None,
        hangup_after: None,
        ice_servers: None,
        ..talk.clone()
    };
    let (a, b) = tokio::join!(
        place(&ac, &mut ae, &alice, bob_id, talk),
        answer(&bc, &mut be, &bob, None, listen, Duration::from_secs(30)),
    );
    let a = a?;
    let b = b?;
    ac.close();
    bc.close();
    // The recording starts with the first packet, which carries the first
    // frame of the sample: cut it to the sample's length (plus a little).
    let mut got = b.recording.clone();
    got.samples.truncate(sample.samples.len() + 1_600);
    let (reference, degraded) = (
        dir.join(format!("ref-{n}.wav")),
        dir.join(format!("deg-{n}.wav")),
    );
    sample.write(&reference)?;
    got.write(&degraded)?;
    Ok(SpeechScore {
        pesq: pesq_wb(&reference, &degraded)?,
        packets: b.stats.packets_received,
        lost: b.stats.lost,
        recovered: b.stats.recovered,
        fec_planned: a.stats.fec_planned_percent,
    })
}
