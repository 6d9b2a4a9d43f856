//! Secrets generated at first start in the embedded shape, kept under
//! `<data-dir>/secrets/` with mode 0600, so `natter serve` needs no set-up and
//! tokens stay valid across restarts. Configured values always win.

use base64::Engine;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Returns the configured secret, or the one stored as `<data-dir>/secrets/<name>`,
/// creating 32 random bytes (base64) there on first use.
pub fn configured_or_generated(
    configured: &crate::Secret,
    data_dir: &Path,
    name: &str,
) -> std::io::Result<crate::Secret> {
    if !configured.is_empty() {
        return Ok(configured.clone());
    }
    let dir = data_dir.join("secrets");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(crate::Secret::new(s.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value = base64::engine::general_purpose::STANDARD.encode(crate::random::bytes::<32>());
    // create_new: if two processes race, one wins and the other reads its value.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(value.as_bytes())?;
            f.sync_all()?;
            Ok(crate::Secret::new(value))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(crate::Secret::new(std::fs::read_to_string(&path)?.trim()))
        }
        Err(e) => Err(e),
    }
}
