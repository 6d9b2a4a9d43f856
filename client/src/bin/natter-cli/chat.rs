//! `send`, `listen`, `chat`, `read`, `status`, `pending`.

use crate::{Ctx, Run};
use clap::Args;
use natter_client::{Chat, ConnectOptions, Event, PendingQuery};
use natter_proto::{Message, MsgId, ReceiptStatus, Target};
use tokio::io::AsyncBufReadExt;

/// One line for an event (what `listen` and `chat` print).
pub(crate) fn describe(ev: &Event) -> Option<String> {
    Some(match ev {
        Event::Connected(h) => format!("connected as {}/{}", h.user_id, h.device_id),
        Event::Synced => "synced".into(),
        Event::Message(m) => describe_msg(m),
        Event::Sent(s) => format!(
            "sent {} msg_id={}{}",
            s.id,
            s.msg_id,
            if s.dup { " (dup)" } else { "" }
        ),
        Event::Receipt(r) => format!(
            "receipt {} msg_id={} by {}",
            match r.status {
                ReceiptStatus::Delivered => "delivered",
                ReceiptStatus::Read => "read",
            },
            r.msg_id,
            r.by
        ),
        Event::Typing(t) => format!("typing {} {:?}", t.from, t.state).to_lowercase(),
        Event::Presence(p) => match p.last_seen {
            Some(t) => format!("presence {} {:?} last_seen={t}", p.user, p.state).to_lowercase(),
            None => format!("presence {} {:?}", p.user, p.state).to_lowercase(),
        },
        Event::Error(e) => format!("error {}: {}", e.code, e.message),
        Event::Disconnected { code, retry_in } => {
            format!(
                "disconnected (code {code:?}); reconnecting in {} ms",
                retry_in.as_millis()
            )
        }
        Event::Closed { code, reason } => format!("closed (code {code:?}): {reason}"),
        Event::Call(f) => format!("{} {}", f.type_name(), call_id_of(f)?),
    })
}

fn call_id_of(f: &natter_proto::ServerFrame) -> Option<&str> {
    use natter_proto::ServerFrame as F;
    Some(match f {
        F::CallIncoming(c) => c.call_id.as_str(),
        F::CallRinging(c) => c.call_id.as_str(),
        F::CallAnswered(c) => c.call_id.as_str(),
        F::CallIce(c) => c.call_id.as_str(),
        F::CallUpdate(c) => c.call_id.as_str(),
        F::CallEnded(c) => c.call_id.as_str(),
        _ => return None,
    })
}

fn describe_msg(m: &Message) -> String {
    let to = match &m.to {
        Target::User(u) => format!("user:{u}"),
        Target::Group(g) => format!("group:{g}"),
    };
    let body = match (&m.system, m.body.as_text()) {
        (Some(s), _) => serde_json::to_string(s).unwrap_or_default(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => format!("<{} bytes>", m.body.len()),
    };
    format!(
        "msg {} from {}/{} to {to} [{}]: {body}",
        m.msg_id,
        m.from.user,
        m.from.device,
        m.kind.as_str()
    )
}

#[derive(Args)]
pub(crate) struct SendCmd {
    /// Recipient: +<number>, a user id, or group:<id>.
    to: String,
    /// The text.
    #[arg(required = true)]
    text: Vec<String>,
}

impl Run for SendCmd {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let to = ctx.target(&account, &self.to).await?;
        let opts = ConnectOptions {
            auto_delivered: false,
            ..Default::default()
        };
        let (chat, mut events) = Chat::connect(account, opts);
        let id = chat.send_text(to, &self.text.join(" "));
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Sent(s) if s.id == id => {
                    println!("sent {} msg_id={}", s.id, s.msg_id);
                    chat.close();
                }
                Event::Error(e) if e.id.as_deref() == Some(id.as_str()) => {
                    chat.close();
                    anyhow::bail!("refused: {}: {}", e.code, e.message);
                }
                Event::Closed { .. } => break,
                Event::Disconnected { .. } => eprintln!("{}", describe(&ev).unwrap_or_default()),
                _ => {}
            }
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Listen {
    /// Mark every message read as it arrives.
    #[arg(long)]
    read: bool,
    /// Also subscribe to these users' presence (+number or user id).
    #[arg(long = "presence")]
    presence: Vec<String>,
}

impl Run for Listen {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let mut users = Vec::new();
        for p in &self.presence {
            users.push(ctx.user(&account, p).await?);
        }
        let (chat, mut events) = Chat::connect(account, ConnectOptions::default());
        if !users.is_empty() {
            chat.subscribe_presence(users);
        }
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    if let Some(line) = describe(&ev) {
                        println!("{line}");
                    }
                    if let Event::Message(m) = &ev
                        && self.read
                        && m.system.is_none()
                    {
                        chat.read(vec![m.msg_id]);
                    }
                    if matches!(ev, Event::Closed { .. }) {
                        break;
                    }
                }
                _ = tokio::signal::ctrl_c() => {
                    chat.close();
                }
            }
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Interactive {
    /// The conversation: +<number>, a user id, or group:<id>.
    with: String,
}

impl Run for Interactive {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let me = account.credentials().user();
        let to = ctx.target(&account, &self.with).await?;
        let (chat, mut events) = Chat::connect(account, ConnectOptions::default());
        if let Target::User(u) = &to {
            chat.subscribe_presence(vec![u.clone()]);
        }
        println!(
            "chatting with {}; type a line and press enter (Ctrl-D to quit)",
            self.with
        );
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut mine: std::collections::HashMap<String, MsgId> = std::collections::HashMap::new();
        let in_conversation = |m: &Message| match (&to, &m.to) {
            (Target::Group(g), Target::Group(h)) => g == h,
            (Target::User(peer), Target::User(rcpt)) => {
                (m.from.user == *peer && *rcpt == me) || (m.from.user == me && rcpt == peer)
            }
            _ => false,
        };
        let mut stdin_open = true;
        loop {
            tokio::select! {
                line = stdin.next_line(), if stdin_open => match line? {
                    Some(l) if !l.trim().is_empty() => {
                        let id = chat.send_text(to.clone(), l.trim_end());
                        mine.insert(id.0, 0);
                    }
                    Some(_) => {}
                    None => {
                        stdin_open = false;
                        chat.close();
                    }
                },
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    match &ev {
                        Event::Message(m) if in_conversation(m) => {
                            let who = if m.from.user == me { "me".to_owned() } else { m.from.user.to_string() };
                            match (&m.system, m.body.as_text()) {
                                (Some(s), _) => println!("* {}", serde_json::to_string(s).unwrap_or_default()),
                                (None, Some(t)) => println!("<{who}> {t}"),
                                (None, None) => println!("<{who}> <{} bytes>", m.body.len()),
                            }
                            if m.from.user != me {
                                chat.read(vec![m.msg_id]);
                            }
                        }
                        Event::Sent(s) if mine.contains_key(s.id.as_str()) => {
                            mine.insert(s.id.0.clone(), s.msg_id);
                            println!("  ✓ sent ({})", s.msg_id);
                        }
                        Event::Receipt(r) if mine.values().any(|v| *v == r.msg_id) && r.by != me => {
                            let ticks = if r.status == ReceiptStatus::Read { "✓✓ read" } else { "✓✓ delivered" };
                            println!("  {ticks} ({}) by {}", r.msg_id, r.by);
                        }
                        Event::Typing(t) => println!("  … {} is typing", t.from),
                        Event::Presence(_) | Event::Error(_) | Event::Disconnected { .. } | Event::Connected(_) => {
                            if let Some(l) = describe(&ev) { println!("  [{l}]"); }
                        }
                        Event::Closed { .. } => break,
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Read {
    /// Message ids.
    #[arg(required = true)]
    ids: Vec<MsgId>,
}

impl Run for Read {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let opts = ConnectOptions {
            auto_delivered: false,
            ..Default::default()
        };
        let (chat, mut events) = Chat::connect(account, opts);
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Connected(_) => {
                    chat.read(self.ids.clone());
                    // Give the server a moment to take the frame before closing.
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    chat.close();
                }
                Event::Error(e) => eprintln!("error {}: {}", e.code, e.message),
                Event::Closed { .. } => break,
                _ => {}
            }
        }
        println!("marked read: {:?}", self.ids);
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct Status {
    /// The message id (from `sent`).
    msg_id: MsgId,
    /// Wait until every recipient has the message in this state (receipts
    /// are committed after the reader's frame is taken, not before it).
    #[arg(long, value_enum)]
    wait: Option<WaitFor>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// A state `status --wait` waits for.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum WaitFor {
    /// Every recipient's device stored it.
    Delivered,
    /// Every recipient read it.
    Read,
}

impl WaitFor {
    fn reached(self, s: &natter_client::MessageStatus) -> bool {
        !s.recipients.is_empty()
            && s.recipients.iter().all(|r| match self {
                WaitFor::Delivered => r.delivered_at.is_some(),
                WaitFor::Read => r.read_at.is_some(),
            })
    }
}

impl Run for Status {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(self.timeout);
        loop {
            let token = account.token().await?;
            let s = ctx.api.message_status(&token, self.msg_id).await?;
            let done = self.wait.is_none_or(|w| w.reached(&s));
            if done || tokio::time::Instant::now() >= deadline {
                println!("{}", serde_json::to_string_pretty(&s)?);
                if !done {
                    anyhow::bail!("not in the state waited for after {} s", self.timeout);
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

#[derive(Args)]
pub(crate) struct Pending {
    /// Only this conversation: u:<user id> or g:<group id>.
    #[arg(long)]
    conversation: Option<String>,
    /// Stored at or after (Unix ms).
    #[arg(long)]
    since: Option<i64>,
    /// Stored before (Unix ms).
    #[arg(long)]
    until: Option<i64>,
    /// At most this many (1..=500).
    #[arg(long)]
    limit: Option<u32>,
}

impl Run for Pending {
    async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let account = ctx.account()?;
        let token = account.token().await?;
        let conversation = match &self.conversation {
            Some(c) => Some(
                Target::from_key(c)
                    .ok_or_else(|| anyhow::anyhow!("--conversation: u:<id> or g:<id>"))?,
            ),
            None => None,
        };
        let q = PendingQuery {
            conversation,
            since: self.since,
            until: self.until,
            limit: self.limit,
        };
        for m in ctx.api.pending(&token, &q).await? {
            println!("{}", describe_msg(&m));
        }
        Ok(())
    }
}
