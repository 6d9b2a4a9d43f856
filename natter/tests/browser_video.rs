//! Video between a browser and the CLI, both ways, relay-only through a real
//! `natter serve`: headless Chromium (playwright-core) with its fake camera
//! fed from the test card (`natter-cli test-card`) and its fake microphone
//! from a WAV tone.
//!
//! 1. Chromium calls `natter-cli answer --video … --record-video …`: the
//!    recording holds Chromium's pictures, whose frame numbers advance.
//! 2. `natter-cli call --video …` calls Chromium: the page's `<video>` shows
//!    the CLI's pictures, read back through a canvas, frame numbers advancing.
//!
//! scripts/test-deps.sh installs Chromium and playwright-core.

use natter_client::call::wav::Pcm;
use natter_client::{Account, Api};
use natter_tests::cli::{cli, register, spawn_callee, user_id};
use natter_tests::server::ProcessServer;
use natter_tests::video::analyse;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_natter");

fn node(args: &[&str]) -> Command {
    let tools = std::env::var_os("NATTER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/natter/tools")
        });
    let script = natter_tests::walkthrough::workspace_dir().join("tests/browser/video.cjs");
    let mut c = Command::new("node");
    c.env("NODE_PATH", tools.join("node/node_modules"))
        .arg(script)
        .args(args);
    c
}

/// The JSON line the browser script prints.
fn browser_result(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("browser result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_and_cli_see_each_others_video() {
    let server = ProcessServer::start(BIN.into(), None).await.unwrap();
    let (url, outbox) = (server.url(), server.sms_outbox());
    let work = natter_common::testing::TempDir::new("natter-browser-video");
    let bin = Path::new(BIN);

    // The browser's user: registered through the SDK, for its access token.
    let api = Api::new(&url).unwrap();
    let creds = natter_client::register(&api, "+14155550711", "chromium", |s| {
        let outbox = outbox.clone();
        async move { natter_client::code_from_outbox(&outbox, &s.session_id).await }
    })
    .await
    .unwrap();
    let browser_id = creds.user().to_string();
    let token = Account::new(api, creds).token().await.unwrap();
    // The CLI's user.
    let home = work.path().join("cli");
    register(bin, &url, &home, "+14155550712", &outbox);
    let cli_id = user_id(&home);

    let card = work.path().join("card.y4m");
    let out = cli(bin, &url, &home, &["test-card", "--seconds", "14"])
        .arg(&card)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mic = work.path().join("mic.wav");
    Pcm::tone(48_000, 660.0, 14.0, 0.3).write(&mic).unwrap();
    let (card_s, mic_s) = (card.to_str().unwrap(), mic.to_str().unwrap());

    // 1. Chromium calls the CLI, which records its video.
    let got = work.path().join("from-chromium.y4m");
    let mut answer = cli(
        bin,
        &url,
        &home,
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
    answer.arg(&card).arg("--record-video").arg(&got);
    let answer = spawn_callee(answer);
    let out = node(&["call", &url, &token, &cli_id, card_s, mic_s, "8"])
        .output()
        .unwrap();
    let browser = browser_result(&out);
    let answered = answer.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&answered.stdout);
    eprintln!("chromium: {browser}\ncli: {said}");
    assert!(
        answered.status.success(),
        "natter-cli answer failed: {said}"
    );
    assert_eq!(browser["connected"], true, "{browser}");
    assert_eq!(
        (
            browser["localType"].as_str(),
            browser["remoteType"].as_str()
        ),
        (Some("relay"), Some("relay")),
        "{browser}"
    );
    let a = analyse(&got, (640, 480)).unwrap();
    eprintln!("recording of Chromium's camera: {}", a.summary());
    assert_eq!(a.backwards, 0, "frame numbers went backwards");
    // About 8 s of a 30 fps camera; Chromium starts low and may skip while
    // its bandwidth estimate ramps up.
    assert!(
        a.distinct >= 60,
        "only {} of Chromium's pictures",
        a.distinct
    );
    assert!(
        a.last.unwrap_or(0) - a.first.unwrap_or(0) >= 150,
        "Chromium's frame numbers did not advance: {}",
        a.summary()
    );

    // 2. The CLI calls Chromium, whose page reads the CLI's pictures.
    let mut page = node(&["answer", &url, &token, card_s, mic_s, "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = page.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            eprintln!("chromium: {line}");
            if line.contains("waiting for a call") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the page connects and waits for a call");
    let call = cli(
        bin,
        &url,
        &home,
        &[
            "call",
            &browser_id,
            "--relay-only",
            "--bind",
            "127.0.0.1:0",
            "--duration",
            "8",
            "--video",
        ],
    )
    .arg(&card)
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&call.stdout);
    assert!(
        call.status.success(),
        "natter-cli call failed: {said}\n{}",
        String::from_utf8_lossy(&call.stderr)
    );
    let browser = browser_result(&page.wait_with_output().unwrap());
    eprintln!("cli: {said}\nchromium saw: {browser}");
    assert_eq!(browser["connected"], true, "{browser}");
    let stamps: Vec<u64> = browser["stamps"]
        .as_array()
        .expect("stamps")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(
        stamps.len() >= 60,
        "the page's <video> showed only {} of the CLI's pictures",
        stamps.len()
    );
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "frame numbers went backwards: {stamps:?}"
    );
    assert!(
        stamps[stamps.len() - 1] - stamps[0] >= 150,
        "frame numbers did not advance: {stamps:?}"
    );
    drop(server);
}
