//! Secrets generated at first start in the embedded shape, kept under
//! `<data-dir>/secrets/` with mode 0600, so `natter serve` needs no set-up and
//! tokens stay valid across restarts. Configured values always win.
//!
//! A key that signs tokens or URLs must never be empty or guessable: an empty
//! file left by a crash between create and write once became an empty HMAC key
//! that anyone could sign with. So files are written whole (temp file, fsync,
//! link into place, fsync of the directory) and every key, stored or configured, is
//! checked for a minimum length before use.

use base64::Engine;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The shortest configured key accepted (bytes). Generated keys are 32 random
/// bytes (44 base64 characters).
pub const MIN_CONFIGURED_KEY_BYTES: usize = 16;
/// The shortest content a generated key file may hold (a 32-byte key in base64 is 44).
const MIN_STORED_KEY_CHARS: usize = 43;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{what} is {len} bytes long; a signing key needs at least {min}")]
    TooShort {
        what: String,
        len: usize,
        min: usize,
    },
    #[error(
        "{} holds {len} characters, not a generated key (a crash while it was written, or an edit); \
         delete it to generate a new key (tokens or URLs signed with the old one stop working)",
        path.display()
    )]
    DamagedFile { path: PathBuf, len: usize },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks that a configured key (`what` names its setting) is long enough.
pub fn check_configured(what: &str, key: &crate::Secret) -> Result<(), SecretError> {
    let len = key.expose().len();
    if len < MIN_CONFIGURED_KEY_BYTES {
        return Err(SecretError::TooShort {
            what: what.to_string(),
            len,
            min: MIN_CONFIGURED_KEY_BYTES,
        });
    }
    Ok(())
}

/// Returns the configured secret (checked by [`check_configured`]), or the one
/// stored as `<data-dir>/secrets/<name>`, creating 32 random bytes (base64) there
/// on first use.
pub fn configured_or_generated(
    configured: &crate::Secret,
    data_dir: &Path,
    name: &str,
) -> Result<crate::Secret, SecretError> {
    if !configured.is_empty() {
        check_configured(name, configured)?;
        return Ok(configured.clone());
    }
    let dir = data_dir.join("secrets");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SecretError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    let path = dir.join(name);
    if let Some(stored) = read_stored(&path)? {
        return Ok(stored);
    }
    let value = base64::engine::general_purpose::STANDARD.encode(crate::random::bytes::<32>());
    write_whole(&dir, &path, &value).map_err(io(&path))?;
    // If another process raced us, its link or ours won; both read the one that stayed.
    read_stored(&path)?.ok_or_else(|| SecretError::Io {
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "vanished after writing"),
    })
}

/// The key stored at `path`, `None` when there is no file, an error when the file
/// is there but cannot be a key.
fn read_stored(path: &Path) -> Result<Option<crate::Secret>, SecretError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let key = s.trim();
            if key.len() < MIN_STORED_KEY_CHARS {
                return Err(SecretError::DamagedFile {
                    path: path.to_path_buf(),
                    len: key.len(),
                });
            }
            Ok(Some(crate::Secret::new(key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SecretError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `value` to `path` so that no reader ever sees a partial file: a
/// uniquely named 0600 temp file, fsync, link to `path`, fsync of the directory.
fn write_whole(dir: &Path, path: &Path, value: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        crate::random::token()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.sync_all()?;
        drop(f);
        // A hard link, unlike a rename, fails when `path` exists: the first whole
        // key stays, a racing creator's is dropped.
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => std::fs::File::open(dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    /// A scratch data dir, removed when dropped.
    struct DataDir(PathBuf);
    impl DataDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for DataDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn data_dir() -> DataDir {
        let p = std::env::temp_dir().join(format!("natter-secrets-{}", crate::random::token()));
        std::fs::create_dir_all(&p).unwrap();
        DataDir(p)
    }

    #[test]
    fn generates_once_and_reads_the_same_key_back() {
        let d = data_dir();
        let a = configured_or_generated(&Secret::default(), d.path(), "k").unwrap();
        let b = configured_or_generated(&Secret::default(), d.path(), "k").unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 44);
        let mode = std::fs::metadata(d.path().join("secrets/k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(d.path().join("secrets"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k")]);
    }

    #[test]
    fn an_empty_or_truncated_key_file_is_refused_not_used() {
        for content in ["", "\n", "short", "dGhpcyBpcyBub3QgMzIgYnl0ZXM="] {
            let d = data_dir();
            std::fs::create_dir_all(d.path().join("secrets")).unwrap();
            std::fs::write(d.path().join("secrets/token-signing-key"), content).unwrap();
            let err = configured_or_generated(&Secret::default(), d.path(), "token-signing-key")
                .expect_err("a damaged key file must not become a key");
            assert!(
                matches!(err, SecretError::DamagedFile { len, .. } if len == content.trim().len()),
                "{err}"
            );
            assert!(err.to_string().contains("delete it"), "{err}");
        }
    }

    #[test]
    fn a_short_configured_key_is_refused() {
        let d = data_dir();
        let err = configured_or_generated(&Secret::new("short"), d.path(), "k").unwrap_err();
        assert!(
            matches!(
                err,
                SecretError::TooShort {
                    len: 5,
                    min: 16,
                    ..
                }
            ),
            "{err}"
        );
        let ok = configured_or_generated(&Secret::new("sixteen-bytes-ok"), d.path(), "k").unwrap();
        assert_eq!(ok.expose(), "sixteen-bytes-ok");
        assert!(!d.path().join("secrets/k").exists());
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let d = data_dir();
        let dir = d.path().to_path_buf();
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let dir = dir.clone();
                    s.spawn(move || {
                        configured_or_generated(&Secret::default(), &dir, "k")
                            .unwrap()
                            .expose()
                            .to_string()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored = std::fs::read_to_string(dir.join("secrets/k")).unwrap();
        for k in keys {
            assert_eq!(k, stored);
        }
    }
}
