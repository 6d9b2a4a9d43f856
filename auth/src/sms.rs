//! Sending one-time codes. The outbox (default) appends JSON lines to a file that
//! people and QA read; the webhook posts to an SMS/voice provider with retries;
//! `twilio` sends through Twilio's Messages and Calls APIs. None logs the code.
//! Every send is counted in `auth_sms_provider_total{provider,result}`.

use crate::config::{SmsBackend, SmsConfig};
use crate::phone::E164;
use async_trait::async_trait;
use serde::Serialize;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// How the code is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Text message.
    Sms,
    /// Phone call reading the code.
    Voice,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Sms => "sms",
            Transport::Voice => "voice",
        }
    }
}

/// One code to deliver.
#[derive(Debug, Clone)]
pub struct CodeMessage {
    /// Recipient.
    pub to: E164,
    /// The code (never logged).
    pub code: String,
    /// SMS or voice.
    pub transport: Transport,
    /// The registration session, for correlation in the outbox.
    pub session_id: String,
}

/// Why a code could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// Writing the outbox failed.
    #[error("sms outbox: {0}")]
    Outbox(#[from] std::io::Error),
    /// The provider refused or never answered.
    #[error("sms webhook: {0}")]
    Webhook(String),
    /// The provider will not deliver to this number by this transport (not a
    /// mobile number, a blocked destination): retrying will not help; the
    /// other transport may.
    #[error("sms provider refused the number: {0}")]
    Undeliverable(String),
    /// The provider failed (credentials refused, errors past the retries).
    #[error("sms provider: {0}")]
    Provider(String),
}

fn count(provider: &'static str, result: &'static str) {
    metrics::counter!("auth_sms_provider_total", "provider" => provider, "result" => result)
        .increment(1);
}

/// Delivers one-time codes.
#[async_trait]
pub trait SmsSender: Send + Sync + 'static {
    /// Sends `msg`, or says why not.
    async fn send(&self, msg: &CodeMessage) -> Result<(), SmsError>;
}

/// Builds the sender the config asks for.
pub fn from_config(
    cfg: &SmsConfig,
    data_dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn SmsSender>, String> {
    Ok(match cfg.backend {
        SmsBackend::Outbox => std::sync::Arc::new(OutboxSms::new(
            data_dir.join("outbox").join("sms.jsonl"),
            cfg.text_template.clone(),
        )),
        SmsBackend::Webhook => std::sync::Arc::new(WebhookSms::new(cfg.clone())?),
        SmsBackend::Twilio => std::sync::Arc::new(TwilioSms::new(cfg)?),
    })
}

/// Appends `{"to","code","transport","session_id","text","sent_at"}` lines to a file.
pub struct OutboxSms {
    path: PathBuf,
    text_template: String,
    // Appends from concurrent requests must not interleave within a line.
    lock: Mutex<()>,
    /// Past this size the file is rotated ([`OUTBOX_ROTATE_BYTES`]).
    rotate_bytes: u64,
}

#[derive(Serialize)]
struct OutboxLine<'a> {
    to: &'a str,
    code: &'a str,
    transport: &'a str,
    session_id: &'a str,
    text: String,
    sent_at: i64,
}

/// The outbox is rotated past this size: the file moves to `<name>.1`
/// (replacing the previous one), so at most twice this is kept. Codes live for
/// minutes; nothing needs the old lines for long.
pub const OUTBOX_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

impl OutboxSms {
    /// Writes to `path`, creating its directory when needed.
    pub fn new(path: PathBuf, text_template: String) -> Self {
        Self {
            path,
            text_template,
            lock: Mutex::new(()),
            rotate_bytes: OUTBOX_ROTATE_BYTES,
        }
    }

    async fn rotate_if_full(&self) -> std::io::Result<()> {
        match tokio::fs::metadata(&self.path).await {
            Ok(m) if m.len() >= self.rotate_bytes => {
                let mut old = self.path.clone().into_os_string();
                old.push(".1");
                tokio::fs::rename(&self.path, old).await
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl SmsSender for OutboxSms {
    async fn send(&self, msg: &CodeMessage) -> Result<(), SmsError> {
        let line = OutboxLine {
            to: msg.to.as_str(),
            code: &msg.code,
            transport: msg.transport.as_str(),
            session_id: &msg.session_id,
            text: self.text_template.replace("{code}", &msg.code),
            sent_at: natter_common::Clock::now_secs(&natter_common::SystemClock),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let _guard = self.lock.lock().await;
        if let Some(dir) = self.path.parent() {
            tokio::fs::create_dir_all(dir).await?;
            // Live codes: only the service's user may read them.
            tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await?;
        }
        self.rotate_if_full().await?;
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .await?;
        // An outbox written by an older version may be world-readable.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await?;
        f.write_all(&bytes).await?;
        f.flush().await?;
        count("outbox", "ok");
        tracing::info!(session_id = %msg.session_id, transport = msg.transport.as_str(), "code written to the sms outbox");
        Ok(())
    }
}

/// Posts codes to an HTTP provider, retrying server errors and timeouts with
/// exponential backoff (250 ms, 500 ms, 1 s, …).
pub struct WebhookSms {
    cfg: SmsConfig,
    client: reqwest::Client,
}

impl WebhookSms {
    /// A sender for `cfg` (which must be a webhook config).
    pub fn new(cfg: SmsConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.webhook_timeout_ms))
            .build()
            .map_err(|e| format!("auth.sms: cannot build HTTP client: {e}"))?;
        Ok(Self { cfg, client })
    }

    fn body(&self, msg: &CodeMessage) -> String {
        let text = self.cfg.text_template.replace("{code}", &msg.code);
        let json = self.cfg.webhook_content_type.contains("json");
        let esc = |s: &str| {
            if json {
                // serde_json escapes; strip the surrounding quotes.
                let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
                quoted[1..quoted.len() - 1].to_owned()
            } else {
                s.to_owned()
            }
        };
        self.cfg
            .webhook_body_template
            .replace("{to}", &esc(msg.to.as_str()))
            .replace("{code}", &esc(&msg.code))
            .replace("{transport}", &esc(msg.transport.as_str()))
            .replace("{text}", &esc(&text))
    }
}

#[async_trait]
impl SmsSender for WebhookSms {
    async fn send(&self, msg: &CodeMessage) -> Result<(), SmsError> {
        let body = self.body(msg);
        let mut last_error = String::new();
        for attempt in 1..=self.cfg.webhook_attempts {
            let mut req = self
                .client
                .post(&self.cfg.webhook_url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    &self.cfg.webhook_content_type,
                )
                .body(body.clone());
            if !self.cfg.webhook_authorization.is_empty() {
                req = req.header(
                    reqwest::header::AUTHORIZATION,
                    self.cfg.webhook_authorization.expose(),
                );
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    count("webhook", "ok");
                    tracing::info!(session_id = %msg.session_id, attempt, "code handed to the sms provider");
                    return Ok(());
                }
                Ok(resp) => {
                    let status = resp.status();
                    last_error = format!("provider answered {status}");
                    // A 4xx other than 429 will not get better by retrying.
                    if status.is_client_error() && status.as_u16() != 429 {
                        break;
                    }
                }
                Err(e) => last_error = format!("request failed: {e}"),
            }
            tracing::warn!(session_id = %msg.session_id, attempt, error = %last_error, "sms provider attempt failed");
            if attempt < self.cfg.webhook_attempts {
                tokio::time::sleep(Duration::from_millis(250 << (attempt - 1).min(5))).await;
            }
        }
        count("webhook", "failed");
        Err(SmsError::Webhook(last_error))
    }
}

/// Sends codes through Twilio: SMS by the Messages API, voice by the Calls
/// API with inline TwiML that reads the code twice.
pub struct TwilioSms {
    client: natter_providers::twilio::TwilioClient,
    text_template: String,
}

impl TwilioSms {
    /// Reads the credentials (start-up fails on a missing or unreadable token).
    pub fn new(cfg: &SmsConfig) -> Result<Self, String> {
        Ok(Self {
            client: natter_providers::twilio::TwilioClient::new(&cfg.twilio, "auth.sms.twilio")?,
            text_template: cfg.text_template.clone(),
        })
    }
}

#[async_trait]
impl SmsSender for TwilioSms {
    async fn send(&self, msg: &CodeMessage) -> Result<(), SmsError> {
        use natter_providers::{Delivery, twilio::Channel};
        let text = self.text_template.replace("{code}", &msg.code);
        let channel = match msg.transport {
            Transport::Sms => Channel::Sms,
            Transport::Voice => Channel::Voice,
        };
        let report = self.client.send(msg.to.as_str(), &text, channel).await;
        count("twilio", report.delivery.label());
        let transport = msg.transport.as_str();
        match report.delivery {
            Delivery::Delivered => {
                tracing::info!(session_id = %msg.session_id, transport, attempts = report.attempts, "code handed to twilio");
                Ok(())
            }
            Delivery::Rejected(why) => {
                tracing::warn!(session_id = %msg.session_id, transport, reason = %why, "twilio refused the number");
                Err(SmsError::Undeliverable(why))
            }
            Delivery::AuthFailed(why) => {
                tracing::error!(session_id = %msg.session_id, reason = %why, "twilio refused our credentials: check [auth.sms.twilio]");
                Err(SmsError::Provider(why))
            }
            Delivery::Unregistered => Err(SmsError::Provider("unexpected answer".into())),
            Delivery::Failed(why) => {
                tracing::warn!(session_id = %msg.session_id, transport, attempts = report.attempts, reason = %why, "twilio failed");
                Err(SmsError::Provider(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(code: &str) -> CodeMessage {
        CodeMessage {
            to: crate::phone::parse("+14155550100").unwrap(),
            code: code.into(),
            transport: crate::sms::Transport::Sms,
            session_id: "s1".into(),
        }
    }

    #[tokio::test]
    async fn the_outbox_is_private_and_rotated() {
        let dir = natter_common::random::token();
        let dir = std::env::temp_dir().join(format!("natter-outbox-{dir}"));
        let path = dir.join("outbox").join("sms.jsonl");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Left world-readable by an older version.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut outbox = OutboxSms::new(path.clone(), "{code}".into());
        outbox.rotate_bytes = 400;
        outbox.send(&message("111111")).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        for n in 0..10 {
            outbox.send(&message(&format!("2222{n:02}"))).await.unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("outbox/sms.jsonl.1")).unwrap();
        assert!(
            current.len() < 400 + 300,
            "rotated at 400 bytes: {}",
            current.len()
        );
        assert!(
            current.contains("222209"),
            "the newest code is in the current file"
        );
        assert!(
            !old.is_empty() && !old.contains("111111"),
            "only one old file is kept"
        );
        assert_eq!(mode(&dir.join("outbox/sms.jsonl.1")), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
