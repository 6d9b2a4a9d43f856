//! `natter-scenarios`: plays the recorded message scenarios against a running
//! deployment and compares the transcripts with the golden ones.
//!
//! ```text
//! natter-scenarios --url https://natter.example --sms-outbox /mnt/natter-data/outbox/sms.jsonl
//! ```
//! The deployment must use the SMS outbox (QA mode) so codes can be read, and
//! allow enough registrations per IP (`auth.limit_per_ip`). Scenarios that
//! restart the server are skipped.

use clap::Parser;
use natter_tests::scenario::{Runner, Scenario, check_golden};
use natter_tests::server::Server;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Play recorded message scenarios against a Natter deployment")]
struct Args {
    /// Base URL of the deployment.
    #[arg(long)]
    url: String,
    /// The deployment's SMS outbox file (QA mode), to read registration codes.
    #[arg(long)]
    sms_outbox: PathBuf,
    /// Only these scenarios (default: all).
    #[arg(long = "scenario")]
    only: Vec<String>,
    /// Scenario directory.
    #[arg(long, default_value_os_t = natter_tests::scenarios_dir())]
    scenarios: PathBuf,
    /// Golden transcript directory.
    #[arg(long, default_value_os_t = natter_tests::golden_dir())]
    golden: PathBuf,
    /// Where to write the transcripts.
    #[arg(long, default_value = "scenario-transcripts")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for s in Scenario::load_dir(&args.scenarios)? {
        if !args.only.is_empty() && !args.only.contains(&s.name) {
            continue;
        }
        if s.needs_process {
            println!("skip {} (restarts the server)", s.name);
            skipped += 1;
            continue;
        }
        let server = Server::Remote {
            url: args.url.clone(),
            sms_outbox: args.sms_outbox.clone(),
        };
        let (result, _) = Runner::new(server)?.run(&s).await;
        match result {
            Ok(t) => {
                std::fs::write(args.out.join(format!("{}.txt", s.name)), &t)?;
                match check_golden(&args.golden, &s.name, &t) {
                    Ok(()) => {
                        println!("ok   {}", s.name);
                        passed += 1;
                    }
                    Err(diff) => {
                        println!("FAIL {}\n{diff}", s.name);
                        failed += 1;
                    }
                }
            }
            Err(e) => {
                println!("FAIL {}: {e:#}", s.name);
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
