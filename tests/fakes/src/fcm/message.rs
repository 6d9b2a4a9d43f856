//! Validation of the FCM HTTP v1 `messages:send` request body.
//!
//! The real API parses the body with the protobuf JSON mapping of
//! `google.firebase.fcm.v1.Message`: unknown field names are errors, both the
//! `snake_case` and the `lowerCamelCase` spelling of a field are accepted, and
//! `null` means "not set". The schema below models the fields Natter may send
//! (and their siblings, so valid messages are never refused).

use serde_json::{Map, Value};

/// Largest Android payload FCM accepts, in bytes.
const MAX_PAYLOAD: usize = 4096;
/// FCM's cap on `android.ttl`: 28 days.
const MAX_TTL_SECS: f64 = 2_419_200.0;

/// A request FCM would refuse with 400 INVALID_ARGUMENT.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) message: String,
    /// The offending field, reported as a `BadRequest` field violation the
    /// way Google's JSON parser does.
    pub(super) field: Option<String>,
}

impl Invalid {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: None,
        }
    }

    fn at(field: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

/// Whom a message is addressed to: the `target` oneof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Token(String),
    Topic(String),
    Condition(String),
}

impl Target {
    pub(super) fn as_str(&self) -> &str {
        match self {
            Target::Token(s) | Target::Topic(s) | Target::Condition(s) => s,
        }
    }
}

/// A body that passed validation.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) target: Target,
    pub(super) validate_only: bool,
    pub(super) message: Value,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    /// `map<string, string>`: every value must be a JSON string.
    StrMap,
    StrList,
    /// `google.protobuf.Struct`: any JSON object.
    Struct,
    /// Any JSON object we do not look inside (e.g. `light_settings`).
    AnyObject,
    Enum(&'static str, &'static [&'static str]),
    Duration,
    DurationList,
    /// `analytics_label`: `^[a-zA-Z0-9-_.~%]{1,50}$`.
    Label,
    Obj(&'static [Field]),
}

type Field = (&'static str, Kind);

const REQUEST: &[Field] = &[
    ("message", Kind::Obj(MESSAGE)),
    ("validate_only", Kind::Bool),
];

const MESSAGE: &[Field] = &[
    ("name", Kind::Str),
    ("data", Kind::StrMap),
    ("notification", Kind::Obj(NOTIFICATION)),
    ("android", Kind::Obj(ANDROID)),
    ("webpush", Kind::Obj(WEBPUSH)),
    ("apns", Kind::Obj(APNS)),
    ("fcm_options", Kind::Obj(FCM_OPTIONS)),
    ("token", Kind::Str),
    ("topic", Kind::Str),
    ("condition", Kind::Str),
];

const NOTIFICATION: &[Field] = &[
    ("title", Kind::Str),
    ("body", Kind::Str),
    ("image", Kind::Str),
];

const FCM_OPTIONS: &[Field] = &[("analytics_label", Kind::Label)];

const ANDROID: &[Field] = &[
    ("collapse_key", Kind::Str),
    (
        "priority",
        // The service also takes the lowercase spellings.
        Kind::Enum(
            "google.firebase.fcm.v1.AndroidMessagePriority",
            &["NORMAL", "HIGH", "normal", "high"],
        ),
    ),
    ("ttl", Kind::Duration),
    ("restricted_package_name", Kind::Str),
    ("data", Kind::StrMap),
    ("notification", Kind::Obj(ANDROID_NOTIFICATION)),
    ("fcm_options", Kind::Obj(FCM_OPTIONS)),
    ("direct_boot_ok", Kind::Bool),
    ("bandwidth_constrained_ok", Kind::Bool),
    ("restricted_satellite_ok", Kind::Bool),
];

const ANDROID_NOTIFICATION: &[Field] = &[
    ("title", Kind::Str),
    ("body", Kind::Str),
    ("icon", Kind::Str),
    ("color", Kind::Str),
    ("sound", Kind::Str),
    ("tag", Kind::Str),
    ("click_action", Kind::Str),
    ("body_loc_key", Kind::Str),
    ("body_loc_args", Kind::StrList),
    ("title_loc_key", Kind::Str),
    ("title_loc_args", Kind::StrList),
    ("channel_id", Kind::Str),
    ("ticker", Kind::Str),
    ("sticky", Kind::Bool),
    ("event_time", Kind::Str),
    ("local_only", Kind::Bool),
    (
        "notification_priority",
        Kind::Enum(
            "google.firebase.fcm.v1.AndroidNotification.NotificationPriority",
            &[
                "PRIORITY_UNSPECIFIED",
                "PRIORITY_MIN",
                "PRIORITY_LOW",
                "PRIORITY_DEFAULT",
                "PRIORITY_HIGH",
                "PRIORITY_MAX",
            ],
        ),
    ),
    ("default_sound", Kind::Bool),
    ("default_vibrate_timings", Kind::Bool),
    ("default_light_settings", Kind::Bool),
    ("vibrate_timings", Kind::DurationList),
    (
        "visibility",
        Kind::Enum(
            "google.firebase.fcm.v1.AndroidNotification.Visibility",
            &["VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"],
        ),
    ),
    ("notification_count", Kind::Int),
    ("light_settings", Kind::AnyObject),
    ("image", Kind::Str),
    ("bypass_proxy_notification", Kind::Bool),
    (
        "proxy",
        Kind::Enum(
            "google.firebase.fcm.v1.AndroidNotification.Proxy",
            &["PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"],
        ),
    ),
];

const APNS: &[Field] = &[
    ("headers", Kind::StrMap),
    ("payload", Kind::Struct),
    ("fcm_options", Kind::Obj(APNS_FCM_OPTIONS)),
    ("live_activity_token", Kind::Str),
];

const APNS_FCM_OPTIONS: &[Field] = &[("analytics_label", Kind::Label), ("image", Kind::Str)];

const WEBPUSH: &[Field] = &[
    ("headers", Kind::StrMap),
    ("data", Kind::StrMap),
    ("notification", Kind::Struct),
    ("fcm_options", Kind::Obj(WEBPUSH_FCM_OPTIONS)),
];

const WEBPUSH_FCM_OPTIONS: &[Field] = &[("link", Kind::Str), ("analytics_label", Kind::Label)];

/// Validates a parsed request body the way FCM does.
pub(super) fn check(body: &Value) -> Result<Checked, Invalid> {
    let Value::Object(req) = body else {
        return Err(Invalid::new(format!(
            "Invalid JSON payload received. Expected an object, got: {}.",
            short(body)
        )));
    };
    check_obj(req, REQUEST, "")?;
    let message = match get(req, "message") {
        Some(Value::Object(m)) => m,
        _ => {
            return Err(Invalid::at(
                "message",
                "Request contains an invalid argument.",
            ));
        }
    };
    let validate_only = get(req, "validate_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let target = target(message)?;
    if let Target::Topic(t) = &target {
        let name = t.strip_prefix("/topics/").unwrap_or(t);
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~%".contains(c));
        if !ok {
            return Err(Invalid::at(
                "message.topic",
                format!("Invalid topic name {t}"),
            ));
        }
    }

    let android = get(message, "android").and_then(Value::as_object);
    if let Some(data) = get(message, "data").and_then(Value::as_object) {
        check_data_keys(data, "message.data")?;
    }
    if let Some(data) = android
        .and_then(|a| get(a, "data"))
        .and_then(Value::as_object)
    {
        check_data_keys(data, "message.android.data")?;
    }
    if let Some(ttl) = android.and_then(|a| get(a, "ttl")).and_then(Value::as_str) {
        let secs = parse_duration(ttl).unwrap_or(0.0);
        if secs < 0.0 {
            return Err(Invalid::at(
                "message.android.ttl",
                format!("Invalid value at 'message.android.ttl': TTL cannot be negative ({ttl})"),
            ));
        }
        if secs > MAX_TTL_SECS {
            return Err(Invalid::at(
                "message.android.ttl",
                format!(
                    "Invalid value at 'message.android.ttl': TTL cannot exceed 28 days (2419200s), got {ttl}"
                ),
            ));
        }
    }
    if android_payload_size(message) > MAX_PAYLOAD {
        return Err(Invalid::new("Android message is too big"));
    }

    Ok(Checked {
        target,
        validate_only,
        message: Value::Object(message.clone()),
    })
}

/// The target of a body, without validating anything else, so attempts that
/// fail early (authentication) can still be attributed.
pub(super) fn best_effort_target(body: &[u8]) -> String {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    let Some(Value::Object(m)) = get(&req, "message") else {
        return String::new();
    };
    ["token", "topic", "condition"]
        .iter()
        .find_map(|k| m.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned()
}

/// Looks a field up by its proto name or its lowerCamelCase JSON name.
fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name)
        .or_else(|| obj.get(&camel(name)))
        .filter(|v| !v.is_null())
}

fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn target(message: &Map<String, Value>) -> Result<Target, Invalid> {
    let mut found: Option<Target> = None;
    for name in ["token", "topic", "condition"] {
        let Some(v) = get(message, name).and_then(Value::as_str) else {
            continue;
        };
        if found.is_some() {
            return Err(Invalid::at(
                &format!("message.{name}"),
                format!(
                    "Invalid JSON payload received. Oneof field 'target' is already set. Cannot set '{name}'"
                ),
            ));
        }
        let v = v.to_owned();
        found = Some(match name {
            "token" => Target::Token(v),
            "topic" => Target::Topic(v),
            _ => Target::Condition(v),
        });
    }
    match found {
        Some(t) if !t.as_str().is_empty() => Ok(t),
        _ => Err(Invalid::new("Recipient of the message is not set.")),
    }
}

fn check_obj(obj: &Map<String, Value>, fields: &[Field], path: &str) -> Result<(), Invalid> {
    for (key, value) in obj {
        let Some((name, kind)) = fields
            .iter()
            .find(|(name, _)| key == name || *key == camel(name))
        else {
            let at = if path.is_empty() {
                String::new()
            } else {
                format!(" at '{path}'")
            };
            return Err(Invalid::at(
                path,
                format!(
                    "Invalid JSON payload received. Unknown name \"{key}\"{at}: Cannot find field."
                ),
            ));
        };
        if value.is_null() {
            continue;
        }
        let field_path = if path.is_empty() {
            (*name).to_owned()
        } else {
            format!("{path}.{name}")
        };
        check_value(value, *kind, &field_path)?;
    }
    Ok(())
}

fn check_value(value: &Value, kind: Kind, path: &str) -> Result<(), Invalid> {
    let bad = |ty: &str, v: &Value| {
        Invalid::at(
            path,
            format!("Invalid value at '{path}' ({ty}), {}", short(v)),
        )
    };
    match kind {
        Kind::Str => value.is_string().then_some(()).ok_or_else(|| bad("TYPE_STRING", value)),
        Kind::Bool => value.is_boolean().then_some(()).ok_or_else(|| bad("TYPE_BOOL", value)),
        Kind::Int => {
            // The protobuf JSON mapping takes integers as numbers or strings.
            let ok = value.is_i64()
                || value.as_str().is_some_and(|s| s.parse::<i32>().is_ok());
            ok.then_some(()).ok_or_else(|| bad("TYPE_INT32", value))
        }
        Kind::StrMap => {
            let Value::Object(map) = value else {
                return Err(bad("Map", value));
            };
            for (i, (_, v)) in map.iter().enumerate() {
                if !v.is_string() {
                    let p = format!("{path}[{i}].value");
                    return Err(Invalid::at(
                        &p,
                        format!("Invalid value at '{p}' (TYPE_STRING), {}", short(v)),
                    ));
                }
            }
            Ok(())
        }
        Kind::StrList => match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| {
                    v.is_string().then_some(()).ok_or_else(|| {
                        let p = format!("{path}[{i}]");
                        Invalid::at(&p, format!("Invalid value at '{p}' (TYPE_STRING), {}", short(v)))
                    })
                }),
            _ => Err(bad("TYPE_STRING", value)),
        },
        Kind::Struct | Kind::AnyObject => value
            .is_object()
            .then_some(())
            .ok_or_else(|| bad("type.googleapis.com/google.protobuf.Struct", value)),
        Kind::Enum(ty, allowed) => value
            .as_str()
            .filter(|s| allowed.contains(s))
            .map(|_| ())
            .ok_or_else(|| bad(&format!("type.googleapis.com/{ty}"), value)),
        Kind::Duration => value
            .as_str()
            .and_then(parse_duration)
            .map(|_| ())
            .ok_or_else(|| bad("type.googleapis.com/google.protobuf.Duration", value)),
        Kind::DurationList => match value {
            Value::Array(items) => items.iter().enumerate().try_for_each(|(i, v)| {
                v.as_str().and_then(parse_duration).map(|_| ()).ok_or_else(|| {
                    let p = format!("{path}[{i}]");
                    Invalid::at(
                        &p,
                        format!(
                            "Invalid value at '{p}' (type.googleapis.com/google.protobuf.Duration), {}",
                            short(v)
                        ),
                    )
                })
            }),
            _ => Err(bad("type.googleapis.com/google.protobuf.Duration", value)),
        },
        Kind::Label => {
            let ok = value.as_str().is_some_and(|s| {
                (1..=50).contains(&s.len())
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.~%".contains(c))
            });
            ok.then_some(()).ok_or_else(|| {
                Invalid::at(
                    path,
                    format!(
                        "Invalid value at '{path}': analytics_label must match ^[a-zA-Z0-9-_.~%]{{1,50}}$, got {}",
                        short(value)
                    ),
                )
            })
        }
        Kind::Obj(fields) => match value {
            Value::Object(m) => check_obj(m, fields, path),
            _ => Err(bad("TYPE_MESSAGE", value)),
        },
    }
}

/// Parses a protobuf JSON `Duration`: optional sign, seconds, up to nine
/// fractional digits, then `s` (e.g. `"3.5s"`, `"86400s"`).
fn parse_duration(s: &str) -> Option<f64> {
    let num = s.strip_suffix('s')?;
    let digits = num.strip_prefix('-').unwrap_or(num);
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f) || f.len() > 9) {
        return None;
    }
    num.parse().ok()
}

/// FCM's reserved data keys: "from", "message_type", "collapse_key" and
/// anything in the `google.` or `gcm.` namespaces.
fn check_data_keys(data: &Map<String, Value>, path: &str) -> Result<(), Invalid> {
    for key in data.keys() {
        let lower = key.to_ascii_lowercase();
        let reserved = matches!(lower.as_str(), "from" | "message_type" | "collapse_key")
            || lower.starts_with("google.")
            || lower.starts_with("gcm.");
        if reserved {
            return Err(Invalid::at(
                path,
                format!("Invalid data payload key: \"{key}\" is a reserved word"),
            ));
        }
    }
    Ok(())
}

/// The size FCM holds against the 4096-byte Android limit: data keys and
/// values (`android.data` replaces `data` when present) plus notification
/// field names and string values. Tokens and JSON punctuation do not count,
/// so a client is not refused for overhead the real service ignores.
fn android_payload_size(message: &Map<String, Value>) -> usize {
    let android = get(message, "android").and_then(Value::as_object);
    let data = android
        .and_then(|a| get(a, "data"))
        .or_else(|| get(message, "data"))
        .and_then(Value::as_object);
    let mut size: usize = data
        .map(|d| {
            d.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    for n in [
        get(message, "notification"),
        android.and_then(|a| get(a, "notification")),
    ]
    .into_iter()
    .flatten()
    {
        size += strings_size(n);
    }
    size
}

fn strings_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(strings_size).sum(),
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + strings_size(v)).sum(),
        _ => 0,
    }
}

/// A value as Google quotes it in messages, truncated so a huge payload does
/// not produce a huge error.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 100 {
        let cut = (0..=100)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}
