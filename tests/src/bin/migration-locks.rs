//! How long chat's PostgreSQL migrations 2003 and 2004 block reads and
//! writes of `chat_messages`, released text against current (docs/runbook.md
//! "Migrations and locks"); `--path 2002` measures migration 2002 (unchanged)
//! from 2001 the same way.
//!
//! Each path gets a fresh database at version 2002 (2001) holding `--rows` messages
//! (made by `INSERT … SELECT generate_series`: time-ordered client ids, 10,000
//! senders with two devices each, nine bodies in ten already cleared). While
//! the migration runs, two probe connections act as the previous release's
//! pods: one reads a message by id, one inserts a message (without the
//! generation column), each every 10 ms. Reported: the migration's duration
//! and the longest single read and write, i.e. the longest stall a pod saw.
//!
//! ```sh
//! cargo run --release -p natter-tests --bin migration-locks -- --rows 1000000
//! ```
//! PostgreSQL is found as the tests find it (`NATTER_TEST_POSTGRES_URL`,
//! default postgres@127.0.0.1:5432, trust).

use anyhow::Context;
use clap::Parser;
use natter_chat::store::RELEASED_POSTGRES_MIGRATIONS;
use natter_common::Db;
use natter_common::testing::TestDb;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, PgPool, SqlSafeStr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Read and write stalls of chat's migrations 2003/2004 on PostgreSQL")]
struct Args {
    /// Messages in chat_messages before the migration.
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// `released`, `current`, `both` or `2002`.
    #[arg(long, default_value = "both")]
    path: String,
}

fn current() -> Migrator {
    let mut m = sqlx::migrate!("../chat-core/migrations/postgres");
    m.set_ignore_missing(true);
    m
}

/// The previous release's migrator: 2003 and 2004 as released, run by sqlx.
fn released() -> Migrator {
    let mut m = current();
    for r in RELEASED_POSTGRES_MIGRATIONS {
        let at = m
            .migrations
            .iter()
            .position(|x| x.version == r.version)
            .expect("released version exists");
        let description = m.migrations[at].description.clone();
        m.migrations.to_mut()[at] = Migration::new(
            r.version,
            description,
            MigrationType::Simple,
            AssertSqlSafe(r.sql).into_sql_str(),
            false,
        );
    }
    m
}

async fn prepare(rows: i64, at: i64) -> anyhow::Result<(TestDb, PgPool)> {
    let t = TestDb::postgres().await;
    let Db::Postgres(p) = &t.db else {
        anyhow::bail!("not PostgreSQL")
    };
    let p = p.clone();
    natter_auth::store::for_db(&t.db).migrate().await?;
    current().run_to(at, &p).await?;
    let started = Instant::now();
    sqlx::raw_sql(
        "INSERT INTO accounts (user_id, number, created_at)
         SELECT 'u' || i, '+1555' || lpad(i::text, 7, '0'), 0 FROM generate_series(0, 9999) i;
         INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation)
         SELECT 'u' || i, d, 'phone', 0, 0, 1000 + i * 2 + d
           FROM generate_series(0, 9999) i, generate_series(1, 2) d;",
    )
    .execute(&p)
    .await?;
    // At 2001, 1:1 delivery state is in chat_status (migration 2002 moves it).
    let delivered = if at == 2001 { "" } else { ", delivered_at" };
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO chat_messages (sender_user, sender_device, client_id, conv_kind, conv_id, kind,
                                    body, created_at, expires_at{delivered})
         SELECT 'u' || (i % 10000), 1 + (i / 10000) % 2,
                lpad(to_hex(i), 12, '0') || '-7' || substr(md5(i::text), 1, 3) || '-' ||
                  substr(md5(i::text), 4, 4) || '-' || substr(md5(i::text), 8, 12),
                'u', 'u' || ((i + 1) % 10000), 'text',
                CASE WHEN i % 10 = 0 THEN decode(repeat(md5(i::text), 4), 'hex') END,
                1700000000000 + i, 1702592000000 + i
                {}
           FROM generate_series(1, $1) i",
        if at == 2001 {
            ""
        } else {
            ", CASE WHEN i % 10 <> 0 THEN 1700000000500 + i END"
        }
    )))
    .bind(rows)
    .execute(&p)
    .await?;
    if at == 2001 {
        sqlx::raw_sql(
            "INSERT INTO chat_status (msg_id, user_id, delivered_at)
             SELECT msg_id, conv_id, created_at + 500 FROM chat_messages WHERE msg_id % 10 <> 0",
        )
        .execute(&p)
        .await?;
    }
    sqlx::raw_sql("VACUUM ANALYZE chat_messages, chat_status")
        .execute(&p)
        .await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('chat_messages'))")
            .fetch_one(&p)
            .await?;
    eprintln!(
        "prepared {rows} messages ({size} with indexes) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok((t, p))
}

/// The longest single operation and the number of operations.
#[derive(Debug, Default, Clone, Copy)]
struct Stall {
    longest: Duration,
    ops: u64,
}

/// Runs `op` every 10 ms on its own connection until `stop`.
async fn probe(p: PgPool, stop: Arc<AtomicBool>, write: bool) -> anyhow::Result<Stall> {
    let mut conn = p.acquire().await?;
    let mut s = Stall::default();
    let mut n: i64 = 0;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let t0 = Instant::now();
        if write {
            sqlx::query(
                "INSERT INTO chat_messages (sender_user, sender_device, client_id, conv_kind, conv_id,
                                            kind, body, created_at, expires_at)
                 VALUES ('u1', 1, 'probe-' || $1, 'u', 'u2', 'text', NULL, 0, 0)",
            )
            .bind(n)
            .execute(&mut *conn)
            .await?;
        } else {
            let _: Option<i64> =
                sqlx::query_scalar("SELECT msg_id FROM chat_messages WHERE msg_id = $1")
                    .bind(1 + (n * 7919) % 1000)
                    .fetch_optional(&mut *conn)
                    .await?;
        }
        s.longest = s.longest.max(t0.elapsed());
        s.ops += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(s)
}

async fn measure(path: &str, rows: i64) -> anyhow::Result<()> {
    let (t, p) = prepare(rows, if path == "2002" { 2001 } else { 2002 }).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(probe(p.clone(), stop.clone(), false));
    let writer = tokio::spawn(probe(p.clone(), stop.clone(), true));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut parts = Vec::new();
    if path == "2002" {
        current().run_to(2002, &p).await.context("2002")?;
    } else if path == "released" {
        let m = released();
        m.run_to(2003, &p).await.context("released 2003")?;
        parts.push(format!("2003 {:.1} s", started.elapsed().as_secs_f64()));
        let at = Instant::now();
        m.run(&p).await.context("released 2004")?;
        parts.push(format!("2004 {:.1} s", at.elapsed().as_secs_f64()));
    } else {
        natter_chat::store::for_db(&t.db)
            .migrate()
            .await
            .context("current 2003/2004")?;
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    let r = reader.await??;
    let w = writer.await??;
    println!(
        "{path}: {rows} rows, migration {:.1} s ({}), longest read {} ms ({} reads), longest write {} ms ({} writes)",
        took.as_secs_f64(),
        if parts.is_empty() {
            "steps in the log".to_owned()
        } else {
            parts.join(", ")
        },
        r.longest.as_millis(),
        r.ops,
        w.longest.as_millis(),
        w.ops,
    );
    t.cleanup().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "natter_common::migrate=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let paths: &[&str] = match args.path.as_str() {
        "both" => &["released", "current"],
        "released" => &["released"],
        "current" => &["current"],
        "2002" => &["2002"],
        other => anyhow::bail!("--path {other}: expected released, current, both or 2002"),
    };
    for path in paths {
        measure(path, args.rows).await?;
    }
    Ok(())
}
