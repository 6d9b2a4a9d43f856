//! The recorded call-signaling scenarios (busy, reject, ring timeout, caller
//! cancel, answer on the second device, glare, offline callee woken by push),
//! in process, on SQLite and on PostgreSQL. Media is not involved: the SDP is
//! a placeholder; `calls_media.rs` holds the audio tests.
//! `NATTER_BLESS=1 cargo test -p natter-tests` rewrites the golden transcripts.

use natter_tests::run_and_check;
use natter_tests::scenario::Scenario;
use natter_tests::server::{InProcess, Server};

async fn run(name: &str, engine: &str) {
    let text = std::fs::read_to_string(natter_tests::scenarios_dir().join(format!("{name}.toml")))
        .unwrap();
    let ring = Scenario::parse(&text)
        .unwrap()
        .ring_timeout_secs
        .unwrap_or(60);
    let s = InProcess::start_with(engine, ring).await.unwrap();
    run_and_check(name, Server::InProcess(s)).await;
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::run(stringify!($name), "sqlite").await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::run(stringify!($name), "postgres").await } )*
        }
    };
}

scenarios!(
    call_answer_on_second_device,
    call_reject,
    call_busy,
    call_ring_timeout,
    call_caller_cancel,
    call_offline_callee_push,
    call_glare,
);
