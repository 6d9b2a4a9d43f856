//! Chat's PostgreSQL migrations as `natter migrate` applies them
//! (natter_common::migrate): upgrading from 2002 keeps the data, databases
//! that applied the released 2003/2004 texts still start (and a database
//! migrated now still suits the previous binary), and the index build of 2004
//! blocks neither reads nor writes, where the released text blocked reads.
//!
//! "Blocked" is observed, never timed: a migration is held at a lock wait by
//! another session, pg_stat_activity/pg_locks show where it waits, and a probe
//! query with a `lock_timeout` fails (55P03) only if it had to wait for a lock,
//! which, with the migration held, would be for ever.

mod common;

use natter_chat::store::*;
use natter_common::Db;
use natter_common::testing::TestDb;
use natter_proto::*;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgPool, Postgres, SqlSafeStr};
use std::time::Duration;

const TTL: i64 = 30 * 24 * 3600 * 1000;

/// Rows the held-migration test backfills: three batches of the backfill.
const MANY: i64 = 25_000;

fn pool(t: &TestDb) -> PgPool {
    match &t.db {
        Db::Postgres(p) => p.clone(),
        Db::Sqlite(_) => unreachable!("PostgreSQL only"),
    }
}

/// Chat's embedded PostgreSQL migrations, as this binary has them.
fn current() -> Migrator {
    let mut m = sqlx::migrate!("migrations/postgres");
    m.set_ignore_missing(true);
    m
}

/// The migrator of the previous release: the same migrations with 2003 and
/// 2004 as released, applied by sqlx itself.
fn previous_release() -> Migrator {
    let mut m = current();
    for r in RELEASED_POSTGRES_MIGRATIONS {
        let at = m.migrations.iter().position(|x| x.version == r.version);
        let old = &m.migrations[at.expect("released version exists")];
        let released = Migration::new(
            r.version,
            old.description.clone(),
            MigrationType::Simple,
            AssertSqlSafe(r.sql).into_sql_str(),
            false,
        );
        m.migrations.to_mut()[at.unwrap()] = released;
    }
    m
}

/// A fresh database with auth's schema, chat migrated to 2002 and two users:
/// alice (device 1, generation 11) and bob (device 1, generation 21).
async fn at_2002() -> (TestDb, PgPool) {
    let t = TestDb::postgres().await;
    common::auth_schema(&t.db).await;
    let p = pool(&t);
    current().run_to(2002, &p).await.expect("migrate to 2002");
    common::add_user(&t.db, "alice", &[(1, 11)]).await;
    common::add_user(&t.db, "bob", &[(1, 21)]).await;
    (t, p)
}

/// Messages as the previous release wrote them (no generation column yet):
/// 1 and 2 from alice's device 1 to bob (1 delivered), 3 from a device that
/// auth no longer has, and queue entries for bob.
async fn seed(p: &PgPool) {
    sqlx::raw_sql(
        "INSERT INTO chat_messages (msg_id, sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, created_at, expires_at, delivered_at) VALUES
           (1, 'alice', 1, 'a-1', 'u', 'bob', 'text', decode('6869', 'hex'), 10, 99999999, NULL),
           (2, 'alice', 1, 'a-2', 'u', 'bob', 'text', NULL, 20, 99999999, 25),
           (3, 'alice', 9, 'a-3', 'u', 'bob', 'text', NULL, 30, 99999999, NULL);
         INSERT INTO chat_queue (seq, user_id, device_id, generation, kind, msg_id, peer, at) VALUES
           (1, 'bob', 1, 21, 0, 1, NULL, 10);
         SELECT setval(pg_get_serial_sequence('chat_messages', 'msg_id'), 3);
         SELECT setval(pg_get_serial_sequence('chat_queue', 'seq'), 1);",
    )
    .execute(p)
    .await
    .expect("seed");
}

async fn text(p: &PgPool, sql: &'static str) -> String {
    sqlx::query_scalar(sql)
        .fetch_one(p)
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
}

async fn generation_of_message(p: &PgPool, client_id: &str) -> i64 {
    sqlx::query_scalar("SELECT sender_generation FROM chat_messages WHERE client_id = $1")
        .bind(client_id)
        .fetch_one(p)
        .await
        .expect("message row")
}

/// The schema 2004 leaves, whichever text applied it: the four-column key,
/// no helper trigger or function, no half-built index; the seeded rows with
/// their devices' generations; a resend across the upgrade is a duplicate.
async fn assert_migrated(t: &TestDb, p: &PgPool) {
    let key = text(
        p,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'chat_messages_client_id'",
    )
    .await;
    assert_eq!(
        key,
        "UNIQUE (client_id, sender_user, sender_device, sender_generation)"
    );
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'chat_messages_2004_generation')
              + (SELECT count(*) FROM pg_proc WHERE proname = 'chat_messages_2004_generation')
              + (SELECT count(*) FROM pg_index WHERE indrelid = 'chat_messages'::regclass AND NOT indisvalid)",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert_eq!(leftovers, 0, "trigger, function or invalid index left");
    assert_eq!(generation_of_message(p, "a-1").await, 11);
    assert_eq!(generation_of_message(p, "a-3").await, 0, "no device: 0");
    let delivered: Option<i64> =
        sqlx::query_scalar("SELECT delivered_at FROM chat_messages WHERE msg_id = 2")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(delivered, Some(25));

    let s = for_db(&t.db);
    let bob = DeviceRef {
        user: UserId::new("bob"),
        device: 1,
        generation: 21,
    };
    let queued = s.fetch(&bob, 0, 10).await.unwrap();
    match queued.first().map(|q| &q.frame) {
        Some(QueuedFrame::Msg(m)) => assert_eq!((m.msg_id, m.body.0.as_slice()), (1, &b"hi"[..])),
        other => panic!("expected message 1 queued for bob, got {other:?}"),
    }
    let resend = BatchOp::Send(NewMessage {
        sender: UserId::new("alice"),
        sender_device: 1,
        sender_generation: 11,
        client_id: ClientMsgId::new("a-1"),
        to: Target::User(UserId::new("bob")),
        kind: Kind::text(),
        body: b"hi".to_vec(),
        system: None,
    });
    let c = s.commit(&[resend], 1000, TTL, 1024).await.unwrap();
    assert!(
        matches!(&c.outcomes[0], OpOutcome::Send(SendOutcome::Duplicate(d)) if d.msg_id == 1),
        "{:?}",
        c.outcomes[0]
    );
}

/// Checksums recorded for 2003 and 2004.
async fn recorded_checksums(p: &PgPool) -> Vec<(i64, Vec<u8>)> {
    sqlx::query_as(
        "SELECT version, checksum FROM _sqlx_migrations WHERE version IN (2003, 2004) ORDER BY version",
    )
    .fetch_all(p)
    .await
    .unwrap()
}

#[tokio::test]
async fn upgrading_from_2002_keeps_the_data_and_suits_the_previous_binary() {
    let (t, p) = at_2002().await;
    seed(&p).await;
    for_db(&t.db).migrate().await.expect("migrate");
    assert_migrated(&t, &p).await;
    // Recorded with the released checksums, so the previous binary (a
    // rollback) validates this database and finds nothing to do.
    let released: Vec<(i64, Vec<u8>)> = RELEASED_POSTGRES_MIGRATIONS
        .iter()
        .map(|r| (r.version, r.checksum()))
        .collect();
    assert_eq!(recorded_checksums(&p).await, released);
    previous_release()
        .run(&p)
        .await
        .expect("the previous binary starts on it");
    for_db(&t.db).migrate().await.expect("migrating again");
    t.cleanup().await;
}

#[tokio::test]
async fn a_database_that_applied_the_released_texts_still_starts() {
    let (t, p) = at_2002().await;
    seed(&p).await;
    previous_release()
        .run(&p)
        .await
        .expect("released 2003 and 2004");
    let before = recorded_checksums(&p).await;
    assert_eq!(before.len(), 2);
    for_db(&t.db)
        .migrate()
        .await
        .expect("the new binary accepts the released checksums");
    assert_eq!(recorded_checksums(&p).await, before, "history untouched");
    assert_migrated(&t, &p).await;
    t.cleanup().await;
}

/// Waits (without a deadline that could flake: a generous bound only against
/// a hang) until `sql` returns a row, polling on `conn`.
async fn wait_for(conn: &mut PoolConnection<Postgres>, sql: &'static str) -> i32 {
    for _ in 0..6_000 {
        let found: Option<i32> = sqlx::query_scalar(sql)
            .fetch_optional(&mut **conn)
            .await
            .unwrap();
        if let Some(pid) = found {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {sql}");
}

/// The probe: a read and a write on chat_messages that give up at once if
/// they have to wait for a table lock.
async fn probe(conn: &mut PoolConnection<Postgres>, client_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SET lock_timeout = '100ms'")
        .execute(&mut **conn)
        .await?;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chat_messages WHERE sender_user = 'alice'")
            .fetch_one(&mut **conn)
            .await?;
    // As the previous release writes: no generation column.
    sqlx::query(
        "INSERT INTO chat_messages (sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, created_at, expires_at)
         VALUES ('alice', 1, $1, 'u', 'bob', 'text', NULL, 40, 99999999)",
    )
    .bind(client_id)
    .execute(&mut **conn)
    .await?;
    Ok(n)
}

fn lock_timed_out(r: &Result<i64, sqlx::Error>) -> bool {
    matches!(r, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03"))
}

/// Reads and writes go on while 2004 builds its index; an attempt that fails
/// there leaves an INVALID index, and the next attempt drops it and
/// completes; rows the previous release wrote meanwhile get their generation.
///
/// The build is held by a REPEATABLE READ transaction that took its
/// snapshot first: a concurrent build waits for older snapshots before it
/// marks the index valid, while holding only SHARE UPDATE EXCLUSIVE.
#[tokio::test]
async fn reads_and_writes_go_on_while_the_index_builds() {
    let (t, p) = at_2002().await;
    seed(&p).await;
    sqlx::query(
        "INSERT INTO chat_messages (sender_user, sender_device, client_id, conv_kind, conv_id, kind, body, created_at, expires_at)
         SELECT 'alice', 1, 'bulk-' || i, 'u', 'bob', 'text', NULL, i, 99999999 FROM generate_series(1, $1) i",
    )
    .bind(MANY)
    .execute(&p)
    .await
    .unwrap();

    let mut holder = p.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1;")
        .execute(&mut *holder)
        .await
        .unwrap();
    let store = for_db(&t.db);
    let first = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    let mut watcher = p.acquire().await.unwrap();
    let migrator = wait_for(
        &mut watcher,
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND query LIKE '%CREATE UNIQUE INDEX CONCURRENTLY%' AND wait_event = 'virtualxid'",
    )
    .await;
    let strongest: Vec<String> = sqlx::query_scalar(
        "SELECT mode FROM pg_locks WHERE relation = 'chat_messages'::regclass AND pid = $1",
    )
    .bind(migrator)
    .fetch_all(&mut *watcher)
    .await
    .unwrap();
    assert_eq!(strongest, ["ShareUpdateExclusiveLock"], "the build's lock");

    let mut prober = p.acquire().await.unwrap();
    let read = probe(&mut prober, "during-build").await;
    assert_eq!(
        read.expect("read and write while the index builds"),
        MANY + 3
    );

    // The attempt fails at the build (as an operator's cancel or a lost
    // connection would): the index stays, INVALID.
    sqlx::query("SELECT pg_cancel_backend($1)")
        .bind(migrator)
        .execute(&mut *watcher)
        .await
        .unwrap();
    let failed = first.await.unwrap();
    assert!(failed.is_err(), "the cancelled attempt reports failure");
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'chat_messages_client_id_2004'::regclass",
    )
    .fetch_one(&mut *watcher)
    .await
    .unwrap();
    assert!(!valid, "the interrupted build left an INVALID index");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE version >= 2003")
            .fetch_all(&mut *watcher)
            .await
            .unwrap();
    assert_eq!(versions, [2003], "2004 is not recorded");

    sqlx::raw_sql("COMMIT").execute(&mut *holder).await.unwrap();
    drop((holder, watcher, prober));
    store.migrate().await.expect("the next attempt completes");
    assert_migrated(&t, &p).await;
    assert_eq!(
        generation_of_message(&p, "during-build").await,
        11,
        "a row written during the migration got its generation"
    );
    assert_eq!(generation_of_message(&p, &format!("bulk-{MANY}")).await, 11);
    t.cleanup().await;
}

/// The probe above does detect blocking: the released 2003, waiting for its
/// ACCESS EXCLUSIVE lock behind a reader, stops the next reader too (and
/// once it has the lock, every reader until its index is built).
#[tokio::test]
async fn the_released_2003_blocked_reads() {
    let (t, p) = at_2002().await;
    seed(&p).await;
    let mut holder = p.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM chat_messages;")
        .execute(&mut *holder)
        .await
        .unwrap();
    let released = RELEASED_POSTGRES_MIGRATIONS[0].sql;
    let old = tokio::spawn({
        let p = p.clone();
        async move { sqlx::raw_sql(released).execute(&p).await.map(|_| ()) }
    });
    let mut watcher = p.acquire().await.unwrap();
    wait_for(
        &mut watcher,
        "SELECT pid FROM pg_locks
          WHERE relation = 'chat_messages'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted",
    )
    .await;
    let mut prober = p.acquire().await.unwrap();
    let r = probe(&mut prober, "during-2003").await;
    assert!(lock_timed_out(&r), "the read was not blocked: {r:?}");
    sqlx::raw_sql("COMMIT").execute(&mut *holder).await.unwrap();
    old.await.unwrap().expect("released 2003 completes");
    let key = text(
        &p,
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'chat_messages_client_id'",
    )
    .await;
    assert_eq!(key, "UNIQUE (client_id, sender_user, sender_device)");
    drop((holder, watcher, prober));
    t.cleanup().await;
}

/// A step whose brief ACCESS EXCLUSIVE lock is not to be had (a long
/// transaction reads the table) gives up after its lock_timeout, letting the
/// reads queued behind it through, and tries again until it gets the lock.
#[tokio::test]
async fn a_step_that_cannot_lock_gives_way_and_tries_again() {
    let (t, p) = at_2002().await;
    seed(&p).await;
    let mut holder = p.acquire().await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM chat_messages;")
        .execute(&mut *holder)
        .await
        .unwrap();
    let migration = tokio::spawn({
        let store = for_db(&t.db);
        async move { store.migrate().await }
    });
    let mut watcher = p.acquire().await.unwrap();
    const WAITING: &str = "SELECT pid FROM pg_locks
          WHERE relation = 'chat_messages'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted";
    const NOT_WAITING: &str = "SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM pg_locks
          WHERE relation = 'chat_messages'::regclass AND mode = 'AccessExclusiveLock')";
    // Waiting, then not (the holder still holds its lock, so the request
    // timed out rather than succeeded), then waiting again: a retry.
    wait_for(&mut watcher, WAITING).await;
    wait_for(&mut watcher, NOT_WAITING).await;
    wait_for(&mut watcher, WAITING).await;
    assert!(!migration.is_finished());
    sqlx::raw_sql("COMMIT").execute(&mut *holder).await.unwrap();
    migration
        .await
        .unwrap()
        .expect("completes once the lock is free");
    drop((holder, watcher));
    assert_migrated(&t, &p).await;
    t.cleanup().await;
}
