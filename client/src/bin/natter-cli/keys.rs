//! `keys gen | publish | count | fetch`: the end-to-end-encryption key directory.

use crate::{Ctx, Run};
use clap::{Args, Subcommand};
use natter_client::keys::DeviceKeys;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub(crate) enum KeysCmd {
    /// Generate keys: print the `PUT /v1/keys` body on stdout, keep the secrets in a file.
    Gen(Gen),
    /// Generate keys for this profile's device and publish them.
    Publish(Publish),
    /// One-time prekeys the server still holds for this device.
    Count,
    /// Fetch a user's key bundles (claims one one-time prekey per device).
    Fetch(Fetch),
}

#[derive(Args)]
pub(crate) struct Gen {
    /// One-time prekeys to generate (the server keeps at most 100).
    #[arg(long, default_value_t = 20)]
    one_time: u32,
    /// Where the secret halves go (created with mode 0600).
    #[arg(long)]
    secrets_out: PathBuf,
}

#[derive(Args)]
pub(crate) struct Publish {
    /// One-time prekeys to generate.
    #[arg(long, default_value_t = 20)]
    one_time: u32,
}

#[derive(Args)]
pub(crate) struct Fetch {
    /// +<number> or user id.
    user: String,
}

fn write_private(path: &Path, keys: &DeviceKeys) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(keys)?.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

impl Run for KeysCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        match self {
            KeysCmd::Gen(g) => {
                let keys = DeviceKeys::generate(g.one_time);
                write_private(&g.secrets_out, &keys)?;
                println!("{}", keys.publish_body());
            }
            KeysCmd::Publish(p) => {
                let account = ctx.account()?;
                let keys = DeviceKeys::generate(p.one_time);
                let secrets = ctx.path.with_extension("keys.json");
                write_private(&secrets, &keys)?;
                ctx.api.put_keys(&account.token().await?, &keys).await?;
                println!(
                    "published identity key {} with {} one-time prekeys (secrets in {})",
                    keys.identity.public_key,
                    p.one_time,
                    secrets.display()
                );
            }
            KeysCmd::Count => {
                let account = ctx.account()?;
                let n = ctx.api.prekey_count(&account.token().await?).await?;
                println!("{n}");
            }
            KeysCmd::Fetch(f) => {
                let account = ctx.account()?;
                let user = ctx.user(&account, &f.user).await?;
                let token = account.token().await?;
                for b in ctx.api.key_bundles(&token, &user.to_string()).await? {
                    println!("{}", serde_json::to_string(&b)?);
                }
            }
        }
        Ok(())
    }
}
