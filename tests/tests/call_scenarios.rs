//! The recorded call-signaling scenarios (busy, reject, ring timeout, caller
//! cancel, answer on the second device, glare, offline callee woken by push),
//! in process, on SQLite and on PostgreSQL. Media is not involved: the SDP is
//! a placeholder; `calls_media.rs` holds the audio tests.
//! Golden transcripts are rewritten only when `NATTER_BLESS` is exactly `1`
//! (the explicit bless path); any other value compares like an unset one.

use natter_tests::run_and_check;
use natter_tests::scenario::Scenario;
use natter_tests::server::{InProcess, Server};

async fn run(name: &str, engine: &str) {
    let text = std::fs::read_to_string(natter_tests::scenarios_dir().join(format!("{name}.toml")))
        .unwrap();
    let ring = Scenario::parse(&text)
        .unwrap()
        .ring_timeout_secs
        .unwrap_or(60);
    let s = InProcess::start_with(engine, ring).await.unwrap();
    run_and_check(name, Server::InProcess(s)).await;
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::run(stringify!($name), "sqlite").await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::run(stringify!($name), "postgres").await } )*
        }
    };
}

scenarios!(
    call_answer_on_second_device,
    call_reject,
    call_busy,
    call_ring_timeout,
    call_caller_cancel,
    call_offline_callee_push,
    call_glare,
);

/// Connection loss through real sockets: auth, chat and signaling composed
/// as `natter serve` does, in process, with `signaling.reconnect_grace_secs`
/// at 1 s. Alice (the SDK) calls Bob (a raw WebSocket); Bob answers, then his
/// socket drops and does not come back: after the grace period Alice gets
/// `call.ended` with `connection_lost`, and both call logs record it.
mod connection_lost {
    use futures_util::{SinkExt, StreamExt};
    use natter_auth::AuthConfig;
    use natter_auth::service::AuthService;
    use natter_chat::{ChatConfig, ChatService};
    use natter_client::{Account, Api, Chat, ConnectOptions, Event, Events};
    use natter_common::testing::{TempDir, TestDb};
    use natter_common::token::TokenKeys;
    use natter_common::{Secret, SharedClock, Shutdown, SystemClock};
    use natter_proto::{
        CallAnswer, CallAnswered, CallClientFrame, CallEnded, CallId, CallMedia, CallOffer,
        CallRef, CallRinging, ClientFrame, EndReason, ErrorCode, ServerFrame,
    };
    use natter_signaling::{SignalingConfig, SignalingService};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    const GRACE: Duration = Duration::from_secs(1);

    struct GraceServer {
        addr: std::net::SocketAddr,
        db: TestDb,
        data_dir: TempDir,
        shutdown: Shutdown,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl GraceServer {
        async fn start(engine: &str) -> Self {
            let db = match engine {
                "sqlite" => TestDb::sqlite().await,
                _ => TestDb::postgres().await,
            };
            let data_dir = TempDir::new("natter-call-grace");
            let keys = Arc::new(TokenKeys::new(
                natter_common::random::token().as_bytes(),
                &[],
            ));
            let clock: SharedClock = Arc::new(SystemClock);
            let auth = AuthService::build(
                AuthConfig::for_tests(),
                &db.db,
                true,
                data_dir.path(),
                clock.clone(),
                keys.clone(),
                900,
            )
            .await
            .unwrap();
            let chat = ChatService::build(
                ChatConfig::for_tests(),
                &db.db,
                true,
                data_dir.path(),
                clock.clone(),
                keys.clone(),
            )
            .await
            .unwrap();
            let signaling = SignalingService::build(
                SignalingConfig {
                    reconnect_grace_secs: GRACE.as_secs() as u32,
                    ..SignalingConfig::default()
                },
                &db.db,
                true,
                clock,
                keys,
                Secret::new("turn-secret"),
            )
            .await
            .unwrap();
            assert!(
                chat.state()
                    .set_call_handler(Arc::new(signaling.attach(chat.state().device_link())))
            );
            let shutdown = Shutdown::new();
            let router = auth.router().merge(chat.router()).merge(signaling.router());
            let mut parts = vec![auth.spawn_cleanup(shutdown.clone())];
            parts.extend(chat.spawn_background(shutdown.clone()));
            parts.extend(signaling.spawn_background(shutdown.clone()));
            let mut tasks: Vec<_> = parts.into_iter().map(|p| p.task).collect();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let sd = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                natter_common::listener::serve(listener, router, sd)
                    .await
                    .unwrap();
            }));
            Self {
                addr,
                db,
                data_dir,
                shutdown,
                tasks,
            }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        async fn register(&self, api: &Api, number: &str) -> Account {
            let outbox = self.data_dir.path().join("outbox/sms.jsonl");
            let creds = natter_client::register(api, number, "phone", |s| async move {
                natter_client::code_from_outbox(&outbox, &s.session_id).await
            })
            .await
            .expect("registration with the outbox code");
            Account::new(api.clone(), creds)
        }

        async fn stop(self) {
            self.shutdown.cancel();
            for t in self.tasks {
                let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
            }
            self.db.cleanup().await;
        }
    }

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// A raw device socket, authenticated by header; returns after `synced`.
    async fn raw_device(url: &str, token: &str) -> Socket {
        let mut req = format!("ws://{}/v1/ws", url.trim_start_matches("http://"))
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert!(matches!(next_frame(&mut ws).await, ServerFrame::Hello(_)));
        assert!(matches!(next_frame(&mut ws).await, ServerFrame::Synced(_)));
        ws
    }

    async fn next_frame(ws: &mut Socket) -> ServerFrame {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("no socket error");
            if let Ws::Text(t) = m {
                return natter_proto::decode_server_frame(&t).unwrap();
            }
        }
    }

    /// Alice's next event: nothing else may come first.
    async fn next_event(ev: &mut Events) -> Event {
        tokio::time::timeout(Duration::from_secs(10), ev.recv())
            .await
            .expect("an event within 10 s")
            .expect("connection alive")
    }

    /// `GET /v1/calls` of `token`, once it has an entry (the log is written
    /// just after the call ends).
    async fn call_log(s: &GraceServer, token: &str) -> serde_json::Value {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log: serde_json::Value = http
                .get(format!("{}/v1/calls", s.url()))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !log["calls"].as_array().unwrap().is_empty() {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no call log entry: {log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answered_call_ends_as_connection_lost(engine: &str) {
        let s = GraceServer::start(engine).await;
        let api = Api::new(&s.url()).unwrap();
        let alice = s.register(&api, "+14155550101").await;
        let bob = s.register(&api, "+14155550102").await;
        let (alice_id, alice_dev) = (alice.credentials().user(), alice.credentials().device_id);
        let (bob_id, bob_dev) = (bob.credentials().user(), bob.credentials().device_id);
        let (alice_chat, mut alice_ev) = Chat::connect(alice.clone(), ConnectOptions::default());
        assert!(matches!(
            next_event(&mut alice_ev).await,
            Event::Connected(_)
        ));
        assert_eq!(next_event(&mut alice_ev).await, Event::Synced);
        let mut bob_ws = raw_device(&s.url(), &bob.token().await.unwrap()).await;

        let call = CallId::new("lost-1");
        alice_chat.call_frame(CallClientFrame::Offer(CallOffer {
            call_id: call.clone(),
            to: bob_id.clone(),
            media: CallMedia::Audio,
            sdp: "sdp-offer".into(),
        }));
        let ServerFrame::CallIncoming(inc) = next_frame(&mut bob_ws).await else {
            panic!("bob's device rings first")
        };
        assert_eq!(
            (
                &inc.call_id,
                &inc.from.user,
                inc.from.device,
                inc.media,
                inc.sdp.as_str()
            ),
            (&call, &alice_id, alice_dev, CallMedia::Audio, "sdp-offer")
        );
        assert_eq!(
            next_event(&mut alice_ev).await,
            Event::Call(ServerFrame::CallRinging(CallRinging {
                call_id: call.clone(),
                devices: 1,
                pushed: 0
            }))
        );
        let answer = ClientFrame::from(CallClientFrame::Answer(CallAnswer {
            call_id: call.clone(),
            sdp: "sdp-answer".into(),
        }));
        bob_ws
            .send(Ws::Text(answer.to_json().into()))
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut alice_ev).await,
            Event::Call(ServerFrame::CallAnswered(CallAnswered {
                call_id: call.clone(),
                device: bob_dev,
                sdp: "sdp-answer".into()
            }))
        );
        let answered = Instant::now();

        // Bob's socket drops (no close handshake) and he does not come back.
        drop(bob_ws);
        let dropped = Instant::now();
        let ended = tokio::time::timeout(GRACE + Duration::from_secs(10), alice_ev.recv())
            .await
            .expect("call.ended after the grace period")
            .expect("connection alive");
        let waited = dropped.elapsed();
        let Event::Call(ServerFrame::CallEnded(CallEnded {
            call_id,
            reason,
            duration_ms: Some(duration_ms),
        })) = ended
        else {
            panic!("expected call.ended with a duration, got {ended:?}")
        };
        assert_eq!((call_id, reason), (call.clone(), EndReason::ConnectionLost));
        // The server noticed the drop after it happened: the grace ran in full
        // (ms rounding aside), and the call lasted at least that long.
        assert!(
            waited >= GRACE - Duration::from_millis(5),
            "ended {waited:?} after the drop, before the {GRACE:?} grace"
        );
        assert!(
            duration_ms >= GRACE.as_millis() as u64 - 5
                && duration_ms <= answered.elapsed().as_millis() as u64 + 5,
            "duration {duration_ms} ms"
        );
        // Barrier: a hangup for the ended call goes the same way (signaling,
        // then alice's socket) and is refused; a second call.ended queued for
        // her before it would come first.
        alice_chat.call_frame(CallClientFrame::Hangup(CallRef {
            call_id: call.clone(),
        }));
        let Event::Error(e) = next_event(&mut alice_ev).await else {
            panic!("expected the refusal of the hangup")
        };
        assert_eq!(
            (e.code, e.ref_type.as_deref()),
            (ErrorCode::UnknownCall, Some("call.hangup"))
        );

        // Both logs record it: answered, ended by the lost connection.
        for (token, direction, peer, answered_device) in [
            (alice.token().await.unwrap(), "outgoing", &bob_id, None),
            (
                bob.token().await.unwrap(),
                "incoming",
                &alice_id,
                Some(bob_dev),
            ),
        ] {
            let log = call_log(&s, &token).await;
            let calls = log["calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{log}");
            let c = &calls[0];
            assert_eq!(
                (
                    c["call_id"].as_str(),
                    c["direction"].as_str(),
                    c["peer"].as_str(),
                    c["media"].as_str(),
                    c["outcome"].as_str(),
                    c["reason"].as_str(),
                    c["duration_ms"].as_u64(),
                    c.get("answered_device").and_then(|d| d.as_u64()),
                ),
                (
                    Some("lost-1"),
                    Some(direction),
                    Some(peer.as_str()),
                    Some("audio"),
                    Some("answered"),
                    Some("connection_lost"),
                    Some(duration_ms),
                    answered_device.map(u64::from),
                ),
                "{log}"
            );
            assert_eq!(
                c["ended_at"].as_i64().unwrap() - c["answered_at"].as_i64().unwrap(),
                duration_ms as i64,
                "{log}"
            );
        }
        alice_chat.close();
        s.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        answered_call_ends_as_connection_lost("sqlite").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        answered_call_ends_as_connection_lost("postgres").await
    }
}
