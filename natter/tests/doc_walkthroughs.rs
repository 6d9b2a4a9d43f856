//! The walk-throughs in docs/ run as written: each page's `sh` blocks between
//! its `walkthrough` markers, in order, in one bash against a fresh
//! `natter serve` with `natter` and `natter-cli` on PATH
//! (natter_tests::walkthrough says exactly how). A command that fails, or a
//! check (`jq -e`, `grep`) that does not hold, fails the test with the
//! transcript and the server's log.

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_natter");

fn walk(page: &str) {
    let cli = natter_tests::walkthrough::natter_cli(Path::new(BIN));
    match natter_tests::walkthrough::run(page, Path::new(BIN), &cli) {
        Ok(transcript) => println!("{transcript}"),
        Err(e) => panic!("{e:#}"),
    }
}

#[test]
fn auth_md_walkthrough_runs_as_written() {
    walk("auth.md");
}

#[test]
fn chat_md_walkthrough_runs_as_written() {
    walk("chat.md");
}
