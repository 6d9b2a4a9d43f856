//! Driving `natter-cli` processes from tests, as a user at a terminal would:
//! one home directory per user, the server URL in the environment.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `natter-cli` beside the `natter` binary under test, with `args`, for the
/// user whose files are in `home`, against `server`.
pub fn cli(natter_bin: &Path, server: &str, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(crate::walkthrough::natter_cli(natter_bin));
    c.env("NATTER_SERVER", server)
        .env("NATTER_CLI_HOME", home)
        .args(args);
    c
}

/// The user id `natter-cli register` saved in `home`.
pub fn user_id(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("default.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["credentials"]["user_id"].as_str().unwrap().to_owned()
}

/// Registers `number` with the code from the server's SMS outbox.
pub fn register(natter_bin: &Path, server: &str, home: &Path, number: &str, outbox: &Path) {
    let out = cli(
        natter_bin,
        server,
        home,
        &["register", "--number", number, "--sms-outbox"],
    )
    .arg(outbox)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "register {number}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a `natter-cli answer …` and returns once it says it is waiting for
/// a call (its socket is up). Its stderr goes to the test log, prefixed
/// `callee:`; its stdout stays piped for the caller to read.
pub fn spawn_callee(mut answer: Command) -> Child {
    let mut child = answer
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = child.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            eprintln!("callee: {line}");
            if line.contains("waiting for a call") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the callee connects and waits for a call");
    child
}
