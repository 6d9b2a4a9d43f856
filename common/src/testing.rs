//! Test helpers for other crates (feature `testing`): fresh databases on real
//! engines. PostgreSQL is required, never skipped: if the server is missing the
//! test fails and says how to start it.

use crate::db::{DatabaseConfig, Db};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Where the PostgreSQL test server is: `NATTER_TEST_POSTGRES_URL`, default
/// `postgres://postgres@127.0.0.1:5432/postgres` (trust auth, as on CI machines).
pub fn postgres_admin_url() -> String {
    std::env::var("NATTER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test, dropped by [`TestDb::cleanup`].
pub struct TestDb {
    /// The open pool.
    pub db: Db,
    /// PostgreSQL database name, if any.
    pg_name: Option<String>,
    /// SQLite temp dir, removed on drop.
    _dir: Option<TempDir>,
}

impl TestDb {
    /// A fresh SQLite database in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = TempDir::new("natter-test-sqlite");
        let cfg = DatabaseConfig {
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&cfg, dir.path())
            .await
            .expect("open sqlite test database");
        Self {
            db,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// A fresh, empty PostgreSQL database on the test server. Panics with a
    /// clear message if the server cannot be reached.
    pub async fn postgres() -> Self {
        let admin_url = postgres_admin_url();
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for this test and is not reachable at {admin_url}: {e}. \
                 Run scripts/test-deps.sh (it installs and starts PostgreSQL) or set NATTER_TEST_POSTGRES_URL."
            )
        });
        let name = format!("natter_test_{}", hex::encode(crate::random::bytes::<8>()));
        // The name is our own hex, never user input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = replace_db_name(&admin_url, &name);
        let cfg = DatabaseConfig {
            url: crate::Secret::new(url),
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        let db = Db::connect(&cfg, std::path::Path::new("."))
            .await
            .expect("connect to the new test database");
        Self {
            db,
            pg_name: Some(name),
            _dir: None,
        }
    }

    /// Closes the pool and drops the PostgreSQL database (SQLite files go with
    /// the temp dir).
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some(name) = &self.pg_name
            && let Ok(mut admin) = PgConnection::connect(&postgres_admin_url()).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    // postgres://user@host:port/db?params -> …/name?params
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let root = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Creates `<tmp>/<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}",
            hex::encode(crate::random::bytes::<8>())
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::replace_db_name("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            super::replace_db_name("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            super::replace_db_name("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
