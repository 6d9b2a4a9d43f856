//! APNs fake (token auth, HTTP/2 only), driven over TLS by reqwest.

mod common;

use std::time::Duration;

use common::{builder, now, sign_es256};
use natter_provider_fakes::Failure;
use natter_provider_fakes::apns::ApnsFake;
use natter_provider_fakes::tls::TestCa;
use serde_json::{Value, json};

const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY9876543";
const BUNDLE: &str = "chat.natter.app";

struct Env {
    ca: TestCa,
    apns: ApnsFake,
    http: reqwest::Client,
    /// One provider token for the whole test, as a client caches it: ES256
    /// signatures are randomised, so re-signing would make a new token and
    /// trip `TooManyProviderTokenUpdates`.
    jwt: String,
}

async fn env() -> Env {
    let ca = TestCa::new();
    let apns = ApnsFake::start(&ca, TEAM, KEY_ID, BUNDLE).await;
    let http = builder(&ca).http2_prior_knowledge().build().unwrap();
    let jwt = jwt_at(&apns.key_p8(), now());
    Env {
        ca,
        apns,
        http,
        jwt,
    }
}

fn device(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn jwt_at(key_p8: &str, iat: i64) -> String {
    sign_es256(
        key_p8,
        &json!({"alg": "ES256", "kid": KEY_ID}),
        &json!({"iss": TEAM, "iat": iat}),
    )
}

struct Push<'a> {
    token: String,
    jwt: Option<String>,
    headers: Vec<(&'a str, String)>,
    body: String,
}

impl<'a> Push<'a> {
    fn alert(env: &Env, n: u8) -> Push<'a> {
        Push {
            token: device(n),
            jwt: Some(env.jwt.clone()),
            headers: vec![
                ("apns-topic", BUNDLE.to_owned()),
                ("apns-push-type", "alert".to_owned()),
            ],
            body: json!({"aps": {"alert": {"title": "Alice", "body": "hi"}}}).to_string(),
        }
    }

    fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.to_owned()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    fn jwt(mut self, jwt: Option<String>) -> Self {
        self.jwt = jwt;
        self
    }
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or_default()
    }
}

async fn push(env: &Env, p: Push<'_>) -> Reply {
    let mut req = env
        .http
        .post(format!("{}/3/device/{}", env.apns.endpoint(), p.token))
        .body(p.body);
    if let Some(jwt) = p.jwt {
        req = req.header("authorization", format!("bearer {jwt}"));
    }
    for (k, v) in p.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("push");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON error body")
    };
    Reply {
        status,
        headers,
        body,
    }
}

async fn expect(env: &Env, p: Push<'_>, status: u16, reason: &str) {
    let r = push(env, p).await;
    assert_eq!((r.status, r.reason()), (status, reason), "{}", r.body);
}

#[tokio::test]
async fn valid_push_is_accepted_and_recorded() {
    let env = env().await;
    let key = env.apns.key_p8();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(key.trim_end().ends_with("-----END PRIVATE KEY-----"));

    let r = push(
        &env,
        Push::alert(&env, 1)
            .header("apns-priority", "10")
            .header("apns-expiration", "0")
            .header("apns-collapse-id", "conv-42"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, Value::Null, "success has an empty body");
    let id = r.headers["apns-id"].to_str().unwrap();
    assert_eq!(id.len(), 36);

    let given = "EABEAE54-14A8-11E5-B60B-1697F925EC7B";
    let r = push(&env, Push::alert(&env, 2).header("apns-id", given)).await;
    assert_eq!(
        (r.status, r.headers["apns-id"].to_str().unwrap()),
        (200, given)
    );

    let n = env.apns.notifications();
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].device_token, device(1));
    assert_eq!(n[0].push_type, "alert");
    assert_eq!(n[0].topic, BUNDLE);
    assert_eq!(n[0].priority, Some(10));
    assert_eq!(n[0].expiration, Some(0));
    assert_eq!(n[0].collapse_id.as_deref(), Some("conv-42"));
    assert_eq!(n[0].payload["aps"]["alert"]["title"], "Alice");
    assert_eq!(n[1].priority, None);
    assert_eq!(env.apns.provider_tokens_accepted(), 1);
    assert_eq!(env.apns.connections(), 1, "one HTTP/2 connection, reused");
}

#[tokio::test]
async fn many_concurrent_streams_share_one_connection() {
    let env = env().await;
    let jwt = env.jwt.clone();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let env_http = env.http.clone();
        let url = format!(
            "{}/3/device/{}",
            env.apns.endpoint(),
            format!("{:08x}", i).repeat(8)
        );
        let jwt = jwt.clone();
        tasks.push(tokio::spawn(async move {
            env_http
                .post(url)
                .header("authorization", format!("bearer {jwt}"))
                .header("apns-topic", BUNDLE)
                .header("apns-push-type", "alert")
                .body(r#"{"aps":{"alert":"x"}}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(env.apns.notifications().len(), 300);
    assert_eq!(env.apns.connections(), 1);
    assert_eq!(env.apns.provider_tokens_accepted(), 1);
}

#[tokio::test]
async fn provider_token_is_checked() {
    let env = env().await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(None),
        403,
        "MissingProviderToken",
    )
    .await;
    let wrong = jwt_at(&env.apns.wrong_key_p8(), now());
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(wrong)),
        403,
        "InvalidProviderToken",
    )
    .await;
    let key = env.apns.key_p8();
    let bad_kid = sign_es256(
        &key,
        &json!({"alg": "ES256", "kid": "OTHERKEY00"}),
        &json!({"iss": TEAM, "iat": now()}),
    );
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(bad_kid)),
        403,
        "InvalidProviderToken",
    )
    .await;
    let bad_iss = sign_es256(
        &key,
        &json!({"alg": "ES256", "kid": KEY_ID}),
        &json!({"iss": "OTHERTEAM0", "iat": now()}),
    );
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(bad_iss)),
        403,
        "InvalidProviderToken",
    )
    .await;
    let no_iat = sign_es256(
        &key,
        &json!({"alg": "ES256", "kid": KEY_ID}),
        &json!({"iss": TEAM}),
    );
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(no_iat)),
        403,
        "InvalidProviderToken",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some("garbage".into())),
        403,
        "InvalidProviderToken",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(jwt_at(&key, now() + 300))),
        403,
        "InvalidProviderToken",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(jwt_at(&key, now() - 3700))),
        403,
        "ExpiredProviderToken",
    )
    .await;

    env.apns.set_token_lifetime(Duration::from_secs(60));
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(jwt_at(&key, now() - 120))),
        403,
        "ExpiredProviderToken",
    )
    .await;
    assert_eq!(env.apns.provider_tokens_accepted(), 0);
    assert!(env.apns.notifications().is_empty());
    assert_eq!(env.apns.attempts().len(), 9);
}

#[tokio::test]
async fn provider_token_updates_are_rate_limited() {
    let env = env().await;
    let key = env.apns.key_p8();
    let first = jwt_at(&key, now() - 10);
    let second = jwt_at(&key, now());
    assert_ne!(first, second);
    expect(&env, Push::alert(&env, 1).jwt(Some(first.clone())), 200, "").await;
    expect(&env, Push::alert(&env, 1).jwt(Some(first.clone())), 200, "").await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(second.clone())),
        429,
        "TooManyProviderTokenUpdates",
    )
    .await;
    expect(&env, Push::alert(&env, 1).jwt(Some(first.clone())), 200, "").await;
    assert_eq!(env.apns.provider_tokens_accepted(), 1);

    env.apns.set_min_token_update(Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(250)).await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(second.clone())),
        200,
        "",
    )
    .await;
    // An already accepted token is never an "update".
    expect(&env, Push::alert(&env, 1).jwt(Some(first)), 200, "").await;
    expect(
        &env,
        Push::alert(&env, 1).jwt(Some(jwt_at(&key, now() - 20))),
        429,
        "TooManyProviderTokenUpdates",
    )
    .await;
    assert_eq!(env.apns.provider_tokens_accepted(), 2);
}

#[tokio::test]
async fn topics_and_push_types_are_checked() {
    let env = env().await;
    let voip = |env: &Env| {
        Push::alert(env, 3)
            .header("apns-push-type", "voip")
            .body(r#"{"aps":{},"call":"c1"}"#)
    };
    expect(&env, voip(&env), 400, "TopicDisallowed").await;
    expect(
        &env,
        voip(&env).header("apns-topic", "chat.natter.app.voip"),
        200,
        "",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3).header("apns-topic", "chat.natter.app.voip"),
        400,
        "TopicDisallowed",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3).header("apns-topic", "com.other.app"),
        400,
        "TopicDisallowed",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3).without("apns-topic"),
        400,
        "MissingTopic",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3).without("apns-push-type"),
        400,
        "InvalidPushType",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3).header("apns-push-type", "silent"),
        400,
        "InvalidPushType",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3)
            .header("apns-push-type", "liveactivity")
            .header("apns-topic", "chat.natter.app.push-type.liveactivity"),
        200,
        "",
    )
    .await;

    // Payload limits: 5120 bytes for VoIP, 4096 for the rest.
    let big = |n: usize| json!({"aps": {}, "pad": "x".repeat(n)}).to_string();
    let voip_ok = big(5000);
    assert!(voip_ok.len() > 4096 && voip_ok.len() <= 5120);
    expect(
        &env,
        voip(&env)
            .header("apns-topic", "chat.natter.app.voip")
            .body(voip_ok.clone()),
        200,
        "",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 3).body(voip_ok),
        413,
        "PayloadTooLarge",
    )
    .await;
    expect(
        &env,
        voip(&env)
            .header("apns-topic", "chat.natter.app.voip")
            .body(big(5200)),
        413,
        "PayloadTooLarge",
    )
    .await;
    let exact = big(4096 - big(0).len());
    assert_eq!(exact.len(), 4096);
    expect(&env, Push::alert(&env, 3).body(exact), 200, "").await;
}

#[tokio::test]
async fn background_pushes_must_be_silent_and_low_priority() {
    let env = env().await;
    let bg = |env: &Env| {
        Push::alert(env, 4)
            .header("apns-push-type", "background")
            .body(r#"{"aps":{"content-available":1},"sync":"inbox"}"#)
    };
    expect(
        &env,
        bg(&env).header("apns-priority", "10"),
        400,
        "BadPriority",
    )
    .await;
    expect(&env, bg(&env).header("apns-priority", "5"), 200, "").await;
    expect(
        &env,
        bg(&env)
            .header("apns-priority", "5")
            .body(r#"{"aps":{"content-available":1,"alert":"hi"}}"#),
        400,
        "BadPayload",
    )
    .await;
    expect(
        &env,
        bg(&env)
            .header("apns-priority", "5")
            .body(r#"{"aps":{"sound":"default"}}"#),
        400,
        "BadPayload",
    )
    .await;
    let n = env.apns.notifications();
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].push_type.as_str(), n[0].priority),
        ("background", Some(5))
    );
}

#[tokio::test]
async fn headers_and_payload_are_checked() {
    let env = env().await;
    let mut short = Push::alert(&env, 5);
    short.token = "abcd".into();
    expect(&env, short, 400, "BadDeviceToken").await;
    let mut not_hex = Push::alert(&env, 5);
    not_hex.token = "z".repeat(64);
    expect(&env, not_hex, 400, "BadDeviceToken").await;
    for p in ["0", "7", "high", "10 "] {
        expect(
            &env,
            Push::alert(&env, 5).header("apns-priority", p),
            400,
            "BadPriority",
        )
        .await;
    }
    for e in ["-1", "soon", "1.5"] {
        expect(
            &env,
            Push::alert(&env, 5).header("apns-expiration", e),
            400,
            "BadExpirationDate",
        )
        .await;
    }
    expect(
        &env,
        Push::alert(&env, 5).header("apns-collapse-id", &"c".repeat(65)),
        400,
        "BadCollapseId",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 5).header("apns-collapse-id", &"c".repeat(64)),
        200,
        "",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 5).header("apns-id", "not-a-uuid"),
        400,
        "BadMessageId",
    )
    .await;
    expect(&env, Push::alert(&env, 5).body(""), 400, "PayloadEmpty").await;
    expect(
        &env,
        Push::alert(&env, 5).body("{not json"),
        400,
        "BadPayload",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 5).body(r#"{"alert":"no aps"}"#),
        400,
        "BadPayload",
    )
    .await;
    expect(
        &env,
        Push::alert(&env, 5).body(r#"{"aps":"text"}"#),
        400,
        "BadPayload",
    )
    .await;
    assert_eq!(env.apns.notifications().len(), 1);

    // Unknown path and method.
    let r = env
        .http
        .post(format!("{}/3/devices/{}", env.apns.endpoint(), device(5)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "BadPath");
    let r = env
        .http
        .get(format!("{}/3/device/{}", env.apns.endpoint(), device(5)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["reason"],
        "MethodNotAllowed"
    );
}

#[tokio::test]
async fn unregistered_tokens_get_410_with_timestamp() {
    let env = env().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    env.apns.unregister(&device(6));
    let r = push(&env, Push::alert(&env, 6)).await;
    assert_eq!((r.status, r.reason()), (410, "Unregistered"));
    let ts = r.body["timestamp"].as_u64().expect("timestamp");
    assert!(ts >= before && ts < before + 60_000);
    // Validation still comes first: a bad request to a dead token is a 400.
    expect(
        &env,
        Push::alert(&env, 6).without("apns-topic"),
        400,
        "MissingTopic",
    )
    .await;
    expect(&env, Push::alert(&env, 7), 200, "").await;
    let a = env.apns.attempts();
    assert_eq!(
        (a[0].status, a[0].reason.as_str(), a[0].target.clone()),
        (410, "Unregistered", device(6))
    );
}

#[tokio::test]
async fn scripted_failures() {
    let env = env().await;
    env.apns.fail_next(Failure::status(429).with_retry_after(3));
    env.apns.fail_next(Failure::status(503));
    env.apns.fail_next(Failure::status(500));
    // A token failure does not consume the script.
    expect(
        &env,
        Push::alert(&env, 8).jwt(None),
        403,
        "MissingProviderToken",
    )
    .await;
    let r = push(&env, Push::alert(&env, 8)).await;
    assert_eq!((r.status, r.reason()), (429, "TooManyRequests"));
    assert_eq!(r.headers["retry-after"], "3");
    assert!(r.headers.contains_key("apns-id"));
    expect(&env, Push::alert(&env, 8), 503, "ServiceUnavailable").await;
    expect(&env, Push::alert(&env, 8), 500, "InternalServerError").await;
    expect(&env, Push::alert(&env, 8), 200, "").await;
    let reasons: Vec<String> = env.apns.attempts().into_iter().map(|a| a.reason).collect();
    assert_eq!(
        reasons,
        [
            "MissingProviderToken",
            "TooManyRequests",
            "ServiceUnavailable",
            "InternalServerError",
            ""
        ]
    );
}

#[tokio::test]
async fn http1_is_refused() {
    let env = env().await;
    // ALPN offering only http/1.1: the TLS handshake fails.
    let http1 = builder(&env.ca).http1_only().build().unwrap();
    let r = http1
        .post(format!("{}/3/device/{}", env.apns.endpoint(), device(9)))
        .header(
            "authorization",
            format!("bearer {}", jwt_at(&env.apns.key_p8(), now())),
        )
        .header("apns-topic", BUNDLE)
        .header("apns-push-type", "alert")
        .body(r#"{"aps":{"alert":"x"}}"#)
        .send()
        .await;
    assert!(r.is_err(), "HTTP/1.1 must not get through: {r:?}");
    assert!(env.apns.attempts().is_empty());
    assert_eq!(env.apns.connections(), 0);
}
