//! Pushes per second to the FCM and APNs fakes over one HTTP/2 connection
//! each, and the sender's CPU per push.
//!
//! The sender (natter's own `FcmClient` / `ApnsClient`, as the push backend
//! uses them) runs alone on this thread in a current-thread runtime, so this
//! thread's CPU time is the sender's whole cost: JSON, JWT handling, TLS and
//! HTTP/2 framing. The fakes (which verify every request) run on a runtime of
//! their own, on other threads.
//!
//!     cargo bench -p natter-providers --bench push -- [--pushes N] [--concurrency C]

use natter_provider_fakes::apns::ApnsFake;
use natter_provider_fakes::fcm::FcmFake;
use natter_provider_fakes::tls::TestCa;
use natter_providers::apns::{ApnsClient, ApnsConfig, Route};
use natter_providers::fcm::{FcmClient, FcmConfig};
use natter_providers::http::HttpConfig;
use natter_providers::{Delivery, PushKind};
use std::time::{Duration, Instant};

/// CPU time this thread has used (scheduler accounting, nanoseconds).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// CPU time of the whole process (user + system, clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    pushes: usize,
    wall: Duration,
    sender_cpu: Duration,
    process_cpu: Duration,
    connections: usize,
}

async fn drive<F, Fut>(pushes: usize, concurrency: usize, send: F) -> (Duration, Duration, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Delivery>,
{
    use futures_util::StreamExt;
    let (cpu0, proc0, t0) = (thread_cpu(), process_cpu(), Instant::now());
    let failed = futures_util::stream::iter(0..pushes)
        .map(&send)
        .buffer_unordered(concurrency)
        .filter(|d| std::future::ready(*d != Delivery::Delivered))
        .count()
        .await;
    assert_eq!(failed, 0, "every push delivered");
    (t0.elapsed(), thread_cpu() - cpu0, process_cpu() - proc0)
}

fn report(name: &str, r: &Run) {
    let per_s = r.pushes as f64 / r.wall.as_secs_f64();
    let cpu_us = r.sender_cpu.as_secs_f64() * 1e6 / r.pushes as f64;
    let fake_us =
        (r.process_cpu.saturating_sub(r.sender_cpu)).as_secs_f64() * 1e6 / r.pushes as f64;
    println!(
        "{name}: {} pushes in {:.2} s = {per_s:.0} pushes/s over {} connection(s); sender CPU {cpu_us:.1} µs/push ({:.2} s); fake CPU ~{fake_us:.1} µs/push",
        r.pushes,
        r.wall.as_secs_f64(),
        r.connections,
        r.sender_cpu.as_secs_f64(),
    );
}

fn main() {
    let pushes = arg("--pushes", 20_000);
    let concurrency = arg("--concurrency", 256);
    let fakes = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("natter-push-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (fcm, apns, ca_file) = fakes.block_on(async {
        let ca = TestCa::new();
        let ca_file = ca.write_ca_file(&dir);
        (
            FcmFake::start(&ca, "bench").await,
            ApnsFake::start(&ca, "TEAM123456", "KEY1234567", "org.natter.bench").await,
            ca_file,
        )
    });
    let http = HttpConfig {
        ca_file: ca_file.to_str().unwrap().to_owned(),
        ..HttpConfig::default()
    };
    let sender = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{pushes} pushes each, {concurrency} in flight, sender on one thread");
    sender.block_on(async {
        let fcm_client = FcmClient::new(
            &FcmConfig {
                service_account_json: natter_common::Secret::new(fcm.service_account_json()),
                endpoint: fcm.endpoint(),
                http: http.clone(),
                ..FcmConfig::default()
            },
            "bench.fcm",
        )
        .unwrap();
        let tokens: Vec<String> = (0..1000)
            .map(|i| format!("bench-token-{i:08}-abcdefghijkl"))
            .collect();
        let send = |i: usize| fcm_client.send(&tokens[i % tokens.len()], PushKind::Message);
        let send = |i: usize| async move { send(i).await.delivery };
        drive(500, concurrency, send).await; // warm: connection, access token
        let (wall, sender_cpu, process_cpu) = drive(pushes, concurrency, send).await;
        report(
            "FCM",
            &Run {
                pushes,
                wall,
                sender_cpu,
                process_cpu,
                connections: fcm.connections(),
            },
        );

        let apns_client = ApnsClient::new(
            &ApnsConfig {
                key_pem: natter_common::Secret::new(apns.key_p8()),
                key_id: "KEY1234567".into(),
                team_id: "TEAM123456".into(),
                bundle_id: "org.natter.bench".into(),
                endpoint: apns.endpoint(),
                http: http.clone(),
                ..ApnsConfig::default()
            },
            "bench.apns",
        )
        .unwrap();
        let tokens: Vec<String> = (0..1000).map(|i| format!("{i:064x}")).collect();
        let send =
            |i: usize| apns_client.send(&tokens[i % tokens.len()], PushKind::Message, Route::Alert);
        let send = |i: usize| async move { send(i).await.delivery };
        drive(500, concurrency, send).await;
        let (wall, sender_cpu, process_cpu) = drive(pushes, concurrency, send).await;
        report(
            "APNs",
            &Run {
                pushes,
                wall,
                sender_cpu,
                process_cpu,
                connections: apns.connections(),
            },
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
