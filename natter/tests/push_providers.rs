//! Push and codes through the providers' own APIs, against strict local fakes
//! of FCM HTTP v1 (with Google's OAuth2 token endpoint), APNs (HTTP/2, token
//! auth) and Twilio (Messages and Calls), all over TLS with a test CA
//! (natter-provider-fakes). Real `natter serve` processes; the cluster test
//! runs two nodes on PostgreSQL and Redis (required: it fails without them).

use natter_client::{Account, Api, Chat, ConnectOptions, Event, Events};
use natter_common::testing::TempDir;
use natter_proto::{CallClientFrame, CallId, CallOffer, CallRef, Target, UserId};
use natter_provider_fakes::Failure;
use natter_provider_fakes::apns::ApnsFake;
use natter_provider_fakes::fcm::FcmFake;
use natter_provider_fakes::tls::TestCa;
use natter_provider_fakes::twilio::TwilioFake;
use natter_tests::cluster::{LocalCluster, test_redis_url};
use natter_tests::server::ProcessServer;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_natter");
const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const BUNDLE: &str = "org.natter.test";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token-0123456789";
const FROM: &str = "+15005550006";

/// The three fakes and the files natter reads its credentials from.
struct Providers {
    dir: TempDir,
    ca_file: PathBuf,
    fcm: FcmFake,
    apns: ApnsFake,
    twilio: TwilioFake,
}

impl Providers {
    async fn start() -> Self {
        let ca = TestCa::new();
        let dir = TempDir::new("natter-providers");
        let ca_file = ca.write_ca_file(dir.path());
        let fcm = FcmFake::start(&ca, "natter-test").await;
        let apns = ApnsFake::start(&ca, TEAM, KEY_ID, BUNDLE).await;
        let twilio = TwilioFake::start(&ca, SID, AUTH_TOKEN, FROM).await;
        let p = Self {
            dir,
            ca_file,
            fcm,
            apns,
            twilio,
        };
        p.write("service-account.json", &p.fcm.service_account_json());
        p.write("AuthKey.p8", &p.apns.key_p8());
        p.write("twilio-token", AUTH_TOKEN);
        p
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// natter's settings for all three, as environment variables.
    fn env(&self) -> Vec<(String, String)> {
        let ca = self.ca_file.to_str().unwrap().to_owned();
        [
            ("NATTER_CHAT__PUSH__BACKEND", "providers".to_owned()),
            (
                "NATTER_CHAT__PUSH__FCM__SERVICE_ACCOUNT_FILE",
                self.path("service-account.json"),
            ),
            ("NATTER_CHAT__PUSH__FCM__ENDPOINT", self.fcm.endpoint()),
            ("NATTER_CHAT__PUSH__FCM__HTTP__CA_FILE", ca.clone()),
            ("NATTER_CHAT__PUSH__FCM__RETRY__BACKOFF_MS", "100".into()),
            ("NATTER_CHAT__PUSH__APNS__KEY_FILE", self.path("AuthKey.p8")),
            ("NATTER_CHAT__PUSH__APNS__KEY_ID", KEY_ID.into()),
            ("NATTER_CHAT__PUSH__APNS__TEAM_ID", TEAM.into()),
            ("NATTER_CHAT__PUSH__APNS__BUNDLE_ID", BUNDLE.into()),
            ("NATTER_CHAT__PUSH__APNS__ENDPOINT", self.apns.endpoint()),
            ("NATTER_CHAT__PUSH__APNS__HTTP__CA_FILE", ca.clone()),
            ("NATTER_CHAT__PUSH__APNS__RETRY__BACKOFF_MS", "100".into()),
            ("NATTER_AUTH__SMS__BACKEND", "twilio".into()),
            ("NATTER_AUTH__SMS__TWILIO__ACCOUNT_SID", SID.into()),
            (
                "NATTER_AUTH__SMS__TWILIO__AUTH_TOKEN_FILE",
                self.path("twilio-token"),
            ),
            ("NATTER_AUTH__SMS__TWILIO__FROM", FROM.into()),
            ("NATTER_AUTH__SMS__TWILIO__ENDPOINT", self.twilio.endpoint()),
            ("NATTER_AUTH__SMS__TWILIO__HTTP__CA_FILE", ca),
            ("NATTER_AUTH__SMS__TWILIO__RETRY__BACKOFF_MS", "100".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    async fn natter(&self, extra: &[(&str, &str)]) -> ProcessServer {
        let mut env = self.env();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ProcessServer::start_with_env(BIN.into(), None, &env)
            .await
            .expect("natter starts with the providers configured")
    }

    /// The code Twilio was asked to text to `number`, waiting up to 10 s.
    async fn code_texted_to(&self, number: &str) -> String {
        let twilio = self.twilio.clone();
        wait_for(&format!("an SMS to {number}"), || {
            twilio
                .messages()
                .iter()
                .rev()
                .find(|m| m.to == number)
                .map(|m| {
                    m.body
                        .chars()
                        .filter(char::is_ascii_digit)
                        .collect::<String>()
                })
        })
        .await
    }

    /// Registers a new account; its code comes by SMS through Twilio.
    async fn register(&self, api: &Api) -> Account {
        let number = random_number();
        let creds = natter_client::register(api, &number, "push-test", |_| async {
            Ok(self.code_texted_to(&number).await)
        })
        .await
        .expect("register through twilio");
        Account::new(api.clone(), creds)
    }
}

fn random_number() -> String {
    let r = uuid::Uuid::new_v4().as_u128();
    format!(
        "+1415{:03}{:04}",
        200 + (r % 800) as u32,
        ((r >> 16) % 10_000) as u32
    )
}

/// An FCM registration token as the fake accepts it.
fn fcm_token() -> String {
    format!("fcm:{}", uuid::Uuid::new_v4().simple())
}

/// An APNs device (or PushKit) token: 32 bytes in hex.
fn apns_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Polls `f` every 50 ms until it gives a value, failing after 15 s.
async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn expect<T>(events: &mut Events, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => {
                if let Some(t) = f(&ev) {
                    return t;
                }
            }
            Ok(None) => panic!("events ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn connect(account: Account, ws_url: Option<String>) -> (Chat, Events) {
    let (chat, mut ev) = Chat::connect(
        account,
        ConnectOptions {
            ws_url,
            ..ConnectOptions::default()
        },
    );
    expect(&mut ev, "connected", |e| {
        matches!(e, Event::Connected(_)).then_some(())
    })
    .await;
    (chat, ev)
}

/// Sends `text` and waits until the server stored it.
async fn send(chat: &Chat, ev: &mut Events, to: &UserId, text: &str) {
    let id = chat.send_text(Target::User(to.clone()), text);
    expect(ev, "message stored", |e| match e {
        Event::Sent(s) if s.id == id => Some(()),
        _ => None,
    })
    .await;
}

fn ring(chat: &Chat, to: &UserId, call: &str) {
    chat.call_frame(CallClientFrame::Offer(CallOffer {
        call_id: CallId::new(call),
        to: to.clone(),
        media: Default::default(),
        sdp: "v=0 (an offer)".into(),
    }));
}

fn hang_up(chat: &Chat, call: &str) {
    chat.call_frame(CallClientFrame::Hangup(CallRef {
        call_id: CallId::new(call),
    }));
}

/// The value of a counter series on `/metrics` (0 when absent).
async fn counter(url: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_counter(url: &str, family: &str, labels: &[(&str, &str)], at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = counter(url, family, labels).await;
        if v >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{family}{labels:?} stayed at {v}, expected {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ann online; Bob (Android) and Carol (iOS, with a PushKit token) registered
/// and offline.
struct Cast {
    ann: Chat,
    ann_ev: Events,
    bob: UserId,
    bob_fcm: String,
    carol: UserId,
    carol_apns: String,
    carol_voip: String,
}

async fn cast(p: &Providers, api: &Api, ws_url: Option<String>) -> Cast {
    let ann = p.register(api).await;
    let bob = p.register(api).await;
    let carol = p.register(api).await;
    let (bob_fcm, carol_apns, carol_voip) = (fcm_token(), apns_token(), apns_token());
    api.set_push_tokens(&bob.token().await.unwrap(), "fcm", &bob_fcm, None)
        .await
        .unwrap();
    api.set_push_tokens(
        &carol.token().await.unwrap(),
        "apns",
        &carol_apns,
        Some(&carol_voip),
    )
    .await
    .unwrap();
    let (bob, carol) = (bob.credentials().user(), carol.credentials().user());
    let (ann, ann_ev) = connect(ann, ws_url).await;
    Cast {
        ann,
        ann_ev,
        bob,
        bob_fcm,
        carol,
        carol_apns,
        carol_voip,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_android_and_ios_devices_are_woken_once_per_window_and_calls_ring_ios_through_voip()
{
    let p = Providers::start().await;
    let natter = p.natter(&[]).await;
    let api = Api::new(&natter.url()).unwrap();
    let mut c = cast(&p, &api, None).await;
    for i in 0..3 {
        send(&c.ann, &mut c.ann_ev, &c.bob, &format!("secret words {i}")).await;
        send(
            &c.ann,
            &mut c.ann_ev,
            &c.carol,
            &format!("secret words {i}"),
        )
        .await;
    }
    let bob_push = wait_for("bob's FCM push", || {
        p.fcm.messages().into_iter().find(|m| m.token == c.bob_fcm)
    })
    .await;
    let carol_push = wait_for("carol's APNs push", || {
        p.apns
            .notifications()
            .into_iter()
            .find(|n| n.device_token == c.carol_apns)
    })
    .await;
    // Anything else would have gone out by now (the sender works in batches
    // of what is queued, within milliseconds).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let to_bob = p
        .fcm
        .messages()
        .into_iter()
        .filter(|m| m.token == c.bob_fcm)
        .count();
    let to_carol = p
        .apns
        .notifications()
        .into_iter()
        .filter(|n| n.device_token == c.carol_apns)
        .count();
    assert_eq!(
        (to_bob, to_carol),
        (1, 1),
        "three messages each, one wake-up each per window"
    );

    // FCM: data only, high priority, nothing of the message.
    let m = &bob_push.message;
    assert_eq!(m["data"], serde_json::json!({"type": "message"}), "{m}");
    assert_eq!(m["android"]["priority"], "HIGH", "{m}");
    assert!(m.get("notification").is_none(), "{m}");
    assert!(!m.to_string().contains("secret"), "{m}");
    // APNs: a generic alert to the app's topic.
    assert_eq!(
        (
            carol_push.push_type.as_str(),
            carol_push.topic.as_str(),
            carol_push.priority
        ),
        ("alert", BUNDLE, Some(10))
    );
    assert_eq!(carol_push.collapse_id.as_deref(), Some("natter.message"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        carol_push.expiration.is_some_and(|e| e > now),
        "{:?}",
        carol_push.expiration
    );
    assert!(
        !carol_push.payload.to_string().contains("secret"),
        "{}",
        carol_push.payload
    );

    // Dave logs his Android out: his token goes with that device generation,
    // and a message for him wakes nothing.
    let dave = p.register(&api).await;
    let dave_fcm = fcm_token();
    let dave_at = dave.token().await.unwrap();
    api.set_push_tokens(&dave_at, "fcm", &dave_fcm, None)
        .await
        .unwrap();
    let out = reqwest::Client::new()
        .post(format!("{}/v1/tokens/logout", natter.url()))
        .bearer_auth(&dave_at)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 204);
    send(
        &c.ann,
        &mut c.ann_ev,
        &dave.credentials().user(),
        "after logout",
    )
    .await;

    // A call rings Carol's iPhone through PushKit, and Bob's Android by FCM.
    ring(&c.ann, &c.carol, "call-carol");
    let voip = wait_for("carol's VoIP push", || {
        p.apns
            .notifications()
            .into_iter()
            .find(|n| n.push_type == "voip")
    })
    .await;
    assert_eq!(
        (
            voip.device_token.as_str(),
            voip.topic.as_str(),
            voip.priority
        ),
        (
            c.carol_voip.as_str(),
            format!("{BUNDLE}.voip").as_str(),
            Some(10)
        )
    );
    assert_eq!(voip.payload["type"], "call");
    hang_up(&c.ann, "call-carol");
    ring(&c.ann, &c.bob, "call-bob");
    let call = wait_for("bob's FCM call push", || {
        p.fcm
            .messages()
            .into_iter()
            .find(|m| m.message["data"]["type"] == "call")
    })
    .await;
    assert_eq!(call.token, c.bob_fcm);
    hang_up(&c.ann, "call-bob");
    assert!(
        !p.fcm.attempts().iter().any(|a| a.target == dave_fcm),
        "nothing for a logged-out device"
    );
    // One HTTP/2 connection per provider carried all of it.
    assert_eq!((p.fcm.connections(), p.apns.connections()), (1, 1));
    wait_counter(
        &natter.url(),
        "chat_push_provider_total",
        &[("provider", "apns"), ("result", "ok")],
        2.0,
    )
    .await;
    wait_counter(
        &natter.url(),
        "auth_sms_provider_total",
        &[("provider", "twilio"), ("result", "ok")],
        3.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tokens_are_forgotten_rate_limits_are_honoured_and_expired_tokens_refreshed() {
    let p = Providers::start().await;
    // Access tokens that live 2 s; provider tokens Apple calls expired after 2 s.
    p.fcm.set_token_lifetime(2);
    p.apns.set_token_lifetime(Duration::from_secs(2));
    p.apns.set_min_token_update(Duration::ZERO);
    let natter = p
        .natter(&[("NATTER_CHAT__PUSH__MIN_INTERVAL_SECS", "1")])
        .await;
    let api = Api::new(&natter.url()).unwrap();
    let mut c = cast(&p, &api, None).await;
    // Eve's app registered something FCM calls malformed: refused (400), not
    // retried, kept (a later window tries again), logged once.
    let eve = p.register(&api).await;
    api.set_push_tokens(&eve.token().await.unwrap(), "fcm", "not a token", None)
        .await
        .unwrap();
    let eve = eve.credentials().user();

    // 429 with Retry-After: 2 from FCM, 503 from APNs: both retried, then delivered.
    p.fcm.fail_next(Failure::status(429).with_retry_after(2));
    p.apns.fail_next(Failure::status(503));
    send(&c.ann, &mut c.ann_ev, &c.bob, "one").await;
    send(&c.ann, &mut c.ann_ev, &c.carol, "one").await;
    wait_for("bob's push after the 429", || {
        p.fcm.messages().into_iter().find(|m| m.token == c.bob_fcm)
    })
    .await;
    wait_for("carol's push after the 503", || {
        p.apns
            .notifications()
            .into_iter()
            .find(|n| n.device_token == c.carol_apns)
    })
    .await;
    let tries: Vec<_> = p
        .fcm
        .attempts()
        .into_iter()
        .filter(|a| a.target == c.bob_fcm)
        .collect();
    assert_eq!(
        tries.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = tries[1].at.duration_since(tries[0].at);
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, waited {waited:?}"
    );
    let tries: Vec<u16> = p
        .apns
        .attempts()
        .into_iter()
        .filter(|a| a.target == c.carol_apns)
        .map(|a| a.status)
        .collect();
    assert_eq!(tries, vec![503, 200]);

    // (After the scripted failures, so that they hit Bob's and Carol's pushes.)
    send(&c.ann, &mut c.ann_ev, &eve, "one").await;
    wait_for("eve's refused push", || {
        p.fcm
            .attempts()
            .into_iter()
            .find(|a| a.target == "not a token")
    })
    .await;

    // After the tokens' lifetimes: FCM's cached access token is replaced, and
    // APNs' "ExpiredProviderToken" makes natter sign a new provider token.
    let (grants, signed) = (p.fcm.token_grants(), p.apns.provider_tokens_accepted());
    tokio::time::sleep(Duration::from_secs(4)).await;
    send(&c.ann, &mut c.ann_ev, &c.bob, "two").await;
    send(&c.ann, &mut c.ann_ev, &c.carol, "two").await;
    send(&c.ann, &mut c.ann_ev, &eve, "two").await;
    wait_for("bob's second push", || {
        (p.fcm
            .messages()
            .into_iter()
            .filter(|m| m.token == c.bob_fcm)
            .count()
            == 2)
            .then_some(())
    })
    .await;
    wait_for("carol's second push", || {
        (p.apns
            .notifications()
            .into_iter()
            .filter(|n| n.device_token == c.carol_apns)
            .count()
            == 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        p.fcm.token_grants(),
        grants + 1,
        "a new access token after the last expired"
    );
    assert_eq!(
        p.apns.provider_tokens_accepted(),
        signed + 1,
        "a new provider token after the last expired"
    );
    let reasons: Vec<String> = p
        .apns
        .attempts()
        .into_iter()
        .filter(|a| a.status == 403)
        .map(|a| a.reason)
        .collect();
    assert_eq!(reasons, vec!["ExpiredProviderToken"]);

    // Uninstalled: the providers call the tokens dead. Natter forgets them and
    // never sends to them again.
    p.fcm.unregister(&c.bob_fcm);
    p.apns.unregister(&c.carol_apns);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s window
    send(&c.ann, &mut c.ann_ev, &c.bob, "three").await;
    send(&c.ann, &mut c.ann_ev, &c.carol, "three").await;
    wait_counter(
        &natter.url(),
        "chat_push_provider_total",
        &[("provider", "fcm"), ("result", "unregistered")],
        1.0,
    )
    .await;
    wait_counter(
        &natter.url(),
        "chat_push_provider_total",
        &[("provider", "apns"), ("result", "unregistered")],
        1.0,
    )
    .await;
    let fcm_before = p.fcm.attempts().len();
    let apns_before = p.apns.attempts().len();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&c.ann, &mut c.ann_ev, &c.bob, "four").await;
    send(&c.ann, &mut c.ann_ev, &c.carol, "four").await;
    ring(&c.ann, &c.carol, "after-uninstall");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hang_up(&c.ann, "after-uninstall");
    assert_eq!(
        (p.fcm.attempts().len(), p.apns.attempts().len()),
        (fcm_before, apns_before),
        "nothing sent to forgotten tokens (Carol's PushKit token went with her device token)"
    );
    let eve_tries: Vec<u16> = p
        .fcm
        .attempts()
        .into_iter()
        .filter(|a| a.target == "not a token")
        .map(|a| a.status)
        .collect();
    assert_eq!(
        eve_tries,
        vec![400, 400],
        "one try per window, none retried"
    );
    assert_eq!(
        counter(
            &natter.url(),
            "chat_push_provider_total",
            &[("provider", "fcm"), ("result", "rejected")]
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_go_by_twilio_sms_and_voice_and_a_failed_send_is_an_error() {
    let p = Providers::start().await;
    let natter = p.natter(&[]).await;
    let http = reqwest::Client::new();
    let start = |number: String, transport: &'static str| {
        let http = http.clone();
        let url = format!("{}/v1/registration/sessions", natter.url());
        async move {
            let r = http
                .post(url)
                .json(&serde_json::json!({"number": number, "transport": transport}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    // SMS: the whole registration (covered by `register`).
    let api = Api::new(&natter.url()).unwrap();
    let account = p.register(&api).await;
    assert!(!account.credentials().user().as_str().is_empty());
    let sms = p.twilio.messages().pop().unwrap();
    assert_eq!(sms.from, FROM);
    assert!(sms.body.starts_with("Your Natter code is "), "{}", sms.body);

    // Voice: Twilio is asked to call and read the code, digit by digit.
    let number = random_number();
    let (status, body) = start(number.clone(), "voice").await;
    assert_eq!(status, 201, "{body}");
    let call = wait_for("the voice call", || {
        p.twilio.calls().into_iter().find(|c| c.to == number)
    })
    .await;
    let twiml = call.twiml.unwrap();
    assert!(
        twiml.starts_with("<Response><Say") && twiml.contains(", "),
        "{twiml}"
    );

    // A number Twilio will not text: the client is told, with a way forward.
    let number = random_number();
    p.twilio.reject_number(&number);
    let (status, body) = start(number, "sms").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("code_undeliverable")),
        "{body}"
    );

    // Twilio down past the retries: 502, not a silent success.
    for _ in 0..3 {
        p.twilio.fail_next(Failure::status(503));
    }
    let (status, body) = start(random_number(), "sms").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("sms_unavailable")),
        "{body}"
    );
    assert_eq!(
        counter(
            &natter.url(),
            "auth_sms_provider_total",
            &[("provider", "twilio"), ("result", "failed")]
        )
        .await,
        1.0
    );
    assert_eq!(
        counter(
            &natter.url(),
            "auth_sms_provider_total",
            &[("provider", "twilio"), ("result", "rejected")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_start_up_or_the_first_send_with_a_clear_error() {
    let p = Providers::start().await;
    // Unreadable keys: natter does not start, and says which setting.
    for (key, file, text, expect) in [
        (
            "NATTER_CHAT__PUSH__APNS__KEY_FILE",
            "bad.p8",
            "not a key",
            "chat.push.apns.key_file",
        ),
        (
            "NATTER_CHAT__PUSH__FCM__SERVICE_ACCOUNT_FILE",
            "bad.json",
            "{\"type\":\"service_account\"}",
            "chat.push.fcm.service_account_file",
        ),
        (
            "NATTER_AUTH__SMS__TWILIO__AUTH_TOKEN_FILE",
            "missing",
            "",
            "auth.sms.twilio.auth_token_file",
        ),
    ] {
        let path = if text.is_empty() {
            p.path(file)
        } else {
            p.write(file, text)
        };
        let data = TempDir::new("natter-badkey");
        let out = std::process::Command::new(BIN)
            .arg("--data-dir")
            .arg(data.path())
            .arg("serve")
            .envs(p.env())
            .env(key, &path)
            .env("NATTER_HTTP__LISTEN", "127.0.0.1:0")
            .env("NATTER_TURN__LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "natter started with a bad {key}");
        assert!(stderr.contains(expect), "{key}: {stderr}");
    }

    // Keys that read fine but are not the ones the providers know: the first
    // send fails, counted as `auth` and logged as a configuration error.
    p.write(
        "service-account.json",
        &p.fcm.service_account_json_with_wrong_key(),
    );
    p.write("AuthKey.p8", &p.apns.wrong_key_p8());
    p.write("twilio-token", "not-the-auth-token");
    let natter = p.natter(&[("NATTER_AUTH__SMS__BACKEND", "outbox")]).await;
    let api = Api::new(&natter.url()).unwrap();
    let ann = natter_tests::cluster::register_via(&api, &natter.sms_outbox())
        .await
        .unwrap();
    let bob = natter_tests::cluster::register_via(&api, &natter.sms_outbox())
        .await
        .unwrap();
    let carol = natter_tests::cluster::register_via(&api, &natter.sms_outbox())
        .await
        .unwrap();
    api.set_push_tokens(&bob.token().await.unwrap(), "fcm", &fcm_token(), None)
        .await
        .unwrap();
    api.set_push_tokens(&carol.token().await.unwrap(), "apns", &apns_token(), None)
        .await
        .unwrap();
    let (ann, mut ann_ev) = connect(ann, None).await;
    send(&ann, &mut ann_ev, &bob.credentials().user(), "hello").await;
    send(&ann, &mut ann_ev, &carol.credentials().user(), "hello").await;
    wait_counter(
        &natter.url(),
        "chat_push_provider_total",
        &[("provider", "fcm"), ("result", "auth")],
        1.0,
    )
    .await;
    wait_counter(
        &natter.url(),
        "chat_push_provider_total",
        &[("provider", "apns"), ("result", "auth")],
        1.0,
    )
    .await;
    assert!(
        p.fcm
            .rejected_grants()
            .iter()
            .any(|r| r.contains("Invalid JWT Signature")),
        "{:?}",
        p.fcm.rejected_grants()
    );
    assert!(p.fcm.messages().is_empty() && p.apns.notifications().is_empty());
    let apns_reasons: Vec<String> = p.apns.attempts().into_iter().map(|a| a.reason).collect();
    assert_eq!(apns_reasons, vec!["InvalidProviderToken"], "not retried");

    // Twilio with the wrong auth token: registration answers 502.
    let natter = p.natter(&[]).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/registration/sessions", natter.url()))
        .json(&serde_json::json!({"number": random_number()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(
        counter(
            &natter.url(),
            "auth_sms_provider_total",
            &[("provider", "twilio"), ("result", "auth")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_wakes_once_per_window_across_nodes_and_after_a_node_is_killed() {
    let p = Providers::start().await;
    let env: Vec<(String, String)> = p
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("NATTER_AUTH__SMS"))
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut cluster = LocalCluster::start(BIN.into(), 2, &test_redis_url(), &env)
        .await
        .unwrap();
    let ann = cluster.register(0).await.unwrap();
    let dan = cluster.register(1).await.unwrap();
    let bob = cluster.register(0).await.unwrap();
    let carol = cluster.register(1).await.unwrap();
    let (bob_fcm, carol_apns, carol_voip) = (fcm_token(), apns_token(), apns_token());
    bob.api()
        .set_push_tokens(&bob.token().await.unwrap(), "fcm", &bob_fcm, None)
        .await
        .unwrap();
    carol
        .api()
        .set_push_tokens(
            &carol.token().await.unwrap(),
            "apns",
            &carol_apns,
            Some(&carol_voip),
        )
        .await
        .unwrap();
    let (bob, carol) = (bob.credentials().user(), carol.credentials().user());
    let (ann, mut ann_ev) = connect(ann, Some(cluster.nodes[0].ws_url())).await;
    let (dan, mut dan_ev) = connect(dan, Some(cluster.nodes[1].ws_url())).await;
    // Messages for offline Bob arrive through both nodes: one wake-up in all.
    for i in 0..2 {
        send(&ann, &mut ann_ev, &bob, &format!("from node 0, {i}")).await;
        send(&dan, &mut dan_ev, &bob, &format!("from node 1, {i}")).await;
    }
    wait_for("bob's push", || {
        p.fcm.messages().into_iter().find(|m| m.token == bob_fcm)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        p.fcm
            .messages()
            .into_iter()
            .filter(|m| m.token == bob_fcm)
            .count(),
        1
    );

    // Each node's own window let its first notice through; Redis held one back.
    let mut coalesced = 0.0;
    for node in &cluster.nodes {
        coalesced += counter(&node.url(), "chat_push_total", &[("result", "coalesced")]).await;
    }
    assert!(
        coalesced >= 1.0,
        "the cluster-wide window held a second wake-up back"
    );

    // Node 0 dies. Node 1 still wakes Carol, for a message and for a call.
    cluster.kill(0).unwrap();
    send(&dan, &mut dan_ev, &carol, "node 0 is gone").await;
    wait_for("carol's alert", || {
        p.apns
            .notifications()
            .into_iter()
            .find(|n| n.device_token == carol_apns && n.push_type == "alert")
    })
    .await;
    // Node 0 held the calls leadership; node 1 takes it once the old lease
    // lapses (about a second here): a call placed in that gap ends as
    // unavailable, so the caller tries again, as an app would.
    let mut rang = false;
    for attempt in 0..6 {
        let call = format!("after-kill-{attempt}");
        ring(&dan, &carol, &call);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !rang {
            rang = p
                .apns
                .notifications()
                .iter()
                .any(|n| n.device_token == carol_voip && n.push_type == "voip");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hang_up(&dan, &call);
        if rang {
            break;
        }
    }
    assert!(
        rang,
        "a call through node 1 woke carol's iPhone through PushKit"
    );
    drop(ann);
}
