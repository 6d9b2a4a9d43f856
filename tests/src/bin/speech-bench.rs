//! Benchmark (not a test) of speech quality under packet loss: an espeak-ng
//! sample played through a call whose talker sits behind an impairment relay
//! (`natter_tests::impair`: the given loss each way, 40 ms ± 20 ms of delay so
//! packets reorder), relay-only through our in-process TURN server, scored
//! with PESQ wide-band, at 0, 2, 5 and 10 % loss, with Opus in-band FEC on
//! and off. Each cell is the median of `--runs` calls.
//!
//! `cargo run -p natter-tests --bin speech-bench -- --runs 3` (a debug build is
//! fine: the codec and the scoring are C and Python).

use clap::Parser;
use natter_client::call::AudioOptions;
use natter_tests::impair::Impairment;
use natter_tests::server::InProcess;
use natter_tests::speech::{speech, speech_call};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Calls per cell (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const TEXT: &str = "The quick brown fox jumps over the lazy dog. Natter carries voice calls end to end. \
                    Please call me back when you have a moment.";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = natter_common::testing::TempDir::new("natter-speech-bench");
    let sample = speech(work.path(), TEXT)?;
    let server = InProcess::start("sqlite").await?;
    println!(
        "| loss each way | FEC | PESQ-WB (median of {}) | frames lost / rebuilt by FEC (median run) |",
        args.runs
    );
    println!("|---|---|---|---|");
    for loss in [0.0, 0.02, 0.05, 0.10] {
        for fec in [true, false] {
            let audio = AudioOptions {
                fec,
                expected_loss_percent: if fec { 10 } else { 0 },
                ..AudioOptions::default()
            };
            let bad = Impairment {
                loss,
                delay: Duration::from_millis(40),
                jitter: Duration::from_millis(20),
            };
            let mut scores = Vec::new();
            let mut failed = 0;
            for _ in 0..args.runs {
                match speech_call(&server, &sample, audio, Some(bad), work.path()).await {
                    Ok(s) => scores.push(s),
                    // A call that never connects over a bad path is a result
                    // too: counted, not fatal.
                    Err(e) => {
                        eprintln!("{:.0} % loss, FEC {fec}: {e}", loss * 100.0);
                        failed += 1;
                    }
                }
            }
            if scores.is_empty() {
                println!(
                    "| {:.0} % | {} | no call connected | |",
                    loss * 100.0,
                    if fec { "on" } else { "off" }
                );
                continue;
            }
            scores.sort_by(|a, b| a.pesq.total_cmp(&b.pesq));
            let m = scores[scores.len() / 2];
            if failed > 0 {
                eprintln!("{failed} of {} calls did not connect", args.runs);
            }
            println!(
                "| {:.0} % | {} | {:.2} | {} / {} of {} packets |",
                loss * 100.0,
                if fec { "on" } else { "off" },
                m.pesq,
                m.lost,
                m.recovered,
                m.packets + m.lost
            );
        }
    }
    server.stop().await;
    Ok(())
}
