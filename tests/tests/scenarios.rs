//! The recorded message scenarios, in process, on SQLite and on PostgreSQL
//! (PostgreSQL must be reachable: these fail, never skip, without it).
//! The SIGKILL scenario needs a real process: natter/tests/scenario_sigkill.rs.
//! `NATTER_BLESS=1 cargo test -p natter-tests` rewrites the golden transcripts.

use natter_tests::run_and_check;
use natter_tests::server::{InProcess, Server};

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() {
                   let s = super::InProcess::start("sqlite").await.unwrap();
                   super::run_and_check(stringify!($name), super::Server::InProcess(s)).await;
               } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() {
                   let s = super::InProcess::start("postgres").await.unwrap();
                   super::run_and_check(stringify!($name), super::Server::InProcess(s)).await;
               } )*
        }
    };
}

scenarios!(
    one_to_one_both_online,
    recipient_offline_then_reconnects,
    multi_device,
    group_of_five_one_offline,
    duplicate_send,
    bad_input,
    graceful_restart,
);

#[test]
fn every_scenario_file_parses_and_has_a_golden_transcript() {
    let all = natter_tests::scenario::Scenario::load_dir(&natter_tests::scenarios_dir()).unwrap();
    assert!(all.len() >= 15, "found {}", all.len());
    for s in all {
        assert!(
            natter_tests::golden_dir()
                .join(format!("{}.txt", s.name))
                .exists(),
            "no golden transcript for {}",
            s.name
        );
    }
}
