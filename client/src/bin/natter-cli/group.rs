//! `group …`.

use crate::{Ctx, Run};
use clap::Subcommand;
use natter_client::Group;
use natter_proto::GroupId;

#[derive(Subcommand)]
pub(crate) enum GroupCmd {
    /// Create a group (you become its admin).
    Create {
        /// Name.
        name: String,
        /// Members: +<number> or user ids.
        members: Vec<String>,
    },
    /// Your groups.
    List,
    /// One group and its members.
    Show {
        /// Group id.
        group: String,
    },
    /// Rename (admins).
    Rename {
        /// Group id.
        group: String,
        /// New name.
        name: String,
    },
    /// Add members (admins).
    Add {
        /// Group id.
        group: String,
        /// +<number> or user ids.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Remove a member (admins).
    Remove {
        /// Group id.
        group: String,
        /// +<number> or user id.
        member: String,
    },
    /// Leave the group.
    Leave {
        /// Group id.
        group: String,
    },
    /// Make a member admin (or revoke with --revoke).
    Admin {
        /// Group id.
        group: String,
        /// +<number> or user id.
        member: String,
        /// Revoke instead.
        #[arg(long)]
        revoke: bool,
    },
}

fn print(g: &Group) {
    println!("group {} \"{}\"", g.group_id, g.name);
    for m in &g.members {
        println!("  {}{}", m.user_id, if m.admin { " (admin)" } else { "" });
    }
}

fn gid(s: &str) -> GroupId {
    GroupId::new(s.strip_prefix("group:").unwrap_or(s))
}

impl Run for GroupCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let token = account.token().await?;
        let api = &ctx.api;
        match self {
            GroupCmd::Create { name, members } => {
                let mut users = Vec::new();
                for m in &members {
                    users.push(ctx.user(&account, m).await?);
                }
                print(&api.create_group(&token, &name, &users).await?);
            }
            GroupCmd::List => {
                for g in api.groups(&token).await? {
                    println!(
                        "{} \"{}\" ({} members)",
                        g.group_id,
                        g.name,
                        g.members.len()
                    );
                }
            }
            GroupCmd::Show { group } => print(&api.group(&token, &gid(&group)).await?),
            GroupCmd::Rename { group, name } => {
                print(&api.rename_group(&token, &gid(&group), &name).await?)
            }
            GroupCmd::Add { group, members } => {
                let mut users = Vec::new();
                for m in &members {
                    users.push(ctx.user(&account, m).await?);
                }
                print(&api.add_members(&token, &gid(&group), &users).await?);
            }
            GroupCmd::Remove { group, member } => {
                let user = ctx.user(&account, &member).await?;
                api.remove_member(&token, &gid(&group), &user).await?;
                println!("removed {user}");
            }
            GroupCmd::Leave { group } => {
                api.remove_member(&token, &gid(&group), &account.credentials().user())
                    .await?;
                println!("left {group}");
            }
            GroupCmd::Admin {
                group,
                member,
                revoke,
            } => {
                let user = ctx.user(&account, &member).await?;
                print(&api.set_admin(&token, &gid(&group), &user, !revoke).await?);
            }
        }
        Ok(())
    }
}
