//! Apple Push Notification service with token-based auth: an ES256 provider
//! token signed with the team's `.p8` key (refreshed inside Apple's 20–60 min
//! window), one HTTP/2 connection, one POST per wake-up. Messages go as
//! `alert` (a generic, content-free text) or `background` pushes to the app's
//! topic; calls as `voip` pushes to `<bundle>.voip` with the device's PushKit
//! token.

use crate::http::{HttpConfig, secret_from};
use crate::jwt::Es256Key;
use crate::retry::{RetryConfig, jitter, retry_after_of};
use crate::{Delivery, PushKind, Report};
use natter_common::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Production host.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Development (sandbox) host, for apps signed with a development profile.
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// Which APNs environment the app's tokens belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// App Store and TestFlight builds.
    #[default]
    Production,
    /// Development builds.
    Sandbox,
}

/// How a message wake-up is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessagePushType {
    /// A visible, generic alert ("New message"); the app's notification
    /// service extension may fetch and replace it. Delivered promptly.
    #[default]
    Alert,
    /// A silent `content-available` push (priority 5): iOS delivers these
    /// when it sees fit, and not at all to an app the user force-quit.
    Background,
}

/// `[chat.push.apns]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsConfig {
    /// Path of the `.p8` signing key (AuthKey_<key id>.p8).
    pub key_file: String,
    /// The same PEM inline (from the environment); one of the two.
    pub key_pem: Secret,
    /// The key's 10-character id.
    #[serde(deserialize_with = "natter_common::config::scalar_string")]
    pub key_id: String,
    /// The developer team id (10 characters).
    #[serde(deserialize_with = "natter_common::config::scalar_string")]
    pub team_id: String,
    /// The app's bundle id: the topic of alert and background pushes;
    /// `<bundle_id>.voip` is the topic of call pushes.
    #[serde(deserialize_with = "natter_common::config::scalar_string")]
    pub bundle_id: String,
    /// `production` or `sandbox`.
    pub environment: Environment,
    /// Overrides the host chosen by `environment` (a proxy, a test fake).
    pub endpoint: String,
    /// `alert` or `background`.
    pub message_push_type: MessagePushType,
    /// Localisation key of the alert text (the app's Localizable.strings).
    pub message_alert_loc_key: String,
    /// Localisation key of the alert shown for a call to a device without a
    /// PushKit token.
    pub call_alert_loc_key: String,
    /// How long APNs keeps a message wake-up for an unreachable device.
    pub message_expiration_secs: u32,
    /// How long APNs keeps a call wake-up: past the ring, it is pointless.
    pub call_expiration_secs: u32,
    /// Age at which the provider token is replaced. Apple refuses tokens
    /// older than an hour and refreshes more often than every 20 minutes.
    pub token_refresh_secs: u32,
    /// Timeout and extra roots.
    pub http: HttpConfig,
    /// Retries of 429 and 5xx answers.
    pub retry: RetryConfig,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            key_file: String::new(),
            key_pem: Secret::default(),
            key_id: String::new(),
            team_id: String::new(),
            bundle_id: String::new(),
            environment: Environment::Production,
            endpoint: String::new(),
            message_push_type: MessagePushType::Alert,
            message_alert_loc_key: "NATTER_NEW_MESSAGE".into(),
            call_alert_loc_key: "NATTER_INCOMING_CALL".into(),
            message_expiration_secs: 86_400,
            call_expiration_secs: 60,
            token_refresh_secs: 50 * 60,
            http: HttpConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

impl ApnsConfig {
    /// True when a key is set (then APNs is used for `apns` tokens).
    pub fn is_configured(&self) -> bool {
        !self.key_file.is_empty() || !self.key_pem.is_empty()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        if !self.endpoint.is_empty() {
            return self.endpoint.trim_end_matches('/');
        }
        match self.environment {
            Environment::Production => PRODUCTION,
            Environment::Sandbox => SANDBOX,
        }
    }

    /// Checks everything but the key's contents (see [`ApnsClient::new`]).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        let id_ok = |s: &str| s.len() == 10 && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok(&self.key_id) {
            return Err(format!("{key}.key_id: the key's 10-character id"));
        }
        if !id_ok(&self.team_id) {
            return Err(format!("{key}.team_id: the 10-character team id"));
        }
        if self.bundle_id.is_empty()
            || !self
                .bundle_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(format!(
                "{key}.bundle_id: the app's bundle id (e.g. org.example.natter)"
            ));
        }
        if !(20 * 60..=59 * 60).contains(&self.token_refresh_secs) {
            return Err(format!(
                "{key}.token_refresh_secs: 1200 to 3540 (Apple refuses tokens older than an hour, and refreshes more often than every 20 minutes)"
            ));
        }
        if !(self.endpoint.is_empty()
            || self.endpoint.starts_with("https://")
            || self.endpoint.starts_with("http://"))
        {
            return Err(format!("{key}.endpoint: an http(s) URL"));
        }
        self.retry.validate(&format!("{key}.retry"))
    }
}

/// One push, as its headers and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `apns-push-type`.
    pub push_type: &'static str,
    /// `apns-topic`.
    pub topic: String,
    /// `apns-priority`.
    pub priority: u8,
    /// `apns-expiration` (Unix seconds).
    pub expiration: u64,
    /// `apns-collapse-id`.
    pub collapse_id: Option<&'static str>,
    /// The JSON payload.
    pub payload: Value,
}

/// Which token a push goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The device's alert/background token.
    Alert,
    /// The device's PushKit (VoIP) token.
    Voip,
}

/// The push for `kind`, sent with a token of `route`, at `now` (Unix s).
pub fn notification(cfg: &ApnsConfig, kind: PushKind, route: Route, now: u64) -> Notification {
    match (kind, route) {
        (PushKind::Call, Route::Voip) => Notification {
            push_type: "voip",
            topic: format!("{}.voip", cfg.bundle_id),
            priority: 10,
            expiration: now + u64::from(cfg.call_expiration_secs),
            collapse_id: None,
            // PushKit hands the payload to the app, which must report a call to
            // CallKit at once; it learns which call over the socket.
            payload: json!({ "aps": {}, "type": "call" }),
        },
        (PushKind::Call, Route::Alert) => Notification {
            push_type: "alert",
            topic: cfg.bundle_id.clone(),
            priority: 10,
            expiration: now + u64::from(cfg.call_expiration_secs),
            collapse_id: Some("natter.call"),
            payload: json!({ "aps": {
                "alert": { "loc-key": cfg.call_alert_loc_key },
                "sound": "default",
            }, "type": "call" }),
        },
        (PushKind::Message, _) => match cfg.message_push_type {
            MessagePushType::Alert => Notification {
                push_type: "alert",
                topic: cfg.bundle_id.clone(),
                priority: 10,
                expiration: now + u64::from(cfg.message_expiration_secs),
                collapse_id: Some("natter.message"),
                payload: json!({ "aps": {
                    "alert": { "loc-key": cfg.message_alert_loc_key },
                    "sound": "default",
                    "mutable-content": 1,
                }, "type": "message" }),
            },
            MessagePushType::Background => Notification {
                push_type: "background",
                topic: cfg.bundle_id.clone(),
                // Apple requires 5 for background pushes.
                priority: 5,
                expiration: now + u64::from(cfg.message_expiration_secs),
                collapse_id: Some("natter.message"),
                payload: json!({ "aps": { "content-available": 1 }, "type": "message" }),
            },
        },
    }
}

/// What an APNs answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 200.
    Delivered,
    /// 410 `Unregistered`: the token is dead.
    Unregistered,
    /// 403 `ExpiredProviderToken`: sign a new one and retry.
    ExpiredToken,
    /// 403 other than expiry: our key, team or topic rights are wrong.
    Auth(String),
    /// 429 or 5xx: retry.
    Retry(String),
    /// Refused for good (400 and other 4xx).
    Rejected(String),
}

/// Classifies an answer from its status and JSON body (`{"reason": …}`).
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    if status == 200 {
        return Verdict::Delivered;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let reason = v["reason"].as_str().unwrap_or("").to_string();
    let why = format!("{status} {reason}");
    match (status, reason.as_str()) {
        (410, _) => Verdict::Unregistered,
        (403, "ExpiredProviderToken") => Verdict::ExpiredToken,
        (403, _) => Verdict::Auth(why),
        (429, _) | (500..=599, _) => Verdict::Retry(why),
        _ => Verdict::Rejected(why),
    }
}

struct ProviderToken {
    jwt: Arc<str>,
    issued: Instant,
}

/// Sends wake-ups through APNs over one HTTP/2 connection.
pub struct ApnsClient {
    http: reqwest::Client,
    key: Es256Key,
    cfg: ApnsConfig,
    token: Mutex<Option<ProviderToken>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl ApnsClient {
    /// Reads the key and builds the client; any problem is an error that
    /// names the setting (start-up fails with it).
    pub fn new(cfg: &ApnsConfig, key: &str) -> Result<Self, String> {
        cfg.validate(key)?;
        let pem = secret_from(&format!("{key}.key"), &cfg.key_pem, &cfg.key_file)?
            .ok_or_else(|| format!("{key}: set key_file or key_pem"))?;
        let signing = Es256Key::from_pem(pem.expose()).map_err(|e| {
            let from = if cfg.key_file.is_empty() {
                "key_pem".to_string()
            } else {
                format!("key_file ({})", cfg.key_file)
            };
            format!("{key}.{from}: {e}")
        })?;
        Ok(Self {
            http: crate::http::client(&cfg.http, key, true)?,
            key: signing,
            cfg: cfg.clone(),
            token: Mutex::new(None),
        })
    }

    /// The current provider token, signing a new one when the old one is
    /// `token_refresh_secs` old, or when `stale` (a token APNs called expired)
    /// is still the current one.
    fn provider_token(&self, stale: Option<&str>) -> Result<Arc<str>, String> {
        let mut guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        let max_age = Duration::from_secs(u64::from(self.cfg.token_refresh_secs));
        if let Some(t) = guard.as_ref()
            && t.issued.elapsed() < max_age
            && stale.is_none_or(|s| s != &*t.jwt)
        {
            return Ok(t.jwt.clone());
        }
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'a str,
            kid: &'a str,
        }
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            iat: u64,
        }
        let jwt: Arc<str> = crate::jwt::es256(
            &self.key,
            &Header {
                alg: "ES256",
                kid: &self.cfg.key_id,
            },
            &Claims {
                iss: &self.cfg.team_id,
                iat: unix_now(),
            },
        )
        .map_err(|e| format!("signing the provider token: {e}"))?
        .into();
        *guard = Some(ProviderToken {
            jwt: jwt.clone(),
            issued: Instant::now(),
        });
        tracing::debug!(key_id = %self.cfg.key_id, "apns provider token signed");
        Ok(jwt)
    }

    /// Wakes the device holding `device_token` (an alert/background token, or
    /// a PushKit token when `route` is [`Route::Voip`]). Retries 429 and 5xx,
    /// re-signs an expired provider token once.
    pub async fn send(&self, device_token: &str, kind: PushKind, route: Route) -> Report {
        let n = notification(&self.cfg, kind, route, unix_now());
        let url = format!("{}/3/device/{device_token}", self.cfg.base_url());
        let payload = serde_json::to_vec(&n.payload).unwrap_or_default();
        let mut attempts = 0;
        let mut failures = 0;
        let mut stale: Option<Arc<str>> = None;
        let mut resigned = false;
        loop {
            let jwt = match self.provider_token(stale.as_deref()) {
                Ok(j) => j,
                Err(why) => {
                    return Report {
                        delivery: Delivery::AuthFailed(why),
                        attempts,
                    };
                }
            };
            attempts += 1;
            let mut req = self
                .http
                .post(&url)
                .header(reqwest::header::AUTHORIZATION, format!("bearer {jwt}"))
                .header("apns-push-type", n.push_type)
                .header("apns-topic", &n.topic)
                .header("apns-priority", n.priority.to_string())
                .header("apns-expiration", n.expiration.to_string())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(payload.clone());
            if let Some(c) = n.collapse_id {
                req = req.header("apns-collapse-id", c);
            }
            let (why, retry_after) = match req.send().await {
                Err(e) => (format!("request failed: {e}"), None),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = retry_after_of(resp.headers());
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let delivery = match classify(status, &bytes) {
                        Verdict::Delivered => Delivery::Delivered,
                        Verdict::Unregistered => Delivery::Unregistered,
                        Verdict::Rejected(why) => Delivery::Rejected(why),
                        Verdict::Auth(why) => Delivery::AuthFailed(format!(
                            "APNs refused key {} of team {} for topic {}: {why}",
                            self.cfg.key_id, self.cfg.team_id, n.topic
                        )),
                        Verdict::ExpiredToken if !resigned => {
                            // A clock jump or a suspended process: sign anew, once.
                            resigned = true;
                            stale = Some(jwt);
                            continue;
                        }
                        Verdict::ExpiredToken => Delivery::AuthFailed(
                            "APNs calls a freshly signed provider token expired: is this host's clock right?".into(),
                        ),
                        Verdict::Retry(why) => {
                            failures += 1;
                            match self.cfg.retry.wait(failures, retry_after, jitter()) {
                                Ok(wait) => {
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                Err(g) => Delivery::Failed(format!("{why} ({g})")),
                            }
                        }
                    };
                    return Report { delivery, attempts };
                }
            };
            failures += 1;
            match self.cfg.retry.wait(failures, retry_after, jitter()) {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(g) => {
                    return Report {
                        delivery: Delivery::Failed(format!("{why} ({g})")),
                        attempts,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ApnsConfig {
        ApnsConfig {
            key_pem: Secret::new(crate::jwt::test_keys::p256_pem()),
            key_id: "ABC123DEFG".into(),
            team_id: "TEAM123456".into(),
            bundle_id: "org.example.natter".into(),
            ..ApnsConfig::default()
        }
    }

    #[test]
    fn pushes_carry_the_documented_headers_and_no_content() {
        let c = cfg();
        let voip = notification(&c, PushKind::Call, Route::Voip, 1_000);
        assert_eq!(
            (
                voip.push_type,
                voip.topic.as_str(),
                voip.priority,
                voip.expiration,
                voip.collapse_id
            ),
            ("voip", "org.example.natter.voip", 10, 1_060, None)
        );
        let alert = notification(&c, PushKind::Message, Route::Alert, 1_000);
        assert_eq!(
            (
                alert.push_type,
                alert.topic.as_str(),
                alert.priority,
                alert.expiration
            ),
            ("alert", "org.example.natter", 10, 87_400)
        );
        assert_eq!(
            alert.payload["aps"]["alert"],
            json!({"loc-key": "NATTER_NEW_MESSAGE"})
        );
        let bg = notification(
            &ApnsConfig {
                message_push_type: MessagePushType::Background,
                ..c.clone()
            },
            PushKind::Message,
            Route::Alert,
            1_000,
        );
        assert_eq!((bg.push_type, bg.priority), ("background", 5));
        assert_eq!(
            bg.payload,
            json!({"aps": {"content-available": 1}, "type": "message"})
        );
        let call_alert = notification(&c, PushKind::Call, Route::Alert, 1_000);
        assert_eq!(
            (call_alert.push_type, call_alert.topic.as_str()),
            ("alert", "org.example.natter")
        );
    }

    #[test]
    fn answers_are_classified_as_documented() {
        assert_eq!(classify(200, b""), Verdict::Delivered);
        assert_eq!(
            classify(410, br#"{"reason":"Unregistered","timestamp":1}"#),
            Verdict::Unregistered
        );
        assert_eq!(
            classify(403, br#"{"reason":"ExpiredProviderToken"}"#),
            Verdict::ExpiredToken
        );
        assert_eq!(
            classify(403, br#"{"reason":"InvalidProviderToken"}"#),
            Verdict::Auth("403 InvalidProviderToken".into())
        );
        assert_eq!(
            classify(429, br#"{"reason":"TooManyRequests"}"#),
            Verdict::Retry("429 TooManyRequests".into())
        );
        assert!(matches!(classify(503, b""), Verdict::Retry(_)));
        assert_eq!(
            classify(400, br#"{"reason":"BadDeviceToken"}"#),
            Verdict::Rejected("400 BadDeviceToken".into())
        );
    }

    #[test]
    fn settings_are_checked_and_named() {
        let c = cfg();
        c.validate("chat.push.apns").unwrap();
        let bad = ApnsConfig {
            token_refresh_secs: 3600,
            ..c.clone()
        };
        assert!(
            bad.validate("chat.push.apns")
                .unwrap_err()
                .starts_with("chat.push.apns.token_refresh_secs")
        );
        let bad = ApnsConfig {
            key_id: "short".into(),
            ..c.clone()
        };
        assert!(
            bad.validate("chat.push.apns")
                .unwrap_err()
                .starts_with("chat.push.apns.key_id")
        );
        let bad = ApnsConfig {
            key_pem: Secret::new(crate::jwt::test_keys::rsa_pem()),
            ..c.clone()
        };
        let err = ApnsClient::new(&bad, "chat.push.apns").err().unwrap();
        assert!(
            err.starts_with("chat.push.apns.key_pem") && err.contains("P-256"),
            "{err}"
        );
        assert_eq!(c.base_url(), PRODUCTION);
        assert_eq!(
            ApnsConfig {
                environment: Environment::Sandbox,
                ..c
            }
            .base_url(),
            SANDBOX
        );
    }

    #[tokio::test]
    async fn provider_tokens_are_reused_then_resigned_when_stale() {
        let client = ApnsClient::new(&cfg(), "chat.push.apns").unwrap();
        let a = client.provider_token(None).unwrap();
        let b = client.provider_token(None).unwrap();
        assert_eq!(a, b, "reused within the refresh window");
        let c = client.provider_token(Some(&a)).unwrap();
        assert_ne!(a, c, "a token APNs called expired is replaced");
        let d = client.provider_token(Some(&a)).unwrap();
        assert_eq!(c, d, "only once: the stale one is no longer current");
    }
}
