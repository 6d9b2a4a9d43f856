//! The session core driven with synthetic time: a 90-second idle timeout runs
//! in microseconds.

use super::*;
use crate::store::SendOutcome;
use natter_proto::{Sent, Target};

fn cfg() -> SessionConfig {
    SessionConfig {
        max_body_bytes: 16,
        window: 4,
        max_pending_sends: 2,
        heartbeat_ms: 30_000,
        idle_timeout_ms: 90_000,
        limit_frames: Quota::new(100, 1),
        limit_sends: Quota::new(3, 10),
        limit_typing: Quota::new(1, 10),
        limit_refused: Quota::new(5, 10),
        max_subscriptions: 2,
    }
}

fn msg(seq: i64) -> Delivery {
    Delivery {
        seq,
        prev: None,
        item: ItemRef::Msg(seq as u64 * 10),
        json: Arc::from(format!("m{seq}")),
    }
}

fn delivered(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Deliver(j) => Some(j.to_string()),
            _ => None,
        })
        .collect()
}

fn errors(effects: &[Effect]) -> Vec<ErrorCode> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Frame(ServerFrame::Error(e)) => Some(e.code),
            _ => None,
        })
        .collect()
}

fn fetch_of(effects: &[Effect]) -> Option<(i64, u32)> {
    effects.iter().find_map(|e| match e {
        Effect::Fetch { after_seq, limit } => Some((*after_seq, *limit)),
        _ => None,
    })
}

#[test]
fn drains_then_goes_live_and_says_synced() {
    let mut s = Session::new(cfg(), 0);
    assert_eq!(fetch_of(&s.start(0)), Some((0, 4)));
    let out = s.handle_fetched(1, vec![msg(3), msg(5)], 4);
    assert_eq!(delivered(&out), ["m3", "m5"]);
    assert!(out.contains(&Effect::Frame(ServerFrame::Synced(Synced {}))));
    assert!(s.is_live());
    // Live: a new entry goes straight out; an old one (already fetched) is dropped.
    assert_eq!(delivered(&s.handle_live(2, msg(7))), ["m7"]);
    assert!(s.handle_live(2, msg(5)).is_empty());
    assert_eq!(s.inflight(), 3);
}

#[test]
fn live_entries_seen_while_draining_force_another_page() {
    let mut s = Session::new(cfg(), 0);
    s.start(0);
    // Committed after the page was read: seen live while the fetch ran.
    assert!(s.handle_live(1, msg(9)).is_empty());
    let out = s.handle_fetched(2, vec![msg(3)], 4);
    assert_eq!(delivered(&out), ["m3"]);
    assert!(!s.is_live());
    assert_eq!(fetch_of(&out), Some((3, 3)));
    let out = s.handle_fetched(3, vec![msg(9)], 3);
    assert_eq!(delivered(&out), ["m9"]);
    assert!(s.is_live());
}

#[test]
fn a_full_window_falls_back_to_the_store_and_resumes_on_ack() {
    let mut s = Session::new(cfg(), 0);
    s.start(0);
    // A full page: more may be waiting.
    let out = s.handle_fetched(1, vec![msg(1), msg(2), msg(3), msg(4)], 4);
    assert_eq!(delivered(&out).len(), 4);
    assert!(!s.is_live());
    assert_eq!(fetch_of(&out), None, "the window is full");
    // Nothing more is written until the device acknowledges.
    assert!(delivered(&s.handle_live(2, msg(6))).is_empty());
    let out = s.handle_text(3, r#"{"type":"delivered","ids":[10,20,30]}"#);
    assert_eq!(
        out[0],
        Effect::Persist(Persist::Delivered(vec![10, 20, 30]))
    );
    assert_eq!(fetch_of(&out), Some((4, 3)));
    let out = s.handle_fetched(4, vec![msg(6)], 3);
    assert_eq!(delivered(&out), ["m6"]);
    assert!(s.is_live());
    // Live with a full window: the entry waits in the store.
    s.handle_live(5, msg(7));
    s.handle_live(5, msg(8));
    assert_eq!(s.inflight(), 4);
    assert!(delivered(&s.handle_live(5, msg(11))).is_empty());
    assert!(!s.is_live());
    let out = s.handle_text(6, r#"{"type":"delivered","ids":[40, 60, 70, 80]}"#);
    assert_eq!(fetch_of(&out), Some((8, 4)));
    assert_eq!(delivered(&s.handle_fetched(7, vec![msg(11)], 4)), ["m11"]);
}

#[test]
fn receipts_are_acknowledged_with_ack() {
    let mut s = Session::new(cfg(), 0);
    s.start(0);
    let r = Delivery {
        seq: 2,
        prev: None,
        item: ItemRef::Receipt(2),
        json: Arc::from("r2"),
    };
    s.handle_fetched(1, vec![r], 4);
    assert_eq!(s.inflight(), 1);
    let out = s.handle_text(2, r#"{"type":"ack","ids":[2,2]}"#);
    assert_eq!(out, vec![Effect::Persist(Persist::Ack(vec![2]))]);
    assert_eq!(s.inflight(), 0);
}

#[test]
fn sends_are_validated_limited_and_back_pressured() {
    let mut s = Session::new(cfg(), 0);
    let ok = r#"{"type":"send","id":"c1","to":{"user":"bob"},"body":"aGk="}"#;
    let out = s.handle_text(1, ok);
    assert!(
        matches!(&out[0], Effect::Persist(Persist::Send(m)) if m.id.as_str() == "c1" && m.kind.as_str() == "text")
    );
    s.handle_text(1, &ok.replace("c1", "c2"));
    assert!(!s.wants_frames(), "two sends await their commit");
    let out = s.handle_sent(
        2,
        SendOutcome::Stored(Sent {
            id: ClientMsgIdExt::c("c1"),
            msg_id: 1,
            ts: 2,
            dup: false,
        }),
        "c1",
    );
    assert!(matches!(&out[0], Effect::Frame(ServerFrame::Sent(s)) if s.msg_id == 1));
    assert!(s.wants_frames());
    // Third send fits the quota of 3; the fourth is rate limited with a wait.
    s.handle_text(3, &ok.replace("c1", "c3"));
    let out = s.handle_text(3, &ok.replace("c1", "c4"));
    assert_eq!(errors(&out), [ErrorCode::RateLimited]);
    let Effect::Frame(ServerFrame::Error(e)) = &out[0] else {
        panic!()
    };
    assert_eq!(
        (e.id.as_deref(), e.ref_type.as_deref()),
        (Some("c4"), Some("send"))
    );
    assert!(e.retry_after_ms.unwrap() > 0);
    // Too big, bad kind, bad id, bad target: each named.
    let mut s = Session::new(cfg(), 0);
    let big =
        r#"{"type":"send","id":"b","to":{"user":"bob"},"body":"YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"}"#;
    assert_eq!(errors(&s.handle_text(1, big)), [ErrorCode::BodyTooLarge]);
    let sys = r#"{"type":"send","id":"b","to":{"user":"bob"},"kind":"system","body":""}"#;
    assert_eq!(errors(&s.handle_text(1, sys)), [ErrorCode::InvalidFrame]);
    let bad_id = r#"{"type":"send","id":"has space","to":{"user":"bob"},"body":""}"#;
    assert_eq!(errors(&s.handle_text(1, bad_id)), [ErrorCode::InvalidFrame]);
    let bad_to = r#"{"type":"send","id":"x","to":{"group":""},"body":""}"#;
    assert_eq!(errors(&s.handle_text(1, bad_to)), [ErrorCode::InvalidFrame]);
    let refused = s.handle_sent(
        2,
        SendOutcome::Refused(ErrorCode::UnknownRecipient, "no user zed".into()),
        "x",
    );
    assert_eq!(errors(&refused), [ErrorCode::UnknownRecipient]);
}

struct ClientMsgIdExt;
impl ClientMsgIdExt {
    fn c(s: &str) -> natter_proto::ClientMsgId {
        natter_proto::ClientMsgId::new(s)
    }
}

#[test]
fn bad_frames_get_errors_and_a_flood_closes_with_1008() {
    let mut s = Session::new(cfg(), 0);
    let out = s.handle_text(1, "{nope");
    assert_eq!(errors(&out), [ErrorCode::MalformedFrame]);
    let out = s.handle_text(1, r#"{"type":"teleport"}"#);
    assert_eq!(errors(&out), [ErrorCode::UnknownType]);
    let out = s.handle_text(1, r#"{"type":"delivered","ids":[]}"#);
    assert_eq!(errors(&out), [ErrorCode::InvalidFrame]);
    let out = s.handle_binary(1);
    assert_eq!(errors(&out), [ErrorCode::MalformedFrame]);
    // Still usable.
    assert_eq!(
        s.handle_text(1, r#"{"type":"ping","nonce":7}"#),
        vec![Effect::Frame(ServerFrame::Pong(Ping { nonce: Some(7) }))]
    );
    let out = s.handle_text(1, r#"{"type":"auth","token":"t"}"#);
    assert_eq!(errors(&out), [ErrorCode::AlreadyAuthenticated]);
    // The sixth refusal within the quota of 5 closes.
    let out = s.handle_text(1, "[]");
    assert_eq!(out.last(), Some(&Effect::Close(CloseCode::PolicyViolation)));
    assert!(s.is_closed());
    assert!(s.handle_text(2, r#"{"type":"ping"}"#).is_empty());
}

#[test]
fn heartbeat_and_idle_timeout() {
    let mut s = Session::new(cfg(), 0);
    s.start(0);
    s.handle_fetched(0, vec![], 4);
    assert_eq!(s.poll_timeout(), 30_000);
    assert_eq!(s.handle_timeout(30_000), vec![Effect::Ping, Effect::Touch]);
    s.handle_activity(50_000);
    assert_eq!(s.poll_timeout(), 60_000);
    s.handle_timeout(60_000);
    s.handle_timeout(90_000);
    assert_eq!(s.poll_timeout(), 120_000);
    let out = s.handle_timeout(140_000);
    assert_eq!(out, vec![Effect::Close(CloseCode::IdleTimeout)]);
}

#[test]
fn typing_and_presence_subscriptions() {
    let mut s = Session::new(cfg(), 0);
    let t = r#"{"type":"typing","to":{"user":"bob"},"state":"composing"}"#;
    assert!(matches!(
        &s.handle_text(1, t)[0],
        Effect::Typing(TypingSend {
            to: Target::User(_),
            ..
        })
    ));
    assert_eq!(errors(&s.handle_text(1, t)), [ErrorCode::RateLimited]);
    let out = s.handle_text(1, r#"{"type":"presence.subscribe","users":["a","b","a"]}"#);
    assert_eq!(
        out,
        vec![Effect::Subscribe(vec![UserId::new("a"), UserId::new("b")])]
    );
    let out = s.handle_text(1, r#"{"type":"presence.subscribe","users":["c"]}"#);
    assert_eq!(errors(&out), [ErrorCode::SubscriptionLimit]);
    let out = s.handle_text(1, r#"{"type":"presence.unsubscribe","users":["a","zz"]}"#);
    assert_eq!(out, vec![Effect::Unsubscribe(vec![UserId::new("a")])]);
    assert!(
        s.handle_text(1, r#"{"type":"presence.subscribe","users":["a"]}"#)
            .len()
            == 1
    );
}

#[test]
fn unknown_ids_are_named() {
    let mut s = Session::new(cfg(), 0);
    let out = s.handle_unknown_ids(0, "delivered", &[4, 5]);
    let Effect::Frame(ServerFrame::Error(e)) = &out[0] else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::UnknownMessage);
    assert_eq!(e.message, "no pending message with id 4, 5 for this device");
    assert!(s.handle_unknown_ids(0, "ack", &[]).is_empty());
}

fn msg_after(seq: i64, prev: i64) -> Delivery {
    Delivery {
        prev: Some(prev),
        ..msg(seq)
    }
}

fn fetches(effects: &[Effect]) -> Vec<i64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Fetch { after_seq, .. } => Some(*after_seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_live_entry_whose_predecessor_never_arrived_reads_the_queue() {
    let mut s = Session::new(cfg(), 0);
    s.start(0);
    s.handle_fetched(1, vec![msg(3)], 4);
    assert!(s.is_live());
    // In order: written straight away.
    assert_eq!(delivered(&s.handle_live(2, msg_after(5, 3))), ["m5"]);
    // Entry 9 follows 7, which this socket never saw (another node's delivery
    // still in flight): nothing is written, the queue is read after 5.
    let out = s.handle_live(3, msg_after(9, 7));
    assert!(delivered(&out).is_empty());
    assert_eq!(fetches(&out), [5]);
    // The late delivery of 7 is taken while draining; the page has both, in order.
    assert!(delivered(&s.handle_live(4, msg_after(7, 5))).is_empty());
    let out = s.handle_fetched(5, vec![msg(7), msg(9)], 2);
    assert_eq!(delivered(&out), ["m7", "m9"]);
}

#[test]
fn resync_reads_the_queue_again_even_mid_fetch() {
    let mut s = Session::new(cfg(), 0);
    let out = s.start(0);
    assert_eq!(fetches(&out), [0]);
    // A resync while the first fetch is in flight waits for it, then fetches again.
    assert!(fetches(&s.handle_resync(1)).is_empty());
    let out = s.handle_fetched(2, vec![], 4);
    assert_eq!(fetches(&out), [0]);
    assert!(!s.is_live());
    s.handle_fetched(3, vec![msg(4)], 4);
    assert!(s.is_live());
    let out = s.handle_resync(4);
    assert_eq!(fetches(&out), [4]);
}

#[test]
fn an_accounts_sockets_share_one_send_budget() {
    // Each socket may send 3 per 10 s; the account 4 in all.
    let shared = Arc::new(AccountLimit::new("sends", Quota::new(4, 10)));
    let bob = UserId::new("bob".to_owned());
    let mut a = Session::new(cfg(), 0).with_user_sends(shared.clone(), &bob);
    let mut b = Session::new(cfg(), 0).with_user_sends(shared.clone(), &bob);
    let send = |s: &mut Session, id: &str| {
        s.handle_text(
            1,
            &format!(r#"{{"type":"send","id":"{id}","to":{{"user":"ann"}},"body":""}}"#),
        )
    };
    assert!(matches!(send(&mut a, "a1")[0], Effect::Persist(_)));
    assert!(matches!(send(&mut a, "a2")[0], Effect::Persist(_)));
    a.handle_sent(
        1,
        SendOutcome::Refused(ErrorCode::UnknownRecipient, "x".into()),
        "a1",
    );
    a.handle_sent(
        1,
        SendOutcome::Refused(ErrorCode::UnknownRecipient, "x".into()),
        "a2",
    );
    assert!(matches!(send(&mut b, "b1")[0], Effect::Persist(_)));
    assert!(matches!(send(&mut b, "b2")[0], Effect::Persist(_)));
    b.handle_sent(
        1,
        SendOutcome::Refused(ErrorCode::UnknownRecipient, "x".into()),
        "b1",
    );
    // The fifth send of the account is refused, though this socket sent two.
    let out = send(&mut b, "b3");
    assert_eq!(errors(&out), [ErrorCode::RateLimited]);
    let Effect::Frame(ServerFrame::Error(e)) = &out[0] else {
        panic!()
    };
    assert!(e.message.contains("this account"), "{}", e.message);
    assert!(e.retry_after_ms.unwrap() > 0);
    // Another account is not affected.
    let mut c = Session::new(cfg(), 0).with_user_sends(shared, &UserId::new("cid".to_owned()));
    assert!(matches!(send(&mut c, "c1")[0], Effect::Persist(_)));
}
