//! The webhook push backend against a local HTTP sink that records requests
//! (the stand-in for an FCM/APNs gateway).

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{Client, Server, valid_token};
use natter_chat::{ChatConfig, PushBackend, PushConfig};
use natter_proto::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A recorded request: its Authorization header and JSON body.
type Recorded = (Option<String>, serde_json::Value);

#[derive(Clone, Default)]
struct Sink {
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Status codes to answer, in order; 200 once exhausted.
    script: Arc<Mutex<Vec<u16>>>,
}

async fn record(State(s): State<Sink>, headers: HeaderMap, body: String) -> StatusCode {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.requests
        .lock()
        .unwrap()
        .push((auth, serde_json::from_str(&body).unwrap()));
    let next = {
        let mut script = s.script.lock().unwrap();
        if script.is_empty() {
            200
        } else {
            script.remove(0)
        }
    };
    StatusCode::from_u16(next).unwrap()
}

async fn start_sink(script: Vec<u16>) -> (String, Sink) {
    let sink = Sink {
        script: Arc::new(Mutex::new(script)),
        ..Sink::default()
    };
    let app = axum::Router::new()
        .route("/push", axum::routing::post(record))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, sink)
}

async fn wait_for(sink: &Sink, n: usize) {
    for _ in 0..200 {
        if sink.requests.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the sink got {} requests, expected {n}",
        sink.requests.lock().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_push_per_burst_with_the_token_and_no_content() {
    // The gateway fails once: the batch is retried.
    let (url, sink) = start_sink(vec![503]).await;
    let cfg = ChatConfig {
        push: PushConfig {
            backend: PushBackend::Webhook,
            webhook_url: url,
            webhook_authorization: natter_common::Secret::new("Bearer gw-secret"),
            ..PushConfig::default()
        },
        ..ChatConfig::for_tests()
    };
    let s = Server::start("sqlite", cfg).await;
    common::add_user(&s.db.db, "alice", &[(1, 11)]).await;
    common::add_user(&s.db.db, "bob", &[(1, 21), (2, 22)]).await;
    // Bob's device 1 registered a token; device 2 did not (it is not pushed).
    let r = reqwest::Client::new()
        .put(s.http("/v1/push/token"))
        .bearer_auth(valid_token("bob", 1, 21))
        .json(&serde_json::json!({"platform": "fcm", "token": "tok-bob-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    for i in 0..3 {
        a.send(&ClientFrame::Send(Send {
            id: ClientMsgId::new(format!("p{i}")),
            to: Target::User(UserId::new("bob")),
            kind: Kind::text(),
            body: Body::new(b"secret words".to_vec()),
        }))
        .await;
        a.until(|f| matches!(f, ServerFrame::Sent(_)).then_some(()))
            .await;
    }
    wait_for(&sink, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reqs = sink.requests.lock().unwrap().clone();
    assert_eq!(
        reqs.len(),
        2,
        "one notice, sent twice because the first attempt got 503: {reqs:?}"
    );
    assert_eq!(reqs[0], reqs[1]);
    let (auth, body) = &reqs[0];
    assert_eq!(auth.as_deref(), Some("Bearer gw-secret"));
    let n = body["notifications"].as_array().unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!(
        (
            n[0]["user_id"].as_str(),
            n[0]["device_id"].as_u64(),
            n[0]["token"].as_str()
        ),
        (Some("bob"), Some(1), Some("tok-bob-1"))
    );
    assert!(!body.to_string().contains("c2VjcmV0") && !body.to_string().contains("secret words"));
    // Bob connects (a new burst starts) and goes away; the next message pushes again.
    let b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(&ClientFrame::Send(Send {
        id: ClientMsgId::new("after"),
        to: Target::User(UserId::new("bob")),
        kind: Kind::text(),
        body: Body::new(b"x".to_vec()),
    }))
    .await;
    wait_for(&sink, 3).await;
    s.stop().await;
}
