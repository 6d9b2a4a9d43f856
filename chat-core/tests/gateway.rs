//! The gateway end to end: a real server on 127.0.0.1:0, real WebSocket
//! clients, real SQLite and PostgreSQL.

mod common;

use common::{Client, Server, valid_token};
use natter_chat::ChatConfig;
use natter_proto::*;
use std::time::Duration;

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )*
        }
    };
}

both!(
    chat_with_receipts_both_online,
    offline_recipient_drains_in_order_after_reconnect,
    duplicate_send_is_acked_once_and_delivered_once,
    group_fan_out_and_refusals,
    send_frame_reaches_one_device_or_all,
    groups_past_max_group_members_are_group_full,
);

async fn users(s: &Server) {
    common::add_user(&s.db.db, "alice", &[(1, 11), (2, 12)]).await;
    common::add_user(&s.db.db, "bob", &[(1, 21), (2, 22)]).await;
    common::add_user(&s.db.db, "carol", &[(1, 31)]).await;
}

fn send(id: &str, to: Target, body: &str) -> ClientFrame {
    ClientFrame::Send(Send {
        id: ClientMsgId::new(id),
        to,
        kind: Kind::text(),
        body: Body::new(body.as_bytes().to_vec()),
    })
}

fn to_user(u: &str) -> Target {
    Target::User(UserId::new(u))
}

fn as_msg(f: &ServerFrame) -> Option<Message> {
    match f {
        ServerFrame::Msg(m) => Some(m.clone()),
        _ => None,
    }
}

fn as_receipt(f: &ServerFrame) -> Option<Receipt> {
    match f {
        ServerFrame::Receipt(r) => Some(r.clone()),
        _ => None,
    }
}

async fn chat_with_receipts_both_online(engine: &str) {
    let s = Server::start(engine, ChatConfig::for_tests()).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    let mut a2 = Client::login(&s.url(), &valid_token("alice", 2, 12)).await;
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    for c in [&mut a, &mut a2, &mut b] {
        assert_eq!(c.next().await, ServerFrame::Synced(Synced {}));
    }
    a.send(&send("c1", to_user("bob"), "hello bob")).await;
    let sent = a
        .until(|f| match f {
            ServerFrame::Sent(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!(sent.id.as_str(), "c1");
    assert!(!sent.dup);
    let m = b.until(as_msg).await;
    assert_eq!(
        (
            m.msg_id,
            m.body.as_text(),
            m.from.user.as_str(),
            m.from.device
        ),
        (sent.msg_id, Some("hello bob"), "alice", 1)
    );
    // The sender's other device gets a copy.
    let copy = a2.until(as_msg).await;
    assert_eq!(copy.msg_id, sent.msg_id);
    b.send(&ClientFrame::Delivered(MsgIds {
        ids: vec![m.msg_id],
    }))
    .await;
    let r = a.until(as_receipt).await;
    assert_eq!(
        (r.msg_id, r.status, r.by.as_str(), r.id.as_str()),
        (sent.msg_id, ReceiptStatus::Delivered, "bob", "c1")
    );
    b.send(&ClientFrame::Read(MsgIds {
        ids: vec![m.msg_id],
    }))
    .await;
    let r2 = a.until(as_receipt).await;
    assert_eq!(r2.status, ReceiptStatus::Read);
    a.send(&ClientFrame::Ack(ReceiptIds {
        ids: vec![r.receipt_id, r2.receipt_id],
    }))
    .await;
    // Wrong ids get a precise error; the connection stays usable.
    b.send(&ClientFrame::Delivered(MsgIds { ids: vec![987_654] }))
        .await;
    let e = b
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::UnknownMessage);
    assert!(e.message.contains("987654"), "{}", e.message);
    // `ping` is answered by a `pong` echoing its nonce (none for none); nothing
    // else is on its way to bob, so each pong is his next frame.
    b.send(&ClientFrame::Ping(Ping {
        nonce: Some(4_242_424),
    }))
    .await;
    assert_eq!(
        b.next().await,
        ServerFrame::Pong(Ping {
            nonce: Some(4_242_424)
        })
    );
    b.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(b.next().await, ServerFrame::Pong(Ping { nonce: None }));
    // Status over REST, for the sender only.
    let http = reqwest::Client::new();
    let st: serde_json::Value = http
        .get(s.http(&format!("/v1/messages/{}", sent.msg_id)))
        .bearer_auth(valid_token("alice", 1, 11))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["recipients"][0]["user_id"], "bob");
    assert!(st["recipients"][0]["read_at"].is_i64());
    let other = http
        .get(s.http(&format!("/v1/messages/{}", sent.msg_id)))
        .bearer_auth(valid_token("bob", 1, 21))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    s.stop().await;
}

async fn offline_recipient_drains_in_order_after_reconnect(engine: &str) {
    let cfg = ChatConfig {
        window: 4,
        outbound_queue: 64,
        ..ChatConfig::for_tests()
    };
    let s = Server::start(engine, cfg).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    for i in 0..10 {
        a.send(&send(&format!("c{i}"), to_user("carol"), &format!("m{i}")))
            .await;
    }
    for _ in 0..10 {
        a.until(|f| matches!(f, ServerFrame::Sent(_)).then_some(()))
            .await;
    }
    // Pending over REST, filtered by conversation.
    let pending: serde_json::Value = reqwest::Client::new()
        .get(s.http("/v1/messages/pending?conversation=u:alice&limit=3"))
        .bearer_auth(valid_token("carol", 1, 31))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["messages"].as_array().unwrap().len(), 3);
    // Carol connects: the backlog comes in order, in windows of 4, as she acks.
    let mut c = Client::login(&s.url(), &valid_token("carol", 1, 31)).await;
    let mut got = Vec::new();
    let mut synced_after = None;
    while got.len() < 10 || synced_after.is_none() {
        match c.next().await {
            ServerFrame::Msg(m) => {
                got.push(m.body.as_text().unwrap().to_owned());
                c.send(&ClientFrame::Delivered(MsgIds {
                    ids: vec![m.msg_id],
                }))
                .await;
            }
            ServerFrame::Synced(_) => synced_after = Some(got.len()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // `synced` comes once the last page was fetched (its messages may still be
    // on the way to the app).
    assert!(synced_after.unwrap() >= 8, "{synced_after:?}");
    // Receipts reach alice in the same order.
    let mut receipts = Vec::new();
    while receipts.len() < 10 {
        // Alice's window is 4 too: she acks receipts to get more.
        let r = a.until(as_receipt).await;
        receipts.push(r.id.0.clone());
        a.send(&ClientFrame::Ack(ReceiptIds {
            ids: vec![r.receipt_id],
        }))
        .await;
    }
    assert_eq!(
        receipts,
        (0..10).map(|i| format!("c{i}")).collect::<Vec<_>>()
    );
    // One push for the burst, without content.
    let outbox = std::fs::read_to_string(s.data_dir.path().join("outbox/push.jsonl")).unwrap();
    let mut woken: Vec<(String, u64)> = outbox
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 4, "no content in {l}");
            (
                v["user_id"].as_str().unwrap().to_owned(),
                v["device_id"].as_u64().unwrap(),
            )
        })
        .collect();
    woken.sort();
    // Ten messages, one push per offline device: carol's, and alice's second
    // device (which gets copies of what alice sends).
    assert_eq!(
        woken,
        vec![("alice".to_owned(), 2), ("carol".to_owned(), 1)],
        "{outbox}"
    );
    s.stop().await;
}

async fn duplicate_send_is_acked_once_and_delivered_once(engine: &str) {
    let s = Server::start(engine, ChatConfig::for_tests()).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    // Bob's (empty) queue drain ends with `synced`; wait for it so that the
    // silence checked at the end is not broken by a late `synced` on a busy machine.
    b.until(|f| matches!(f, ServerFrame::Synced(_)).then_some(()))
        .await;
    a.send(&send("same", to_user("bob"), "once")).await;
    a.send(&send("same", to_user("bob"), "once")).await;
    let first = a
        .until(|f| match f {
            ServerFrame::Sent(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    let second = a
        .until(|f| match f {
            ServerFrame::Sent(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!(first.msg_id, second.msg_id);
    assert!(second.dup);
    let m = b.until(as_msg).await;
    assert_eq!(m.msg_id, first.msg_id);
    b.send(&ClientFrame::Delivered(MsgIds {
        ids: vec![m.msg_id],
    }))
    .await;
    // After a reconnect, the resend is still the same message.
    drop(a);
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    a.send(&send("same", to_user("bob"), "once")).await;
    let third = a
        .until(|f| match f {
            ServerFrame::Sent(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!((third.msg_id, third.dup), (first.msg_id, true));
    // Barrier: a marker message on the same path, committed after the resend
    // was answered. Bob's queue reaches him in commit order, so a second copy
    // of "same" (stored by any of the three sends) would come before it.
    a.send(&send("marker", to_user("bob"), "marker")).await;
    let marker = a
        .until(|f| match f {
            ServerFrame::Sent(s) => Some(s.clone()),
            _ => None,
        })
        .await;
    assert_eq!((marker.id.as_str(), marker.dup), ("marker", false));
    match b.next().await {
        ServerFrame::Msg(m) => assert_eq!(
            (m.msg_id, m.id.as_str(), m.body.as_text()),
            (marker.msg_id, "marker", Some("marker")),
            "bob's next message is the marker: nothing was delivered twice"
        ),
        other => panic!("bob got {other:?} before the marker"),
    }
    s.stop().await;
}

async fn group_fan_out_and_refusals(engine: &str) {
    let s = Server::start(engine, ChatConfig::for_tests()).await;
    users(&s).await;
    let http = reqwest::Client::new();
    let r = http
        .post(s.http("/v1/groups"))
        .bearer_auth(valid_token("alice", 1, 11))
        .json(&serde_json::json!({"name": "Team", "members": ["bob"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let g: serde_json::Value = r.json().await.unwrap();
    let gid = GroupId::new(g["group_id"].as_str().unwrap());
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    let sys = b.until(as_msg).await;
    assert_eq!(sys.kind.as_str(), "system");
    assert!(matches!(sys.system, Some(SystemEvent::GroupCreated { .. })));
    let mut c = Client::login(&s.url(), &valid_token("carol", 1, 31)).await;
    c.send(&send("x", Target::Group(gid.clone()), "let me in"))
        .await;
    let e = c
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (e.code, e.id.as_deref()),
        (ErrorCode::NotAMember, Some("x"))
    );
    c.send(&send("y", to_user("nobody"), "?")).await;
    let e = c
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(e.code, ErrorCode::UnknownRecipient);
    // Add carol: she gets the system message, then group messages.
    let r = http
        .post(s.http(&format!("/v1/groups/{gid}/members")))
        .bearer_auth(valid_token("alice", 1, 11))
        .json(&serde_json::json!({"users": ["carol"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let added = c.until(as_msg).await;
    assert_eq!(
        added.system,
        Some(SystemEvent::MembersAdded {
            users: vec![UserId::new("carol")]
        })
    );
    b.send(&send("g1", Target::Group(gid.clone()), "hi all"))
        .await;
    let m = c.until(as_msg).await;
    assert_eq!(
        (m.body.as_text(), m.to.clone()),
        (Some("hi all"), Target::Group(gid.clone()))
    );
    // Non-admins cannot rename.
    let r = http
        .patch(s.http(&format!("/v1/groups/{gid}")))
        .bearer_auth(valid_token("bob", 1, 21))
        .json(&serde_json::json!({"name": "Mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    s.stop().await;
}

/// `chat.max_group_members` counts every member, the creator included:
/// creating or growing a group past it answers 409 `group_full` over REST and
/// changes nothing (no member added, no system message).
async fn groups_past_max_group_members_are_group_full(engine: &str) {
    let cfg = ChatConfig {
        max_group_members: 3,
        ..ChatConfig::for_tests()
    };
    let s = Server::start(engine, cfg).await;
    users(&s).await;
    common::add_user(&s.db.db, "dave", &[(1, 41)]).await;
    let http = reqwest::Client::new();
    let alice = valid_token("alice", 1, 11);
    let full = serde_json::json!({"error": {
        "code": "group_full",
        "message": "a group has at most 3 members (chat.max_group_members)"
    }});
    // Four with the creator: refused.
    let r = http
        .post(s.http("/v1/groups"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "Big", "members": ["bob", "carol", "dave"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), full);
    let mine: serde_json::Value = http
        .get(s.http("/v1/groups"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        mine,
        serde_json::json!({"groups": []}),
        "nothing was created"
    );
    // Two, then three: up to the limit is fine.
    let r = http
        .post(s.http("/v1/groups"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "Trio", "members": ["bob"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let g: serde_json::Value = r.json().await.unwrap();
    let gid = GroupId::new(g["group_id"].as_str().unwrap());
    let members = |g: &serde_json::Value| {
        let mut m: Vec<String> = g["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())
            .collect();
        m.sort();
        m
    };
    let r = http
        .post(s.http(&format!("/v1/groups/{gid}/members")))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"users": ["carol"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(members(&r.json().await.unwrap()), ["alice", "bob", "carol"]);
    // A fourth member: 409 group_full, and the group is unchanged.
    let r = http
        .post(s.http(&format!("/v1/groups/{gid}/members")))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"users": ["dave"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), full);
    let now: serde_json::Value = http
        .get(s.http(&format!("/v1/groups/{gid}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members(&now), ["alice", "bob", "carol"]);
    let r = http
        .get(s.http(&format!("/v1/groups/{gid}")))
        .bearer_auth(valid_token("dave", 1, 41))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "dave is not a member");
    // Bob's queue: the group's creation, carol's addition, then a marker
    // alice sends to the group. Nothing about dave comes before it.
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    a.send(&send("marker", Target::Group(gid.clone()), "marker"))
        .await;
    let mut seen = Vec::new();
    loop {
        match b.next().await {
            ServerFrame::Msg(m) => {
                let done = m.id.as_str() == "marker";
                seen.push((m.system, m.body.as_text().map(str::to_owned)));
                if done {
                    break;
                }
            }
            ServerFrame::Synced(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            (
                Some(SystemEvent::GroupCreated {
                    name: "Trio".into(),
                    members: vec![UserId::new("alice"), UserId::new("bob")]
                }),
                Some(String::new())
            ),
            (
                Some(SystemEvent::MembersAdded {
                    users: vec![UserId::new("carol")]
                }),
                Some(String::new())
            ),
            (None, Some("marker".to_owned())),
        ]
    );
    s.stop().await;
}

// --- gateway behaviour (engine-independent: SQLite) ---

/// An unauthenticated socket gets a few answers, then a 1008 close: 300
/// junk frames before `auth` were once answered one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_before_auth_is_answered_a_few_times_then_closed() {
    let s = Server::start("sqlite", ChatConfig::for_tests()).await;
    let mut c = Client::bare(&s.url()).await;
    for _ in 0..300 {
        // The server may close before all are written; errors are fine then.
        use futures_util::SinkExt;
        if c.ws
            .send(tokio_tungstenite::tungstenite::Message::Text("junk".into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut answers = 0;
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut c.ws),
        )
        .await
        .expect("an answer or the close within 10 s")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))) => answers += 1,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => {
                break u16::from(f.code);
            }
            other => panic!("the socket ended without its close frame: {other:?}"),
        }
    };
    assert_eq!(code, 1008);
    assert_eq!(answers, natter_chat::MAX_FRAMES_BEFORE_AUTH as usize);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_frame_auth_and_auth_failures_close_with_documented_codes() {
    let s = Server::start(
        "sqlite",
        ChatConfig {
            auth_timeout_secs: 1,
            ..ChatConfig::for_tests()
        },
    )
    .await;
    users(&s).await;
    // Frames before auth are refused; auth then works.
    let mut c = Client::bare(&s.url()).await;
    c.send_text(r#"{"type":"ping"}"#).await;
    let ServerFrame::Error(e) = c.next().await else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::NotAuthenticated);
    c.send_text("not json").await;
    let ServerFrame::Error(e) = c.next().await else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::MalformedFrame);
    c.send(&ClientFrame::Auth(Auth {
        token: valid_token("alice", 1, 11),
        v: Some(1),
    }))
    .await;
    let ServerFrame::Hello(h) = c.next().await else {
        panic!()
    };
    assert_eq!(
        (
            h.v,
            h.user_id.as_str(),
            h.device_id,
            h.limits.max_body_bytes
        ),
        (1, "alice", 1, 65536)
    );
    // Bad token: 4001; expired: 4002; unknown device or old generation: 4003.
    for (token, code, err) in [
        ("garbage".to_owned(), 4001, ErrorCode::InvalidToken),
        (
            common::token("alice", 1, 11, 1),
            4002,
            ErrorCode::TokenExpired,
        ),
        (valid_token("alice", 9, 11), 4003, ErrorCode::DeviceRevoked),
        (valid_token("alice", 1, 10), 4003, ErrorCode::DeviceRevoked),
    ] {
        let mut c = Client::with_header(&s.url(), &token).await;
        let ServerFrame::Error(e) = c.next().await else {
            panic!()
        };
        assert_eq!(e.code, err);
        assert_eq!(c.closed().await, code);
    }
    // No auth frame in time: 4004. Another version: 4007.
    let mut c = Client::bare(&s.url()).await;
    assert_eq!(c.closed().await, 4004);
    let mut c = Client::bare(&s.url()).await;
    c.send(&ClientFrame::Auth(Auth {
        token: valid_token("alice", 1, 11),
        v: Some(2),
    }))
    .await;
    let ServerFrame::Error(e) = c.next().await else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert_eq!(c.closed().await, 4007);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_replaces_the_first_and_removed_devices_are_cut_off() {
    let s = Server::start("sqlite", ChatConfig::for_tests()).await;
    users(&s).await;
    let mut first = Client::login(&s.url(), &valid_token("bob", 2, 22)).await;
    let mut second = Client::login(&s.url(), &valid_token("bob", 2, 22)).await;
    assert_eq!(first.closed().await, 4000);
    assert_eq!(second.next().await, ServerFrame::Synced(Synced {}));
    // Auth removes the device: the socket is closed by the device check (1 s in tests).
    common::remove_device(&s.db.db, "bob", 2).await;
    assert_eq!(second.closed().await, 4003);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_oversized_frames_and_floods() {
    let cfg = ChatConfig {
        max_body_bytes: 1000,
        ..ChatConfig::for_tests()
    };
    let s = Server::start("sqlite", cfg).await;
    users(&s).await;
    let mut c = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    for (frame, code) in [
        ("{", ErrorCode::MalformedFrame),
        (r#"{"type":"warp"}"#, ErrorCode::UnknownType),
        (
            r#"{"type":"send","id":"a","to":{"user":"bob"}}"#,
            ErrorCode::InvalidFrame,
        ),
        (r#"{"type":"read","ids":"x"}"#, ErrorCode::InvalidFrame),
    ] {
        c.send_text(frame).await;
        let e = c
            .until(|f| match f {
                ServerFrame::Error(e) => Some(e.clone()),
                _ => None,
            })
            .await;
        assert_eq!(e.code, code, "{frame}");
    }
    // A body over the limit but a frame under it: an error, connection kept.
    let body = Body::new(vec![7u8; 1001]);
    c.send(&ClientFrame::Send(Send {
        id: ClientMsgId::new("big"),
        to: to_user("bob"),
        kind: Kind::text(),
        body,
    }))
    .await;
    let e = c
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (e.code, e.id.as_deref()),
        (ErrorCode::BodyTooLarge, Some("big"))
    );
    c.send(&send("ok", to_user("bob"), "fine")).await;
    c.until(|f| matches!(f, ServerFrame::Sent(_)).then_some(()))
        .await;
    // A frame over the limit: 1009.
    let huge = "x".repeat(
        ChatConfig {
            max_body_bytes: 1000,
            ..ChatConfig::default()
        }
        .frame_limit()
            + 10,
    );
    c.send_text(&format!(r#"{{"type":"ping","pad":"{huge}"}}"#))
        .await;
    assert_eq!(c.closed().await, 1009);
    // A flood of bad frames: errors, then 1008.
    let mut c = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    for _ in 0..150 {
        // The server may close before all are written.
        if futures_util::SinkExt::send(
            &mut c.ws,
            tokio_tungstenite::tungstenite::Message::Text("[]".into()),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    assert_eq!(c.closed().await, 1008);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_presence_and_shutdown() {
    let s = Server::start("sqlite", ChatConfig::for_tests()).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    a.next().await;
    a.send_text(r#"{"type":"presence.subscribe","users":["bob"]}"#)
        .await;
    let p = a
        .until(|f| match f {
            ServerFrame::Presence(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!((p.user.as_str(), p.state), ("bob", PresenceState::Offline));
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    let p = a
        .until(|f| match f {
            ServerFrame::Presence(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(p.state, PresenceState::Online);
    b.send_text(r#"{"type":"typing","to":{"user":"alice"},"state":"composing"}"#)
        .await;
    let t = a
        .until(|f| match f {
            ServerFrame::Typing(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!((t.from.as_str(), t.state), ("bob", TypingState::Composing));
    drop(b);
    let p = a
        .until(|f| match f {
            ServerFrame::Presence(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(p.state, PresenceState::Offline);
    assert!(p.last_seen.is_some());
    // Bob hides his presence.
    let r = reqwest::Client::new()
        .put(s.http("/v1/presence/privacy"))
        .bearer_auth(valid_token("bob", 1, 21))
        .json(&serde_json::json!({"privacy": "nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = reqwest::Client::new()
        .get(s.http("/v1/presence/bob"))
        .bearer_auth(valid_token("alice", 1, 11))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "hidden");
    // Shutdown closes sockets with 1001.
    s.shutdown.cancel();
    assert_eq!(a.closed().await, 1001);
    s.stop().await;
}

/// Counts `chat_slow_consumer_total`: the hub's decision to close a socket
/// whose outbound queue filled (4006). A test acts on the decision itself
/// instead of guessing when it happened.
mod slow_consumer_metric {
    use std::sync::{Arc, OnceLock};
    use tokio::sync::watch;

    struct Count(watch::Sender<u64>);

    impl metrics::CounterFn for Count {
        fn increment(&self, n: u64) {
            self.0.send_modify(|c| *c += n);
        }
        fn absolute(&self, n: u64) {
            self.0.send_modify(|c| *c = (*c).max(n));
        }
    }

    struct Recorder(Arc<Count>, Arc<Count>);

    impl metrics::Recorder for Recorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            if key.name() == "chat_slow_consumer_total" {
                metrics::Counter::from_arc(self.0.clone())
            } else if key.name() == "chat_outbound_overflows_total" {
                metrics::Counter::from_arc(self.1.clone())
            } else {
                metrics::Counter::noop()
            }
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    type Senders = (watch::Sender<u64>, watch::Sender<u64>);

    /// Installs the recorder once per process.
    fn senders() -> &'static Senders {
        static TX: OnceLock<Senders> = OnceLock::new();
        TX.get_or_init(|| {
            let (slow, _) = watch::channel(0);
            let (over, _) = watch::channel(0);
            metrics::set_global_recorder(Recorder(
                Arc::new(Count(slow.clone())),
                Arc::new(Count(over.clone())),
            ))
            .expect("no other metrics recorder in this test binary");
            (slow, over)
        })
    }

    /// `chat_slow_consumer_total` so far, and its changes.
    pub(super) fn watch() -> watch::Receiver<u64> {
        senders().0.subscribe()
    }

    /// `chat_outbound_overflows_total` so far, and its changes.
    pub(super) fn overflows() -> watch::Receiver<u64> {
        senders().1.subscribe()
    }
}

/// A device that reads promptly is never closed, however large the burst the
/// writer hands its socket in one commit: entries that do not fit the queue are
/// fetched from the store. (Two users draining 3,000 unread each while sending
/// receipts were both closed with 4006 within a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_device_is_not_closed_when_a_burst_overflows_its_queue() {
    let mut overflows = slow_consumer_metric::overflows();
    let before = *overflows.borrow_and_update();
    let cfg = ChatConfig {
        window: 16,
        outbound_queue: 32,
        ..ChatConfig::for_tests()
    };
    let s = Server::start("sqlite", cfg).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    assert_eq!(b.next().await, ServerFrame::Synced(Synced {}));
    // Under the per-socket send limit (1,000 per 10 s by default).
    let n = 900;
    let reader = tokio::spawn(async move {
        // `next` panics on a close frame: reading promptly, Bob must see none.
        let mut got = std::collections::HashSet::new();
        while got.len() < n {
            let m = b.until(as_msg).await;
            got.insert(m.msg_id);
            b.send(&ClientFrame::Delivered(MsgIds {
                ids: vec![m.msg_id],
            }))
            .await;
        }
        got.len()
    });
    // Pipelined sends commit in large batches: each batch is one burst of
    // deliveries to Bob's 32-entry queue.
    for i in 0..n {
        a.send(&send(&format!("b{i}"), to_user("bob"), "burst"))
            .await;
    }
    assert_eq!(reader.await.unwrap(), n, "every message reached Bob");
    assert!(
        *overflows.borrow_and_update() > before,
        "the burst overflowed the queue (else this test proves nothing)"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_does_not_read_is_closed_with_4006_and_loses_nothing() {
    let mut decisions = slow_consumer_metric::watch();
    let before = *decisions.borrow_and_update();
    let cfg = ChatConfig {
        window: 400,
        outbound_queue: 416,
        ..ChatConfig::for_tests()
    };
    let s = Server::start("sqlite", cfg).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    // Bob connects and does not read his socket until the hub gives up on it.
    let mut stuck = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    // The window (400 frames of 80 kB) is far more than loopback buffers hold,
    // so the socket's writes block and its 416-entry queue overflows well
    // before the n-th message.
    let n = 1000;
    let reader = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(60), decisions.wait_for(|c| *c > before))
            .await
            .expect("the hub gives up on the stuck socket (its queue overflows)")
            .unwrap();
        // Now read: the frames the kernel buffered, then the close frame the
        // server wrote behind them (it waits a few seconds for it to go out).
        let mut got = std::collections::HashSet::new();
        loop {
            match tokio::time::timeout(
                Duration::from_secs(20),
                futures_util::StreamExt::next(&mut stuck.ws),
            )
            .await
            {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                    if let Ok(ServerFrame::Msg(m)) = decode_server_frame(&t) {
                        got.insert(m.msg_id);
                    }
                }
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(c))))) => {
                    return (u16::from(c.code), got);
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the socket ended without its close frame: {other:?}"),
            }
        }
    });
    let body = "z".repeat(60_000);
    for i in 0..n {
        a.send(&send(&format!("s{i}"), to_user("bob"), &body)).await;
    }
    for _ in 0..n {
        a.until(|f| matches!(f, ServerFrame::Sent(_)).then_some(()))
            .await;
    }
    let (code, mut got) = reader.await.unwrap();
    assert_eq!(code, 4006, "closed as a slow consumer");
    assert!(
        got.len() < n,
        "the stuck device was cut off before everything arrived"
    );
    // Reconnecting drains every message.
    let mut b = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    while got.len() < n {
        let m = b.until(as_msg).await;
        got.insert(m.msg_id);
        b.send(&ClientFrame::Delivered(MsgIds {
            ids: vec![m.msg_id],
        }))
        .await;
    }
    assert_eq!(got.len(), n);
    s.stop().await;
}

/// `ChatState::send_frame` (the hook for typing and call signaling) in the
/// embedded shape: one device, or every device of the user; never queued.
async fn send_frame_reaches_one_device_or_all(engine: &str) {
    let s = Server::start(engine, ChatConfig::for_tests()).await;
    users(&s).await;
    let bob = UserId::new("bob");
    assert!(!s.state.is_connected(&bob).await);
    let mut b1 = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    let mut b2 = Client::login(&s.url(), &valid_token("bob", 2, 22)).await;
    for c in [&mut b1, &mut b2] {
        assert_eq!(c.next().await, ServerFrame::Synced(Synced {}));
    }
    assert!(s.state.is_connected(&bob).await);
    assert!(!s.state.is_connected(&UserId::new("carol")).await);
    let frame = |state| {
        ServerFrame::Typing(TypingEvent {
            from: UserId::new("alice"),
            to: to_user("bob"),
            state,
        })
    };
    s.state.send_frame(
        &bob,
        Some(2),
        std::sync::Arc::from(frame(TypingState::Composing).to_json()),
    );
    assert_eq!(b2.next().await, frame(TypingState::Composing));
    s.state.send_frame(
        &bob,
        None,
        std::sync::Arc::from(frame(TypingState::Paused).to_json()),
    );
    // Device 1 never got the first frame: its next one is the second.
    assert_eq!(b1.next().await, frame(TypingState::Paused));
    assert_eq!(b2.next().await, frame(TypingState::Paused));
    s.stop().await;
}

/// `commit_delay_us` is a gather window: the writer holds the first operation
/// up to that long for more, and what arrives inside it shares one commit
/// (one WAL write and fsync). Both `sent` answers carry the commit's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_inside_the_gather_window_share_one_commit() {
    let cfg = ChatConfig {
        commit_delay_us: 1_000_000,
        ..ChatConfig::for_tests()
    };
    let s = Server::start("sqlite", cfg).await;
    users(&s).await;
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    a.until(|f| matches!(f, ServerFrame::Synced(_)).then_some(()))
        .await;
    a.send(&send("w0", to_user("bob"), "first")).await;
    // Held by the window: a ping read after w0 is answered while w0 still
    // waits for its commit, so nothing comes before the pong.
    assert_eq!(
        a.ping_barrier(1).await,
        [],
        "w0 is held for the gather window, not answered at once"
    );
    a.send(&send("w1", to_user("bob"), "second")).await;
    let mut sent = Vec::new();
    while sent.len() < 2 {
        if let ServerFrame::Sent(x) = a.next().await {
            sent.push(x);
        }
    }
    assert_eq!(
        sent.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        ["w0", "w1"]
    );
    assert_eq!(sent[0].ts, sent[1].ts, "one commit, one time: {sent:?}");
    s.stop().await;
}
