//! FCM HTTP v1 and Google OAuth2 fake, driven over TLS by reqwest.

mod common;

use std::time::Duration;

use common::{client, now, pem_der, sign_rs256};
use natter_provider_fakes::Failure;
use natter_provider_fakes::fcm::FcmFake;
use natter_provider_fakes::tls::TestCa;
use serde_json::{Value, json};

const PROJECT: &str = "natter-test";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const TOKEN: &str = "cK3Zq_4xT0e:APA91bH-device_token_0123456789abcdef";

struct Env {
    _ca: TestCa,
    fcm: FcmFake,
    http: reqwest::Client,
    sa: Value,
}

async fn env() -> Env {
    let ca = TestCa::new();
    let fcm = FcmFake::start(&ca, PROJECT).await;
    let http = client(&ca);
    let sa = serde_json::from_str(&fcm.service_account_json()).expect("service account JSON");
    Env {
        _ca: ca,
        fcm,
        http,
        sa,
    }
}

fn claims(sa: &Value) -> Value {
    let iat = now();
    json!({
        "iss": sa["client_email"],
        "scope": format!("https://www.googleapis.com/auth/cloud-language {SCOPE}"),
        "aud": sa["token_uri"],
        "iat": iat,
        "exp": iat + 3600,
    })
}

fn assertion_with(sa: &Value, header: Value, claims: Value) -> String {
    sign_rs256(sa["private_key"].as_str().expect("key"), &header, &claims)
}

fn assertion(sa: &Value, claims: Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": sa["private_key_id"]});
    assertion_with(sa, header, claims)
}

async fn grant(env: &Env, assertion: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion),
    ];
    let resp = env
        .http
        .post(env.sa["token_uri"].as_str().expect("token_uri"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&form))
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn access_token(env: &Env) -> String {
    let (status, body) = grant(env, &assertion(&env.sa, claims(&env.sa))).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn send_to(
    env: &Env,
    project: &str,
    bearer: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("{}/v1/projects/{project}/messages:send", env.fcm.endpoint());
    let mut req = env.http.post(url).json(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.expect("JSON body"))
}

async fn send(env: &Env, bearer: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = send_to(env, PROJECT, Some(bearer), &body).await;
    (s, b)
}

fn error_code(body: &Value) -> &str {
    body["error"]["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|d| d["errorCode"].as_str()))
        .unwrap_or_default()
}

#[tokio::test]
async fn service_account_file_has_googles_shape() {
    let env = env().await;
    let sa = &env.sa;
    assert_eq!(sa["type"], "service_account");
    assert_eq!(sa["project_id"], PROJECT);
    let kid = sa["private_key_id"].as_str().unwrap();
    assert_eq!(kid.len(), 40);
    assert!(kid.bytes().all(|b| b.is_ascii_hexdigit()));
    let key = sa["private_key"].as_str().unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(key.ends_with("\n-----END PRIVATE KEY-----\n"));
    assert!(
        key.lines()
            .filter(|l| !l.starts_with("-----"))
            .all(|l| l.len() <= 64)
    );
    aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pem_der(key)).expect("PKCS#8 RSA key");
    assert_eq!(
        sa["client_email"],
        format!("natter-push@{PROJECT}.iam.gserviceaccount.com")
    );
    assert!(
        sa["client_id"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_digit())
    );
    assert_eq!(sa["token_uri"], format!("{}/token", env.fcm.endpoint()));
    assert_eq!(sa["universe_domain"], "googleapis.com");
    for k in [
        "auth_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
    ] {
        assert!(sa[k].as_str().unwrap().starts_with("https://"), "{k}");
    }
    let wrong: Value =
        serde_json::from_str(&env.fcm.service_account_json_with_wrong_key()).unwrap();
    assert_eq!(wrong["private_key_id"], sa["private_key_id"]);
    assert_ne!(wrong["private_key"], sa["private_key"]);
}

#[tokio::test]
async fn valid_grant_and_send_are_accepted() {
    let env = env().await;
    let (status, body) = grant(&env, &assertion(&env.sa, claims(&env.sa))).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("ya29."));
    assert_eq!(env.fcm.token_grants(), 1);

    let msg = json!({"message": {
        "token": TOKEN,
        "data": {"kind": "chat", "conv": "42"},
        "notification": {"title": "Alice", "body": "hi"},
        "android": {"priority": "HIGH", "ttl": "86400s", "collapseKey": "conv-42", "directBootOk": true},
        "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"mutable-content": 1}}},
        "fcm_options": {"analytics_label": "chat_v1"},
    }});
    let (status, body) = send(&env, token, msg.clone()).await;
    assert_eq!(status, 200, "{body}");
    let name = body["name"].as_str().unwrap();
    let prefix = format!("projects/{PROJECT}/messages/0:");
    assert!(name.starts_with(&prefix), "{name}");
    let (counter, hex) = name[prefix.len()..].split_once('%').expect("counter%hex");
    assert!(counter.parse::<u64>().is_ok());
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));

    let messages = env.fcm.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].token, TOKEN);
    assert_eq!(messages[0].message, msg["message"]);
    let attempts = env.fcm.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].status, attempts[0].target.as_str()),
        (200, TOKEN)
    );

    // Lowercase priority, topic target and a dry run are all fine too.
    let (status, _) = send(
        &env,
        token,
        json!({"message": {"topic": "news", "android": {"priority": "normal"}}}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(
        &env,
        token,
        json!({"validate_only": true, "message": {"token": TOKEN}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["name"],
        format!("projects/{PROJECT}/messages/fake_message_id")
    );
    assert_eq!(env.fcm.messages().len(), 2, "dry runs are not delivered");
}

#[tokio::test]
async fn http1_clients_work_too() {
    let env = env().await;
    let token = access_token(&env).await;
    let http1 = common::builder(&env._ca).http1_only().build().unwrap();
    let resp = http1
        .post(format!(
            "{}/v1/projects/{PROJECT}/messages:send",
            env.fcm.endpoint()
        ))
        .bearer_auth(&token)
        .json(&json!({"message": {"token": TOKEN}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let env = env().await;
    let wrong: Value =
        serde_json::from_str(&env.fcm.service_account_json_with_wrong_key()).unwrap();
    let (status, body) = grant(&env, &assertion(&wrong, claims(&env.sa))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "Invalid JWT Signature.");

    // A valid signature under a kid naming another key cannot verify either.
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "0".repeat(40)});
    let (status, body) = grant(&env, &assertion_with(&env.sa, header, claims(&env.sa))).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Invalid JWT Signature."))
    );

    // Tampered claims after signing.
    let good = assertion(&env.sa, claims(&env.sa));
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(&env.sa);
    c["exp"] = json!(now() + 3000);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            c.to_string()
        ),
        parts[2]
    );
    let (status, body) = grant(&env, &forged).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Invalid JWT Signature."))
    );
    assert_eq!(env.fcm.token_grants(), 0);
    assert_eq!(env.fcm.rejected_grants(), vec!["Invalid JWT Signature."; 3]);
}

#[tokio::test]
async fn assertion_claims_are_checked() {
    let env = env().await;
    let sa = &env.sa;
    let cases: Vec<(&str, Value)> = vec![
        ("aud", {
            let mut c = claims(sa);
            c["aud"] = json!("https://oauth2.googleapis.com/token");
            c
        }),
        ("iss", {
            let mut c = claims(sa);
            c["iss"] = json!("someone@else.iam.gserviceaccount.com");
            c
        }),
        ("old iat", {
            let mut c = claims(sa);
            c["iat"] = json!(now() - 3000);
            c["exp"] = json!(now() + 600);
            c
        }),
        ("future iat", {
            let mut c = claims(sa);
            c["iat"] = json!(now() + 900);
            c["exp"] = json!(now() + 1800);
            c
        }),
        ("expired", {
            let mut c = claims(sa);
            c["iat"] = json!(now() - 200);
            c["exp"] = json!(now() - 100);
            c
        }),
        ("too long", {
            let mut c = claims(sa);
            c["exp"] = json!(now() + 7200);
            c
        }),
        ("no scope", {
            let mut c = claims(sa);
            c.as_object_mut().unwrap().remove("scope");
            c
        }),
    ];
    for (what, c) in cases {
        let (status, body) = grant(&env, &assertion(sa, c)).await;
        assert_eq!(status, 400, "{what}: {body}");
        let desc = body["error_description"].as_str().unwrap();
        match what {
            "aud" => assert!(desc.contains("audience"), "{desc}"),
            "iss" => assert_eq!(desc, "Invalid grant: account not found"),
            "no scope" => assert_eq!(body["error"], "invalid_scope"),
            _ => assert!(
                desc.starts_with("Invalid JWT: Token must be a short-lived token (60 minutes)"),
                "{what}: {desc}"
            ),
        }
    }
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let (status, body) = grant(&env, &assertion_with(sa, header, claims(sa))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // No kid is fine: Google's own documentation omits it.
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let (status, _) = grant(&env, &assertion_with(sa, header, claims(sa))).await;
    assert_eq!(status, 200);
    assert_eq!(env.fcm.rejected_grants().len(), 8);
}

#[tokio::test]
async fn token_request_format_is_checked() {
    let env = env().await;
    let a = assertion(&env.sa, claims(&env.sa));
    let url = env.sa["token_uri"].as_str().unwrap();
    let post = |ct: &'static str, body: String| {
        let req = env.http.post(url).header("content-type", ct).body(body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = post(
        "application/x-www-form-urlencoded",
        form_body(&[("grant_type", "client_credentials"), ("assertion", &a)]),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (s, b) = post(
        "application/x-www-form-urlencoded",
        form_body(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")]),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = post(
        "application/json",
        json!({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": a})
            .to_string(),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, b) = post(
        "application/x-www-form-urlencoded",
        form_body(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "not.a.jwt"),
        ]),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn missing_unknown_and_expired_access_tokens_are_401() {
    let env = env().await;
    let msg = json!({"message": {"token": TOKEN}});
    let (status, headers, body) = send_to(&env, PROJECT, None, &msg).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);
    assert!(body["error"]["message"].as_str().unwrap().starts_with(
        "Request had invalid authentication credentials. Expected OAuth 2 access token"
    ));
    assert!(headers.contains_key("www-authenticate"));
    let (status, _) = send(&env, "ya29.made-up", msg.clone()).await;
    assert_eq!(status, 401);

    env.fcm.set_token_lifetime(2);
    let (status, body) = grant(&env, &assertion(&env.sa, claims(&env.sa))).await;
    assert_eq!((status, body["expires_in"].as_u64()), (200, Some(2)));
    let short = body["access_token"].as_str().unwrap();
    let (status, _) = send(&env, short, msg.clone()).await;
    assert_eq!(status, 200, "valid before it expires");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = send(&env, short, msg).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(env.fcm.unauthenticated(), 3);
    assert!(env.fcm.messages().len() == 1);
    assert_eq!(
        env.fcm
            .attempts()
            .iter()
            .filter(|a| a.status == 401)
            .count(),
        3
    );
}

#[tokio::test]
async fn other_project_is_permission_denied() {
    let env = env().await;
    let token = access_token(&env).await;
    let (status, _, body) = send_to(
        &env,
        "someone-else",
        Some(&token),
        &json!({"message": {"token": TOKEN}}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
}

#[tokio::test]
async fn payload_schema_is_strict() {
    let env = env().await;
    let token = access_token(&env).await;
    let bad = |v: Value| {
        let env = &env;
        let token = &token;
        async move {
            let (status, body) = send(env, token, v).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
            assert_eq!(error_code(&body), "INVALID_ARGUMENT");
            body["error"]["message"].as_str().unwrap().to_owned()
        }
    };
    let m = bad(json!({"message": {"token": TOKEN, "x": 1}})).await;
    assert!(
        m.starts_with("Invalid JSON payload received. Unknown name \"x\" at 'message'"),
        "{m}"
    );
    let m =
        bad(json!({"message": {"token": TOKEN, "android": {"ttl": "60s", "time_to_live": 60}}}))
            .await;
    assert!(
        m.contains("Unknown name \"time_to_live\" at 'message.android'"),
        "{m}"
    );
    let m = bad(json!({"message": {"token": TOKEN}, "dry_run": true})).await;
    assert!(m.contains("Unknown name \"dry_run\""), "{m}");
    let m = bad(json!({"message": {"token": TOKEN, "data": {"n": 1}}})).await;
    assert!(
        m.contains("Invalid value at 'message.data[0].value' (TYPE_STRING), 1"),
        "{m}"
    );
    bad(json!({"message": {"token": TOKEN, "android": {"data": {"ok": true}}}})).await;
    bad(json!({"message": {"token": TOKEN, "data": ["a"]}})).await;
    for key in [
        "from",
        "google.sent_time",
        "gcm.notification.title",
        "message_type",
        "collapse_key",
    ] {
        let m = bad(json!({"message": {"token": TOKEN, "data": {key: "v"}}})).await;
        assert!(m.contains(key), "{m}");
    }
    for priority in ["URGENT", "Normal", "10"] {
        bad(json!({"message": {"token": TOKEN, "android": {"priority": priority}}})).await;
    }
    for ttl in ["-1s", "2419201s", "10m", "86400", "1.5", "s"] {
        bad(json!({"message": {"token": TOKEN, "android": {"ttl": ttl}}})).await;
    }
    bad(json!({"message": {"token": TOKEN, "topic": "news"}})).await;
    bad(json!({"message": {"data": {"a": "b"}}})).await;
    bad(json!({"message": {"token": TOKEN, "notification": {"title": 5}}})).await;
    bad(json!({"message": {"token": TOKEN, "android": {"direct_boot_ok": "yes"}}})).await;
    bad(json!({"message": {"token": TOKEN, "fcm_options": {"analytics_label": "has space"}}}))
        .await;
    bad(json!({"validate_only": "true", "message": {"token": TOKEN}})).await;
    bad(json!({"msg": {"token": TOKEN}})).await;
    bad(json!({"message": {"topic": "bad topic!"}})).await;
    let m = bad(json!({"message": {"token": TOKEN, "data": {"blob": "x".repeat(4100)}}})).await;
    assert_eq!(m, "Android message is too big");
    // Content type and JSON syntax.
    let resp = env
        .http
        .post(format!(
            "{}/v1/projects/{PROJECT}/messages:send",
            env.fcm.endpoint()
        ))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(json!({"message": {"token": TOKEN}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = env
        .http
        .post(format!(
            "{}/v1/projects/{PROJECT}/messages:send",
            env.fcm.endpoint()
        ))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Edge values that are valid.
    let (status, body) = send(&env, &token, json!({"message": {
        "token": TOKEN,
        "data": {"blob": "x".repeat(4000)},
        "android": {"ttl": "2419200s", "priority": "high", "notification": {"channel_id": "chat", "notification_count": 3}},
    }})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(
        &env,
        &token,
        json!({"message": {"token": TOKEN, "android": {"ttl": "3.5s"}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(env.fcm.messages().len(), 2);
}

#[tokio::test]
async fn device_tokens_are_checked() {
    let env = env().await;
    let token = access_token(&env).await;
    let (status, body) = send(&env, &token, json!({"message": {"token": "short"}})).await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "INVALID_ARGUMENT");
    assert_eq!(
        body["error"]["message"],
        "The registration token is not a valid FCM registration token"
    );
    let (status, _) = send(
        &env,
        &token,
        json!({"message": {"token": "has spaces but is long enough"}}),
    )
    .await;
    assert_eq!(status, 400);

    env.fcm.register("short");
    let (status, _) = send(&env, &token, json!({"message": {"token": "short"}})).await;
    assert_eq!(status, 200);

    env.fcm.unregister(TOKEN);
    let (status, body) = send(&env, &token, json!({"message": {"token": TOKEN}})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    assert_eq!(body["error"]["message"], "Requested entity was not found.");
    assert_eq!(
        body["error"]["details"][0],
        json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"})
    );
    let last = env.fcm.attempts().pop().unwrap();
    assert_eq!(
        (last.status, last.reason.as_str(), last.target.as_str()),
        (404, "UNREGISTERED", TOKEN)
    );
}

#[tokio::test]
async fn scripted_failures_come_first_in_order() {
    let env = env().await;
    let token = access_token(&env).await;
    env.fcm.fail_next(Failure {
        status: 429,
        reason: String::new(),
        retry_after: Some(7),
    });
    env.fcm.fail_next(Failure::status(503));
    env.fcm.fail_next(Failure::status(500));
    let msg = json!({"message": {"token": TOKEN}});

    // Auth is checked before the script: a 401 does not consume a failure.
    let (status, _) = send(&env, "ya29.nope", msg.clone()).await;
    assert_eq!(status, 401);

    let (status, headers, body) = send_to(&env, PROJECT, Some(&token), &msg).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(error_code(&body), "QUOTA_EXCEEDED");
    let (status, headers, body) = send_to(&env, PROJECT, Some(&token), &msg).await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (503, Some("UNAVAILABLE"))
    );
    assert!(!headers.contains_key("retry-after"));
    let (status, body) = send(&env, &token, msg.clone()).await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (500, Some("INTERNAL"))
    );
    let (status, _) = send(&env, &token, msg).await;
    assert_eq!(status, 200);

    let seen: Vec<(u16, String)> = env
        .fcm
        .attempts()
        .into_iter()
        .map(|a| (a.status, a.reason))
        .collect();
    assert_eq!(
        seen,
        vec![
            (401, "UNAUTHENTICATED".to_owned()),
            (429, "QUOTA_EXCEEDED".to_owned()),
            (503, "UNAVAILABLE".to_owned()),
            (500, "INTERNAL".to_owned()),
            (200, String::new()),
        ]
    );
    assert!(env.fcm.attempts().windows(2).all(|w| w[0].at <= w[1].at));
}
