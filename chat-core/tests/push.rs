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

/// Waits (polling, at most 10 s) until the sink got `n` requests.
async fn wait_for(sink: &Sink, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.requests.lock().unwrap().len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink got {} requests, expected {n}",
            sink.requests.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (polling, at most 10 s) until a request for `token` arrived; returns
/// every request so far.
async fn wait_for_token(sink: &Sink, token: &str) -> Vec<Recorded> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reqs = sink.requests.lock().unwrap().clone();
        if reqs
            .iter()
            .any(|(_, body)| body.to_string().contains(&format!("\"{token}\"")))
        {
            return reqs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push for {token}; the sink got {reqs:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Each request's notifications as (user, device, token, reason).
fn woken(reqs: &[Recorded]) -> Vec<Vec<(String, u64, String, String)>> {
    reqs.iter()
        .map(|(_, body)| {
            body["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (
                        n["user_id"].as_str().unwrap().to_owned(),
                        n["device_id"].as_u64().unwrap(),
                        n["token"].as_str().unwrap().to_owned(),
                        n["reason"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

fn text(id: &str, to: &str, body: &[u8]) -> ClientFrame {
    ClientFrame::Send(Send {
        id: ClientMsgId::new(id),
        to: Target::User(UserId::new(to)),
        kind: Kind::text(),
        body: Body::new(body.to_vec()),
    })
}

async fn sent(c: &mut Client) {
    c.until(|f| matches!(f, ServerFrame::Sent(_)).then_some(()))
        .await;
}

async fn put_token(s: &Server, user: &str, generation: u32, token: &str) {
    let r = reqwest::Client::new()
        .put(s.http("/v1/push/token"))
        .bearer_auth(valid_token(user, 1, generation))
        .json(&serde_json::json!({"platform": "fcm", "token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
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
    // Carol and dave are the barriers' recipients (offline, with tokens).
    common::add_user(&s.db.db, "carol", &[(1, 31)]).await;
    common::add_user(&s.db.db, "dave", &[(1, 41)]).await;
    // Bob's device 1 registered a token; device 2 did not (it is not pushed).
    put_token(&s, "bob", 21, "tok-bob-1").await;
    put_token(&s, "carol", 31, "tok-carol-1").await;
    put_token(&s, "dave", 41, "tok-dave-1").await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    for i in 0..3 {
        a.send(&text(&format!("p{i}"), "bob", b"secret words"))
            .await;
        sent(&mut a).await;
    }
    // Barrier: once bob's notice went out (its first attempt got 503, the
    // retry 200), a message to carol queues a push behind everything queued
    // so far. The sender works through its queue in order, so when carol's
    // request arrives, any further push for bob's burst would have too.
    wait_for(&sink, 2).await;
    a.send(&text("to-carol", "carol", b"x")).await;
    sent(&mut a).await;
    let reqs = wait_for_token(&sink, "tok-carol-1").await;
    let bob1 = vec![(
        "bob".to_owned(),
        1,
        "tok-bob-1".to_owned(),
        "message".to_owned(),
    )];
    let carol = vec![(
        "carol".to_owned(),
        1,
        "tok-carol-1".to_owned(),
        "message".to_owned(),
    )];
    assert_eq!(
        woken(&reqs),
        [bob1.clone(), bob1.clone(), carol.clone()],
        "one notice for bob's burst, sent twice because the first attempt got 503: {reqs:?}"
    );
    assert_eq!(reqs[0], reqs[1], "the retry is the same request");
    for (auth, body) in &reqs {
        assert_eq!(auth.as_deref(), Some("Bearer gw-secret"));
        assert!(
            !body.to_string().contains("c2VjcmV0") && !body.to_string().contains("secret words"),
            "no content in {body}"
        );
    }
    // Bob connects (a new burst starts) and goes away; the next message pushes
    // again. Wait for the socket's end before sending (else the message could
    // go to the closing socket instead of a push).
    let bob = UserId::new("bob");
    let b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.state.is_connected(&bob).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob's socket is still registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.send(&text("after", "bob", b"x")).await;
    sent(&mut a).await;
    // Barrier again, through dave, once bob's new push went out.
    wait_for(&sink, reqs.len() + 1).await;
    a.send(&text("to-dave", "dave", b"x")).await;
    sent(&mut a).await;
    let reqs = wait_for_token(&sink, "tok-dave-1").await;
    let dave = vec![(
        "dave".to_owned(),
        1,
        "tok-dave-1".to_owned(),
        "message".to_owned(),
    )];
    assert_eq!(
        woken(&reqs),
        [bob1.clone(), bob1.clone(), carol, bob1, dave],
        "{reqs:?}"
    );
    s.stop().await;
}

/// A batch may hold a message and a call for the same device: each is sent
/// (a call must not be swallowed by a message wake-up queued just before it).
#[tokio::test]
async fn a_message_and_a_call_for_one_device_in_one_batch_both_go() {
    use natter_chat::push::{PushNotice, PushReason, PushSender, WebhookPush};
    use natter_chat::store::{DeviceRef, PushToken};
    let t = common::fresh("sqlite").await;
    common::add_user(&t.db, "dana", &[(1, 41)]).await;
    let store = natter_chat::store::for_db(&t.db);
    let dev = DeviceRef {
        user: UserId::new("dana"),
        device: 1,
        generation: 41,
    };
    let token = PushToken {
        platform: "apns".into(),
        token: "ab".repeat(32),
        voip_token: Some("cd".repeat(32)),
    };
    store.set_push_token(&dev, &token, 1).await.unwrap();
    let (url, sink) = start_sink(vec![]).await;
    let cfg = PushConfig {
        backend: PushBackend::Webhook,
        webhook_url: url,
        ..PushConfig::default()
    };
    let push = WebhookPush::new(&cfg, store).unwrap();
    let notice = |reason, at| PushNotice {
        user: dev.user.clone(),
        device: 1,
        generation: 41,
        at,
        reason,
    };
    push.send(&[
        notice(PushReason::Message, 10),
        notice(PushReason::Message, 11),
        notice(PushReason::Call, 12),
    ])
    .await
    .unwrap();
    let reqs = sink.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "one batch");
    let items = reqs[0].1["notifications"].as_array().unwrap().clone();
    let reasons: Vec<&str> = items
        .iter()
        .map(|i| i["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["message", "call"], "{items:?}");
    assert_eq!(items[1]["voip_token"], "cd".repeat(32));
    assert_eq!(items[1]["at"], 12);
}
