//! The outbox backend: JSON lines in a file, for QA and the embedded default.

use super::{PushError, PushNotice, PushSender};
use async_trait::async_trait;
use natter_common::UnixMillis;
use natter_proto::DeviceId;
use serde::Serialize;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Appends `{"user_id","device_id","reason","at"}` lines to a file.
pub struct OutboxPush {
    path: PathBuf,
    lock: Mutex<()>,
}

#[derive(Serialize)]
struct OutboxLine<'a> {
    user_id: &'a str,
    device_id: DeviceId,
    reason: &'static str,
    at: UnixMillis,
}

impl OutboxPush {
    /// Writes to `path`, creating its directory when needed.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }
}

#[async_trait]
impl PushSender for OutboxPush {
    async fn send(&self, batch: &[PushNotice]) -> Result<(), PushError> {
        let mut bytes = Vec::new();
        for n in batch {
            let line = OutboxLine {
                user_id: n.user.as_str(),
                device_id: n.device,
                reason: n.reason.as_str(),
                at: n.at,
            };
            serde_json::to_writer(&mut bytes, &line).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let _guard = self.lock.lock().await;
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        f.write_all(&bytes).await?;
        f.flush().await?;
        Ok(())
    }
}
