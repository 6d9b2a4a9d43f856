//! Firebase Cloud Messaging HTTP v1 and the Google OAuth2 token endpoint it
//! depends on.
//!
//! A client authenticates like a real server-side SDK: it signs an RS256 JWT
//! with the service account's key ([`FcmFake::service_account_json`]), trades
//! it at `POST /token` for an access token, and sends with
//! `POST /v1/projects/{project}/messages:send` and `Authorization: Bearer`.

mod message;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use self::message::{Target, best_effort_target};
use crate::jwt::Jwt;
use crate::script::Script;
use crate::tls::{self, Server, TestCa};
use crate::util::{
    auth_param, json_response, lock, media_type, pem, random_bytes, random_hex, unix_now,
};
use crate::{Attempt, Failure};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Google's umbrella scope, which also authorises FCM sends.
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Allowed clock skew on `iat`, and the longest assertion lifetime.
const MAX_SKEW_SECS: i64 = 300;
const MAX_ASSERTION_SECS: i64 = 3600;
const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// A message FCM accepted for delivery (not `validate_only` ones).
#[derive(Debug, Clone)]
pub struct FcmMessage {
    /// When it was accepted.
    pub at: Instant,
    /// The device token, or the topic / condition for those targets.
    pub token: String,
    /// The `message` object as sent.
    pub message: Value,
}

/// The FCM + OAuth2 fake. Cheap to clone; clones share state and server,
/// which shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct FcmFake {
    shared: Arc<Shared>,
    server: Arc<Server>,
}

struct Shared {
    project_id: String,
    client_email: String,
    client_id: String,
    private_key_id: String,
    private_key_pem: String,
    /// RFC 8017 `RSAPublicKey` DER, the form `UnparsedPublicKey` takes.
    public_key: Vec<u8>,
    /// `{base_url}/token`, known once the listener is bound.
    token_uri: OnceLock<String>,
    state: Mutex<FcmState>,
}

struct FcmState {
    script: Script,
    /// Issued access tokens and when each expires.
    access_tokens: HashMap<String, Instant>,
    token_lifetime: u64,
    token_grants: usize,
    rejected_grants: Vec<String>,
    registered: HashSet<String>,
    unregistered: HashSet<String>,
    messages: Vec<FcmMessage>,
    unauthenticated: usize,
    next_message_id: u64,
}

/// A response plus what goes into the attempt log.
struct Outcome {
    status: u16,
    reason: String,
    body: Value,
    retry_after: Option<u64>,
}

impl FcmFake {
    /// Generates a service-account key and starts the fake for `project_id`.
    ///
    /// # Panics
    /// If key generation fails or the listener cannot be bound.
    pub async fn start(ca: &TestCa, project_id: &str) -> FcmFake {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let shared = Arc::new(Shared {
            project_id: project_id.to_owned(),
            client_email: format!("natter-push@{project_id}.iam.gserviceaccount.com"),
            client_id: client_id(),
            private_key_id: random_hex(20),
            private_key_pem: rsa_pkcs8_pem(&key),
            public_key: key.public_key().as_ref().to_vec(),
            token_uri: OnceLock::new(),
            state: Mutex::new(FcmState {
                script: Script::default(),
                access_tokens: HashMap::new(),
                token_lifetime: 3599,
                token_grants: 0,
                rejected_grants: Vec::new(),
                registered: HashSet::new(),
                unregistered: HashSet::new(),
                messages: Vec::new(),
                unauthenticated: 0,
                next_message_id: crate::util::unix_now_ms() * 1000,
            }),
        });
        let router = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/{method}", post(send))
            .fallback(not_found)
            .with_state(shared.clone());
        let server = tls::serve(ca, router, false)
            .await
            .expect("start the FCM fake");
        let _ = shared.token_uri.set(format!("{}/token", server.base_url()));
        FcmFake {
            shared,
            server: Arc::new(server),
        }
    }

    /// A Google service-account key file (JSON) for this fake's project,
    /// whose `token_uri` points at the fake.
    pub fn service_account_json(&self) -> String {
        self.account_json(&self.shared.private_key_pem)
    }

    /// The same key file with a different, freshly generated private key:
    /// assertions signed with it fail with "Invalid JWT Signature.".
    ///
    /// # Panics
    /// If key generation fails.
    pub fn service_account_json_with_wrong_key(&self) -> String {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        self.account_json(&rsa_pkcs8_pem(&key))
    }

    fn account_json(&self, private_key: &str) -> String {
        let s = &self.shared;
        let email_escaped = s.client_email.replace('@', "%40");
        let v = json!({
            "type": "service_account",
            "project_id": s.project_id,
            "private_key_id": s.private_key_id,
            "private_key": private_key,
            "client_email": s.client_email,
            "client_id": s.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{email_escaped}"),
            "universe_domain": "googleapis.com",
        });
        serde_json::to_string_pretty(&v).expect("JSON serialisation")
    }

    fn token_uri(&self) -> String {
        self.shared.token_uri.get().cloned().unwrap_or_default()
    }

    /// The base URL; messages go to `{endpoint}/v1/projects/{project}/messages:send`.
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Lifetime (`expires_in`) of access tokens issued from now on; default 3599 s.
    pub fn set_token_lifetime(&self, secs: u64) {
        lock(&self.shared.state).token_lifetime = secs;
    }

    /// Access tokens issued so far.
    pub fn token_grants(&self) -> usize {
        lock(&self.shared.state).token_grants
    }

    /// `error_description` of every refused token request, in order.
    pub fn rejected_grants(&self) -> Vec<String> {
        lock(&self.shared.state).rejected_grants.clone()
    }

    /// Makes `token` valid whatever its shape (and undoes [`Self::unregister`]).
    pub fn register(&self, token: &str) {
        let mut st = lock(&self.shared.state);
        st.unregistered.remove(token);
        st.registered.insert(token.to_owned());
    }

    /// Later sends to `token` fail with 404 `UNREGISTERED`, as after an app
    /// uninstall.
    pub fn unregister(&self, token: &str) {
        let mut st = lock(&self.shared.state);
        st.registered.remove(token);
        st.unregistered.insert(token.to_owned());
    }

    /// Queues a scripted failure for a later send (after its auth check).
    pub fn fail_next(&self, f: Failure) {
        lock(&self.shared.state).script.push(f);
    }

    /// Every request to `messages:send`, in order.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.shared.state).script.attempts()
    }

    /// Messages accepted for delivery, in order.
    pub fn messages(&self) -> Vec<FcmMessage> {
        lock(&self.shared.state).messages.clone()
    }

    /// Sends refused with 401 (missing, unknown or expired access token).
    pub fn unauthenticated(&self) -> usize {
        lock(&self.shared.state).unauthenticated
    }
}

fn rsa_pkcs8_pem(key: &RsaKeyPair) -> String {
    let der: Pkcs8V1Der<'static> = key.as_der().expect("PKCS#8 encoding");
    pem("PRIVATE KEY", der.as_ref())
}

/// A 21-digit numeric client id like Google's.
fn client_id() -> String {
    let mut id = String::from("1");
    for b in random_bytes(20) {
        id.push(char::from(b'0' + b % 10));
    }
    id
}

async fn not_found() -> Response {
    json_response(
        404,
        &google_error(404, "NOT_FOUND", "Requested entity was not found.", None),
        None,
    )
}

/// `POST /token`: the OAuth2 JWT-bearer grant (RFC 7523) as Google runs it.
async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    match s.grant(&headers, &body) {
        Ok((access_token, expires_in)) => json_response(
            200,
            &json!({
                "access_token": access_token,
                "expires_in": expires_in,
                "token_type": "Bearer",
            }),
            None,
        ),
        Err((error, description)) => {
            lock(&s.state).rejected_grants.push(description.clone());
            json_response(
                400,
                &json!({ "error": error, "error_description": description }),
                None,
            )
        }
    }
}

type GrantError = (&'static str, String);

impl Shared {
    fn grant(&self, headers: &HeaderMap, body: &[u8]) -> Result<(String, u64), GrantError> {
        let invalid_grant = |d: &str| ("invalid_grant", d.to_owned());
        if media_type(headers).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err((
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded".to_owned(),
            ));
        }
        let params: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let grant_type = params.get("grant_type").ok_or((
            "invalid_request",
            "Missing required parameter: grant_type".to_owned(),
        ))?;
        if grant_type != JWT_BEARER {
            return Err((
                "unsupported_grant_type",
                format!("Invalid grant_type: {grant_type}"),
            ));
        }
        let assertion = params.get("assertion").ok_or((
            "invalid_request",
            "Missing required parameter: assertion".to_owned(),
        ))?;
        let jwt = Jwt::parse(assertion).map_err(|e| invalid_grant(&format!("Invalid JWT: {e}")))?;

        if jwt.header_str("alg") != Some("RS256") {
            return Err(invalid_grant(
                "Invalid JWT: unsupported signing algorithm; expected RS256",
            ));
        }
        if jwt.header.get("typ").is_some_and(|t| t != "JWT") {
            return Err(invalid_grant("Invalid JWT: typ must be JWT"));
        }
        if jwt.claim_str("iss") != Some(self.client_email.as_str()) {
            return Err(invalid_grant("Invalid grant: account not found"));
        }
        // Google's documented header omits `kid` and then tries the account's
        // keys; a `kid` naming another key cannot verify.
        let kid_ok = match jwt.header.get("kid") {
            None => true,
            Some(k) => k.as_str() == Some(self.private_key_id.as_str()),
        };
        let sig_ok = kid_ok
            && signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &self.public_key,
            )
            .verify(jwt.signing_input.as_bytes(), &jwt.signature)
            .is_ok();
        if !sig_ok {
            return Err(invalid_grant("Invalid JWT Signature."));
        }
        let token_uri = self.token_uri.get().map(String::as_str).unwrap_or_default();
        if jwt.claim_str("aud") != Some(token_uri) {
            return Err(invalid_grant(&format!(
                "Invalid JWT: Failed audience check. The right audience is {token_uri}"
            )));
        }
        let (Some(iat), Some(exp)) = (jwt.claim_int("iat"), jwt.claim_int("exp")) else {
            return Err(invalid_grant(SHORT_LIVED));
        };
        let now = unix_now();
        let timely = (now - MAX_SKEW_SECS..=now + MAX_SKEW_SECS).contains(&iat)
            && exp > now
            && exp > iat
            && exp - iat <= MAX_ASSERTION_SECS;
        if !timely {
            return Err(invalid_grant(SHORT_LIVED));
        }
        let scope_ok = jwt.claim_str("scope").is_some_and(|s| {
            s.split(' ')
                .any(|scope| scope == FCM_SCOPE || scope == CLOUD_PLATFORM_SCOPE)
        });
        if !scope_ok {
            return Err((
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.".to_owned(),
            ));
        }

        let access_token = format!("ya29.c.{}", base64_url(&random_bytes(96)));
        let mut st = lock(&self.state);
        let lifetime = st.token_lifetime;
        st.access_tokens.insert(
            access_token.clone(),
            Instant::now() + Duration::from_secs(lifetime),
        );
        st.token_grants += 1;
        Ok((access_token, lifetime))
    }

    fn send(&self, project: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
        let mut st = lock(&self.state);
        let authorised = auth_param(headers, "Bearer")
            .and_then(|t| st.access_tokens.get(t))
            .is_some_and(|expiry| Instant::now() < *expiry);
        if !authorised {
            st.unauthenticated += 1;
            return error_outcome(401, "UNAUTHENTICATED", UNAUTHENTICATED, None, None);
        }
        if project != self.project_id {
            let msg = format!(
                "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
            );
            return error_outcome(403, "PERMISSION_DENIED", &msg, None, None);
        }
        if let Some(f) = st.script.pop() {
            return scripted(&f);
        }
        if media_type(headers).as_deref() != Some("application/json") {
            return invalid(
                "Invalid JSON payload received. Content-Type must be application/json.",
            );
        }
        let parsed: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return invalid(&format!("Invalid JSON payload received. {e}.")),
        };
        let checked = match message::check(&parsed) {
            Ok(c) => c,
            Err(e) => {
                let mut out = invalid(&e.message);
                if let Some(field) = e.field {
                    bad_request_detail(&mut out.body, &field, &e.message);
                }
                return out;
            }
        };
        if let Target::Token(t) = &checked.target {
            if st.unregistered.contains(t) {
                return error_outcome(
                    404,
                    "NOT_FOUND",
                    "Requested entity was not found.",
                    Some("UNREGISTERED"),
                    None,
                );
            }
            if !st.registered.contains(t) && !plausible_token(t) {
                return error_outcome(
                    400,
                    "INVALID_ARGUMENT",
                    "The registration token is not a valid FCM registration token",
                    Some("INVALID_ARGUMENT"),
                    None,
                );
            }
        }
        let project = &self.project_id;
        if checked.validate_only {
            // What the real API answers for a dry run.
            return ok(json!({ "name": format!("projects/{project}/messages/fake_message_id") }));
        }
        st.next_message_id += 1;
        let name = format!(
            "projects/{project}/messages/0:{}%{}",
            st.next_message_id,
            random_hex(8)
        );
        st.messages.push(FcmMessage {
            at: Instant::now(),
            token: checked.target.as_str().to_owned(),
            message: checked.message,
        });
        ok(json!({ "name": name }))
    }
}

/// `POST /v1/projects/{project}/{method}`; only `messages:send` exists.
async fn send(
    State(s): State<Arc<Shared>>,
    Path((project, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != "messages:send" {
        return not_found().await;
    }
    let out = s.send(&project, &headers, &body);
    lock(&s.state)
        .script
        .record(&best_effort_target(&body), out.status, &out.reason);
    let mut resp = json_response(out.status, &out.body, out.retry_after);
    if out.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
        );
    }
    resp
}

/// Shape of real FCM tokens: long strings over `[A-Za-z0-9_:-]`.
fn plausible_token(t: &str) -> bool {
    t.len() >= 20
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-')
}

fn ok(body: Value) -> Outcome {
    Outcome {
        status: 200,
        reason: String::new(),
        body,
        retry_after: None,
    }
}

fn invalid(message: &str) -> Outcome {
    error_outcome(
        400,
        "INVALID_ARGUMENT",
        message,
        Some("INVALID_ARGUMENT"),
        None,
    )
}

fn scripted(f: &Failure) -> Outcome {
    let (status, default_code, message) = match f.status {
        400 => (
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        ),
        401 => (
            "UNAUTHENTICATED",
            "THIRD_PARTY_AUTH_ERROR",
            "Auth error from APNS or Web Push Service",
        ),
        403 => (
            "PERMISSION_DENIED",
            "SENDER_ID_MISMATCH",
            "SenderId mismatch",
        ),
        404 => (
            "NOT_FOUND",
            "UNREGISTERED",
            "Requested entity was not found.",
        ),
        429 => (
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute'.",
        ),
        500 => ("INTERNAL", "INTERNAL", "Internal error encountered."),
        503 => (
            "UNAVAILABLE",
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ),
        _ => ("UNKNOWN", "UNSPECIFIED_ERROR", "Unknown error."),
    };
    let code = if f.reason.is_empty() {
        default_code
    } else {
        f.reason.as_str()
    };
    error_outcome(f.status, status, message, Some(code), f.retry_after)
}

fn error_outcome(
    code: u16,
    status: &str,
    message: &str,
    error_code: Option<&str>,
    retry_after: Option<u64>,
) -> Outcome {
    Outcome {
        status: code,
        reason: error_code.unwrap_or(status).to_owned(),
        body: google_error(code, status, message, error_code),
        retry_after,
    }
}

/// Google's JSON error envelope, with an `FcmError` detail when there is an
/// FCM error code.
fn google_error(code: u16, status: &str, message: &str, error_code: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message, "status": status });
    if let Some(ec) = error_code {
        error["details"] = json!([{ "@type": FCM_ERROR_TYPE, "errorCode": ec }]);
    }
    json!({ "error": error })
}

/// Adds the `google.rpc.BadRequest` field violation Google's JSON parser
/// reports next to the `FcmError`.
fn bad_request_detail(body: &mut Value, field: &str, description: &str) {
    if let Some(details) = body["error"]["details"].as_array_mut() {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": field, "description": description }],
        }));
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
