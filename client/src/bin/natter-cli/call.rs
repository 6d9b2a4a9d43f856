//! `call`, `answer`, `calls` (the call log), `ice-servers`.

use crate::{Ctx, Run};
use clap::Args;
use natter_client::call::wav::Pcm;
use natter_client::call::{AudioOptions, CallOptions, CallReport};
use natter_client::{Chat, ConnectOptions, Event, Events};
use std::path::PathBuf;
use std::time::Duration;

/// Media flags shared by `call` and `answer`.
#[derive(Args)]
pub(crate) struct MediaArgs {
    /// WAV file to use as the microphone (played once, then silence).
    #[arg(long)]
    play: Option<PathBuf>,
    /// Write what the other side sends to this WAV file (16 kHz mono).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Hang up this many seconds after the call connects (default: when the
    /// --play file has been sent, plus one second; without --play, wait for
    /// the other side).
    #[arg(long)]
    duration: Option<f64>,
    /// Only use TURN relays (hides your address from the other side).
    #[arg(long)]
    relay_only: bool,
    /// Turn Opus in-band FEC off.
    #[arg(long)]
    no_fec: bool,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = 32_000)]
    bitrate: i32,
    /// Local UDP address for media.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: String,
}

impl MediaArgs {
    fn options(&self) -> anyhow::Result<CallOptions> {
        let play = match &self.play {
            Some(p) => {
                Some(Pcm::read(p).map_err(|e| anyhow::anyhow!("--play {}: {e}", p.display()))?)
            }
            None => None,
        };
        let hangup_after = match (self.duration, &play) {
            (Some(d), _) => Some(Duration::from_secs_f64(d)),
            (None, Some(p)) => Some(Duration::from_secs_f64(
                p.samples.len() as f64 / f64::from(p.rate) + 1.0,
            )),
            (None, None) => None,
        };
        Ok(CallOptions {
            audio: AudioOptions {
                fec: !self.no_fec,
                bitrate: self.bitrate,
                ..AudioOptions::default()
            },
            play,
            relay_only: self.relay_only,
            hangup_after,
            bind: self.bind.clone(),
            ..CallOptions::default()
        })
    }

    fn finish(&self, r: &CallReport) -> anyhow::Result<()> {
        if let Some(path) = &self.record {
            r.recording
                .write(path)
                .map_err(|e| anyhow::anyhow!("--record {}: {e}", path.display()))?;
        }
        let pair = r
            .stats
            .selected_pair
            .as_ref()
            .map(|(l, rm)| format!("{l}->{rm}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "call {} with {} ended ({}); setup {} ms; path {pair}; received {} packets ({} lost, {} rebuilt by FEC), {:.1} s of audio{}",
            r.call_id,
            r.peer,
            r.ended_by_peer.map_or("hung up here", |e| e.as_str()),
            r.setup_time.map_or(0, |d| d.as_millis()),
            r.stats.packets_received,
            r.stats.lost,
            r.stats.recovered,
            r.recording.samples.len() as f64 / f64::from(r.recording.rate),
            self.record
                .as_ref()
                .map(|p| format!(" -> {}", p.display()))
                .unwrap_or_default(),
        );
        Ok(())
    }
}

/// Closes the socket after what is queued on it has been written, waiting at
/// most 3 s. Why: the call's hang-up is queued just before, and exiting at once
/// could drop it unsent; the server then kept the call for a reconnect (30 s),
/// and the other end waited until its ICE gave up (25 s) and reported a failure.
async fn close_after_flush(chat: &Chat, events: &mut Events) {
    chat.close();
    let closed = async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, Event::Closed { .. }) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), closed).await;
}

#[derive(Args)]
pub(crate) struct CallCmd {
    /// Who: +<number> or a user id.
    user: String,
    #[command(flatten)]
    media: MediaArgs,
}

impl Run for CallCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let to = ctx.user(&account, &self.user).await?;
        let opts = self.media.options()?;
        let (chat, mut events) = Chat::connect(account.clone(), ConnectOptions::default());
        wait_connected(&mut events).await?;
        eprintln!("calling {to}…");
        let report = natter_client::call::place(&chat, &mut events, &account, to, opts).await;
        close_after_flush(&chat, &mut events).await;
        self.media.finish(&report?)
    }
}

#[derive(Args)]
pub(crate) struct AnswerCmd {
    /// Only answer calls from this user (+<number> or user id).
    #[arg(long)]
    from: Option<String>,
    /// Give up after this many seconds without an incoming call.
    #[arg(long, default_value_t = 600)]
    wait: u64,
    #[command(flatten)]
    media: MediaArgs,
}

impl Run for AnswerCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let from = match &self.from {
            Some(f) => Some(ctx.user(&account, f).await?),
            None => None,
        };
        let mut opts = self.media.options()?;
        // The callee waits for the caller to hang up unless told otherwise.
        if self.media.duration.is_none() {
            opts.hangup_after = None;
        }
        let (chat, mut events) = Chat::connect(account.clone(), ConnectOptions::default());
        wait_connected(&mut events).await?;
        eprintln!("waiting for a call…");
        let report = natter_client::call::answer(
            &chat,
            &mut events,
            &account,
            from,
            opts,
            Duration::from_secs(self.wait),
        )
        .await;
        close_after_flush(&chat, &mut events).await;
        self.media.finish(&report?)
    }
}

#[derive(Args)]
pub(crate) struct CallLogCmd {
    /// Most entries.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

impl Run for CallLogCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let log = ctx
            .api
            .call_log(&account.token().await?, None, Some(self.limit))
            .await?;
        for c in log.calls {
            println!(
                "{} {} {} {} {} {} ms ({})",
                c.started_at,
                c.direction,
                c.peer,
                c.media.as_str(),
                c.outcome,
                c.duration_ms,
                c.reason.as_str()
            );
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct IceServersCmd {}

impl Run for IceServersCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let s = ctx.api.ice_servers(&account.token().await?).await?;
        println!("{}", serde_json::to_string_pretty(&s)?);
        Ok(())
    }
}

async fn wait_connected(events: &mut natter_client::Events) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Synced)) => return Ok(()),
            Ok(Some(Event::Closed { reason, .. })) => anyhow::bail!("connection closed: {reason}"),
            Ok(Some(_)) => {}
            Ok(None) => anyhow::bail!("connection closed"),
            Err(_) => anyhow::bail!("could not connect within 30 s"),
        }
    }
}
