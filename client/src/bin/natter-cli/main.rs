//! `natter-cli`: register, chat, groups and presence from a terminal.
//!
//! Each subcommand lives in its own module with an `Args` type implementing
//! [`Run`]; adding one is a module plus one line in `commands!` below.

mod account;
mod call;
mod chat;
mod group;
mod keys;
mod media;
mod presence;

use clap::{Parser, Subcommand};
use natter_client::{Account, Api, Credentials};
use natter_proto::{GroupId, Target, UserId};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "natter-cli",
    version,
    about = "Natter from the terminal: register, chat, groups, calls"
)]
struct Cli {
    /// Server base URL.
    #[arg(
        long,
        global = true,
        env = "NATTER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Profile name: credentials live in ~/.natter-cli/<profile>.json (one per person or device).
    #[arg(long, global = true, env = "NATTER_PROFILE", default_value = "default")]
    profile: String,
    /// Explicit credentials file (overrides --profile).
    #[arg(long, global = true, env = "NATTER_STATE")]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// A subcommand.
trait Run {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()>;
}

/// Declares the subcommands: `Variant => module::Args` (one line each).
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident => $args:ty),* $(,)?) => {
        #[derive(Subcommand)]
        enum Command {
            $($(#[$doc])* $variant($args),)*
        }
        impl Command {
            async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
                match self {
                    $(Command::$variant(a) => a.run(ctx).await,)*
                }
            }
        }
    };
}

commands! {
    /// Register a phone number on this device (asks for the code it receives).
    Register => account::Register,
    /// Show who this profile is.
    Whoami => account::Whoami,
    /// Find the user id of a phone number.
    Lookup => account::Lookup,
    /// Send one message and wait for its `sent` ack.
    Send => chat::SendCmd,
    /// Print messages, receipts, typing and presence as they arrive.
    Listen => chat::Listen,
    /// Interactive chat with one user or group: type lines, see ticks.
    Chat => chat::Interactive,
    /// Mark messages read.
    Read => chat::Read,
    /// Delivery state of a message you sent.
    Status => chat::Status,
    /// Messages waiting for this device on the server.
    Pending => chat::Pending,
    /// Group commands.
    #[command(subcommand)]
    Group => group::GroupCmd,
    /// A user's presence.
    Presence => presence::Show,
    /// Who may see your presence: everyone, contacts or nobody.
    Privacy => presence::Privacy,
    /// Replace your contact list (for the `contacts` privacy setting).
    Contacts => presence::Contacts,
    /// Upload a file (resumable; prints its hash, preview, thumbnail and signed URL).
    Upload => media::Upload,
    /// Download media by hash through its signed URL (resumes, verifies SHA-256).
    Download => media::Download,
    /// Call a user: `call +1415… --play in.wav --record out.wav`; add
    /// `--video in.y4m --record-video out.y4m` for video.
    Call => call::CallCmd,
    /// Wait for a call and answer it: `answer --play in.wav --record out.wav
    /// [--video in.y4m --record-video out.y4m]`.
    Answer => call::AnswerCmd,
    /// Your call log.
    Calls => call::CallLogCmd,
    /// STUN/TURN servers with fresh TURN credentials.
    IceServers => call::IceServersCmd,
    /// Write a moving test card (Y4M) whose pictures carry their frame number.
    TestCard => call::TestCardCmd,
    /// End-to-end-encryption keys: generate, publish, count, fetch bundles.
    #[command(subcommand)]
    Keys => keys::KeysCmd,
}

/// What a profile file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Profile {
    server: String,
    number: String,
    credentials: Credentials,
}

/// Shared by every subcommand.
struct Ctx {
    api: Api,
    path: PathBuf,
}

impl Ctx {
    fn load(&self) -> anyhow::Result<Profile> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            anyhow::anyhow!(
                "no credentials at {} ({e}); run `natter-cli register` first",
                self.path.display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    fn save(path: &std::path::Path, p: &Profile) -> anyhow::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(p)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The account, saving refreshed credentials back to the profile.
    fn account(&self) -> anyhow::Result<Account> {
        let profile = self.load()?;
        let path = self.path.clone();
        let keep = profile.clone();
        let hook: natter_client::CredentialsHook = Arc::new(move |c: &Credentials| {
            let p = Profile {
                credentials: c.clone(),
                ..keep.clone()
            };
            if let Err(e) = Ctx::save(&path, &p) {
                eprintln!("warning: could not save refreshed credentials: {e}");
            }
        });
        Ok(Account::new(self.api.clone(), profile.credentials).on_credentials_change(hook))
    }

    /// `group:<id>`, `+<number>`, `user:<id>` or a bare user id.
    async fn target(&self, account: &Account, s: &str) -> anyhow::Result<Target> {
        if let Some(g) = s.strip_prefix("group:") {
            return Ok(Target::Group(GroupId::new(g)));
        }
        Ok(Target::User(self.user(account, s).await?))
    }

    /// `+<number>`, `user:<id>` or a bare user id.
    async fn user(&self, account: &Account, s: &str) -> anyhow::Result<UserId> {
        if s.starts_with('+') {
            let token = account.token().await?;
            return Ok(self.api.lookup(&token, s).await?);
        }
        Ok(UserId::new(s.strip_prefix("user:").unwrap_or(s)))
    }
}

fn profile_path(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.state {
        return p.clone();
    }
    let home = std::env::var_os("NATTER_CLI_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".natter-cli")))
        .unwrap_or_else(|| PathBuf::from(".natter-cli"));
    home.join(format!("{}.json", cli.profile))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("NATTER_CLI_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let api = match Api::new(&cli.server) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("natter-cli: {e}");
            std::process::exit(2);
        }
    };
    let ctx = Ctx {
        api,
        path: profile_path(&cli),
    };
    if let Err(e) = cli.command.run(&ctx).await {
        eprintln!("natter-cli: {e:#}");
        std::process::exit(1);
    }
}
