//! TURNS: coturn's client relays over TLS, and a SIGHUP swaps the certificate for
//! new connections without disturbing a relay session already running.
//!
//! This file holds a single test because it sends SIGHUP to its own process (each
//! integration-test file is a separate process). Needs `openssl` (to make
//! certificates and read the one served) and coturn's client tools.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use natter_turn::{TurnConfig, TurnServer};
use natter_turn_core::auth::rest_password;
use tokio::process::Command;

const SECRET: &str = "tls-secret";

async fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("sh runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn make_cert(dir: &Path, cn: &str) {
    let out = sh(&format!(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN={cn} -keyout {d}/key.pem -out {d}/cert.pem",
        d = dir.display()
    ))
    .await;
    assert!(
        dir.join("cert.pem").exists(),
        "openssl req failed (is openssl installed?):\n{out}"
    );
}

async fn served_subject(port: u16) -> String {
    sh(&format!(
        "timeout 10 openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_relays_and_sighup_reloads_the_certificate_without_dropping_sessions() {
    for tool in ["turnutils_uclient", "turnutils_peer", "openssl", "timeout"] {
        assert!(
            !sh(&format!("command -v {tool}")).await.trim().is_empty(),
            "{tool} not found: run the project's dependency script (apt packages coturn and openssl)"
        );
    }
    let dir = std::env::temp_dir().join(format!("natter-turn-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_cert(&dir, "first.natter.test").await;

    let mut config = TurnConfig::for_tests();
    config.auth_secret = natter_common::Secret::new(SECRET);
    config.allowed_peers = "127.0.0.1/32".parse().unwrap();
    config.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tls_cert_path = Some(dir.join("cert.pem"));
    config.tls_key_path = Some(dir.join("key.pem"));
    let server = TurnServer::bind(config).await.expect("bind");
    let tls_port = server.local_addrs().tls.expect("TLS listener").port();
    let shutdown = natter_common::Shutdown::new();
    tokio::spawn(server.run(shutdown.clone()));
    assert!(served_subject(tls_port).await.contains("first.natter.test"));

    let peer_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let user = format!("{}:tls", now + 600);
    let pass = rest_password(SECRET.as_bytes(), &user);
    // About 8 s of traffic over TLS, so the reload lands in the middle of it.
    let mut session = Command::new("timeout")
        .args([
            "30",
            "turnutils_uclient",
            "-t",
            "-S",
            "-u",
            &user,
            "-w",
            &pass,
            "-p",
            &tls_port.to_string(),
        ])
        .args([
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-m",
            "2",
            "-n",
            "400",
            "-l",
            "100",
            "-z",
            "20",
        ])
        .arg("127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // coturn's client prints its running totals about once a second: the test
    // reads them to see that the session is live when SIGHUP arrives, and still
    // relaying after the reload.
    let (echoed, text) = follow_totals(session.stdout.take().unwrap());
    let live = wait_for_count(&echoed, 20, "echoes received before the reload").await;
    make_cert(&dir, "second.natter.test").await;
    let out = sh(&format!("kill -HUP {}", std::process::id())).await;
    assert!(out.trim().is_empty(), "kill -HUP: {out}");
    let mut subject = String::new();
    for _ in 0..50 {
        subject = served_subject(tls_port).await;
        if subject.contains("second.natter.test") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        subject.contains("second.natter.test"),
        "after SIGHUP the server still serves: {subject}"
    );
    // The session that was live at the reload keeps relaying after it.
    let after = echoed.load(Ordering::Relaxed);
    assert!(after >= live);
    wait_for_count(&echoed, after + 20, "echoes received after the reload").await;

    let out = session.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        text.lock().unwrap(),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = |key: &str| {
        text.match_indices(key).last().and_then(|(i, _)| {
            text[i + key.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .ok()
        })
    };
    let (sent, recv) = (last("tot_send_msgs="), last("tot_recv_msgs="));
    assert!(
        sent.is_some_and(|s| s > 0) && sent == recv,
        "TLS session across the reload: sent={sent:?} recv={recv:?}\n{text}"
    );
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads coturn's client output as it comes: the latest `tot_recv_msgs` and
/// the whole text.
fn follow_totals(
    stdout: tokio::process::ChildStdout,
) -> (Arc<AtomicU64>, Arc<std::sync::Mutex<String>>) {
    use tokio::io::AsyncBufReadExt;
    let count = Arc::new(AtomicU64::new(0));
    let text = Arc::new(std::sync::Mutex::new(String::new()));
    let (c, t) = (count.clone(), text.clone());
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((_, rest)) = line.split_once("tot_recv_msgs=") {
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(n) = n.parse::<u64>() {
                    c.fetch_max(n, Ordering::Relaxed);
                }
            }
            let mut t = t.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    (count, text)
}

/// Waits (at most 20 s) until `count` reaches `at_least`; returns the count.
async fn wait_for_count(count: &AtomicU64, at_least: u64, what: &str) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = count.load(Ordering::Relaxed);
        if now >= at_least {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {now} of {at_least} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
