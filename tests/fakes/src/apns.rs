//! Apple Push Notification service with token-based (JWT, ES256) provider
//! authentication, served over HTTP/2 only like `api.push.apple.com`.
//!
//! Reasons follow Apple's "Handling notification responses from APNs" table.
//! One deviation: a body that is not a JSON object with an `aps` object, or a
//! background push with alert/sound/badge or without `content-available: 1`,
//! is refused with 400 `BadPayload`. Apple has no such reason (it accepts and
//! silently drops or mis-delivers those), but a fake that accepted them would
//! hide client bugs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::jwt::Jwt;
use crate::script::Script;
use crate::tls::{self, Server, TestCa};
use crate::util::{auth_param, lock, pem, random_bytes, unix_now, unix_now_ms};
use crate::{Attempt, Failure};

/// Largest payload for every push type but VoIP, in bytes.
const MAX_PAYLOAD: usize = 4096;
/// VoIP pushes may carry up to 5 KB.
const MAX_VOIP_PAYLOAD: usize = 5120;
/// How far in the future a provider token's `iat` may be (clock skew).
const MAX_IAT_SKEW_SECS: i64 = 60;
const MAX_COLLAPSE_ID: usize = 64;

static APNS_ID: HeaderName = HeaderName::from_static("apns-id");

/// A notification APNs accepted.
#[derive(Debug, Clone)]
pub struct ApnsNotification {
    /// When it was accepted.
    pub at: Instant,
    /// The hex device token from the path.
    pub device_token: String,
    /// `apns-push-type`.
    pub push_type: String,
    /// `apns-topic`.
    pub topic: String,
    /// `apns-priority`, if sent.
    pub priority: Option<u8>,
    /// `apns-expiration`, if sent.
    pub expiration: Option<u64>,
    /// `apns-collapse-id`, if sent.
    pub collapse_id: Option<String>,
    /// The JSON body.
    pub payload: Value,
}

/// The APNs fake. Cheap to clone; clones share state and server, which shuts
/// down when the last clone is dropped.
#[derive(Clone)]
pub struct ApnsFake {
    shared: Arc<Shared>,
    server: Arc<Server>,
}

struct Shared {
    team_id: String,
    key_id: String,
    bundle_id: String,
    key_p8: String,
    /// Uncompressed P-256 point, the form `UnparsedPublicKey` takes.
    public_key: Vec<u8>,
    state: Mutex<ApnsState>,
}

struct ApnsState {
    script: Script,
    token_lifetime: Duration,
    min_token_update: Duration,
    /// Every provider token accepted so far; reusing one is never an update.
    accepted_tokens: HashSet<String>,
    last_token_update: Option<Instant>,
    /// Unregistered device tokens and when (ms since the epoch).
    unregistered: HashMap<String, u64>,
    notifications: Vec<ApnsNotification>,
}

/// An APNs error: status, `reason`, and the 410 `timestamp`.
struct Rejection {
    status: u16,
    reason: String,
    timestamp: Option<u64>,
    retry_after: Option<u64>,
}

fn reject(status: u16, reason: &str) -> Rejection {
    Rejection {
        status,
        reason: reason.to_owned(),
        timestamp: None,
        retry_after: None,
    }
}

impl ApnsFake {
    /// Generates a P-256 signing key and starts the fake (HTTP/2 only) for
    /// the given team, key id and app bundle id.
    ///
    /// # Panics
    /// If key generation fails or the listener cannot be bound.
    pub async fn start(ca: &TestCa, team_id: &str, key_id: &str, bundle_id: &str) -> ApnsFake {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let shared = Arc::new(Shared {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            bundle_id: bundle_id.to_owned(),
            key_p8: p8(&key),
            public_key: key.public_key().as_ref().to_vec(),
            state: Mutex::new(ApnsState {
                script: Script::default(),
                token_lifetime: Duration::from_secs(3600),
                min_token_update: Duration::from_secs(20 * 60),
                accepted_tokens: HashSet::new(),
                last_token_update: None,
                unregistered: HashMap::new(),
                notifications: Vec::new(),
            }),
        });
        let router = Router::new()
            .route(
                "/3/device/{token}",
                post(push)
                    .fallback(|| async { error_response(&reject(405, "MethodNotAllowed"), None) }),
            )
            .fallback(|| async { error_response(&reject(404, "BadPath"), None) })
            .with_state(shared.clone());
        let server = tls::serve(ca, router, true)
            .await
            .expect("start the APNs fake");
        ApnsFake {
            shared,
            server: Arc::new(server),
        }
    }

    /// The signing key as Apple hands it out (`AuthKey_<KEYID>.p8`: PKCS#8 PEM).
    pub fn key_p8(&self) -> String {
        self.shared.key_p8.clone()
    }

    /// A different, freshly generated key in the same format; tokens signed
    /// with it are refused with `InvalidProviderToken`.
    ///
    /// # Panics
    /// If key generation fails.
    pub fn wrong_key_p8(&self) -> String {
        p8(&EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key"))
    }

    /// The base URL; pushes go to `{endpoint}/3/device/{token}`.
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// HTTP/2 (TLS) connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// How long after its `iat` a provider token is accepted; default 1 hour.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        lock(&self.shared.state).token_lifetime = lifetime;
    }

    /// Least time between two new provider tokens; default 20 minutes.
    pub fn set_min_token_update(&self, interval: Duration) {
        lock(&self.shared.state).min_token_update = interval;
    }

    /// Later pushes to `device_token` fail with 410 `Unregistered`.
    pub fn unregister(&self, device_token: &str) {
        lock(&self.shared.state)
            .unregistered
            .insert(device_token.to_ascii_lowercase(), unix_now_ms());
    }

    /// Queues a scripted failure for a later push (after its token checks).
    pub fn fail_next(&self, f: Failure) {
        lock(&self.shared.state).script.push(f);
    }

    /// Every request to `/3/device/{token}`, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.shared.state).script.attempts()
    }

    /// Notifications accepted, in order.
    pub fn notifications(&self) -> Vec<ApnsNotification> {
        lock(&self.shared.state).notifications.clone()
    }

    /// Distinct provider tokens (JWTs) accepted so far.
    pub fn provider_tokens_accepted(&self) -> usize {
        lock(&self.shared.state).accepted_tokens.len()
    }
}

fn p8(key: &EcdsaKeyPair) -> String {
    let doc = key.to_pkcs8v1().expect("PKCS#8 encoding");
    pem("PRIVATE KEY", doc.as_ref())
}

/// `POST /3/device/{token}`.
async fn push(
    State(s): State<Arc<Shared>>,
    Path(device_token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Apple answers with an apns-id even on errors: the client's if valid,
    // else a fresh one.
    let given_id = header_str(&headers, "apns-id");
    let apns_id = given_id
        .filter(|id| is_uuid(id))
        .map(str::to_owned)
        .unwrap_or_else(new_uuid);
    let result = s.push(&device_token, &headers, &body);
    let (status, reason) = match &result {
        Ok(()) => (200, String::new()),
        Err(r) => (r.status, r.reason.clone()),
    };
    lock(&s.state).script.record(&device_token, status, &reason);
    match result {
        Ok(()) => {
            let mut resp = StatusCode::OK.into_response();
            resp.headers_mut().insert(
                APNS_ID.clone(),
                HeaderValue::from_str(&apns_id).expect("UUID"),
            );
            resp
        }
        Err(r) => error_response(&r, Some(&apns_id)),
    }
}

fn error_response(r: &Rejection, apns_id: Option<&str>) -> Response {
    let mut body = json!({ "reason": r.reason });
    if let Some(ts) = r.timestamp {
        body["timestamp"] = json!(ts);
    }
    let mut resp = crate::util::json_response(r.status, &body, r.retry_after);
    if let Some(id) = apns_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        resp.headers_mut().insert(APNS_ID.clone(), id);
    }
    resp
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Shared {
    fn push(&self, device_token: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
        let mut st = lock(&self.state);
        self.check_provider_token(&mut st, headers)?;
        if let Some(f) = st.script.pop() {
            return Err(scripted(&f));
        }

        let token_ok = (64..=200).contains(&device_token.len())
            && device_token.bytes().all(|b| b.is_ascii_hexdigit());
        if !token_ok {
            return Err(reject(400, "BadDeviceToken"));
        }
        let push_type = header_str(headers, "apns-push-type").unwrap_or_default();
        let Some(topic_suffix) = topic_suffix(push_type) else {
            return Err(reject(400, "InvalidPushType"));
        };
        let Some(topic) = header_str(headers, "apns-topic") else {
            return Err(reject(400, "MissingTopic"));
        };
        let topic_ok = match topic_suffix {
            // MDM topics come from the MDM certificate, not the bundle id.
            None => !topic.is_empty(),
            Some(suffix) => topic == format!("{}{suffix}", self.bundle_id),
        };
        if !topic_ok {
            return Err(reject(400, "TopicDisallowed"));
        }
        let priority = match header_str(headers, "apns-priority") {
            None => None,
            Some("1") => Some(1),
            Some("5") => Some(5),
            Some("10") => Some(10),
            Some(_) => return Err(reject(400, "BadPriority")),
        };
        // Apple requires 5 for background pushes; an omitted header is let
        // through since clients commonly rely on the documented default.
        if push_type == "background" && priority == Some(10) {
            return Err(reject(400, "BadPriority"));
        }
        let expiration = match header_str(headers, "apns-expiration") {
            None => None,
            Some(v) => match v.parse::<u64>() {
                Ok(e) if v.bytes().all(|b| b.is_ascii_digit()) => Some(e),
                _ => return Err(reject(400, "BadExpirationDate")),
            },
        };
        let collapse_id = header_str(headers, "apns-collapse-id");
        if collapse_id.is_some_and(|c| c.len() > MAX_COLLAPSE_ID) {
            return Err(reject(400, "BadCollapseId"));
        }
        if headers.get("apns-id").is_some() && !header_str(headers, "apns-id").is_some_and(is_uuid)
        {
            return Err(reject(400, "BadMessageId"));
        }

        if body.is_empty() {
            return Err(reject(400, "PayloadEmpty"));
        }
        let max = if push_type == "voip" {
            MAX_VOIP_PAYLOAD
        } else {
            MAX_PAYLOAD
        };
        if body.len() > max {
            return Err(reject(413, "PayloadTooLarge"));
        }
        let payload: Value = serde_json::from_slice(body).map_err(|_| reject(400, "BadPayload"))?;
        let Some(aps) = payload.get("aps").and_then(Value::as_object) else {
            return Err(reject(400, "BadPayload"));
        };
        if push_type == "background" {
            let silent = aps.get("content-available").and_then(Value::as_i64) == Some(1)
                && !["alert", "sound", "badge"]
                    .iter()
                    .any(|k| aps.contains_key(*k));
            if !silent {
                return Err(reject(400, "BadPayload"));
            }
        }

        if let Some(ts) = st.unregistered.get(&device_token.to_ascii_lowercase()) {
            return Err(Rejection {
                timestamp: Some(*ts),
                ..reject(410, "Unregistered")
            });
        }
        st.notifications.push(ApnsNotification {
            at: Instant::now(),
            device_token: device_token.to_owned(),
            push_type: push_type.to_owned(),
            topic: topic.to_owned(),
            priority,
            expiration,
            collapse_id: collapse_id.map(str::to_owned),
            payload,
        });
        Ok(())
    }

    /// The provider-token checks, in the order Apple documents its 403s,
    /// then the refresh-rate limit.
    fn check_provider_token(
        &self,
        st: &mut ApnsState,
        headers: &HeaderMap,
    ) -> Result<(), Rejection> {
        let Some(token) = auth_param(headers, "bearer") else {
            return Err(reject(403, "MissingProviderToken"));
        };
        let invalid = || reject(403, "InvalidProviderToken");
        let jwt = Jwt::parse(token).map_err(|_| invalid())?;
        if jwt.header_str("alg") != Some("ES256")
            || jwt.header_str("kid") != Some(self.key_id.as_str())
            || jwt.claim_str("iss") != Some(self.team_id.as_str())
        {
            return Err(invalid());
        }
        let iat = jwt.claim_int("iat").ok_or_else(invalid)?;
        // A token whose signature was verified before is the same bytes:
        // verifying once is enough (as a server verifies once per token, not
        // per request); its age is still checked every time.
        if !st.accepted_tokens.contains(token) {
            signature::UnparsedPublicKey::new(
                &signature::ECDSA_P256_SHA256_FIXED,
                &self.public_key,
            )
            .verify(jwt.signing_input.as_bytes(), &jwt.signature)
            .map_err(|_| invalid())?;
        }
        let now = unix_now();
        if iat > now + MAX_IAT_SKEW_SECS {
            return Err(invalid());
        }
        if now - iat > st.token_lifetime.as_secs() as i64 {
            return Err(reject(403, "ExpiredProviderToken"));
        }
        if !st.accepted_tokens.contains(token) {
            if st
                .last_token_update
                .is_some_and(|t| t.elapsed() < st.min_token_update)
            {
                return Err(reject(429, "TooManyProviderTokenUpdates"));
            }
            st.accepted_tokens.insert(token.to_owned());
            st.last_token_update = Some(Instant::now());
        }
        Ok(())
    }
}

/// The `apns-topic` suffix each push type requires after the bundle id:
/// `None` for an unknown or missing push type, `Some(None)` for MDM, whose
/// topic comes from the MDM certificate rather than the bundle id.
fn topic_suffix(push_type: &str) -> Option<Option<&'static str>> {
    Some(Some(match push_type {
        "alert" | "background" => "",
        "voip" => ".voip",
        "complication" => ".complication",
        "fileprovider" => ".pushkit.fileprovider",
        "location" => ".location-query",
        "liveactivity" => ".push-type.liveactivity",
        "pushtotalk" => ".voip-ptt",
        "widgets" => ".push-type.widgets",
        "controls" => ".push-type.controls",
        "mdm" => return Some(None),
        _ => return None,
    }))
}

fn scripted(f: &Failure) -> Rejection {
    let default = match f.status {
        400 => "BadDeviceToken",
        403 => "InvalidProviderToken",
        404 => "BadPath",
        405 => "MethodNotAllowed",
        410 => "Unregistered",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    };
    Rejection {
        status: f.status,
        reason: if f.reason.is_empty() {
            default.to_owned()
        } else {
            f.reason.clone()
        },
        timestamp: (f.status == 410).then(unix_now_ms),
        retry_after: f.retry_after,
    }
}

/// Canonical 8-4-4-4-12 hex UUID, as `apns-id` must be.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A random (version 4) UUID, lowercase like Apple's examples.
fn new_uuid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::util::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_uuid(&new_uuid()));
        assert!(is_uuid("EABEAE54-14A8-11E5-B60B-1697F925EC7B"));
        assert!(!is_uuid("eabeae5414a811e5b60b1697f925ec7b"));
        assert!(!is_uuid("eabeae54-14a8-11e5-b60b-1697f925ec7g"));
    }

    #[test]
    fn topics() {
        assert_eq!(topic_suffix("voip"), Some(Some(".voip")));
        assert_eq!(topic_suffix("mdm"), Some(None));
        assert_eq!(topic_suffix("Alert"), None);
        assert_eq!(topic_suffix(""), None);
    }
}
