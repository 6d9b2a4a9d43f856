//! The recorded message scenarios, in process, on SQLite and on PostgreSQL
//! (PostgreSQL must be reachable: these fail, never skip, without it).
//! The SIGKILL scenario needs a real process: natter/tests/scenario_sigkill.rs.
//! Golden transcripts are rewritten only when `NATTER_BLESS` is exactly `1`
//! (the explicit bless path); any other value compares like an unset one.

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

/// Only `NATTER_BLESS=1` writes a golden file; every other value (and none)
/// compares, fails on a mismatch, and leaves the file alone.
#[test]
fn only_natter_bless_1_rewrites_a_golden_transcript() {
    use natter_tests::scenario::compare_or_bless;
    use std::ffi::OsStr;
    let dir = natter_common::testing::TempDir::new("natter-golden");
    let golden = dir.path().join("t.txt");
    std::fs::write(&golden, "> step\nold line\n").unwrap();
    for bless in [
        None,
        Some("0"),
        Some(""),
        Some("true"),
        Some("yes"),
        Some("1 "),
        Some("01"),
    ] {
        let err = compare_or_bless(dir.path(), "t", "> step\nnew line\n", bless.map(OsStr::new))
            .expect_err("a mismatch fails unless blessing");
        assert!(
            err.contains("- old line\n+ new line\n"),
            "{bless:?}: the diff shows the change: {err}"
        );
        assert_eq!(
            err.contains("only NATTER_BLESS=1 blesses"),
            bless.is_some(),
            "{bless:?}: a set value that does not bless is named: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(&golden).unwrap(),
            "> step\nold line\n",
            "{bless:?} left the golden file alone"
        );
        assert_eq!(
            compare_or_bless(dir.path(), "t", "> step\nold line\n", bless.map(OsStr::new)),
            Ok(()),
            "{bless:?}: an equal transcript passes"
        );
        let missing = compare_or_bless(dir.path(), "none", "x\n", bless.map(OsStr::new));
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("no golden transcript")),
            "{bless:?}: {missing:?}"
        );
        assert!(
            !dir.path().join("none.txt").exists(),
            "{bless:?} created a golden file"
        );
    }
    assert_eq!(
        compare_or_bless(dir.path(), "t", "> step\nnew line\n", Some(OsStr::new("1"))),
        Ok(())
    );
    assert_eq!(
        std::fs::read_to_string(&golden).unwrap(),
        "> step\nnew line\n",
        "NATTER_BLESS=1 rewrote it"
    );
}
