//! `upload FILE` (resumable, with a progress bar) and `download HASH`.

use crate::{Ctx, Run};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use natter_client::media::{MediaClient, MediaInfo, Progress};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct Upload {
    /// The file to upload. An interrupted upload of the same file continues
    /// where it stopped when run again.
    file: PathBuf,
    /// Store the bytes as they are (already end-to-end encrypted): no
    /// sniffing restrictions, no thumbnail.
    #[arg(long)]
    opaque: bool,
    /// Bytes per request (each is checksummed; a lost one costs at most this much).
    #[arg(long, default_value_t = natter_client::media::DEFAULT_CHUNK)]
    chunk_size: u64,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct Download {
    /// The media hash (64 hex digits), as carried in messages.
    hash: String,
    /// Where to write it (default: the hash, in the current directory). A
    /// partial file is resumed.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

/// An indicatif bar behind the SDK's progress callback.
struct Bar(ProgressBar);

impl Bar {
    fn new(what: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Self(bar)
    }
}

impl Progress for Bar {
    fn update(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }

    fn note(&self, msg: &str) {
        self.0.println(msg);
    }
}

fn client(ctx: &Ctx) -> anyhow::Result<MediaClient> {
    let state = ctx
        .path
        .parent()
        .map(|p| p.join("uploads"))
        .unwrap_or_else(|| PathBuf::from(".natter-cli/uploads"));
    Ok(MediaClient::new(ctx.account()?, state))
}

fn summary(info: &MediaInfo) {
    println!("hash: {}", info.hash);
    println!(
        "size: {} bytes, type: {}{}",
        info.size,
        info.content_type,
        if info.opaque { " (opaque)" } else { "" }
    );
    if let (Some(w), Some(h)) = (info.width, info.height) {
        println!("image: {w}x{h}");
    }
    match &info.preview {
        Some(p) => println!(
            "preview: {}x{} {} ({} bytes, base64 in --json)",
            p.width,
            p.height,
            p.content_type,
            p.jpeg().map_or(0, |j| j.len())
        ),
        None => println!("preview: none"),
    }
    match (&info.thumbnail.url, &info.thumbnail.reason) {
        (Some(url), _) => println!(
            "thumbnail: {}x{} {url}",
            info.thumbnail.width.unwrap_or(0),
            info.thumbnail.height.unwrap_or(0)
        ),
        (None, Some(reason)) => println!("thumbnail: none ({reason})"),
        (None, None) => println!("thumbnail: none"),
    }
    println!("url: {} (expires at {})", info.url, info.url_expires_at);
}

impl Run for Upload {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let media = client(ctx)?.with_chunk_size(self.chunk_size);
        let bar = Bar::new("upload");
        let done = media.upload(&self.file, self.opaque, &bar).await;
        bar.0.finish_and_clear();
        let done = done?;
        if done.resumed_from > 0 {
            eprintln!(
                "resumed an interrupted upload at byte {}",
                done.resumed_from
            );
        }
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "hash": done.info.hash,
                    "size": done.info.size,
                    "content_type": done.info.content_type,
                    "preview": done.info.preview.as_ref().map(|p| &p.data_base64),
                    "thumbnail": done.info.thumbnail.url,
                    "url": done.info.url,
                    "resumed_from": done.resumed_from,
                }))?
            );
        } else {
            summary(&done.info);
        }
        Ok(())
    }
}

impl Run for Download {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let media = client(ctx)?;
        let out = self.output.unwrap_or_else(|| PathBuf::from(&self.hash));
        let bar = Bar::new("download");
        let info = media.download(&self.hash, &out, &bar).await;
        bar.0.finish_and_clear();
        let info = info?;
        println!(
            "{}: {} bytes, {}, SHA-256 verified (via signed URL)",
            out.display(),
            info.size,
            info.content_type
        );
        Ok(())
    }
}
