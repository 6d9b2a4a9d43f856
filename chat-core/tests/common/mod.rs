//! Shared test fixtures: fresh databases on both engines with auth's tables.
#![allow(dead_code, unreachable_pub)]

use natter_common::Db;
use natter_common::testing::TestDb;

/// A fresh database of the engine, with auth's tables and chat's migrations.
pub async fn fresh(engine: &str) -> TestDb {
    let t = match engine {
        "sqlite" => TestDb::sqlite().await,
        _ => TestDb::postgres().await,
    };
    let sql = include_str!("../fixtures/auth_tables.sql");
    match &t.db {
        Db::Sqlite(p) => {
            sqlx::raw_sql(sql).execute(p).await.unwrap();
        }
        Db::Postgres(p) => {
            sqlx::raw_sql(sql).execute(p).await.unwrap();
        }
    }
    natter_chat::store::for_db(&t.db).migrate().await.unwrap();
    t
}

async fn exec(db: &Db, sql: &'static str, binds: &[&str], ints: &[i64]) {
    macro_rules! run {
        ($p:expr) => {{
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(*b);
            }
            for i in ints {
                q = q.bind(*i);
            }
            q.execute($p).await.unwrap();
        }};
    }
    match db {
        Db::Sqlite(p) => run!(p),
        Db::Postgres(p) => run!(p),
    }
}

/// Creates an account with devices `(device_id, generation)`.
pub async fn add_user(db: &Db, user: &str, devices: &[(i64, i64)]) {
    exec(
        db,
        "INSERT INTO accounts (user_id, number, created_at) VALUES ($1, $2, $3)",
        &[user, user],
        &[0],
    )
    .await;
    for &(d, g) in devices {
        add_device(db, user, d, g).await;
    }
}

/// Adds a device.
pub async fn add_device(db: &Db, user: &str, device: i64, generation: i64) {
    exec(
        db,
        "INSERT INTO devices (user_id, name, device_id, created_at, last_seen_at, generation) VALUES ($1, $2, $3, 0, 0, $4)",
        &[user, "dev"],
        &[device, generation],
    )
    .await;
}

/// Removes a device (as auth does on unlink).
pub async fn remove_device(db: &Db, user: &str, device: i64) {
    exec(
        db,
        "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
        &[user],
        &[device],
    )
    .await;
}

/// Changes a device's generation (as auth does on logout).
pub async fn set_generation(db: &Db, user: &str, device: i64, generation: i64) {
    exec(
        db,
        "UPDATE devices SET generation = $2 WHERE user_id = $1 AND device_id = $3",
        &[user],
        &[generation, device],
    )
    .await;
}
