//! Waking offline devices. A [`PushSender`] gets batches of notices (who to
//! wake, never what was said): the outbox (default) appends JSON lines to
//! `<data-dir>/outbox/push.jsonl`; the webhook posts to an FCM/APNs-style
//! gateway the devices' push tokens, with retries.

use crate::config::{PushBackend, PushConfig};
use crate::store::{DeviceRef, MessageStore};
use async_trait::async_trait;
use natter_common::UnixMillis;
use natter_proto::{DeviceId, UserId};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, mpsc};

/// Wake this device: it has messages waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNotice {
    /// Account.
    pub user: UserId,
    /// Device.
    pub device: DeviceId,
    /// Its credential generation.
    pub generation: i64,
    /// When the message (or call) that triggered it happened.
    pub at: UnixMillis,
    /// Why the device is woken.
    pub reason: PushReason,
}

/// Why a device is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushReason {
    /// Messages are waiting.
    Message,
    /// A call is ringing (a VoIP push: the app should connect and fetch the offer).
    Call,
}

impl PushReason {
    /// As written in the outbox and the webhook body.
    pub fn as_str(self) -> &'static str {
        match self {
            PushReason::Message => "message",
            PushReason::Call => "call",
        }
    }
}

/// Why a push batch failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Writing the outbox failed.
    #[error("push outbox: {0}")]
    Outbox(#[from] std::io::Error),
    /// The gateway refused or never answered.
    #[error("push webhook: {0}")]
    Webhook(String),
}

/// Delivers push notices.
#[async_trait]
pub trait PushSender: Send + Sync + 'static {
    /// Sends one batch.
    async fn send(&self, batch: &[PushNotice]) -> Result<(), PushError>;
}

/// Builds the sender the config asks for.
pub fn from_config(
    cfg: &PushConfig,
    data_dir: &Path,
    store: Arc<dyn MessageStore>,
) -> Result<Arc<dyn PushSender>, String> {
    Ok(match cfg.backend {
        PushBackend::Outbox => {
            Arc::new(OutboxPush::new(data_dir.join("outbox").join("push.jsonl")))
        }
        PushBackend::Webhook => Arc::new(WebhookPush::new(cfg, store)?),
    })
}

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

/// Posts `{"notifications":[{"user_id","device_id","platform","token","reason","at"}]}`
/// for the devices that registered a push token.
pub struct WebhookPush {
    client: reqwest::Client,
    url: String,
    authorization: natter_common::Secret,
    attempts: u32,
    store: Arc<dyn MessageStore>,
}

#[derive(Serialize)]
struct WebhookBody<'a> {
    notifications: Vec<WebhookItem<'a>>,
}

#[derive(Serialize)]
struct WebhookItem<'a> {
    user_id: &'a str,
    device_id: DeviceId,
    platform: &'a str,
    token: &'a str,
    reason: &'static str,
    at: UnixMillis,
}

impl WebhookPush {
    /// A sender for `cfg` (backend webhook).
    pub fn new(cfg: &PushConfig, store: Arc<dyn MessageStore>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.webhook_timeout_ms))
            .build()
            .map_err(|e| format!("chat.push: cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: cfg.webhook_url.clone(),
            authorization: cfg.webhook_authorization.clone(),
            attempts: cfg.webhook_attempts.max(1),
            store,
        })
    }
}

#[async_trait]
impl PushSender for WebhookPush {
    async fn send(&self, batch: &[PushNotice]) -> Result<(), PushError> {
        let devices: Vec<DeviceRef> = batch
            .iter()
            .map(|n| DeviceRef {
                user: n.user.clone(),
                device: n.device,
                generation: n.generation,
            })
            .collect();
        let tokens = self
            .store
            .push_tokens(&devices)
            .await
            .map_err(|e| PushError::Webhook(e.to_string()))?;
        if tokens.is_empty() {
            return Ok(());
        }
        let at_of = |d: &DeviceRef| {
            batch
                .iter()
                .find(|n| n.user == d.user && n.device == d.device)
                .map(|n| n.at)
                .unwrap_or_default()
        };
        let reason_of = |d: &DeviceRef| {
            batch
                .iter()
                .find(|n| n.user == d.user && n.device == d.device)
                .map_or("message", |n| n.reason.as_str())
        };
        let body = WebhookBody {
            notifications: tokens
                .iter()
                .map(|(d, t)| WebhookItem {
                    user_id: d.user.as_str(),
                    device_id: d.device,
                    platform: &t.platform,
                    token: &t.token,
                    reason: reason_of(d),
                    at: at_of(d),
                })
                .collect(),
        };
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
            }
            let mut req = self.client.post(&self.url).json(&body);
            if !self.authorization.is_empty() {
                req = req.header(reqwest::header::AUTHORIZATION, self.authorization.expose());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                // 4xx other than 429 will not get better by retrying.
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    return Err(PushError::Webhook(format!(
                        "gateway answered {}",
                        r.status()
                    )));
                }
                Ok(r) => last = format!("gateway answered {}", r.status()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(PushError::Webhook(format!(
            "{} attempts failed; last: {last}",
            self.attempts
        )))
    }
}

/// Most notices sent in one batch.
const MAX_BATCH: usize = 256;

/// Sends queued notices until the channel closes.
pub(crate) async fn run(mut rx: mpsc::Receiver<PushNotice>, sender: Arc<dyn PushSender>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match sender.send(&batch).await {
            Ok(()) => {
                metrics::counter!("chat_push_total", "result" => "ok").increment(batch.len() as u64)
            }
            Err(e) => {
                metrics::counter!("chat_push_total", "result" => "error")
                    .increment(batch.len() as u64);
                tracing::warn!(error = %e, notices = batch.len(), "push failed");
            }
        }
        batch.clear();
    }
}
