//! Twilio's REST API (2010-04-01): one-time codes by SMS (Messages) or by a
//! voice call that reads them out (Calls with inline TwiML). HTTP Basic auth
//! with the account SID and auth token.

use crate::http::{HttpConfig, secret_from};
use crate::retry::{RetryConfig, jitter, retry_after_of};
use crate::{Delivery, Report};
use natter_common::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `[auth.sms.twilio]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account SID (`AC` + 32 hex).
    #[serde(deserialize_with = "natter_common::config::scalar_string")]
    pub account_sid: String,
    /// The auth token (inline, from the environment) …
    pub auth_token: Secret,
    /// … or the path of a file holding it.
    pub auth_token_file: String,
    /// The sending number (E.164), for SMS when no messaging service is set,
    /// and always for voice calls.
    #[serde(deserialize_with = "natter_common::config::e164_string")]
    pub from: String,
    /// A messaging service (`MG` + 32 hex) to send SMS through instead of `from`.
    #[serde(deserialize_with = "natter_common::config::scalar_string")]
    pub messaging_service_sid: String,
    /// Base URL of the API.
    pub endpoint: String,
    /// Language the code is read in (TwiML `<Say language=…>`).
    pub voice_language: String,
    /// Timeout and extra roots.
    pub http: HttpConfig,
    /// Retries of 429 and 5xx answers.
    pub retry: RetryConfig,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            account_sid: String::new(),
            auth_token: Secret::default(),
            auth_token_file: String::new(),
            from: String::new(),
            messaging_service_sid: String::new(),
            endpoint: "https://api.twilio.com".into(),
            voice_language: "en-US".into(),
            http: HttpConfig::default(),
            retry: RetryConfig {
                // A person is waiting on the registration screen.
                attempts: 3,
                ..RetryConfig::default()
            },
        }
    }
}

fn sid_ok(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn e164_ok(s: &str) -> bool {
    s.len() >= 8
        && s.len() <= 16
        && s.starts_with('+')
        && s[1..].bytes().all(|b| b.is_ascii_digit())
}

impl TwilioConfig {
    /// Checks the settings; `key` names the section in errors.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if !sid_ok(&self.account_sid, "AC") {
            return Err(format!("{key}.account_sid: AC followed by 32 hex digits"));
        }
        if !self.messaging_service_sid.is_empty() && !sid_ok(&self.messaging_service_sid, "MG") {
            return Err(format!(
                "{key}.messaging_service_sid: MG followed by 32 hex digits"
            ));
        }
        if !e164_ok(&self.from) {
            return Err(format!(
                "{key}.from: the sending number in E.164 (+ and 7 to 15 digits); voice codes need it"
            ));
        }
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
            return Err(format!("{key}.endpoint: an http(s) URL"));
        }
        self.retry.validate(&format!("{key}.retry"))
    }
}

/// The form body of an SMS.
pub fn sms_form(cfg: &TwilioConfig, to: &str, text: &str) -> String {
    let mut f = form_urlencoded::Serializer::new(String::new());
    f.append_pair("To", to);
    if cfg.messaging_service_sid.is_empty() {
        f.append_pair("From", &cfg.from);
    } else {
        f.append_pair("MessagingServiceSid", &cfg.messaging_service_sid);
    }
    f.append_pair("Body", text);
    f.finish()
}

/// Escapes text for XML content and attributes.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The TwiML a code call runs: the text with its digits spaced out (so the
/// voice reads "four, two", not "forty-two"), said twice.
pub fn voice_twiml(cfg: &TwilioConfig, text: &str) -> String {
    let mut spoken = String::with_capacity(text.len() * 2);
    let mut prev_digit = false;
    for c in text.chars() {
        if c.is_ascii_digit() && prev_digit {
            spoken.push_str(", ");
        }
        spoken.push(c);
        prev_digit = c.is_ascii_digit();
    }
    let say = format!(
        "<Say language=\"{}\">{}</Say>",
        xml_escape(&cfg.voice_language),
        xml_escape(&spoken)
    );
    format!("<Response>{say}<Pause length=\"1\"/>{say}</Response>")
}

/// The form body of a voice call.
pub fn call_form(cfg: &TwilioConfig, to: &str, text: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("To", to)
        .append_pair("From", &cfg.from)
        .append_pair("Twiml", &voice_twiml(cfg, text))
        .finish()
}

/// What a Twilio answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 200/201: queued.
    Sent,
    /// 401/403: the SID or token is wrong.
    Auth(String),
    /// 429 or 5xx: retry.
    Retry(String),
    /// Refused for good (a bad or unreachable number, a wrong `From`).
    Rejected(String),
}

/// Classifies an answer from its status and JSON body (`{"code","message",…}`).
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    if status == 200 || status == 201 {
        return Verdict::Sent;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let why = format!(
        "{status} {}: {}",
        v["code"]
            .as_u64()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        v["message"].as_str().unwrap_or("")
    );
    match status {
        401 | 403 => Verdict::Auth(why),
        429 | 500..=599 => Verdict::Retry(why),
        _ => Verdict::Rejected(why),
    }
}

/// Which channel a code goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A text message.
    Sms,
    /// A phone call.
    Voice,
}

/// Sends codes through Twilio.
pub struct TwilioClient {
    http: reqwest::Client,
    cfg: TwilioConfig,
    auth_token: Secret,
}

impl TwilioClient {
    /// Checks the settings, reads the token and builds the client.
    pub fn new(cfg: &TwilioConfig, key: &str) -> Result<Self, String> {
        cfg.validate(key)?;
        let auth_token = secret_from(
            &format!("{key}.auth_token"),
            &cfg.auth_token,
            &cfg.auth_token_file,
        )?
        .ok_or_else(|| format!("{key}: set auth_token or auth_token_file"))?;
        let auth_token = Secret::new(auth_token.expose().trim());
        Ok(Self {
            http: crate::http::client(&cfg.http, key, false)?,
            cfg: cfg.clone(),
            auth_token,
        })
    }

    /// Sends `text` to `to` (E.164) by `channel`. Retries 429 and 5xx.
    pub async fn send(&self, to: &str, text: &str, channel: Channel) -> Report {
        let (resource, body) = match channel {
            Channel::Sms => ("Messages", sms_form(&self.cfg, to, text)),
            Channel::Voice => ("Calls", call_form(&self.cfg, to, text)),
        };
        let url = format!(
            "{}/2010-04-01/Accounts/{}/{resource}.json",
            self.cfg.endpoint.trim_end_matches('/'),
            self.cfg.account_sid
        );
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = self
                .http
                .post(&url)
                .basic_auth(&self.cfg.account_sid, Some(self.auth_token.expose()))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.clone())
                .send()
                .await;
            let (why, retry_after) = match sent {
                Err(e) => (format!("request failed: {e}"), None),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = retry_after_of(resp.headers());
                    let bytes = resp.bytes().await.unwrap_or_default();
                    let delivery = match classify(status, &bytes) {
                        Verdict::Sent => Delivery::Delivered,
                        Verdict::Rejected(why) => Delivery::Rejected(why),
                        Verdict::Auth(why) => Delivery::AuthFailed(format!(
                            "Twilio refused account {}: {why}",
                            self.cfg.account_sid
                        )),
                        Verdict::Retry(why) => {
                            match self.cfg.retry.wait(attempts, retry_after, jitter()) {
                                Ok(wait) => {
                                    tokio::time::sleep(wait).await;
                                    continue;
                                }
                                Err(g) => Delivery::Failed(format!("{why} ({g})")),
                            }
                        }
                    };
                    return Report { delivery, attempts };
                }
            };
            match self.cfg.retry.wait(attempts, retry_after, jitter()) {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(g) => {
                    return Report {
                        delivery: Delivery::Failed(format!("{why} ({g})")),
                        attempts,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TwilioConfig {
        TwilioConfig {
            account_sid: format!("AC{}", "0".repeat(32)),
            auth_token: Secret::new("tok"),
            from: "+15005550006".into(),
            ..TwilioConfig::default()
        }
    }

    #[test]
    fn forms_are_what_the_api_documents() {
        let c = cfg();
        assert_eq!(
            sms_form(&c, "+14155550100", "Code 123"),
            "To=%2B14155550100&From=%2B15005550006&Body=Code+123"
        );
        let mg = TwilioConfig {
            messaging_service_sid: format!("MG{}", "a".repeat(32)),
            ..c.clone()
        };
        assert!(sms_form(&mg, "+1", "x").contains("MessagingServiceSid=MG"));
        assert!(!sms_form(&mg, "+1", "x").contains("From="));
        assert_eq!(
            voice_twiml(&c, "Code <42> & 7"),
            "<Response><Say language=\"en-US\">Code &lt;4, 2&gt; &amp; 7</Say><Pause length=\"1\"/><Say language=\"en-US\">Code &lt;4, 2&gt; &amp; 7</Say></Response>"
        );
        assert!(call_form(&c, "+14155550100", "1").contains("Twiml=%3CResponse%3E"));
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(201, b"{}"), Verdict::Sent);
        assert_eq!(
            classify(
                400,
                br#"{"code":21211,"message":"Invalid 'To' Phone Number","status":400}"#
            ),
            Verdict::Rejected("400 21211: Invalid 'To' Phone Number".into())
        );
        assert!(matches!(
            classify(401, br#"{"code":20003}"#),
            Verdict::Auth(_)
        ));
        assert!(matches!(classify(429, b""), Verdict::Retry(_)));
        assert!(matches!(classify(502, b"<html>"), Verdict::Retry(_)));
    }

    #[test]
    fn settings_are_checked() {
        cfg().validate("auth.sms.twilio").unwrap();
        let bad = TwilioConfig {
            account_sid: "AC1".into(),
            ..cfg()
        };
        assert!(
            bad.validate("auth.sms.twilio")
                .unwrap_err()
                .starts_with("auth.sms.twilio.account_sid")
        );
        let bad = TwilioConfig {
            from: "5550100".into(),
            ..cfg()
        };
        assert!(
            bad.validate("auth.sms.twilio")
                .unwrap_err()
                .starts_with("auth.sms.twilio.from")
        );
        let bad = TwilioConfig {
            auth_token: Secret::default(),
            ..cfg()
        };
        assert!(
            TwilioClient::new(&bad, "auth.sms.twilio")
                .err()
                .unwrap()
                .contains("auth_token")
        );
    }
}
