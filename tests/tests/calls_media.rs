//! Recorded calls with real media: two clients register with codes, call
//! through signaling, relay-only through our TURN server (in process, on
//! loopback), each playing a different tone; both recordings are checked.

use natter_client::call::wav::Pcm;
use natter_client::call::{CallOptions, CallReport, answer, place};
use natter_client::{Api, Chat, ConnectOptions};
use natter_tests::audio;
use natter_tests::server::{InProcess, synced};
use std::time::Duration;

/// Seconds of tone each side plays.
const TONE_SECS: f64 = 3.0;
/// Lowest acceptable SNR of a received tone. A clean Opus path at 32 kbit/s
/// measures about 30 dB here; 20 dB leaves room for jitter without letting a
/// broken path (gaps, clicks, the wrong tone) through.
const MIN_SNR_DB: f64 = 20.0;

fn check_tone(who: &str, r: &CallReport, hz: f64) {
    let rec = &r.recording;
    assert_eq!(rec.rate, 16_000);
    let (start, end) = audio::loud_span(&rec.samples, 16_000, 500.0)
        .unwrap_or_else(|| panic!("{who}: the recording is silent"));
    let tone = &rec.samples[start..end];
    let secs = tone.len() as f64 / 16_000.0;
    assert!(
        secs > TONE_SECS - 0.3,
        "{who}: only {secs:.2} s of tone received"
    );
    // Skip the codec's first and last frames.
    let body = &tone[1_600..tone.len() - 1_600];
    let f = audio::dominant_frequency(body, 16_000, 100.0, 4_000.0);
    assert!(
        (f - hz).abs() <= 5.0,
        "{who}: dominant {f:.1} Hz, expected {hz} Hz"
    );
    let snr = audio::tone_snr_db(body, 16_000, f);
    assert!(
        snr >= MIN_SNR_DB,
        "{who}: SNR {snr:.1} dB < {MIN_SNR_DB} dB"
    );
    let gap = audio::longest_quiet_ms(body, 16_000, 500.0);
    assert!(gap <= 100, "{who}: {gap} ms gap inside the tone");
    assert!(
        r.stats.max_gap_ms <= 100,
        "{who}: {} ms between packets",
        r.stats.max_gap_ms
    );
    let (local, remote) = r
        .stats
        .selected_pair
        .clone()
        .unwrap_or_else(|| panic!("{who}: no selected pair"));
    assert_eq!(
        (local.as_str(), remote.as_str()),
        ("relay", "relay"),
        "{who}: selected pair"
    );
    eprintln!(
        "{who}: {hz} Hz tone received as {f:.2} Hz, SNR {snr:.1} dB, {secs:.2} s, longest gap {gap} ms, \
         {} packets ({} lost, {} rebuilt by FEC), max inter-arrival {} ms, setup {:?}",
        r.stats.packets_received, r.stats.lost, r.stats.recovered, r.stats.max_gap_ms, r.setup_time
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_tones_through_our_turn_server_only() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let alice = server.registered(&api, "+14155550201", "call-test").await;
    let bob = server.registered(&api, "+14155550202", "call-test").await;
    let bob_id = bob.credentials().user();
    let (alice_chat, mut alice_ev) = Chat::connect(alice.clone(), ConnectOptions::default());
    let (bob_chat, mut bob_ev) = Chat::connect(bob.clone(), ConnectOptions::default());
    synced(&mut alice_ev).await;
    synced(&mut bob_ev).await;

    let caller = CallOptions {
        play: Some(Pcm::tone(16_000, 440.0, TONE_SECS, 0.5)),
        relay_only: true,
        hangup_after: Some(Duration::from_secs_f64(TONE_SECS + 1.5)),
        setup_timeout: Duration::from_secs(20),
        bind: "127.0.0.1:0".into(),
        ..CallOptions::default()
    };
    let callee = CallOptions {
        play: Some(Pcm::tone(16_000, 1000.0, TONE_SECS, 0.5)),
        hangup_after: None,
        ..caller.clone()
    };
    let (a, b) = tokio::join!(
        place(&alice_chat, &mut alice_ev, &alice, bob_id, caller),
        answer(
            &bob_chat,
            &mut bob_ev,
            &bob,
            None,
            callee,
            Duration::from_secs(20)
        ),
    );
    let (a, b) = (a.expect("caller"), b.expect("callee"));
    assert!(a.connected && b.connected);
    assert_eq!(b.ended_by_peer, Some(natter_proto::EndReason::Hangup));
    check_tone("caller hears callee", &a, 1000.0);
    check_tone("callee hears caller", &b, 440.0);
    alice_chat.close();
    bob_chat.close();
    server.stop().await;
}

/// An ICE restart in the middle of a call (what a client does after a network
/// change): the caller sends a `call.update` offer with fresh ICE credentials,
/// the callee answers it, both re-gather relay candidates, and audio goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_mid_call_keeps_audio_flowing() {
    let server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let alice = server.registered(&api, "+14155550211", "call-test").await;
    let bob = server.registered(&api, "+14155550212", "call-test").await;
    let bob_id = bob.credentials().user();
    let (alice_chat, mut alice_ev) = Chat::connect(alice.clone(), ConnectOptions::default());
    let (bob_chat, mut bob_ev) = Chat::connect(bob.clone(), ConnectOptions::default());
    synced(&mut alice_ev).await;
    synced(&mut bob_ev).await;
    let caller = CallOptions {
        play: Some(Pcm::tone(16_000, 440.0, 5.0, 0.5)),
        relay_only: true,
        hangup_after: Some(Duration::from_secs(5)),
        setup_timeout: Duration::from_secs(20),
        bind: "127.0.0.1:0".into(),
        ice_restart_after: Some(Duration::from_millis(1500)),
        ..CallOptions::default()
    };
    let callee = CallOptions {
        play: Some(Pcm::tone(16_000, 1000.0, 5.0, 0.5)),
        hangup_after: None,
        ice_restart_after: None,
        ..caller.clone()
    };
    let (a, b) = tokio::join!(
        place(&alice_chat, &mut alice_ev, &alice, bob_id, caller),
        answer(
            &bob_chat,
            &mut bob_ev,
            &bob,
            None,
            callee,
            Duration::from_secs(20)
        ),
    );
    let (a, b) = (a.expect("caller"), b.expect("callee"));
    assert_eq!((a.ice_restarts, b.ice_restarts), (1, 1));
    for (who, r, hz) in [("caller", &a, 1000.0), ("callee", &b, 440.0)] {
        let rec = &r.recording.samples;
        // The last second before the hang-up still carries the other side's tone.
        let tail = &rec[rec.len().saturating_sub(20_000)..rec.len().saturating_sub(4_000)];
        assert!(
            audio::rms(tail) > 1_000.0,
            "{who}: silent after the restart"
        );
        let f = audio::dominant_frequency(tail, 16_000, 100.0, 4_000.0);
        assert!((f - hz).abs() <= 5.0, "{who}: {f} Hz after the restart");
        eprintln!(
            "{who}: after the ICE restart {f:.1} Hz; {} packets, {} lost, max inter-arrival {} ms",
            r.stats.packets_received, r.stats.lost, r.stats.max_gap_ms
        );
    }
    alice_chat.close();
    bob_chat.close();
    server.stop().await;
}
