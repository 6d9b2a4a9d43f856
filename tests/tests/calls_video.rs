//! Video calls on a bad network: the caller's media crosses an impairment
//! relay (5 % loss each way, 40 ms ± 20 ms delay, so packets reorder) in front
//! of our TURN server, relay-only; halfway through, the path is cut for 2 s.
//! Both sides send a 640×480 30 fps test card and record. Each recording
//! must keep moving (no freeze over 1 s but the outage's) and recover within
//! 1 s of the path coming back (a keyframe on PLI); NACK retransmissions,
//! keyframe requests and the bandwidth estimate's reaction are reported.

use natter_client::call::{CallOptions, CallReport, VideoOptions, answer, place};
use natter_client::{Api, Chat, ConnectOptions};
use natter_tests::impair::{ImpairedPath, Impairment, through, turn_udp_addr};
use natter_tests::server::{InProcess, synced};
use natter_tests::video::analyse;
use natter_video::card::test_card;
use natter_video::{Y4mHeader, Y4mWriter};
use std::path::Path;
use std::time::Duration;

const SIZE: (u32, u32) = (640, 480);
const CALL_SECS: u64 = 24;
/// After the outage the path stays lossy this long, then turns clean.
const LOSSY_AFTER: Duration = Duration::from_secs(2);
const OUTAGE_AT: Duration = Duration::from_secs(7);
const OUTAGE: Duration = Duration::from_secs(2);

fn write_card(path: &Path, seconds: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = Y4mWriter::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        Y4mHeader::new(SIZE.0, SIZE.1, 30),
    )
    .unwrap();
    for n in 0..seconds * 30 {
        w.write_frame(&test_card(SIZE.0, SIZE.1, n)).unwrap();
    }
    w.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_survives_loss_jitter_and_an_outage() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let work = natter_common::testing::TempDir::new("natter-video-loss");
    let card = work.path().join("card.y4m");
    write_card(&card, CALL_SECS as u32 + 4);
    let server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let alice = server.registered(&api, "+14155550631", "video-test").await;
    let bob = server.registered(&api, "+14155550632", "video-test").await;
    let bob_id = bob.credentials().user();
    let (alice_chat, mut alice_ev) = Chat::connect(alice.clone(), ConnectOptions::default());
    let (bob_chat, mut bob_ev) = Chat::connect(bob.clone(), ConnectOptions::default());
    synced(&mut alice_ev).await;
    synced(&mut bob_ev).await;

    let ice = api
        .ice_servers(&alice.token().await.unwrap())
        .await
        .unwrap();
    let path = ImpairedPath::start(
        turn_udp_addr(&ice.ice_servers).expect("a turn: URL over UDP"),
        Impairment {
            loss: 0.05,
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(20),
        },
        0x5eed,
    )
    .await
    .unwrap();
    let video = |rec: &str| VideoOptions {
        camera: Some(card.clone()),
        record: Some(work.path().join(rec)),
        ..VideoOptions::default()
    };
    let caller = CallOptions {
        relay_only: true,
        hangup_after: Some(Duration::from_secs(CALL_SECS)),
        setup_timeout: Duration::from_secs(20),
        bind: "127.0.0.1:0".into(),
        video: Some(video("alice-got.y4m")),
        ice_servers: Some(through(&ice.ice_servers, path.addr())),
        ..CallOptions::default()
    };
    let callee = CallOptions {
        hangup_after: None,
        video: Some(video("bob-got.y4m")),
        ice_servers: None,
        ..caller.clone()
    };
    // The outage, timed from when media starts flowing (about when both
    // sides have sent their first frames).
    let outage = async {
        tokio::time::sleep(Duration::from_secs(3) + OUTAGE_AT).await;
        eprintln!("path down");
        path.set_down(true);
        tokio::time::sleep(OUTAGE).await;
        path.set_down(false);
        eprintln!("path up");
        tokio::time::sleep(LOSSY_AFTER).await;
        path.set(Impairment::none());
        eprintln!("path clean");
    };
    let (a, b, ()) = tokio::join!(
        place(&alice_chat, &mut alice_ev, &alice, bob_id, caller),
        answer(
            &bob_chat,
            &mut bob_ev,
            &bob,
            None,
            callee,
            Duration::from_secs(20)
        ),
        outage,
    );
    let (a, b): (CallReport, CallReport) = (a.expect("caller"), b.expect("callee"));
    eprintln!("relay: {:?}", path.stats());
    assert!(
        path.stats().lost > 50,
        "the path lost too little to test anything"
    );
    assert!(path.stats().cut > 50, "the outage cut nothing");
    let ends = [
        ("caller", &a, "alice-got.y4m"),
        ("callee", &b, "bob-got.y4m"),
    ];
    // Both sides' figures first, so a failure shows the whole picture.
    let seen: Vec<_> = ends
        .iter()
        .map(|(who, r, file)| {
            let v = r.stats.video.clone().expect("video stats");
            let an = analyse(&work.path().join(file), SIZE).unwrap();
            eprintln!("{who}: {v:?}");
            eprintln!("{who}: {}", an.summary());
            (v, an)
        })
        .collect();
    for ((who, _, _), (v, an)) in ends.iter().zip(seen) {
        assert_eq!(an.backwards, 0, "{who}: frame numbers went backwards");
        assert!(
            an.last.unwrap_or(0) - an.first.unwrap_or(0) >= (CALL_SECS as u32 - 4) * 30,
            "{who}: the picture did not keep advancing"
        );
        // One freeze may exceed 1 s: the outage, and it must end within 1 s
        // of the path coming back (so last at most 2 s + 1 s).
        let long: Vec<_> = an.freezes.iter().filter(|f| f.1 > 1000).collect();
        assert!(
            long.len() <= 1,
            "{who}: freezes over 1 s besides the outage: {long:?}"
        );
        if let Some(f) = long.first() {
            assert!(
                f.1 <= OUTAGE.as_millis() as u64 + 1000,
                "{who}: the outage froze the picture for {} ms (> 2 s + 1 s to recover)",
                f.1
            );
        }
        assert!(
            v.keyframe_requests_sent >= 1,
            "{who}: no keyframe asked for after the outage"
        );
        // The estimate drove the encoder down under loss, and rose again
        // once the path was clean.
        let start = v.bitrate_log.first().map_or(0, |b| b.1);
        let low = v.bitrate_log.iter().map(|b| b.1).min().unwrap_or(0);
        assert!(
            low < start * 3 / 4,
            "{who}: the encoder's bitrate did not fall under loss: {:?}",
            v.bitrate_log
        );
        let est_low = v.estimate_log.iter().map(|b| b.1).min().unwrap_or(0);
        let est_end = v.estimate_log.last().map_or(0, |b| b.1);
        assert!(
            est_end > est_low * 3 / 2,
            "{who}: the estimate did not recover on the clean path: {:?}",
            v.estimate_log
        );
        assert!(
            an.mean_psnr() >= 30.0,
            "{who}: mean PSNR {:.1} dB",
            an.mean_psnr()
        );
    }
    alice_chat.close();
    bob_chat.close();
    server.stop().await;
}

/// A voice call that turns into a video call and back: the caller adds its
/// camera 2 s in (a `call.update` renegotiation), turns it off for 2 s (black
/// pictures, no renegotiation), and takes video out again at 10 s; the callee
/// records what it receives. Audio flows throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_is_added_turned_off_and_removed_mid_call() {
    use natter_client::call::VideoAction;
    let work = natter_common::testing::TempDir::new("natter-video-midcall");
    let card = work.path().join("card.y4m");
    write_card(&card, 12);
    let server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let alice = server.registered(&api, "+14155550641", "video-test").await;
    let bob = server.registered(&api, "+14155550642", "video-test").await;
    let bob_id = bob.credentials().user();
    let (alice_chat, mut alice_ev) = Chat::connect(alice.clone(), ConnectOptions::default());
    let (bob_chat, mut bob_ev) = Chat::connect(bob.clone(), ConnectOptions::default());
    synced(&mut alice_ev).await;
    synced(&mut bob_ev).await;
    let secs = Duration::from_secs;
    let caller = CallOptions {
        relay_only: true,
        hangup_after: Some(secs(13)),
        setup_timeout: secs(20),
        bind: "127.0.0.1:0".into(),
        video_actions: vec![
            (secs(2), VideoAction::Start(card.clone())),
            (secs(5), VideoAction::CameraOff),
            (secs(7), VideoAction::CameraOn),
            (secs(10), VideoAction::Stop),
        ],
        ..CallOptions::default()
    };
    let recording = work.path().join("bob-got.y4m");
    let callee = CallOptions {
        hangup_after: None,
        video_actions: Vec::new(),
        // Receive only: Bob has no camera, and records what comes.
        video: Some(VideoOptions {
            record: Some(recording.clone()),
            ..VideoOptions::default()
        }),
        ..caller.clone()
    };
    let (a, b) = tokio::join!(
        place(&alice_chat, &mut alice_ev, &alice, bob_id, caller),
        answer(&bob_chat, &mut bob_ev, &bob, None, callee, secs(20)),
    );
    let (a, b) = (a.expect("caller"), b.expect("callee"));
    let sent = a.stats.video.clone().expect("the caller's video figures");
    let got = b.stats.video.clone().expect("the callee's video figures");
    let an = analyse(&recording, SIZE).unwrap();
    eprintln!(
        "caller: {sent:?}\ncallee: {got:?}\ncallee saw: {}",
        an.summary()
    );
    // The camera ran from 2 s to 10 s: about 240 pictures, not 13 s worth.
    assert!(
        (180..=300).contains(&sent.frames_sent),
        "the caller sent {} pictures",
        sent.frames_sent
    );
    assert!(got.frames_received >= 150, "{got:?}");
    // Two seconds of the camera off: black pictures, which carry no stamp.
    let black = an.slots - an.readable;
    assert!(
        (30..=100).contains(&black),
        "{black} unstamped (black) pictures"
    );
    assert!(an.distinct >= 100, "{}", an.summary());
    assert_eq!(an.backwards, 0);
    // Audio went on throughout: 13 s of 20 ms packets.
    assert!(b.stats.packets_received >= 550, "{:?}", b.stats);
    alice_chat.close();
    bob_chat.close();
    server.stop().await;
}
