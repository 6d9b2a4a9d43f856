//! The chat writer's cost per message, without sockets or a generator.
//!
//! Why: at saturation one thread (the group-commit writer) is the ceiling,
//! and `chat-load` figures on this 2-core VM move by ±15 % with the host's
//! load, which hides any change to the write path worth less than that. This
//! drives the same store commits the writer runs — sends, the recipients'
//! `delivered` one commit later, the senders' receipt `ack`s one commit after
//! that — from one thread, and reports that thread's CPU time per message:
//! the writer's own cost, which the host's noise barely touches.
//!
//! ```sh
//! chat-store-bench --conversations 100 --per-commit 4 --measure-secs 15
//! ```

use anyhow::Context;
use clap::Parser;
use natter_chat::store::{BatchOp, DeviceRef, NewMessage, OpOutcome, QueuedFrame, SendOutcome};
use natter_common::db::{DatabaseConfig, Db, SqliteSync};
use natter_proto::{ClientMsgId, Kind, Target, UserId};
use natter_tests::procstat::thread_cpu_us;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Cost of the chat group commit per message, on SQLite")]
struct Args {
    /// Conversations (a sender and a recipient user, one device each).
    #[arg(long, default_value_t = 100)]
    conversations: usize,
    /// New messages per conversation per commit.
    #[arg(long, default_value_t = 4)]
    per_commit: usize,
    /// Warm-up before measuring.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Measurement window.
    #[arg(long, default_value_t = 15)]
    measure_secs: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
    /// Client message ids.
    #[arg(long, value_enum, default_value_t = ClientIds::Uuid7)]
    client_ids: ClientIds,
    /// SQLite durability: `full` (default, a sync per commit) or `normal`.
    #[arg(long, default_value = "full")]
    synchronous: String,
}

/// How the bench's senders make client message ids: the idempotency index's
/// page writes depend on where new ids land.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ClientIds {
    /// Random (UUID v4), what the SDK sent before it made UUID v7.
    Uuid,
    /// Time-ordered UUID v7, what the SDK makes.
    Uuid7,
    /// Time-ordered per sender (zero-padded round).
    Ordered,
    /// Unpadded "round-k", what this bench used before.
    Counter,
}

impl ClientIds {
    fn name(self) -> &'static str {
        match self {
            Self::Uuid => "uuid",
            Self::Uuid7 => "uuid7",
            Self::Ordered => "ordered",
            Self::Counter => "counter",
        }
    }

    fn make(self, round: u64, k: usize) -> String {
        match self {
            Self::Uuid => uuid::Uuid::new_v4().simple().to_string(),
            Self::Uuid7 => uuid::Uuid::now_v7().simple().to_string(),
            Self::Ordered => format!("{round:012}-{k}"),
            Self::Counter => format!("{round}-{k}"),
        }
    }
}

fn sender(c: usize) -> UserId {
    UserId::new(format!("bench-sender-{c}"))
}

fn recipient(c: usize) -> UserId {
    UserId::new(format!("bench-recipient-{c}"))
}

fn device(user: UserId) -> DeviceRef {
    DeviceRef {
        user,
        device: 1,
        generation: 1,
    }
}

/// What one commit leaves for the next: messages the recipients now hold
/// and receipts the senders now hold, by conversation.
#[derive(Default)]
struct Outstanding {
    delivered: HashMap<usize, Vec<u64>>,
    receipts: HashMap<usize, Vec<u64>>,
}

/// One commit's operations: the previous commit's messages delivered, its
/// receipts acknowledged, and new sends.
fn ops_for(args: &Args, round: u64, body: &[u8], due: &mut Outstanding) -> (Vec<BatchOp>, usize) {
    let mut ops = Vec::new();
    for (c, ids) in due.delivered.drain() {
        ops.push(BatchOp::Delivered(device(recipient(c)), ids));
    }
    for (c, ids) in due.receipts.drain() {
        ops.push(BatchOp::Ack(device(sender(c)), ids));
    }
    let mut sends = 0;
    for c in 0..args.conversations {
        for k in 0..args.per_commit {
            ops.push(BatchOp::Send(NewMessage {
                sender: sender(c),
                sender_device: 1,
                sender_generation: device(sender(c)).generation,
                client_id: ClientMsgId::new(args.client_ids.make(round, k)),
                to: Target::User(recipient(c)),
                kind: Kind::text(),
                body: body.to_vec(),
                system: None,
            }));
            sends += 1;
        }
    }
    (ops, sends)
}

// A worker beside this thread runs the pool's background WAL checkpoint, as
// in the server: on a current-thread runtime it never got to run (each commit
// blocks this thread), and the WAL grew without end (420 MB in 9 s), every
// append a new block for the file system, which the server never pays.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let synchronous = match args.synchronous.as_str() {
        "full" => SqliteSync::Full,
        "normal" => SqliteSync::Normal,
        other => anyhow::bail!("--synchronous {other}: expected full or normal"),
    };
    let dir = natter_common::testing::TempDir::new("chat-store-bench");
    let cfg = DatabaseConfig {
        sqlite_synchronous: synchronous,
        ..DatabaseConfig::default()
    };
    let db = Db::connect(&cfg, dir.path()).await?;
    natter_auth::store::for_db(&db).migrate().await?;
    let store = natter_chat::store::for_db(&db);
    store.migrate().await?;
    let Db::Sqlite(pool) = &db else {
        anyhow::bail!("the embedded database is SQLite");
    };
    for c in 0..args.conversations {
        for (n, u) in [(2 * c, sender(c)), (2 * c + 1, recipient(c))] {
            sqlx::query("INSERT INTO accounts (user_id, number, created_at) VALUES (?1, ?2, 0)")
                .bind(u.as_str())
                .bind(format!("+1555{n:07}"))
                .execute(pool)
                .await
                .context("account")?;
            sqlx::query(
                "INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation)
                 VALUES (?1, 1, 'bench', 0, 0, 1)",
            )
            .bind(u.as_str())
            .execute(pool)
            .await
            .context("device")?;
        }
    }
    let conv_of: HashMap<String, usize> = (0..args.conversations)
        .flat_map(|c| [(sender(c).0, c), (recipient(c).0, c)])
        .collect();
    let body = vec![b'x'; args.body_bytes];
    let mut due = Outstanding::default();
    let (mut round, mut messages, mut commits, mut ops_total) = (0u64, 0u64, 0u64, 0u64);
    let warm_until = Instant::now() + Duration::from_secs(args.warmup_secs);
    let mut window: Option<(Instant, u64)> = None;
    loop {
        if window.is_none() && Instant::now() >= warm_until {
            window = Some((Instant::now(), thread_cpu_us()));
            (messages, commits, ops_total) = (0, 0, 0);
        }
        if let Some((t0, _)) = window
            && t0.elapsed() >= Duration::from_secs(args.measure_secs)
        {
            break;
        }
        round += 1;
        let (ops, sends) = ops_for(&args, round, &body, &mut due);
        let committed = store
            .commit(&ops, round as i64, 86_400_000, 1024)
            .await
            .context("commit")?;
        for (op, outcome) in ops.iter().zip(&committed.outcomes) {
            if let (BatchOp::Send(m), OpOutcome::Send(SendOutcome::Stored(s))) = (op, outcome)
                && let Target::User(u) = &m.to
            {
                due.delivered
                    .entry(conv_of[&u.0])
                    .or_default()
                    .push(s.msg_id);
            }
        }
        for q in &committed.queued {
            if let QueuedFrame::Receipt(r) = &q.frame {
                due.receipts
                    .entry(conv_of[&q.user.0])
                    .or_default()
                    .push(r.receipt_id);
            }
        }
        messages += sends as u64;
        commits += 1;
        ops_total += ops.len() as u64;
    }
    let (t0, cpu0) = window.context("no measurement window")?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_us = thread_cpu_us() - cpu0;
    let m = messages.max(1) as f64;
    println!(
        "chat-store-bench: SQLite synchronous={}, {} conversations, {} messages per conversation per commit, body {} B, client ids {}",
        args.synchronous,
        args.conversations,
        args.per_commit,
        args.body_bytes,
        args.client_ids.name()
    );
    println!(
        "{messages} messages in {commits} commits ({:.0} operations each) in {secs:.1} s",
        ops_total as f64 / commits.max(1) as f64
    );
    println!(
        "writer thread: {:.1} µs CPU and {:.1} µs wall per message (send + delivered + receipt ack); ceiling {:.0} messages/s of CPU, {:.0} messages/s of wall time",
        cpu_us as f64 / m,
        secs * 1e6 / m,
        m / (cpu_us.max(1) as f64 / 1e6),
        m / secs
    );
    db.close().await;
    Ok(())
}
