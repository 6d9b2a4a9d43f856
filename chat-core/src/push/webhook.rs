//! The webhook backend: the devices' tokens posted to a gateway the operator runs.

use super::{PushError, PushNotice, PushSender};
use crate::config::PushConfig;
use crate::store::{DeviceRef, MessageStore};
use async_trait::async_trait;
use natter_common::UnixMillis;
use natter_proto::DeviceId;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Posts `{"notifications":[{"user_id","device_id","platform","token","voip_token"?,"reason","at"}]}`
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
    #[serde(skip_serializing_if = "Option::is_none")]
    voip_token: Option<&'a str>,
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
        let devices: Vec<DeviceRef> = batch.iter().map(PushNotice::device).collect();
        let tokens = self
            .store
            .push_tokens(&devices)
            .await
            .map_err(|e| PushError::Store(e.to_string()))?;
        if tokens.is_empty() {
            return Ok(());
        }
        // One item per device and reason (a device may be in the batch for a
        // message and for a call); devices without a registration are skipped.
        let mut items: Vec<WebhookItem<'_>> = Vec::new();
        for (n, d) in batch.iter().zip(&devices) {
            let reason = n.reason.as_str();
            if items.iter().any(|i| {
                i.user_id == d.user.as_str() && i.device_id == d.device && i.reason == reason
            }) {
                continue;
            }
            if let Some((_, t)) = tokens.iter().find(|(td, _)| td == d) {
                items.push(WebhookItem {
                    user_id: d.user.as_str(),
                    device_id: d.device,
                    platform: &t.platform,
                    token: &t.token,
                    voip_token: t.voip_token.as_deref(),
                    reason,
                    at: n.at,
                });
            }
        }
        let body = WebhookBody {
            notifications: items,
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
