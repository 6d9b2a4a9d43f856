//! `presence`, `privacy`, `contacts`.

use crate::{Ctx, Run};
use clap::Args;
use natter_proto::PresencePrivacy;

#[derive(Args)]
pub(crate) struct Show {
    /// +<number> or user id.
    user: String,
}

impl Run for Show {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let user = ctx.user(&account, &self.user).await?;
        let p = ctx.api.presence(&account.token().await?, &user).await?;
        println!("{}", serde_json::to_string(&p)?);
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Privacy {
    /// everyone, contacts or nobody.
    setting: String,
}

impl Run for Privacy {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let p: PresencePrivacy =
            serde_json::from_value(serde_json::Value::String(self.setting.clone()))
                .map_err(|_| anyhow::anyhow!("privacy: expected everyone, contacts or nobody"))?;
        let account = ctx.account()?;
        ctx.api.set_privacy(&account.token().await?, p).await?;
        println!("presence privacy: {}", self.setting);
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Contacts {
    /// +<number> or user ids (replaces the list).
    users: Vec<String>,
}

impl Run for Contacts {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let mut users = Vec::new();
        for u in &self.users {
            users.push(ctx.user(&account, u).await?);
        }
        ctx.api
            .set_contacts(&account.token().await?, &users)
            .await?;
        println!("{} contacts", users.len());
        Ok(())
    }
}
