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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_frames_devices_and_voip_pushes() {
    let s = Server::start("sqlite", ChatConfig::for_tests()).await;
    common::add_user(&s.db.db, "bob", &[(1, 21), (2, 22)]).await;
    // Without signaling, call frames are refused and the socket stays usable.
    let mut b1 = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    b1.send(&hangup()).await;
    let code = b1
        .until(|f| match f {
            ServerFrame::Error(e) => Some(e.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::CallsUnavailable);
    drop(b1);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let rec = Arc::new(Recorder::default());
    assert!(s.state.set_call_handler(rec.clone()));
    let mut b1 = Client::login(&s.url(), &valid_token("bob", 1, 21)).await;
    let mut b2 = Client::login(&s.url(), &valid_token("bob", 2, 22)).await;
    b1.send(&hangup()).await;
    // The frame reaches the handler from b1's session task; wait for it so the
    // order checked below does not depend on scheduling on a busy machine.
    for _ in 0..100 {
        if rec
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "bob/1 call.hangup")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let link = s.state.device_link();
    let mut online = link.online_devices(&UserId::new("bob"));
    online.sort();
    assert_eq!(online, vec![1, 2]);
    let ended = ServerFrame::CallEnded(CallEnded {
        call_id: CallId::new("c1"),
        reason: EndReason::AnsweredElsewhere,
        duration_ms: None,
    });
    assert_eq!(
        link.send(&UserId::new("bob"), Devices::AllBut(Some(1)), &ended),
        1
    );
    assert_eq!(
        b2.until(|f| matches!(f, ServerFrame::CallEnded(_)).then_some(()))
            .await,
        ()
    );
    assert_eq!(link.send(&UserId::new("bob"), Devices::One(1), &ended), 1);
    assert_eq!(
        b1.until(|f| matches!(f, ServerFrame::CallEnded(_)).then_some(()))
            .await,
        ()
    );
    drop(b2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "bob/1 connected",
            "bob/2 connected",
            "bob/1 call.hangup",
            "bob/2 disconnected"
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
    s.state.device_link().push_call(
        &UserId::new("bob"),
        &[DeviceGen {
            device: 1,
            generation: 21,
        }],
        &CallId::new("c1"),
        &UserId::new("alice"),
    );
    let outbox = s.data_dir.path().join("outbox/push.jsonl");
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&outbox)
            && !text.is_empty()
        {
            let line: serde_json::Value =
                serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_eq!(line["reason"], "call");
            assert_eq!(line["user_id"], "bob");
            assert_eq!(line["device_id"], 1);
            s.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no push in {}", outbox.display());
}
