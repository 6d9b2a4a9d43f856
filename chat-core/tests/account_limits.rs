//! Limits per account, over real sockets and HTTP: an account's devices share
//! one send budget (several sockets once multiplied it), and REST group
//! changes are throttled per account.

mod common;

use common::{Client, Server, valid_token};
use natter_chat::ChatConfig;
use natter_common::ratelimit::Quota;
use natter_proto::*;

fn send(id: &str, to: &str) -> ClientFrame {
    ClientFrame::Send(Send {
        id: ClientMsgId::new(id),
        to: Target::User(UserId::new(to)),
        kind: Kind::text(),
        body: Body::new(b"hi".to_vec()),
    })
}

/// The answer to a `send`: stored, or refused with an error code.
async fn outcome(c: &mut Client, id: &str) -> Result<(), ErrorCode> {
    c.until(|f| match f {
        ServerFrame::Sent(s) if s.id.as_str() == id => Some(Ok(())),
        ServerFrame::Error(e) if e.id.as_deref() == Some(id) => Some(Err(e.code)),
        _ => None,
    })
    .await
}

async fn devices_of_one_account_share_a_send_budget(engine: &str) {
    let cfg = ChatConfig {
        limit_sends: Quota::new(5, 60),
        limit_sends_per_user: Quota::new(6, 60),
        ..ChatConfig::for_tests()
    };
    let s = Server::start(engine, cfg).await;
    common::add_user(&s.db.db, "alice", &[(1, 11), (2, 12)]).await;
    common::add_user(&s.db.db, "bob", &[(1, 21)]).await;
    common::add_user(&s.db.db, "carol", &[(1, 31)]).await;
    let mut phone = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    let mut laptop = Client::login(&s.url(), &valid_token("alice", 2, 12)).await;
    for i in 0..4 {
        let id = format!("p{i}");
        phone.send(&send(&id, "bob")).await;
        assert_eq!(outcome(&mut phone, &id).await, Ok(()), "{id}");
    }
    for i in 0..2 {
        let id = format!("l{i}");
        laptop.send(&send(&id, "bob")).await;
        assert_eq!(outcome(&mut laptop, &id).await, Ok(()), "{id}");
    }
    // Each socket is within its own 5, but the account has sent its 6.
    laptop.send(&send("l2", "bob")).await;
    assert_eq!(
        outcome(&mut laptop, "l2").await,
        Err(ErrorCode::RateLimited)
    );
    phone.send(&send("p4", "bob")).await;
    assert_eq!(outcome(&mut phone, "p4").await, Err(ErrorCode::RateLimited));
    // Another account has its own budget.
    let mut carol = Client::login(&s.url(), &valid_token("carol", 1, 31)).await;
    carol.send(&send("c0", "bob")).await;
    assert_eq!(outcome(&mut carol, "c0").await, Ok(()));
    s.stop().await;
}

async fn group_changes_are_throttled_per_account(engine: &str) {
    let cfg = ChatConfig {
        limit_group_writes: Quota::new(3, 3600),
        ..ChatConfig::for_tests()
    };
    let s = Server::start(engine, cfg).await;
    common::add_user(&s.db.db, "alice", &[(1, 11)]).await;
    common::add_user(&s.db.db, "bob", &[(1, 21)]).await;
    let http = reqwest::Client::new();
    let create = |token: String, name: &str| {
        http.post(s.http("/v1/groups"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": name, "members": []}))
            .send()
    };
    let alice = valid_token("alice", 1, 11);
    let r = create(alice.clone(), "one").await.unwrap();
    assert_eq!(r.status(), 201);
    let g: serde_json::Value = r.json().await.unwrap();
    let gid = g["group_id"].as_str().unwrap().to_owned();
    let r = http
        .patch(s.http(&format!("/v1/groups/{gid}")))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(create(alice.clone(), "two").await.unwrap().status(), 201);
    // The fourth change within the hour: 429 with a wait, nothing created.
    let r = create(alice.clone(), "three").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    let mine: serde_json::Value = http
        .get(s.http("/v1/groups"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["groups"].as_array().unwrap().len(), 2, "{mine}");
    // Bob is not affected.
    let bob = valid_token("bob", 1, 21);
    assert_eq!(create(bob, "bob's").await.unwrap().status(), 201);
    s.stop().await;
}

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
    devices_of_one_account_share_a_send_budget,
    group_changes_are_throttled_per_account,
);
