//! Twilio's REST API (version 2010-04-01): outbound SMS (`Messages.json`) and
//! voice calls (`Calls.json`), with HTTP Basic `AccountSid:AuthToken` auth.
//!
//! Error bodies follow Twilio's `{"code", "message", "more_info", "status"}`
//! shape with the documented error codes. Parameters Twilio ignores (unknown
//! names, `ApplicationSid`, status callbacks) are ignored here too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::script::Script;
use crate::tls::{self, Server, TestCa};
use crate::util::{auth_param, json_response, lock, media_type, random_hex};
use crate::{Attempt, Failure};

const API_PREFIX: &str = "/2010-04-01/Accounts/";
/// Longest message body Twilio accepts, in characters.
const MAX_BODY_CHARS: usize = 1600;

/// An SMS Twilio accepted.
#[derive(Debug, Clone)]
pub struct TwilioSms {
    /// When it was accepted.
    pub at: Instant,
    /// `To`, E.164.
    pub to: String,
    /// `From`, or empty when only `MessagingServiceSid` was given.
    pub from: String,
    /// `MessagingServiceSid`, if given.
    pub messaging_service_sid: Option<String>,
    /// `Body` (empty for media-only messages).
    pub body: String,
}

/// A call Twilio accepted.
#[derive(Debug, Clone)]
pub struct TwilioCall {
    /// When it was accepted.
    pub at: Instant,
    /// `To`, E.164.
    pub to: String,
    /// `From`, E.164.
    pub from: String,
    /// Inline `Twiml`, if given.
    pub twiml: Option<String>,
    /// TwiML `Url`, if given.
    pub url: Option<String>,
}

/// The Twilio fake. Cheap to clone; clones share state and server, which
/// shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct TwilioFake {
    shared: Arc<Shared>,
    server: Arc<Server>,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    from: String,
    state: Mutex<TwilioState>,
}

#[derive(Default)]
struct TwilioState {
    script: Script,
    rejected_numbers: HashSet<String>,
    messages: Vec<TwilioSms>,
    calls: Vec<TwilioCall>,
}

/// A Twilio REST error.
struct TwilioError {
    status: u16,
    code: u32,
    message: String,
    retry_after: Option<u64>,
}

fn err(status: u16, code: u32, message: impl Into<String>) -> TwilioError {
    TwilioError {
        status,
        code,
        message: message.into(),
        retry_after: None,
    }
}

impl TwilioFake {
    /// Starts the fake for one account (`account_sid` is "AC" + 32 hex) whose
    /// only SMS- and voice-capable number is `from` (E.164).
    ///
    /// # Panics
    /// If the listener cannot be bound.
    pub async fn start(ca: &TestCa, account_sid: &str, auth_token: &str, from: &str) -> TwilioFake {
        let shared = Arc::new(Shared {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            from: from.to_owned(),
            state: Mutex::new(TwilioState::default()),
        });
        // One fallback handler: Twilio authenticates before routing, so even
        // unknown paths answer 401 without credentials.
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let server = tls::serve(ca, router, false)
            .await
            .expect("start the Twilio fake");
        TwilioFake {
            shared,
            server: Arc::new(server),
        }
    }

    /// The base URL, standing in for `https://api.twilio.com`.
    pub fn endpoint(&self) -> String {
        self.server.base_url()
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> usize {
        self.server.connections()
    }

    /// Later messages to `to` fail with 400 code 21614 (not a mobile number),
    /// a permanent failure.
    pub fn reject_number(&self, to: &str) {
        lock(&self.shared.state)
            .rejected_numbers
            .insert(to.to_owned());
    }

    /// Queues a scripted failure for a later message or call (after auth).
    pub fn fail_next(&self, f: Failure) {
        lock(&self.shared.state).script.push(f);
    }

    /// Every request to `Messages.json` or `Calls.json`, in order; `reason`
    /// is the Twilio error code.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.shared.state).script.attempts()
    }

    /// Messages accepted, in order.
    pub fn messages(&self) -> Vec<TwilioSms> {
        lock(&self.shared.state).messages.clone()
    }

    /// Calls accepted, in order.
    pub fn calls(&self) -> Vec<TwilioCall> {
        lock(&self.shared.state).calls.clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Resource {
    Messages,
    Calls,
}

async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if !s.authenticated(&headers) {
        let mut resp = error_response(&err(401, 20003, "Authenticate"));
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return resp;
    }
    let not_found = || {
        error_response(&err(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        ))
    };
    let Some((sid, name)) = path
        .strip_prefix(API_PREFIX)
        .and_then(|rest| rest.split_once('/'))
    else {
        return not_found();
    };
    let resource = match name {
        "Messages.json" => Resource::Messages,
        "Calls.json" => Resource::Calls,
        _ => return not_found(),
    };
    if sid != s.account_sid {
        return not_found();
    }
    if method != Method::POST {
        return error_response(&err(405, 20004, "Method not allowed"));
    }

    // Twilio reads parameters from a form body only; any other body leaves
    // them unset, which then fails the required-parameter checks.
    let params: HashMap<String, String> =
        if media_type(&headers).as_deref() == Some("application/x-www-form-urlencoded") {
            form_urlencoded::parse(&body)
                .into_owned()
                .fold(HashMap::new(), |mut m, (k, v)| {
                    m.entry(k).or_insert(v);
                    m
                })
        } else {
            HashMap::new()
        };
    let to = params.get("To").cloned().unwrap_or_default();
    // Bound first: a guard in the match scrutinee would live through the
    // arms, which lock again.
    let scripted_failure = lock(&s.state).script.pop();
    let result = match scripted_failure {
        Some(f) => Err(scripted(&f)),
        None => match resource {
            Resource::Messages => s.message(&params),
            Resource::Calls => s.call(&params),
        },
    };
    let (status, reason) = match &result {
        Ok(_) => (201, String::new()),
        Err(e) => (e.status, e.code.to_string()),
    };
    lock(&s.state).script.record(&to, status, &reason);
    match result {
        Ok(resource) => json_response(201, &resource, None),
        Err(e) => error_response(&e),
    }
}

impl Shared {
    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(creds) = auth_param(headers, "Basic").and_then(|b| STANDARD.decode(b).ok()) else {
            return false;
        };
        let expected = format!("{}:{}", self.account_sid, self.auth_token);
        creds == expected.as_bytes()
    }

    fn message(&self, p: &HashMap<String, String>) -> Result<Value, TwilioError> {
        let to = p
            .get("To")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(400, 21604, "A 'To' phone number is required."))?;
        if !is_e164(to) {
            return Err(err(
                400,
                21211,
                format!("The 'To' number {to} is not a valid phone number."),
            ));
        }
        let from = p.get("From").filter(|f| !f.is_empty());
        let service = p.get("MessagingServiceSid").filter(|f| !f.is_empty());
        match (from, service) {
            (None, None) => return Err(err(400, 21603, "A 'From' phone number is required.")),
            (Some(_), Some(_)) => {
                return Err(err(
                    400,
                    21603,
                    "Specify either a 'From' phone number or a MessagingServiceSid, not both.",
                ));
            }
            (Some(f), None) if *f != self.from => {
                return Err(err(
                    400,
                    21606,
                    format!(
                        "The From phone number {f} is not a valid, SMS-capable inbound phone number or short code for your account."
                    ),
                ));
            }
            (None, Some(mg)) if !is_sid(mg, "MG") => {
                return Err(err(
                    400,
                    21701,
                    format!("The Messaging Service Sid {mg} is invalid."),
                ));
            }
            _ => {}
        }
        let body = p.get("Body").map(String::as_str).unwrap_or_default();
        let has_media = ["MediaUrl", "ContentSid"]
            .iter()
            .any(|k| p.contains_key(*k));
        if body.is_empty() && !has_media {
            return Err(err(400, 21602, "Message body is required."));
        }
        if body.chars().count() > MAX_BODY_CHARS {
            return Err(err(
                400,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            ));
        }
        let mut st = lock(&self.state);
        if st.rejected_numbers.contains(to) {
            return Err(err(400, 21614, "'To' number is not a valid mobile number"));
        }
        st.messages.push(TwilioSms {
            at: Instant::now(),
            to: to.clone(),
            from: from.cloned().unwrap_or_default(),
            messaging_service_sid: service.cloned(),
            body: body.to_owned(),
        });
        drop(st);

        let sid = format!("SM{}", random_hex(16));
        let now = rfc2822_now();
        let uri = format!("{API_PREFIX}{}/Messages/{sid}", self.account_sid);
        Ok(json!({
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": null,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": from,
            "messaging_service_sid": service,
            "num_media": if has_media { "1" } else { "0" },
            "num_segments": segments(body).to_string(),
            "price": null,
            "price_unit": "USD",
            "sid": sid,
            // Twilio answers "accepted" while a Messaging Service picks a sender.
            "status": if from.is_some() { "queued" } else { "accepted" },
            "subresource_uris": { "media": format!("{uri}/Media.json") },
            "to": to,
            "uri": format!("{uri}.json"),
        }))
    }

    fn call(&self, p: &HashMap<String, String>) -> Result<Value, TwilioError> {
        let to = p
            .get("To")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| err(400, 21201, "No 'To' number is specified"))?;
        if !is_e164(to) {
            return Err(err(400, 21211, format!("Invalid 'To' Phone Number: {to}")));
        }
        let from = p
            .get("From")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| err(400, 21213, "No 'From' number is specified"))?;
        if *from != self.from {
            return Err(err(
                400,
                21210,
                format!(
                    "The source phone number provided, {from}, is not yet verified for your account. You may only make calls from phone numbers that you've verified or purchased from Twilio."
                ),
            ));
        }
        let twiml = p.get("Twiml").filter(|t| !t.is_empty());
        let url = p.get("Url").filter(|u| !u.is_empty());
        match (twiml, url) {
            (None, None) => return Err(err(400, 21205, "Url parameter is required.")),
            (Some(_), Some(_)) => {
                return Err(err(
                    400,
                    21230,
                    "Only one of Url or Twiml may be specified.",
                ));
            }
            (None, Some(u)) if !is_http_url(u) => {
                return Err(err(400, 21205, format!("Url is not a valid URL: {u}")));
            }
            (Some(t), None) if !twiml_well_formed(t) => {
                return Err(err(400, 12100, "Document parse failure"));
            }
            _ => {}
        }
        lock(&self.state).calls.push(TwilioCall {
            at: Instant::now(),
            to: to.clone(),
            from: from.clone(),
            twiml: twiml.cloned(),
            url: url.cloned(),
        });

        let sid = format!("CA{}", random_hex(16));
        let now = rfc2822_now();
        let uri = format!("{API_PREFIX}{}/Calls/{sid}", self.account_sid);
        Ok(json!({
            "account_sid": self.account_sid,
            "annotation": null,
            "answered_by": null,
            "api_version": "2010-04-01",
            "caller_name": null,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": null,
            "end_time": null,
            "forwarded_from": null,
            "from": from,
            "from_formatted": from,
            "group_sid": null,
            "parent_call_sid": null,
            "phone_number_sid": format!("PN{}", random_hex(16)),
            "price": null,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": null,
            "status": "queued",
            "subresource_uris": {
                "notifications": format!("{uri}/Notifications.json"),
                "recordings": format!("{uri}/Recordings.json"),
            },
            "to": to,
            "to_formatted": to,
            "trunk_sid": null,
            "uri": format!("{uri}.json"),
        }))
    }
}

fn error_response(e: &TwilioError) -> Response {
    json_response(
        e.status,
        &json!({
            "code": e.code,
            "message": e.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", e.code),
            "status": e.status,
        }),
        e.retry_after,
    )
}

/// A scripted failure: `reason` is a Twilio code if numeric, else the message.
fn scripted(f: &Failure) -> TwilioError {
    let default_code = if f.status == 401 {
        20003
    } else {
        20000 + u32::from(f.status)
    };
    let default_message = match f.status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let (code, message) = match f.reason.parse::<u32>() {
        Ok(code) => (code, default_message.to_owned()),
        Err(_) if f.reason.is_empty() => (default_code, default_message.to_owned()),
        Err(_) => (default_code, f.reason.clone()),
    };
    TwilioError {
        status: f.status,
        code,
        message,
        retry_after: f.retry_after,
    }
}

/// `+` then 8 to 15 digits, not starting with 0 (no country code does).
fn is_e164(n: &str) -> bool {
    n.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// `prefix` followed by 32 hex digits, Twilio's SID shape.
fn is_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_http_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !u.contains(char::is_whitespace)
    })
}

/// Enough of an XML well-formedness check for TwiML: an optional XML
/// declaration, then a single `<Response>` root with balanced tags.
fn twiml_well_formed(doc: &str) -> bool {
    let mut s = doc.trim();
    if let Some(rest) = s.strip_prefix("<?xml") {
        let Some(end) = rest.find("?>") else {
            return false;
        };
        s = rest[end + 2..].trim_start();
    }
    if !(s.starts_with("<Response>") || s.starts_with("<Response ") || s.starts_with("<Response/>"))
    {
        return false;
    }
    let mut stack: Vec<&str> = Vec::new();
    let mut closed_root = false;
    let mut rest = s;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if stack.is_empty() && !text.trim().is_empty() {
            return false;
        }
        rest = &rest[lt + 1..];
        if let Some(after) = rest.strip_prefix("!--") {
            let Some(end) = after.find("-->") else {
                return false;
            };
            rest = &after[end + 3..];
            continue;
        }
        let Some(gt) = rest.find('>') else {
            return false;
        };
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop() != Some(name.trim()) {
                return false;
            }
        } else {
            if closed_root || tag.contains('<') {
                return false;
            }
            let self_closing = tag.ends_with('/');
            let name = tag
                .trim_end_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if name.is_empty() {
                return false;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        if stack.is_empty() {
            closed_root = true;
        }
    }
    closed_root && stack.is_empty() && rest.trim().is_empty()
}

/// Number of SMS segments Twilio bills: GSM-7 (160 / 153 per part, extension
/// characters count twice) or UCS-2 (70 / 67 UTF-16 units per part).
fn segments(body: &str) -> usize {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "\u{c}^{}\\[~]|€";
    let gsm: Option<usize> = body.chars().try_fold(0, |n, c| {
        if BASIC.contains(c) {
            Some(n + 1)
        } else if EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    let (units, single, part) = match gsm {
        Some(units) => (units, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

/// Twilio's date format (RFC 2822 in UTC), e.g. `Thu, 24 Aug 2023 05:01:45 +0000`.
fn rfc2822_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc2822(secs)
}

fn rfc2822(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_692_853_305), "Thu, 24 Aug 2023 05:01:45 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn numbers() {
        assert!(is_e164("+14155550100"));
        assert!(is_e164("+4930123456"));
        assert!(!is_e164("14155550100"));
        assert!(!is_e164("+1415555"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+1 415 555 0100"));
    }

    #[test]
    fn twiml() {
        assert!(twiml_well_formed("<Response><Say>Hi</Say></Response>"));
        assert!(twiml_well_formed(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>\n  <Say voice=\"alice\">Code 1 2 3</Say>\n  <Pause length=\"1\"/>\n</Response>\n"
        ));
        assert!(twiml_well_formed("<Response/>"));
        assert!(!twiml_well_formed("<Say>Hi</Say>"));
        assert!(!twiml_well_formed("<Response><Say>Hi</Response>"));
        assert!(!twiml_well_formed("<Response><Say>Hi</Say>"));
        assert!(!twiml_well_formed(
            "<Response></Response><Response></Response>"
        ));
        assert!(!twiml_well_formed("Say hi"));
    }

    #[test]
    fn segment_counts() {
        assert_eq!(segments("hello"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"é".repeat(160)), 1);
        assert_eq!(segments("Привет"), 1);
        assert_eq!(segments(&"ж".repeat(71)), 2);
    }
}
