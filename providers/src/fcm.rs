//! Firebase Cloud Messaging, HTTP v1: a service account signs a JWT, Google's
//! token endpoint trades it for an OAuth2 access token (cached until shortly
//! before it expires), and each wake-up is one `messages:send`: data-only,
//! high priority, without content.

use crate::http::{HttpConfig, secret_from};
use crate::jwt::{KeyError, Rs256Key};
use crate::retry::{RetryConfig, jitter, retry_after_of};
use crate::{Delivery, PushKind, Report};
use natter_common::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The OAuth2 scope FCM sends need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT-bearer grant type (RFC 7523).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// `[chat.push.fcm]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmConfig {
    /// Path of the service-account key file (JSON, from the Firebase console).
    pub service_account_file: String,
    /// The same JSON inline (from the environment); one of the two.
    pub service_account_json: Secret,
    /// Base URL of the FCM API.
    pub endpoint: String,
    /// How long FCM keeps a message wake-up for an unreachable device.
    pub message_ttl_secs: u32,
    /// How long FCM keeps a call wake-up: past the ring, it is pointless.
    pub call_ttl_secs: u32,
    /// Timeout and extra roots.
    pub http: HttpConfig,
    /// Retries of 429 and 5xx answers.
    pub retry: RetryConfig,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self {
            service_account_file: String::new(),
            service_account_json: Secret::default(),
            endpoint: "https://fcm.googleapis.com".into(),
            message_ttl_secs: 86_400,
            call_ttl_secs: 60,
            http: HttpConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// At most what FCM accepts (28 days).
const MAX_TTL_SECS: u32 = 28 * 86_400;

impl FcmConfig {
    /// True when credentials are set (then FCM is used for `fcm` tokens).
    pub fn is_configured(&self) -> bool {
        !self.service_account_file.is_empty() || !self.service_account_json.is_empty()
    }

    /// Checks everything but the credentials' contents (see [`FcmClient::new`]).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
            return Err(format!("{key}.endpoint: an http(s) URL"));
        }
        if self.message_ttl_secs > MAX_TTL_SECS || self.call_ttl_secs > MAX_TTL_SECS {
            return Err(format!(
                "{key}.message_ttl_secs / call_ttl_secs: at most {MAX_TTL_SECS}"
            ));
        }
        self.retry.validate(&format!("{key}.retry"))
    }
}

/// The parts of a service-account key file FCM needs.
pub struct ServiceAccount {
    /// The Firebase project.
    pub project_id: String,
    /// The key's id (`kid`).
    pub private_key_id: String,
    /// The account (`iss`).
    pub client_email: String,
    /// Where assertions are traded for access tokens (`aud`).
    pub token_uri: String,
    key: Rs256Key,
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: String,
    project_id: String,
    private_key_id: String,
    private_key: String,
    client_email: String,
    token_uri: String,
}

impl ServiceAccount {
    /// Reads a service-account key file's JSON; errors say which field is wrong.
    pub fn parse(json: &str) -> Result<Self, String> {
        let f: ServiceAccountFile = serde_json::from_str(json)
            .map_err(|e| format!("not a service-account key file: {e}"))?;
        if f.kind != "service_account" {
            return Err(format!("\"type\" is {:?}, not \"service_account\"", f.kind));
        }
        for (name, v) in [
            ("project_id", &f.project_id),
            ("private_key_id", &f.private_key_id),
            ("client_email", &f.client_email),
        ] {
            if v.is_empty() {
                return Err(format!("\"{name}\" is empty"));
            }
        }
        if !f.token_uri.starts_with("https://") && !f.token_uri.starts_with("http://") {
            return Err("\"token_uri\" is not an http(s) URL".into());
        }
        let key = Rs256Key::from_pem(&f.private_key)
            .map_err(|e: KeyError| format!("\"private_key\": {e}"))?;
        Ok(Self {
            project_id: f.project_id,
            private_key_id: f.private_key_id,
            client_email: f.client_email,
            token_uri: f.token_uri,
            key,
        })
    }

    /// The signed assertion for the token endpoint, valid one hour from `now`.
    pub fn assertion(&self, now_secs: u64) -> Result<String, KeyError> {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'a str,
            typ: &'a str,
            kid: &'a str,
        }
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        crate::jwt::rs256(
            &self.key,
            &Header {
                alg: "RS256",
                typ: "JWT",
                kid: &self.private_key_id,
            },
            &Claims {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat: now_secs,
                exp: now_secs + 3600,
            },
        )
    }
}

/// The form body of a token request.
pub fn token_request_body(assertion: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", GRANT_TYPE)
        .append_pair("assertion", assertion)
        .finish()
}

/// What the token endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    /// A token and its lifetime.
    Granted {
        /// The bearer token.
        token: String,
        /// Seconds it is valid.
        expires_in: u64,
    },
    /// The credentials were refused (400/401/403): a configuration error.
    Refused(String),
    /// Worth another try (429, 5xx, an unreadable answer).
    Transient(String),
}

/// Classifies a token endpoint response.
pub fn parse_token_response(status: u16, body: &[u8]) -> TokenAnswer {
    #[derive(Deserialize)]
    struct Granted {
        access_token: String,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Refusal {
        error: String,
        error_description: String,
    }
    match status {
        200 => match serde_json::from_slice::<Granted>(body) {
            Ok(g) if !g.access_token.is_empty() => TokenAnswer::Granted {
                token: g.access_token,
                expires_in: g.expires_in.unwrap_or(3600),
            },
            _ => TokenAnswer::Transient("the token endpoint's answer has no access_token".into()),
        },
        400 | 401 | 403 => {
            let r: Refusal = serde_json::from_slice(body).unwrap_or_default();
            TokenAnswer::Refused(format!("{status} {}: {}", r.error, r.error_description))
        }
        _ => TokenAnswer::Transient(format!("the token endpoint answered {status}")),
    }
}

/// The `messages:send` body: data only (the app's own code wakes and fetches
/// over the socket), high priority so a dozing Android delivers it now, a
/// collapse key so a burst of messages leaves one wake-up waiting.
pub fn message_body(device_token: &str, kind: PushKind, cfg: &FcmConfig) -> Value {
    let (ttl, collapse) = match kind {
        PushKind::Message => (cfg.message_ttl_secs, Some("natter_message")),
        PushKind::Call => (cfg.call_ttl_secs, None),
    };
    let mut android = json!({ "priority": "HIGH", "ttl": format!("{ttl}s") });
    if let Some(c) = collapse {
        android["collapse_key"] = json!(c);
    }
    json!({ "message": {
        "token": device_token,
        "data": { "type": kind.as_str() },
        "android": android,
    }})
}

/// What a `messages:send` answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Delivered,
    /// `UNREGISTERED` or 404: the token is dead.
    Unregistered,
    /// Refused for good (400 and other 4xx).
    Rejected(String),
    /// 401: the access token is no good (expired early, revoked).
    Unauthenticated,
    /// 403 `PERMISSION_DENIED`: the service account may not send for this project.
    Forbidden(String),
    /// 429 or 5xx: retry, after `Retry-After` if given.
    Retry(String),
}

/// Classifies a `messages:send` response from its status and body.
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    if status == 200 {
        return Verdict::Delivered;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let err = &v["error"];
    let google_status = err["status"].as_str().unwrap_or("");
    let fcm_code = err["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|d| d["errorCode"].as_str())
        .unwrap_or("");
    let why = format!(
        "{status} {}{}{}",
        if fcm_code.is_empty() {
            google_status
        } else {
            fcm_code
        },
        if err["message"].is_string() { ": " } else { "" },
        err["message"].as_str().unwrap_or("")
    );
    match (status, fcm_code) {
        (_, "UNREGISTERED") | (404, _) => Verdict::Unregistered,
        (401, _) => Verdict::Unauthenticated,
        (403, "SENDER_ID_MISMATCH") => Verdict::Rejected(why),
        (403, _) => Verdict::Forbidden(why),
        (429, _) | (500..=599, _) => Verdict::Retry(why),
        _ => Verdict::Rejected(why),
    }
}

struct CachedToken {
    token: Arc<str>,
    refresh_at: Instant,
}

/// Sends wake-ups through FCM. One client keeps one HTTP/2 connection per
/// host; concurrent sends share it.
pub struct FcmClient {
    http: reqwest::Client,
    account: ServiceAccount,
    send_url: String,
    cfg: FcmConfig,
    token: Mutex<Option<CachedToken>>,
    /// Held while a token is fetched, so a burst fetches one, not one each.
    refreshing: tokio::sync::Mutex<()>,
}

/// Why no access token could be had.
enum TokenProblem {
    Refused(String),
    Transient(String),
}

impl FcmClient {
    /// Reads the credentials and builds the client; any problem is an error
    /// that names the setting (start-up fails with it).
    pub fn new(cfg: &FcmConfig, key: &str) -> Result<Self, String> {
        cfg.validate(key)?;
        let json = secret_from(
            &format!("{key}.service_account"),
            &cfg.service_account_json,
            &cfg.service_account_file,
        )?
        .ok_or_else(|| format!("{key}: set service_account_file or service_account_json"))?;
        let account = ServiceAccount::parse(json.expose()).map_err(|e| {
            let from = if cfg.service_account_file.is_empty() {
                "service_account_json".to_string()
            } else {
                format!("service_account_file ({})", cfg.service_account_file)
            };
            format!("{key}.{from}: {e}")
        })?;
        let http = crate::http::client(&cfg.http, key, false)?;
        Ok(Self {
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                cfg.endpoint.trim_end_matches('/'),
                account.project_id
            ),
            http,
            account,
            cfg: cfg.clone(),
            token: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The project the service account sends for.
    pub fn project_id(&self) -> &str {
        &self.account.project_id
    }

    fn cached(&self) -> Option<Arc<str>> {
        let guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.token.clone())
    }

    /// Drops `token` from the cache (if it is still the cached one).
    fn forget(&self, token: &str) {
        let mut guard = self.token.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|t| &*t.token == token) {
            *guard = None;
        }
    }

    async fn access_token(&self) -> Result<Arc<str>, TokenProblem> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _one = self.refreshing.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let assertion = self
            .account
            .assertion(now)
            .map_err(|e| TokenProblem::Refused(format!("signing the assertion: {e}")))?;
        let resp = self
            .http
            .post(&self.account.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(token_request_body(&assertion))
            .send()
            .await
            .map_err(|e| TokenProblem::Transient(format!("token endpoint: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        match parse_token_response(status, &body) {
            TokenAnswer::Granted { token, expires_in } => {
                let token: Arc<str> = token.into();
                // Refresh a little early: a quarter of the lifetime, at most 5 min.
                let early = (expires_in / 4).min(300);
                let refresh_at = Instant::now() + Duration::from_secs(expires_in - early);
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(CachedToken {
                    token: token.clone(),
                    refresh_at,
                });
                tracing::debug!(expires_in, "fcm access token fetched");
                Ok(token)
            }
            TokenAnswer::Refused(why) => Err(TokenProblem::Refused(format!(
                "the token endpoint {} refused service account {}: {why}",
                self.account.token_uri, self.account.client_email
            ))),
            TokenAnswer::Transient(why) => Err(TokenProblem::Transient(why)),
        }
    }

    /// Wakes the device holding `device_token`. Retries 429 and 5xx (honouring
    /// `Retry-After`), refreshes a rejected access token once.
    pub async fn send(&self, device_token: &str, kind: PushKind) -> Report {
        let body = message_body(device_token, kind, &self.cfg);
        let mut attempts = 0;
        let mut failures = 0;
        let mut refreshed = false;
        loop {
            let (why, retry_after) = match self.access_token().await {
                Err(TokenProblem::Refused(why)) => {
                    return Report {
                        delivery: Delivery::AuthFailed(why),
                        attempts,
                    };
                }
                Err(TokenProblem::Transient(why)) => (why, None),
                Ok(token) => {
                    attempts += 1;
                    match self
                        .http
                        .post(&self.send_url)
                        .bearer_auth(&*token)
                        .json(&body)
                        .send()
                        .await
                    {
                        Err(e) => (format!("request failed: {e}"), None),
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let retry_after = retry_after_of(resp.headers());
                            let bytes = resp.bytes().await.unwrap_or_default();
                            match classify(status, &bytes) {
                                Verdict::Delivered => {
                                    return Report {
                                        delivery: Delivery::Delivered,
                                        attempts,
                                    };
                                }
                                Verdict::Unregistered => {
                                    return Report {
                                        delivery: Delivery::Unregistered,
                                        attempts,
                                    };
                                }
                                Verdict::Rejected(why) => {
                                    return Report {
                                        delivery: Delivery::Rejected(why),
                                        attempts,
                                    };
                                }
                                Verdict::Forbidden(why) => {
                                    return Report {
                                        delivery: Delivery::AuthFailed(format!(
                                            "service account {} may not send for project {}: {why}",
                                            self.account.client_email, self.account.project_id
                                        )),
                                        attempts,
                                    };
                                }
                                Verdict::Unauthenticated if !refreshed => {
                                    // Expired early or revoked: one fresh token, at once.
                                    refreshed = true;
                                    self.forget(&token);
                                    continue;
                                }
                                Verdict::Unauthenticated => {
                                    return Report {
                                        delivery: Delivery::AuthFailed(
                                            "FCM refused a freshly issued access token (401)"
                                                .into(),
                                        ),
                                        attempts,
                                    };
                                }
                                Verdict::Retry(why) => (why, retry_after),
                            }
                        }
                    }
                }
            };
            failures += 1;
            match self.cfg.retry.wait(failures, retry_after, jitter()) {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(give_up) => {
                    return Report {
                        delivery: Delivery::Failed(format!("{why} ({give_up})")),
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

    fn account_json(key_pem: &str) -> String {
        json!({
            "type": "service_account", "project_id": "natter-test", "private_key_id": "abc123",
            "private_key": key_pem, "client_email": "push@natter-test.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": "https://oauth2.example/token"
        })
        .to_string()
    }

    #[test]
    fn a_service_account_signs_the_documented_assertion() {
        let sa = ServiceAccount::parse(&account_json(&crate::jwt::test_keys::rsa_pem())).unwrap();
        let jwt = sa.assertion(1_000).unwrap();
        let claims = jwt.split('.').nth(1).unwrap();
        use base64::Engine;
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims,
            json!({"iss": "push@natter-test.iam.gserviceaccount.com", "scope": SCOPE,
                   "aud": "https://oauth2.example/token", "iat": 1000, "exp": 4600})
        );
        let body = token_request_body(&jwt);
        assert!(body.starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey"
        ));
    }

    #[test]
    fn a_bad_service_account_says_what_is_wrong() {
        let err = ServiceAccount::parse("{}").err().unwrap();
        assert!(err.contains("missing field"), "{err}");
        let err = ServiceAccount::parse(&account_json(
            "-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----",
        ))
        .err()
        .unwrap();
        assert!(
            err.contains("private_key") && err.contains("PKCS#1"),
            "{err}"
        );
        let err = ServiceAccount::parse(&account_json(&crate::jwt::test_keys::p256_pem()))
            .err()
            .unwrap();
        assert!(err.contains("not an RSA key"), "{err}");
        let mut v: Value = serde_json::from_str(&account_json("x")).unwrap();
        v["type"] = json!("authorized_user");
        assert!(
            ServiceAccount::parse(&v.to_string())
                .err()
                .unwrap()
                .contains("service_account")
        );
    }

    #[test]
    fn message_bodies_are_data_only_without_content() {
        let cfg = FcmConfig::default();
        let m = message_body("tok", PushKind::Message, &cfg);
        assert_eq!(
            m,
            json!({"message": {"token": "tok", "data": {"type": "message"},
                "android": {"priority": "HIGH", "ttl": "86400s", "collapse_key": "natter_message"}}})
        );
        let c = message_body("tok", PushKind::Call, &cfg);
        assert_eq!(
            c["message"]["android"],
            json!({"priority": "HIGH", "ttl": "60s"})
        );
        assert!(c["message"].get("notification").is_none());
    }

    #[test]
    fn answers_are_classified_as_documented() {
        let err = |code: u16, status: &str, fcm: &str| {
            json!({"error": {"code": code, "message": "m", "status": status,
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm}]}})
            .to_string()
        };
        assert_eq!(classify(200, b"{\"name\":\"x\"}"), Verdict::Delivered);
        assert_eq!(
            classify(404, err(404, "NOT_FOUND", "UNREGISTERED").as_bytes()),
            Verdict::Unregistered
        );
        assert_eq!(classify(404, b""), Verdict::Unregistered);
        assert_eq!(
            classify(400, err(400, "INVALID_ARGUMENT", "UNREGISTERED").as_bytes()),
            Verdict::Unregistered
        );
        assert_eq!(
            classify(
                400,
                err(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT").as_bytes()
            ),
            Verdict::Rejected("400 INVALID_ARGUMENT: m".into())
        );
        assert_eq!(classify(401, b"{}"), Verdict::Unauthenticated);
        assert!(matches!(
            classify(403, err(403, "PERMISSION_DENIED", "").as_bytes()),
            Verdict::Forbidden(_)
        ));
        assert!(matches!(
            classify(
                403,
                err(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH").as_bytes()
            ),
            Verdict::Rejected(_)
        ));
        assert!(
            matches!(classify(429, err(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED").as_bytes()), Verdict::Retry(w) if w.contains("QUOTA_EXCEEDED"))
        );
        assert!(matches!(classify(503, b"<html>"), Verdict::Retry(_)));
    }

    #[test]
    fn token_answers_are_classified() {
        assert_eq!(
            parse_token_response(
                200,
                br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#
            ),
            TokenAnswer::Granted {
                token: "ya29.x".into(),
                expires_in: 3599
            }
        );
        assert_eq!(
            parse_token_response(
                400,
                br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
            ),
            TokenAnswer::Refused("400 invalid_grant: Invalid JWT Signature.".into())
        );
        assert!(matches!(
            parse_token_response(503, b""),
            TokenAnswer::Transient(_)
        ));
        assert!(matches!(
            parse_token_response(200, b"{}"),
            TokenAnswer::Transient(_)
        ));
    }
}
