//! Databases the tests create for the processes they start.

use anyhow::Context;

/// A fresh PostgreSQL database for a child process; returns its URL.
pub async fn create_postgres_database() -> anyhow::Result<String> {
    use sqlx::Connection;
    let admin = natter_common::testing::postgres_admin_url();
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .with_context(|| {
            format!("PostgreSQL is required and not reachable at {admin}; run scripts/test-deps.sh")
        })?;
    let name = format!("natter_test_{}", uuid::Uuid::new_v4().simple());
    // The name is our own hex, never input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Ok(format!("{base}/{name}"))
}
