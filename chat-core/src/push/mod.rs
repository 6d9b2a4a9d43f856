//! Waking offline devices. A [`PushSender`] gets batches of notices (who to
//! wake, never what was said). Backends: the outbox (default) appends JSON
//! lines to `<data-dir>/outbox/push.jsonl`; the webhook posts the devices'
//! tokens to a gateway the operator runs; `providers` talks to FCM and APNs
//! itself ([`providers`]).

mod outbox;
pub mod providers;
mod webhook;

pub use outbox::OutboxPush;
pub use providers::ProviderPush;
pub use webhook::WebhookPush;

use crate::config::{PushBackend, PushConfig};
use crate::hub::Hub;
use crate::store::{MessageStore, Queued};
use async_trait::async_trait;
use natter_common::UnixMillis;
use natter_proto::{DeviceId, UserId};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;

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

impl PushNotice {
    /// The device (at its generation) to look the push registration up for.
    pub fn device(&self) -> crate::store::DeviceRef {
        crate::store::DeviceRef {
            user: self.user.clone(),
            device: self.device,
            generation: self.generation,
        }
    }
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
    /// The device tokens could not be read.
    #[error("push tokens: {0}")]
    Store(String),
}

/// Which message wake-ups may go out when several nodes push (the cluster
/// implements it: a per-device window in Redis).
#[async_trait]
pub(crate) trait PushWindows: Send + Sync {
    /// Which of `notices` may go out: a message wake-up goes once per device
    /// per `window_ms` across the cluster (each node's hub already holds it
    /// back locally; this stops two nodes from both pushing). Calls always go.
    async fn claim_push_windows(&self, notices: &[PushNotice], window_ms: i64) -> Vec<bool>;
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
        PushBackend::Providers => Arc::new(ProviderPush::new(cfg, store)?),
    })
}

/// Most notices sent in one batch.
const MAX_BATCH: usize = 256;

/// Sends queued notices until the channel closes. Message wake-ups pass the
/// cluster-wide window first (`window_ms`, the `min_interval_secs`).
pub(crate) async fn run(
    mut rx: mpsc::Receiver<PushNotice>,
    sender: Arc<dyn PushSender>,
    windows: Arc<dyn PushWindows>,
    window_ms: i64,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let open = windows.claim_push_windows(&batch, window_ms).await;
        let before = batch.len();
        let mut open = open.into_iter();
        batch.retain(|_| open.next().unwrap_or(true));
        if batch.len() < before {
            metrics::counter!("chat_push_total", "result" => "coalesced")
                .increment((before - batch.len()) as u64);
        }
        if batch.is_empty() {
            continue;
        }
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

/// Wakes an offline device with a push, unless one went out recently.
pub(crate) fn push_if_due(hub: &Hub, push: &mpsc::Sender<PushNotice>, q: &Queued, now: UnixMillis) {
    let is_msg = matches!(q.frame, crate::store::QueuedFrame::Msg(_));
    if is_msg && hub.should_push(&q.user, q.device, now) {
        let notice = PushNotice {
            user: q.user.clone(),
            device: q.device,
            generation: q.generation,
            at: now,
            reason: PushReason::Message,
        };
        if push.try_send(notice).is_err() {
            metrics::counter!("chat_push_total", "result" => "dropped").increment(1);
        }
    }
}
