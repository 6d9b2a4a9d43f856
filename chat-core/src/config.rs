//! `[chat]` settings. Every limit is explicit here, with its default, and named
//! by its key in validation errors.

use natter_common::Secret;
use natter_common::ratelimit::Quota;
use serde::{Deserialize, Serialize};

/// The chat service's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Largest message body, in bytes after base64 decoding.
    pub max_body_bytes: usize,
    /// Largest WebSocket text frame; a bigger one closes the socket with 1009.
    /// 0 derives it from `max_body_bytes` (base64 size plus 8 KiB for the envelope).
    pub max_frame_bytes: usize,
    /// How long undelivered messages (and their status) are kept.
    pub message_ttl_secs: u64,
    /// Messages and receipts sent to a device before it must acknowledge some
    /// (flow control for draining a backlog).
    pub window: u32,
    /// Frames buffered for one socket; a device that lets it fill is disconnected
    /// (close 4006) and its messages stay queued.
    pub outbound_queue: usize,
    /// Sends of one socket awaiting their commit; the socket is not read further
    /// until some commit (TCP back-pressure).
    pub max_pending_sends: u32,
    /// The server pings every this many seconds.
    pub heartbeat_secs: u32,
    /// A socket silent for this long is closed (4005).
    pub idle_timeout_secs: u32,
    /// A socket opened without an `Authorization` header must send `auth` within this.
    pub auth_timeout_secs: u32,
    /// Sockets from one client address (an IPv6 /64 counts as one) that have
    /// not yet authenticated; more are refused with 429 before the upgrade.
    pub max_unauthenticated_per_ip: u32,
    /// All frames of one socket.
    pub limit_frames: Quota,
    /// `send` frames of one socket.
    pub limit_sends: Quota,
    /// `send` frames of one account, all its sockets on this node together
    /// (several devices or sockets must not multiply `limit_sends`).
    pub limit_sends_per_user: Quota,
    /// Group changes (create, rename, add or remove members, admins) by one
    /// account through the REST API; each commits alone and may fan out a
    /// system message to 1,023 members.
    pub limit_group_writes: Quota,
    /// `typing` frames of one socket.
    pub limit_typing: Quota,
    /// Refused frames (rate-limited or invalid) a socket may send before it is
    /// closed as a flood (1008).
    pub limit_refused: Quota,
    /// Members per group (the creator included).
    pub max_group_members: u32,
    /// Longest group name, in characters.
    pub max_group_name_chars: usize,
    /// Presence subscriptions per socket.
    pub max_presence_subscriptions: usize,
    /// Entries in a contact list.
    pub max_contacts: usize,
    /// Most operations in one group commit.
    pub commit_max_batch: usize,
    /// Extra wait before a commit to gather a bigger batch, in microseconds (0 =
    /// commit as soon as the previous commit finished).
    pub commit_delay_us: u64,
    /// Operations queued for the writer before senders wait.
    pub writer_queue: usize,
    /// Connected devices are checked against auth's device table this often (a
    /// removed or logged-out device is disconnected with 4003).
    pub device_check_secs: u32,
    /// Expired messages and orphaned queue entries are purged this often.
    pub purge_interval_secs: u32,
    /// Last-seen times are written to the database this often.
    pub presence_flush_secs: u32,
    /// Largest JSON body of the REST endpoints.
    pub max_rest_body_bytes: usize,
    /// Initial read buffer of each socket (it grows for bigger frames); small
    /// keeps idle connections cheap.
    pub ws_read_buffer_bytes: usize,
    /// Bytes buffered before a socket write is issued (every batch of frames is
    /// flushed anyway).
    pub ws_write_buffer_bytes: usize,
    /// Push notifications for offline devices.
    pub push: PushConfig,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_frame_bytes: 0,
            message_ttl_secs: 30 * 24 * 3600,
            window: 256,
            outbound_queue: 1024,
            max_pending_sends: 256,
            heartbeat_secs: 30,
            idle_timeout_secs: 90,
            auth_timeout_secs: 10,
            max_unauthenticated_per_ip: 64,
            limit_frames: Quota::new(2000, 10),
            limit_sends: Quota::new(1000, 10),
            limit_sends_per_user: Quota::new(1500, 10),
            limit_group_writes: Quota::new(120, 3600),
            limit_typing: Quota::new(20, 10),
            limit_refused: Quota::new(100, 10),
            max_group_members: 1024,
            max_group_name_chars: 100,
            max_presence_subscriptions: 1024,
            max_contacts: 5000,
            commit_max_batch: 512,
            commit_delay_us: 0,
            writer_queue: 16_384,
            device_check_secs: 60,
            purge_interval_secs: 300,
            presence_flush_secs: 15,
            max_rest_body_bytes: 256 * 1024,
            ws_read_buffer_bytes: 4096,
            ws_write_buffer_bytes: 4096,
            push: PushConfig::default(),
        }
    }
}

impl ChatConfig {
    /// Checks what types cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.max_body_bytes > 16 * 1024 * 1024 {
            return Err("chat.max_body_bytes: must be within 1..=16777216".into());
        }
        if self.max_frame_bytes != 0
            && self.max_frame_bytes < natter_proto::Body::encoded_len(self.max_body_bytes) + 512
        {
            return Err("chat.max_frame_bytes: must be 0 (derived) or room for a base64 body of chat.max_body_bytes plus 512 bytes".into());
        }
        if self.message_ttl_secs < 60 {
            return Err("chat.message_ttl_secs: must be at least 60".into());
        }
        for (key, v) in [
            ("window", self.window as usize),
            ("outbound_queue", self.outbound_queue),
            ("max_pending_sends", self.max_pending_sends as usize),
            ("max_group_members", self.max_group_members as usize),
            ("max_group_name_chars", self.max_group_name_chars),
            ("commit_max_batch", self.commit_max_batch),
            ("writer_queue", self.writer_queue),
            ("heartbeat_secs", self.heartbeat_secs as usize),
            ("auth_timeout_secs", self.auth_timeout_secs as usize),
            (
                "max_unauthenticated_per_ip",
                self.max_unauthenticated_per_ip as usize,
            ),
            ("device_check_secs", self.device_check_secs as usize),
            ("purge_interval_secs", self.purge_interval_secs as usize),
            ("presence_flush_secs", self.presence_flush_secs as usize),
            ("ws_read_buffer_bytes", self.ws_read_buffer_bytes),
        ] {
            if v == 0 {
                return Err(format!("chat.{key}: must be at least 1"));
            }
        }
        if (self.outbound_queue as u64) < u64::from(self.window) + 16 {
            return Err("chat.outbound_queue: must be at least chat.window + 16".into());
        }
        if self.idle_timeout_secs <= self.heartbeat_secs {
            return Err("chat.idle_timeout_secs: must be greater than chat.heartbeat_secs".into());
        }
        if self.max_group_members < 2 {
            return Err("chat.max_group_members: must be at least 2".into());
        }
        for (key, q) in [
            ("limit_frames", self.limit_frames),
            ("limit_sends", self.limit_sends),
            ("limit_sends_per_user", self.limit_sends_per_user),
            ("limit_group_writes", self.limit_group_writes),
            ("limit_typing", self.limit_typing),
            ("limit_refused", self.limit_refused),
        ] {
            if q.count == 0 || q.period_secs == 0 {
                return Err(format!(
                    "chat.{key}: count and period_secs must be positive"
                ));
            }
        }
        self.push.validate()
    }

    /// The frame limit in force.
    pub fn frame_limit(&self) -> usize {
        if self.max_frame_bytes == 0 {
            natter_proto::Body::encoded_len(self.max_body_bytes) + 8 * 1024
        } else {
            self.max_frame_bytes
        }
    }

    /// Defaults with faster background loops, for tests.
    pub fn for_tests() -> Self {
        Self {
            device_check_secs: 1,
            presence_flush_secs: 1,
            ..Self::default()
        }
    }
}

/// `[chat.push]`: how offline devices are woken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// `outbox` (JSON lines in `<data-dir>/outbox/push.jsonl`), `webhook`, or
    /// `providers` (FCM and APNs, configured below).
    pub backend: PushBackend,
    /// Webhook URL (POST, JSON), for an FCM/APNs-style gateway.
    pub webhook_url: String,
    /// Value of the `Authorization` header sent to the webhook.
    pub webhook_authorization: Secret,
    /// Attempts per notification batch (1 = no retry).
    pub webhook_attempts: u32,
    /// Per-attempt timeout.
    pub webhook_timeout_ms: u64,
    /// After a push, a device is not pushed again for this long while it stays
    /// offline (one push per burst, not one per message). Connecting resets it.
    pub min_interval_secs: u32,
    /// Notifications buffered for the sender; more are dropped (and counted).
    pub queue: usize,
    /// `providers` backend: pushes in flight at once (over one HTTP/2
    /// connection per provider); past it the sender waits, and the queue fills.
    pub max_in_flight: usize,
    /// `[chat.push.fcm]`: Firebase Cloud Messaging, for `fcm` tokens.
    pub fcm: natter_providers::fcm::FcmConfig,
    /// `[chat.push.apns]`: Apple Push Notification service, for `apns` tokens.
    pub apns: natter_providers::apns::ApnsConfig,
}

/// Push sender choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushBackend {
    /// JSON lines file, without message content.
    Outbox,
    /// HTTP gateway.
    Webhook,
    /// FCM and APNs directly, with the providers' own credentials.
    Providers,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            backend: PushBackend::Outbox,
            webhook_url: String::new(),
            webhook_authorization: Secret::default(),
            webhook_attempts: 3,
            webhook_timeout_ms: 5_000,
            min_interval_secs: 60,
            queue: 4096,
            max_in_flight: 256,
            fcm: Default::default(),
            apns: Default::default(),
        }
    }
}

impl PushConfig {
    fn validate(&self) -> Result<(), String> {
        if self.backend == PushBackend::Webhook {
            if !(self.webhook_url.starts_with("http://")
                || self.webhook_url.starts_with("https://"))
            {
                return Err("chat.push.webhook_url: must be an http:// or https:// URL when backend = \"webhook\"".into());
            }
            if self.webhook_attempts == 0 {
                return Err("chat.push.webhook_attempts: must be at least 1".into());
            }
        }
        if self.queue == 0 {
            return Err("chat.push.queue: must be at least 1".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 10_000 {
            return Err("chat.push.max_in_flight: 1 to 10000".into());
        }
        if self.backend == PushBackend::Providers {
            if !self.fcm.is_configured() && !self.apns.is_configured() {
                return Err("chat.push: backend = \"providers\" needs [chat.push.fcm] (service_account_file) or [chat.push.apns] (key_file), or both".into());
            }
            if self.fcm.is_configured() {
                self.fcm.validate("chat.push.fcm")?;
            }
            if self.apns.is_configured() {
                self.apns.validate("chat.push.apns")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = ChatConfig::default();
        c.validate().unwrap();
        assert_eq!(c.max_body_bytes, 65536);
        assert_eq!(c.frame_limit(), 87384 + 8192);
        assert_eq!(c.max_group_members, 1024);
        assert_eq!(c.message_ttl_secs, 30 * 24 * 3600);
        ChatConfig::for_tests().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let bad = ChatConfig {
            max_body_bytes: 0,
            ..ChatConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("chat.max_body_bytes")
        );
        let bad = ChatConfig {
            idle_timeout_secs: 10,
            ..ChatConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("chat.idle_timeout_secs")
        );
        let bad = ChatConfig {
            max_frame_bytes: 100,
            ..ChatConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("chat.max_frame_bytes")
        );
        let mut bad = ChatConfig::default();
        bad.push.backend = PushBackend::Webhook;
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("chat.push.webhook_url")
        );
        let bad = ChatConfig {
            limit_sends: Quota::new(0, 1),
            ..ChatConfig::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("chat.limit_sends"));
        let toml_err = serde_json::from_str::<ChatConfig>(r#"{"max_body_byte": 1}"#).unwrap_err();
        assert!(toml_err.to_string().contains("max_body_byte"));
    }
}
