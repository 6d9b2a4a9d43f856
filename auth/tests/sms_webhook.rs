//! The webhook SMS sender against a local HTTP sink that records requests (the
//! stand-in for a real SMS provider): body template, auth header, retries.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use natter_auth::config::{SmsBackend, SmsConfig};
use natter_auth::sms::{CodeMessage, SmsSender, Transport, WebhookSms};
use natter_common::Secret;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Sink {
    requests: Mutex<Vec<(HeaderMap, String)>>,
    /// Status codes to answer, in order; 200 once exhausted.
    script: Mutex<Vec<u16>>,
}

async fn start_sink(script: Vec<u16>) -> (String, Arc<Sink>) {
    let sink = Arc::new(Sink {
        script: Mutex::new(script),
        ..Sink::default()
    });
    let s = sink.clone();
    let app = Router::new().route(
        "/sms",
        post(move |headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                s.requests.lock().unwrap().push((headers, body));
                let mut script = s.script.lock().unwrap();
                let code = if script.is_empty() {
                    200
                } else {
                    script.remove(0)
                };
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/sms"), sink)
}

fn config(url: String) -> SmsConfig {
    SmsConfig {
        backend: SmsBackend::Webhook,
        webhook_url: url,
        webhook_authorization: Secret::new("Bearer provider-token"),
        ..SmsConfig::default()
    }
}

fn message() -> CodeMessage {
    CodeMessage {
        to: natter_auth::phone::parse("+14155552671").unwrap(),
        code: "123456".into(),
        transport: Transport::Sms,
        session_id: "s1".into(),
    }
}

#[tokio::test]
async fn posts_the_template_with_the_auth_header() {
    let (url, sink) = start_sink(vec![]).await;
    WebhookSms::new(config(url))
        .unwrap()
        .send(&message())
        .await
        .unwrap();
    let reqs = sink.requests.lock().unwrap();
    assert_eq!(reqs.len(), 1);
    let (headers, body) = &reqs[0];
    assert_eq!(headers["authorization"], "Bearer provider-token");
    assert_eq!(headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["to"], "+14155552671");
    assert_eq!(v["channel"], "sms");
    assert_eq!(v["text"], "Your Natter code is 123456. Do not share it.");
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() {
    let (url, sink) = start_sink(vec![503, 500]).await;
    WebhookSms::new(config(url))
        .unwrap()
        .send(&message())
        .await
        .unwrap();
    assert_eq!(sink.requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn gives_up_after_the_configured_attempts() {
    let (url, sink) = start_sink(vec![503, 503, 503, 503]).await;
    let err = WebhookSms::new(config(url))
        .unwrap()
        .send(&message())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(sink.requests.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn does_not_retry_client_errors() {
    let (url, sink) = start_sink(vec![400]).await;
    assert!(
        WebhookSms::new(config(url))
            .unwrap()
            .send(&message())
            .await
            .is_err()
    );
    assert_eq!(sink.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_provider_is_an_error_not_a_hang() {
    let cfg = SmsConfig {
        webhook_attempts: 2,
        webhook_timeout_ms: 500,
        ..config("http://127.0.0.1:9/sms".into())
    };
    let err = WebhookSms::new(cfg)
        .unwrap()
        .send(&message())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("request failed"), "{err}");
}
