//! The recorded scenario that needs a real process: the `natter` binary is
//! killed with SIGKILL after acknowledging a message and before delivering it,
//! then restarted on the same data; the message must arrive exactly once. And
//! a call live at the kill is in both call logs after the restart.
//! Runs on SQLite (in the data dir, WAL + synchronous=FULL) and PostgreSQL.

use natter_tests::server::{ProcessServer, Server, create_postgres_database};

const BIN: &str = env!("CARGO_BIN_EXE_natter");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_sent_and_delivery_sqlite() {
    let p = ProcessServer::start(BIN.into(), None).await.unwrap();
    natter_tests::run_and_check("sigkill_between_sent_and_delivery", Server::Process(p)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_sent_and_delivery_postgres() {
    let url = create_postgres_database().await.unwrap();
    let p = ProcessServer::start(BIN.into(), Some(url)).await.unwrap();
    natter_tests::run_and_check("sigkill_between_sent_and_delivery", Server::Process(p)).await;
}

/// A call that is live when the process is killed is in both call logs
/// after the restart (failed, `connection_lost`), on either engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_log_after_a_kill_sqlite() {
    let p = ProcessServer::start(BIN.into(), None).await.unwrap();
    natter_tests::run_and_check("call_log_after_a_kill", Server::Process(p)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_log_after_a_kill_postgres() {
    let url = create_postgres_database().await.unwrap();
    let p = ProcessServer::start(BIN.into(), Some(url)).await.unwrap();
    natter_tests::run_and_check("call_log_after_a_kill", Server::Process(p)).await;
}
