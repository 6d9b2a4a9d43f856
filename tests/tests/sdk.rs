//! The client SDK against an in-process server: messages sent while the server
//! is down wait in the SDK's outbox and go out, once, after it reconnects.

use natter_client::{Account, Api, Chat, ConnectOptions, Event};
use natter_proto::Target;
use natter_tests::server::InProcess;
use std::time::Duration;

async fn next_matching<T>(
    events: &mut natter_client::Events,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("an event within 20 s")
            .expect("connection alive");
        if let Some(t) = f(&ev) {
            return t;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_during_an_outage_are_resent_after_reconnect_and_delivered_once() {
    let mut server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let outbox = server.sms_outbox();
    let mut creds = Vec::new();
    for number in ["+14155550101", "+14155550102"] {
        let o = outbox.clone();
        creds.push(
            natter_client::register(&api, number, "sdk-test", |s| async move {
                natter_client::code_from_outbox(&o, &s.session_id).await
            })
            .await
            .unwrap(),
        );
    }
    let bob_id = creds[1].user();
    let (alice, mut alice_ev) = Chat::connect(
        Account::new(api.clone(), creds[0].clone()),
        ConnectOptions::default(),
    );
    let (_bob, mut bob_ev) = Chat::connect(
        Account::new(api.clone(), creds[1].clone()),
        ConnectOptions::default(),
    );
    next_matching(&mut alice_ev, |e| matches!(e, Event::Synced).then_some(())).await;
    next_matching(&mut bob_ev, |e| matches!(e, Event::Synced).then_some(())).await;

    server.pause().await;
    next_matching(&mut alice_ev, |e| {
        matches!(e, Event::Disconnected { .. }).then_some(())
    })
    .await;
    // Sent while the server is down: kept in the outbox.
    let id = alice.send_text(Target::User(bob_id.clone()), "written offline");
    server.resume().await.unwrap();

    let sent = next_matching(&mut alice_ev, |e| match e {
        Event::Sent(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(sent.id, id);
    let m = next_matching(&mut bob_ev, |e| match e {
        Event::Message(m) => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (m.msg_id, m.body.as_text()),
        (sent.msg_id, Some("written offline"))
    );
    let r = next_matching(&mut alice_ev, |e| match e {
        Event::Receipt(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!((r.msg_id, &r.by), (sent.msg_id, &bob_id));
    // Nothing else arrives for bob: the message was stored once.
    let token = Account::new(api.clone(), creds[1].clone())
        .token()
        .await
        .unwrap();
    assert!(
        api.pending(&token, &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    alice.close();
    server.stop().await;
}
