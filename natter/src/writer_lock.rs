//! One process at a time on an SQLite database.
//!
//! SQLite's own locks keep concurrent writers from corrupting the file, but
//! two `natter serve` processes on one database would each run the chat
//! writer, the purge and the call log as if they were alone (and a second
//! embedded pod, started while the first drains, would). So the process that
//! opens an SQLite database first takes an exclusive `flock` on a file beside
//! it and keeps it until it exits; the kernel drops it when the process dies,
//! even by SIGKILL. A second process waits for it (a replacement pod while the
//! old one drains), then gives up with an error naming the holder.

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Held for the life of the process.
pub(crate) struct WriterLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("path", &self.path)
            .finish()
    }
}

/// The lock file of database file `db`: `natter.db` -> `natter.db.lock`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

/// Takes the lock when `cfg` runs on an SQLite file (`None` on PostgreSQL).
pub(crate) async fn for_config(cfg: &crate::config::Config) -> anyhow::Result<Option<WriterLock>> {
    match natter_common::db::sqlite_file(&cfg.database, &cfg.data_dir) {
        Some(db) => {
            let wait = Duration::from_secs(cfg.database.sqlite_lock_wait_secs);
            Ok(Some(acquire(&db, wait).await?))
        }
        None => Ok(None),
    }
}

/// Takes the lock for database file `db`, waiting up to `wait` for another
/// process to let it go.
pub(crate) async fn acquire(db: &Path, wait: Duration) -> anyhow::Result<WriterLock> {
    let path = lock_path(db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let started = Instant::now();
    let mut last_said = None::<Instant>;
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                // The holder's pid, for the error a waiting process prints.
                lock.set_len(0)?;
                lock.rewind()?;
                write!(lock, "{}", std::process::id())?;
                return Ok(WriterLock { _lock: lock, path });
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = holder(&mut file);
                if started.elapsed() >= wait {
                    anyhow::bail!(
                        "another natter process ({holder}) has the database {} open; \
                         waited {} s (database.sqlite_lock_wait_secs) for it to exit. Two processes must never run on one \
                         SQLite database: stop the other one (or use PostgreSQL to run many)",
                        db.display(),
                        wait.as_secs()
                    );
                }
                if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(db = %db.display(), %holder, "another natter process has the database open; waiting for it to exit");
                    last_said = Some(Instant::now());
                }
            }
            Err((_, e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        tokio::time::sleep(Duration::from_millis(250).min(wait)).await;
    }
}

fn holder(file: &mut File) -> String {
    let mut pid = String::new();
    match file.read_to_string(&mut pid) {
        Ok(_) if !pid.trim().is_empty() => format!("pid {}", pid.trim()),
        _ => "pid unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        assert_eq!(
            lock_path(Path::new("/data/natter.db")),
            PathBuf::from("/data/natter.db.lock")
        );
        assert_eq!(lock_path(Path::new("x.db")), PathBuf::from("x.db.lock"));
    }

    #[tokio::test]
    async fn a_second_holder_waits_then_fails_naming_the_first() {
        let dir = natter_common::testing::TempDir::new("writer-lock");
        let db = dir.path().join("natter.db");
        let first = acquire(&db, Duration::from_secs(1)).await.unwrap();
        // flock is per open file description, so a second open in this
        // process contends like another process would.
        let err = acquire(&db, Duration::from_millis(300)).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("natter.db"), "{msg}");
        drop(first);
        let again = acquire(&db, Duration::from_millis(300)).await;
        assert!(again.is_ok(), "{again:?}");
    }
}
