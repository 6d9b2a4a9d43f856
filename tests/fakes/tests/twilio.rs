//! Twilio REST fake (Messages and Calls), driven over TLS by reqwest.

mod common;

use common::client;
use natter_provider_fakes::Failure;
use natter_provider_fakes::tls::TestCa;
use natter_provider_fakes::twilio::TwilioFake;
use serde_json::Value;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH: &str = "s3cr3t-auth-token";
const FROM: &str = "+14155550100";
const TO: &str = "+4915112345678";
const MG: &str = "MG0123456789abcdef0123456789abcdef";

struct Env {
    _ca: TestCa,
    twilio: TwilioFake,
    http: reqwest::Client,
}

async fn env() -> Env {
    let ca = TestCa::new();
    let twilio = TwilioFake::start(&ca, SID, AUTH, FROM).await;
    let http = client(&ca);
    Env {
        _ca: ca,
        twilio,
        http,
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn post_as(
    env: &Env,
    creds: Option<(&str, &str)>,
    path: &str,
    pairs: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = env
        .http
        .post(format!("{}{path}", env.twilio.endpoint()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs));
    if let Some((user, pass)) = creds {
        req = req.basic_auth(user, Some(pass));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.expect("JSON body"))
}

async fn sms(env: &Env, pairs: &[(&str, &str)]) -> (u16, Value) {
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let (s, _, b) = post_as(env, Some((SID, AUTH)), &path, pairs).await;
    (s, b)
}

async fn call(env: &Env, pairs: &[(&str, &str)]) -> (u16, Value) {
    let path = format!("/2010-04-01/Accounts/{SID}/Calls.json");
    let (s, _, b) = post_as(env, Some((SID, AUTH)), &path, pairs).await;
    (s, b)
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: u64) {
    assert_eq!(
        (status, body["code"].as_u64()),
        (want_status, Some(code)),
        "{body}"
    );
    assert_eq!(body["status"], want_status);
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}")
    );
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn valid_sms_is_created() {
    let env = env().await;
    let (status, body) = sms(
        &env,
        &[
            ("To", TO),
            ("From", FROM),
            ("Body", "Your Natter code is 123456"),
            ("StatusCallback", "https://example.com/cb"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sid = body["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34);
    assert!(sid[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], TO);
    assert_eq!(body["from"], FROM);
    assert_eq!(body["body"], "Your Natter code is 123456");
    assert_eq!(body["account_sid"], SID);
    assert_eq!(body["direction"], "outbound-api");
    assert_eq!(body["num_segments"], "1");
    assert_eq!(
        body["uri"],
        format!("/2010-04-01/Accounts/{SID}/Messages/{sid}.json")
    );
    assert!(body["date_created"].as_str().unwrap().ends_with(" +0000"));

    let (status, body) = sms(
        &env,
        &[
            ("To", TO),
            ("MessagingServiceSid", MG),
            ("Body", &"long ".repeat(40)),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["messaging_service_sid"], MG);
    assert_eq!(body["num_segments"], "2");

    let m = env.twilio.messages();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].to.as_str(), m[0].from.as_str(), m[0].body.as_str()),
        (TO, FROM, "Your Natter code is 123456")
    );
    assert_eq!(m[0].messaging_service_sid, None);
    assert_eq!(m[1].messaging_service_sid.as_deref(), Some(MG));
    assert!(m[1].from.is_empty());
    let a = env.twilio.attempts();
    assert_eq!(a.len(), 2);
    assert!(
        a.iter()
            .all(|a| a.status == 201 && a.target == TO && a.reason.is_empty())
    );
}

#[tokio::test]
async fn bad_credentials_are_401() {
    let env = env().await;
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let pairs = [("To", TO), ("From", FROM), ("Body", "hi")];
    for creds in [
        None,
        Some((SID, "wrong")),
        Some(("AC00000000000000000000000000000000", AUTH)),
    ] {
        let (status, headers, body) = post_as(&env, creds, &path, &pairs).await;
        assert_error(status, &body, 401, 20003);
        assert_eq!(body["message"], "Authenticate");
        assert!(headers.contains_key("www-authenticate"));
    }
    // Even unknown paths authenticate first.
    let (status, _, body) = post_as(&env, None, "/nope", &pairs).await;
    assert_error(status, &body, 401, 20003);
    assert!(env.twilio.messages().is_empty());

    // Authenticated, but someone else's account in the path.
    let other = "/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Messages.json";
    let (status, _, body) = post_as(&env, Some((SID, AUTH)), other, &pairs).await;
    assert_error(status, &body, 404, 20404);
    let (status, _, body) = post_as(
        &env,
        Some((SID, AUTH)),
        &format!("/2010-04-01/Accounts/{SID}/Faxes.json"),
        &pairs,
    )
    .await;
    assert_error(status, &body, 404, 20404);
}

#[tokio::test]
async fn message_parameters_are_checked() {
    let env = env().await;
    let (s, b) = sms(&env, &[("From", FROM), ("Body", "hi")]).await;
    assert_error(s, &b, 400, 21604);
    for to in [
        "4915112345678",
        "+49",
        "+49 151 1234567",
        "+0123456789",
        "+1234567890123456",
        "tel:+4915112345678",
    ] {
        let (s, b) = sms(&env, &[("To", to), ("From", FROM), ("Body", "hi")]).await;
        assert_error(s, &b, 400, 21211);
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .contains("is not a valid phone number")
        );
    }
    let (s, b) = sms(
        &env,
        &[("To", TO), ("From", "+14155550199"), ("Body", "hi")],
    )
    .await;
    assert_error(s, &b, 400, 21606);
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("is not a valid, SMS-capable inbound phone number")
    );
    let (s, b) = sms(&env, &[("To", TO), ("Body", "hi")]).await;
    assert_error(s, &b, 400, 21603);
    let (s, b) = sms(
        &env,
        &[
            ("To", TO),
            ("From", FROM),
            ("MessagingServiceSid", MG),
            ("Body", "hi"),
        ],
    )
    .await;
    assert_error(s, &b, 400, 21603);
    let (s, b) = sms(
        &env,
        &[("To", TO), ("MessagingServiceSid", "MG123"), ("Body", "hi")],
    )
    .await;
    assert_error(s, &b, 400, 21701);
    let (s, b) = sms(&env, &[("To", TO), ("From", FROM)]).await;
    assert_error(s, &b, 400, 21602);
    let (s, b) = sms(&env, &[("To", TO), ("From", FROM), ("Body", "")]).await;
    assert_error(s, &b, 400, 21602);
    let (s, b) = sms(
        &env,
        &[("To", TO), ("From", FROM), ("Body", &"é".repeat(1601))],
    )
    .await;
    assert_error(s, &b, 400, 21617);
    let (s, _) = sms(
        &env,
        &[("To", TO), ("From", FROM), ("Body", &"é".repeat(1600))],
    )
    .await;
    assert_eq!(s, 201, "1600 characters (not bytes) is the limit");

    // JSON bodies carry no form parameters as far as Twilio is concerned.
    let resp = env
        .http
        .post(format!(
            "{}/2010-04-01/Accounts/{SID}/Messages.json",
            env.twilio.endpoint()
        ))
        .basic_auth(SID, Some(AUTH))
        .json(&serde_json::json!({"To": TO, "From": FROM, "Body": "hi"}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_error(status, &resp.json().await.unwrap(), 400, 21604);
    assert_eq!(env.twilio.messages().len(), 1);
}

#[tokio::test]
async fn rejected_numbers_fail_permanently() {
    let env = env().await;
    env.twilio.reject_number(TO);
    for _ in 0..2 {
        let (s, b) = sms(&env, &[("To", TO), ("From", FROM), ("Body", "hi")]).await;
        assert_error(s, &b, 400, 21614);
        assert_eq!(b["message"], "'To' number is not a valid mobile number");
    }
    let (s, _) = sms(
        &env,
        &[("To", "+14155550123"), ("From", FROM), ("Body", "hi")],
    )
    .await;
    assert_eq!(s, 201);
    let reasons: Vec<String> = env
        .twilio
        .attempts()
        .into_iter()
        .map(|a| a.reason)
        .collect();
    assert_eq!(reasons, ["21614", "21614", ""]);
}

#[tokio::test]
async fn calls_need_valid_twiml_or_url() {
    let env = env().await;
    let twiml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say>Your code is 1 2 3 4 5 6</Say></Response>";
    let (s, b) = call(&env, &[("To", TO), ("From", FROM), ("Twiml", twiml)]).await;
    assert_eq!(s, 201, "{b}");
    let sid = b["sid"].as_str().unwrap();
    assert!(sid.starts_with("CA") && sid.len() == 34);
    assert_eq!(
        (b["status"].as_str(), b["to"].as_str(), b["from"].as_str()),
        (Some("queued"), Some(TO), Some(FROM))
    );
    let (s, _) = call(
        &env,
        &[
            ("To", TO),
            ("From", FROM),
            ("Url", "https://example.com/twiml.xml"),
        ],
    )
    .await;
    assert_eq!(s, 201);

    let (s, b) = call(&env, &[("To", TO), ("From", FROM)]).await;
    assert_error(s, &b, 400, 21205);
    let (s, b) = call(
        &env,
        &[
            ("To", TO),
            ("From", FROM),
            ("Twiml", twiml),
            ("Url", "https://example.com/t"),
        ],
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = call(
        &env,
        &[("To", TO), ("From", FROM), ("Url", "ftp://example.com/t")],
    )
    .await;
    assert_error(s, &b, 400, 21205);
    for bad in [
        "<Say>hi</Say>",
        "<Response><Say>hi</Response>",
        "Say hi",
        "<Response><Say>hi</Say>",
    ] {
        let (s, b) = call(&env, &[("To", TO), ("From", FROM), ("Twiml", bad)]).await;
        assert_error(s, &b, 400, 12100);
        assert_eq!(b["message"], "Document parse failure");
    }
    let (s, b) = call(&env, &[("To", "12345"), ("From", FROM), ("Twiml", twiml)]).await;
    assert_error(s, &b, 400, 21211);
    let (s, b) = call(&env, &[("From", FROM), ("Twiml", twiml)]).await;
    assert_error(s, &b, 400, 21201);
    let (s, b) = call(&env, &[("To", TO), ("Twiml", twiml)]).await;
    assert_error(s, &b, 400, 21213);
    let (s, b) = call(
        &env,
        &[("To", TO), ("From", "+14155550199"), ("Twiml", twiml)],
    )
    .await;
    assert_error(s, &b, 400, 21210);

    let calls = env.twilio.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].twiml.as_deref(), Some(twiml));
    assert_eq!(calls[0].url, None);
    assert_eq!(
        calls[1].url.as_deref(),
        Some("https://example.com/twiml.xml")
    );
    assert!(env.twilio.messages().is_empty());
}

#[tokio::test]
async fn scripted_failures() {
    let env = env().await;
    env.twilio
        .fail_next(Failure::status(429).with_retry_after(2));
    env.twilio.fail_next(Failure::status(503));
    env.twilio
        .fail_next(Failure::status(500).with_reason("30008"));
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let pairs = [("To", TO), ("From", FROM), ("Body", "hi")];
    let (s, _, b) = post_as(&env, Some((SID, "bad")), &path, &pairs).await;
    assert_error(s, &b, 401, 20003);
    let (s, h, b) = post_as(&env, Some((SID, AUTH)), &path, &pairs).await;
    assert_error(s, &b, 429, 20429);
    assert_eq!(b["message"], "Too Many Requests");
    assert_eq!(h["retry-after"], "2");
    let (s, b) = sms(&env, &pairs).await;
    assert_error(s, &b, 503, 20503);
    let (s, b) = call(
        &env,
        &[("To", TO), ("From", FROM), ("Url", "https://example.com/t")],
    )
    .await;
    assert_error(s, &b, 500, 30008);
    let (s, _) = sms(&env, &pairs).await;
    assert_eq!(s, 201);
    let statuses: Vec<u16> = env
        .twilio
        .attempts()
        .into_iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, [429, 503, 500, 201]);
}
