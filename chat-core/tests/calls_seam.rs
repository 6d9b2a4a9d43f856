//! chat-core's side of the call seam: `call.*` frames go to the installed
//! handler (or are refused without one), socket connects and disconnects are
//! reported, frames reach one device or all but one, and VoIP pushes go out
//! through the push gateway with `reason: "call"`.

mod common;

use common::{Client, Server, valid_token};
use natter_chat::{ChatConfig, PushBackend, PushConfig};
use natter_common::calls::{CallFrames, DeviceGen, Devices};
use natter_proto::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<String>>,
}

impl CallFrames for Recorder {
    fn handle_frame(&self, user: &UserId, device: DeviceId, frame: CallClientFrame) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("{user}/{device} {}", frame.type_name()));
    }
    fn device_connected(&self, user: &UserId, device: DeviceId) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("{user}/{device} connected"));
    }
    fn device_disconnected(&self, user: &UserId, device: DeviceId) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("{user}/{device} disconnected"));
    }
}

fn hangup() -> ClientFrame {
    ClientFrame::CallHangup(CallRef {
        call_id: CallId::new("c1"),
    })
}

impl Recorder {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (polling, at most 10 s) until `event` was recorded.
    async fn wait_for(&self, event: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.seen().iter().any(|e| e == event) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event:?} in {:?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The next presence frame about `user`, skipping others.
async fn presence_of(c: &mut Client, user: &str) -> PresenceState {
    c.until(|f| match f {
        ServerFrame::Presence(p) if p.user.as_str() == user => Some(p.state),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_frames_devices_and_voip_pushes() {
    let s = Server::start("sqlite", ChatConfig::for_tests()).await;
    common::add_user(&s.db.db, "alice", &[(1, 11)]).await;
    common::add_user(&s.db.db, "bob", &[(1, 21), (2, 22)]).await;
    // Alice watches bob's presence: "offline" is the last thing a socket's
    // end does, after it reported the disconnect to the call handler.
    let mut a = Client::login(&s.url(), &valid_token("alice", 1, 11)).await;
    a.send_text(r#"{"type":"presence.subscribe","users":["bob"]}"#)
        .await;
    assert_eq!(presence_of(&mut a, "bob").await, PresenceState::Offline);
    // Without signaling, call frames are refused and the socket stays usable.
    let mut b1 = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    assert_eq!(presence_of(&mut a, "bob").await, PresenceState::Online);
    assert_eq!(b1.next().await, ServerFrame::Synced(Synced {}));
    b1.send(&hangup()).await;
    let ServerFrame::Error(e) = b1.next().await else {
        panic!("expected the refusal")
    };
    assert_eq!(
        (e.code, e.ref_type.as_deref(), e.id),
        (ErrorCode::CallsUnavailable, Some("call.hangup"), None)
    );
    assert_eq!(b1.ping_barrier(1).await, [], "the socket stays usable");
    drop(b1);
    // Its session is over (disconnect reported to nobody) before a handler
    // is installed.
    assert_eq!(presence_of(&mut a, "bob").await, PresenceState::Offline);

    let rec = Arc::new(Recorder::default());
    assert!(s.state.set_call_handler(rec.clone()));
    let mut b1 = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    let mut b2 = Client::login(&s.url(), &valid_token("bob", 2, 22)).await;
    for b in [&mut b1, &mut b2] {
        assert_eq!(b.next().await, ServerFrame::Synced(Synced {}));
    }
    b1.send(&hangup()).await;
    // The session hands each frame to the handler before reading the next:
    // once the ping behind the hangup is answered, the handler has it. The
    // handler answers nothing itself.
    assert_eq!(b1.ping_barrier(2).await, []);
    assert_eq!(
        rec.seen(),
        ["bob/1 connected", "bob/2 connected", "bob/1 call.hangup"]
    );
    let link = s.state.device_link();
    let bob = UserId::new("bob");
    assert_eq!(link.online_devices(&bob).await, vec![1, 2]);
    assert_eq!(link.node_id(), "local");
    assert!(link.node_alive("local").await);
    assert!(!link.node_alive("another").await);
    let ended = ServerFrame::CallEnded(CallEnded {
        call_id: CallId::new("c1"),
        reason: EndReason::AnsweredElsewhere,
        duration_ms: None,
    });
    assert_eq!(
        link.send(&UserId::new("bob"), Devices::AllBut(Some(1)), &ended),
        1
    );
    assert_eq!(b2.next().await, ended);
    assert_eq!(link.send(&UserId::new("bob"), Devices::One(1), &ended), 1);
    assert_eq!(b1.next().await, ended);
    // Each device got exactly its frame: nothing else is on its way.
    assert_eq!(b1.ping_barrier(3).await, []);
    assert_eq!(b2.ping_barrier(4).await, []);
    drop(b2);
    rec.wait_for("bob/2 disconnected").await;
    // Barrier: one more frame through the handler, from the device that
    // stays; everything the handler was told before it is recorded.
    b1.send(&hangup()).await;
    assert_eq!(b1.ping_barrier(5).await, []);
    assert_eq!(
        rec.seen(),
        [
            "bob/1 connected",
            "bob/2 connected",
            "bob/1 call.hangup",
            "bob/2 disconnected",
            "bob/1 call.hangup",
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voip_pushes_say_call() {
    let cfg = ChatConfig {
        push: PushConfig {
            backend: PushBackend::Outbox,
            ..PushConfig::default()
        },
        ..ChatConfig::for_tests()
    };
    let s = Server::start("sqlite", cfg).await;
    common::add_user(&s.db.db, "bob", &[(1, 21)]).await;
    common::add_user(&s.db.db, "carol", &[(1, 31)]).await;
    let link = s.state.device_link();
    let ring = |user: &str, generation, call: &str| {
        link.push_call(
            &UserId::new(user),
            &[DeviceGen {
                device: 1,
                generation,
            }],
            &CallId::new(call),
            &UserId::new("alice"),
        )
    };
    ring("bob", 21, "c1");
    // Barrier: another VoIP push behind bob's. The push sender handles
    // notices in order, so once carol's line is written every line queued
    // before it is in the file too.
    ring("carol", 31, "c2");
    let outbox = s.data_dir.path().join("outbox/push.jsonl");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&outbox).unwrap_or_default();
        if text.contains("\"carol\"") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push for carol in {}: {text:?}",
            outbox.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One line per push: who, which device, why, when (never any content).
    let mut keys: Vec<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["at", "device_id", "reason", "user_id"], "{text}");
    let pushes: Vec<(&str, u64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["user_id"].as_str().unwrap(),
                l["device_id"].as_u64().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(pushes, [("bob", 1, "call"), ("carol", 1, "call")], "{text}");
    s.stop().await;
}
