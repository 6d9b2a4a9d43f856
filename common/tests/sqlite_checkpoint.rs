//! The WAL is checkpointed by the background task, not inside commits.

use natter_common::db::{DatabaseConfig, Db};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_reaches_the_database_file_without_inline_checkpoints() {
    let dir = std::env::temp_dir().join(format!("natter-checkpoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = Db::connect(&DatabaseConfig::default(), &dir)
        .await
        .expect("open SQLite");
    let Db::Sqlite(pool) = &db else {
        panic!("the default database is SQLite");
    };
    let inline: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .expect("read pragma");
    assert_eq!(inline, 0, "commits must not checkpoint inline");
    sqlx::query("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        .execute(pool)
        .await
        .expect("create table");
    // 4 MiB in 256 commits: far past SQLite's 1000-page inline threshold.
    let chunk = vec![7u8; 16 * 1024];
    for _ in 0..256 {
        sqlx::query("INSERT INTO blobs (data) VALUES ($1)")
            .bind(&chunk)
            .execute(pool)
            .await
            .expect("insert");
    }
    let file = dir.join("natter.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let size = std::fs::metadata(&file).expect("database file").len();
        if size >= 4 * 1024 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WAL was not checkpointed into the database file (size {size})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(rows, 256);
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
