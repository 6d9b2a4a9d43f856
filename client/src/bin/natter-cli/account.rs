//! `register`, `whoami`, `lookup`.

use crate::{Ctx, Profile, Run};
use clap::Args;
use std::io::Write;

#[derive(Args)]
pub(crate) struct Register {
    /// Phone number in international form, e.g. +14155552671.
    #[arg(long)]
    number: String,
    /// The code, if you already have it (otherwise you are asked).
    #[arg(long)]
    code: Option<String>,
    /// Read the code from an SMS outbox file (an embedded server's
    /// <data-dir>/outbox/sms.jsonl) instead of asking.
    #[arg(long)]
    sms_outbox: Option<std::path::PathBuf>,
    /// A name for this device.
    #[arg(long, default_value = "natter-cli")]
    device_name: String,
}

impl Run for Register {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let code = self.code.clone();
        let outbox = self.sms_outbox.clone();
        let creds =
            natter_client::register(&ctx.api, &self.number, &self.device_name, |s| async move {
                if let Some(c) = code {
                    return Ok(c);
                }
                if let Some(p) = outbox {
                    return natter_client::code_from_outbox(&p, &s.session_id).await;
                }
                print!("Enter the code sent to {}: ", s.number);
                std::io::stdout().flush().ok();
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| natter_client::Error::Config(e.to_string()))?;
                Ok(line.trim().to_owned())
            })
            .await?;
        let profile = Profile {
            server: ctx.api.base().to_owned(),
            number: self.number.clone(),
            credentials: creds,
        };
        Ctx::save(&ctx.path, &profile)?;
        println!(
            "registered {} as user {} device {} (saved to {})",
            self.number,
            profile.credentials.user_id,
            profile.credentials.device_id,
            ctx.path.display()
        );
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Whoami {}

impl Run for Whoami {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let p = ctx.load()?;
        println!(
            "{} user {} device {} on {}",
            p.number, p.credentials.user_id, p.credentials.device_id, p.server
        );
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Lookup {
    /// Phone number.
    number: String,
}

impl Run for Lookup {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let token = account.token().await?;
        println!("{}", ctx.api.lookup(&token, &self.number).await?);
        Ok(())
    }
}
