//! natter-tests: end-to-end suites against a running Natter.
//!
//! - [`scenario`]: recorded message scenarios (TOML files in `tests/scenarios/`),
//!   a runner that plays them through the client SDK and writes transcripts,
//!   and the comparison with golden transcripts in `tests/golden/`.
//! - [`server`]: where a scenario runs: in process (the binary's router on
//!   127.0.0.1, SQLite or PostgreSQL), a real `natter` process (for SIGKILL),
//!   or any deployment by URL (the `natter-scenarios` binary, for QA).
//! - [`walkthrough`]: the walk-throughs in `docs/`, run as written.

pub mod audio;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod impair;
pub mod ledger;
pub mod procstat;
pub mod scenario;
pub mod server;
pub mod speech;
pub mod video;
pub mod walkthrough;

use std::path::PathBuf;

/// This crate's directory (`tests/`), found at run time from the running
/// test's package: a build cache shared by two clones (a fresh-clone check
/// beside the working one) can hold a binary whose compile-time path is the
/// other clone's, deleted since.
fn crate_dir() -> PathBuf {
    let Some(running) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    };
    let running = PathBuf::from(running);
    running
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map(|root| root.join("tests"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `tests/scenarios`.
pub fn scenarios_dir() -> PathBuf {
    crate_dir().join("scenarios")
}

/// `tests/golden`.
pub fn golden_dir() -> PathBuf {
    crate_dir().join("golden")
}

/// Runs one scenario (by name) against `server`; checks the transcript against
/// its golden file. Panics with the diff on mismatch.
pub async fn run_and_check(name: &str, server: server::Server) {
    let text = std::fs::read_to_string(scenarios_dir().join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("scenario {name}: {e}"));
    let scenario =
        scenario::Scenario::parse(&text).unwrap_or_else(|e| panic!("scenario {name}: {e}"));
    let runner = scenario::Runner::new(server).expect("runner");
    let (result, server) = runner.run(&scenario).await;
    server.stop().await;
    let transcript = result.unwrap_or_else(|e| panic!("scenario {name} failed: {e:#}"));
    if let Err(diff) = scenario::check_golden(&golden_dir(), name, &transcript) {
        panic!("{diff}");
    }
}
