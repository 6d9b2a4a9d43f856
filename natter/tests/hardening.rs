//! `natter serve` as a process under the failures an operator meets: a damaged
//! key file, a long-running part that dies (crash-only: readiness names it and
//! the process exits non-zero), SIGTERM with live sockets in both shapes, and
//! the modes of the files it writes.

#[path = "support/turn_process.rs"]
mod turn_process;

use natter_client::{Chat, ConnectOptions, Event};
use natter_tests::cluster::{LocalCluster, test_redis_url};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use turn_process::TurnProcess;

const BIN: &str = env!("CARGO_BIN_EXE_natter");

/// Readiness checks that watch a dependency, not a part of the process.
const DEPENDENCIES: &[&str] = &["database", "media"];
/// The supervised parts of `natter serve` (all services, embedded shape).
const EMBEDDED_PARTS: &[&str] = &[
    "auth-cleanup",
    "call-log",
    "calls",
    "chat-close",
    "chat-device-check",
    "chat-purge",
    "chat-writer",
    "last-seen",
    "media-gc",
    "push",
    "turn",
];
/// The parts a node on Redis adds.
const BUS_PARTS: &[&str] = &["bus", "bus-dispatch", "bus-heartbeat", "bus-limits"];

/// The names `/readyz` lists when all is well.
fn checks_of(body: &str) -> BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_str(body).expect("readyz JSON");
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

fn expected(parts: &[&[&str]]) -> BTreeSet<String> {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .chain(DEPENDENCIES)
        .map(|s| (*s).to_owned())
        .collect()
}

/// Until `/readyz` answers 503 naming `part` (or the process ends); then the
/// exit must follow within 5 s, non-zero.
fn part_stop_fails_readiness_then_exit(mut p: TurnProcess, part: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_503 = None;
    let mut named = Vec::new();
    while Instant::now() < deadline && p.running() {
        let (status, body) = p.readyz();
        if status == 503 {
            first_503.get_or_insert_with(Instant::now);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            // A part fed by the stopped one may be reported a moment earlier
            // (`push` ends when `chat-writer` does): wait for this one's name,
            // which /readyz keeps showing while the process drains.
            if let Some(why) = v["failing"][part].as_str() {
                named.push(why.to_owned());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = first_503.unwrap_or_else(|| panic!("{part}: /readyz never turned 503"));
    let why = named
        .first()
        .unwrap_or_else(|| panic!("{part}: /readyz never named it"));
    let expected = if part == "chat-writer" {
        // The thread's watcher sees the thread end, not its panic message.
        "the chat writer thread died"
    } else {
        "NATTER_TEST_STOP_PART"
    };
    assert!(why.contains(expected), "{part}: {why}");
    let status = p
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{part}: still running 5 s after it stopped"));
    assert!(!status.success(), "{part}: exit status {status}");
    assert!(seen.elapsed() < Duration::from_secs(5));
}

/// Each long-running part of the embedded shape, stopped by an injected panic
/// (debug builds only), fails `/readyz` under its name and ends the process.
/// The list is checked against what the process reports, so a new part
/// without a test here fails.
#[test]
fn every_part_that_stops_fails_readiness_and_ends_the_process() {
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    let (status, body) = p.readyz();
    assert_eq!(status, 200, "{body}");
    assert_eq!(checks_of(&body), expected(&[EMBEDDED_PARTS]));
    drop(p);
    // Each part is stopped once its process is ready (the fault fires when a
    // file appears), so a slow start-up on a busy machine cannot race it.
    for batch in EMBEDDED_PARTS.chunks(6) {
        std::thread::scope(|s| {
            for part in batch {
                s.spawn(move || {
                    let trigger = std::env::temp_dir()
                        .join(format!("natter-stop-{part}-{}", std::process::id()));
                    let _ = std::fs::remove_file(&trigger);
                    let fault = format!("{part}@{}", trigger.display());
                    // RUST_BACKTRACE=0: symbolising a panic's backtrace in a
                    // debug build takes a second, during which the part fed
                    // by the stopped one (`push` after `chat-writer`) is the
                    // only one /readyz can name before the drain closes it.
                    let p = TurnProcess::start(
                        "all",
                        "127.0.0.1",
                        &[
                            ("NATTER_TEST_STOP_PART", fault.as_str()),
                            ("RUST_BACKTRACE", "0"),
                        ],
                    );
                    std::fs::write(&trigger, b"stop").unwrap();
                    part_stop_fails_readiness_then_exit(p, part);
                    let _ = std::fs::remove_file(&trigger);
                });
            }
        });
    }
}

/// The same for the parts a node on PostgreSQL + Redis adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bus_part_that_stops_fails_readiness_and_ends_the_node() {
    let c = LocalCluster::start(BIN.into(), 1, &test_redis_url(), &[])
        .await
        .unwrap();
    let (status, body) = c.readyz(0).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(checks_of(&body), expected(&[EMBEDDED_PARTS, BUS_PARTS]));
    drop(c);
    for part in BUS_PARTS {
        let trigger =
            std::env::temp_dir().join(format!("natter-stop-{part}-{}", std::process::id()));
        let _ = std::fs::remove_file(&trigger);
        let fault = format!("{part}@{}", trigger.display());
        let mut c = LocalCluster::start(
            BIN.into(),
            1,
            &test_redis_url(),
            &[("NATTER_TEST_STOP_PART", fault.as_str())],
        )
        .await
        .unwrap();
        std::fs::write(&trigger, b"stop").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = None;
        while Instant::now() < deadline && c.exited(0).is_none() {
            if let Ok((503, body)) = c.readyz(0).await {
                seen.get_or_insert_with(Instant::now);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(why) = v["failing"][part].as_str() {
                    assert!(why.contains("NATTER_TEST_STOP_PART"), "{part}: {body}");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let seen = seen.unwrap_or_else(|| panic!("{part}: /readyz never turned 503"));
        let status = loop {
            if let Some(s) = c.exited(0) {
                break s;
            }
            assert!(
                seen.elapsed() < Duration::from_secs(5),
                "{part}: still running 5 s after it stopped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(!status.success(), "{part}: exit status {status}");
        let _ = std::fs::remove_file(&trigger);
    }
}

/// SIGTERM on a node of the distributed shape, with a client connected,
/// drains and exits 0 well within the chart's grace period. It once never
/// exited: the bus dispatcher waited for its own sender to go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_cluster_node_with_live_sockets() {
    let mut c = LocalCluster::start(BIN.into(), 2, &test_redis_url(), &[])
        .await
        .unwrap();
    let ann = c.register(0).await.unwrap();
    let (_chat, mut events) = Chat::connect(
        ann,
        ConnectOptions {
            ws_url: Some(c.nodes[0].ws_url()),
            ..ConnectOptions::default()
        },
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Connected(_))) => break,
            Ok(Some(_)) => {}
            other => panic!("no connection: {other:?}"),
        }
    }
    let started = Instant::now();
    let status = c
        .terminate(0, Duration::from_secs(15))
        .unwrap()
        .expect("the node exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The other node is unaffected and drains too.
    let status = c
        .terminate(1, Duration::from_secs(15))
        .unwrap()
        .expect("the idle node exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

/// SIGTERM on the embedded shape exits 0; everything it wrote is private
/// (0600 files, 0700 directories).
#[test]
fn sigterm_ends_the_embedded_shape_and_its_files_are_private() {
    let mut p = TurnProcess::start("all", "127.0.0.1", &[]);
    // A registration code, so the SMS outbox exists.
    let body = r#"{"number":"+14155550123","transport":"sms"}"#;
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "content-type: application/json", "-d", body])
        .arg(format!("{}/v1/registration/sessions", p.http))
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(code == "200" || code == "201", "session: {code}");
    let started = Instant::now();
    p.terminate();
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let dir = p.data_dir().to_path_buf();
    let mode = |rel: &str| {
        std::fs::metadata(dir.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    for file in [
        "natter.db",
        "outbox/sms.jsonl",
        "secrets/token-signing-key",
        "secrets/media-url-key",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    for d in ["outbox", "secrets"] {
        assert_eq!(mode(d), 0o700, "{d}");
    }
}

/// An empty (crash between create and write) or truncated key file is refused
/// at start, naming the file; it never becomes a signing key anyone can use.
#[test]
fn a_damaged_key_file_stops_start_up_with_the_file_named() {
    let mut p = TurnProcess::start("all", "127.0.0.1", &[]);
    p.terminate();
    p.wait_exit(Duration::from_secs(10)).expect("exits");
    let dir = p.data_dir().to_path_buf();
    for (file, content) in [("token-signing-key", ""), ("media-url-key", "c2hvcnQ=\n")] {
        let path = dir.join("secrets").join(file);
        let kept = std::fs::read(&path).unwrap();
        std::fs::write(&path, content).unwrap();
        let out = Command::new(BIN)
            .args(["serve"])
            .env("NATTER_DATA_DIR", &dir)
            .env("NATTER_HTTP__LISTEN", "127.0.0.1:0")
            .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .output()
            .expect("natter runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: started with a damaged key");
        assert!(
            stderr.contains(file) && stderr.contains("delete it"),
            "{file}: {stderr}"
        );
        std::fs::write(&path, kept).unwrap();
    }
    // A configured key that is too short is refused the same way.
    let out = Command::new(BIN)
        .args(["serve"])
        .env("NATTER_DATA_DIR", &dir)
        .env("NATTER_HTTP__LISTEN", "127.0.0.1:0")
        .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
        .env("NATTER_TOKENS__SIGNING_KEY", "short")
        .stdin(Stdio::null())
        .output()
        .expect("natter runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("at least 16"), "{stderr}");
}

/// Unknown routes and methods answer in the documented JSON error shape, not
/// with an empty body.
#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let p = TurnProcess::start("all", "127.0.0.1", &[]);
    for (method, path, status, code) in [
        ("GET", "/v1/nope", "404", "not_found"),
        ("DELETE", "/healthz", "405", "method_not_allowed"),
        // An upgrade without its headers: axum's plain-text answer, rewritten.
        ("GET", "/v1/ws", "400", "bad_request"),
    ] {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-X", method])
            .arg(format!("{}{path}", p.http))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, got) = text.rsplit_once('\n').unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body:?}"));
        assert_eq!(v["error"]["code"], code, "{body}");
    }
}

/// `natter health` (the image's HEALTHCHECK) asks the server on `http.listen`:
/// exit 0 while it is ready, 1 with the reason once nothing answers there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natter_health_says_whether_the_local_server_is_ready() {
    let p = natter_tests::server::ProcessServer::start(BIN.into(), None)
        .await
        .unwrap();
    let listen = p.url().trim_start_matches("http://").to_owned();
    let health = |args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("health")
            .args(args)
            .env("NATTER_HTTP__LISTEN", &listen)
            .output()
            .unwrap()
    };
    for args in [&[][..], &["--live"]] {
        let out = health(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(p); // killed and waited for
    let out = health(&["--timeout-secs", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/readyz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `natter smoke` (the chart's helm test) against a real server: two test
/// numbers register with the configured code (no SMS is written), a message
/// goes from one to the other over the WebSocket and the delivery receipt
/// comes back. A wrong code fails with exit 1, naming the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn natter_smoke_exchanges_a_message_through_a_running_server() {
    let p = natter_tests::server::ProcessServer::start_with_env(
        BIN.into(),
        None,
        &[
            ("NATTER_AUTH__TEST_NUMBERS", "+14155550104,+14155550199"),
            ("NATTER_AUTH__TEST_CODE", "482913"),
        ],
    )
    .await
    .unwrap();
    let smoke = |code: &str| {
        std::process::Command::new(BIN)
            .args(["smoke", "--url", &p.url(), "--number", "+14155550104"])
            .args(["--number", "+14155550199", "--timeout-secs", "30"])
            .env("NATTER_SMOKE_CODE", code)
            .output()
            .unwrap()
    };
    let out = smoke("482913");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("delivery receipt received"), "{stdout}");
    assert!(
        std::fs::read_to_string(p.sms_outbox())
            .unwrap_or_default()
            .is_empty(),
        "codes were written for test numbers"
    );
    // Again: the numbers re-register (a new device each time) and it still works.
    assert!(smoke("482913").status.success());
    let out = smoke("000001");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("verifying the code") && stderr.contains("wrong_code"),
        "{stderr}"
    );
}

/// One process per SQLite database: a second `natter serve` on the same data
/// dir waits for the first (database.sqlite_lock_wait_secs), then stops with an
/// error naming the holder's pid, and never serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_database_waits_then_refuses() {
    let p = natter_tests::server::ProcessServer::start(BIN.into(), None)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tokio::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(p.data_dir())
        .arg("serve")
        .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
        .env("NATTER_DATABASE__SQLITE_LOCK_WAIT_SECS", "2")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another natter process (pid ") && stderr.contains("natter.db"),
        "{stderr}"
    );
    // The first one is untouched.
    let r = reqwest::get(format!("{}/readyz", p.url())).await.unwrap();
    assert_eq!(r.status(), 200);
}
