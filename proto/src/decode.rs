//! Decoding frames with errors that name the problem.
//!
//! The fast path is one serde pass. Only when it fails is the text parsed again,
//! as a generic JSON value, to say precisely what is wrong: not JSON, not an
//! object, no `type`, an unknown `type`, or a bad field of a known frame.

use crate::codes::ErrorCode;
use crate::frames::{CLIENT_FRAME_TYPES, ClientFrame, SERVER_FRAME_TYPES, ServerFrame};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, not an object, or no string `type`.
    Malformed(String),
    /// A `type` this side does not know.
    UnknownType(String),
    /// A known frame type with a bad field.
    Invalid {
        /// The frame type.
        frame_type: String,
        /// What is wrong (serde's message names the field).
        detail: String,
    },
}

impl DecodeError {
    /// The error code for an `error` frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::MalformedFrame,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Invalid { .. } => ErrorCode::InvalidFrame,
        }
    }

    /// The frame type, when one was given.
    pub fn frame_type(&self) -> Option<&str> {
        match self {
            DecodeError::Malformed(_) => None,
            DecodeError::UnknownType(t) => Some(t),
            DecodeError::Invalid { frame_type, .. } => Some(frame_type),
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(m) => f.write_str(m),
            DecodeError::UnknownType(t) => write!(f, "unknown frame type {t:?}"),
            DecodeError::Invalid { frame_type, detail } => {
                write!(f, "invalid {frame_type:?} frame: {detail}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes a frame a client sent.
pub fn decode_client_frame(text: &str) -> Result<ClientFrame, DecodeError> {
    serde_json::from_str(text).map_err(|e| diagnose(text, e, CLIENT_FRAME_TYPES))
}

/// Decodes a frame the server sent (clients use this).
pub fn decode_server_frame(text: &str) -> Result<ServerFrame, DecodeError> {
    serde_json::from_str(text).map_err(|e| diagnose(text, e, SERVER_FRAME_TYPES))
}

/// Longest `type` or `id` echoed back in an error, so a hostile frame cannot
/// make the server reflect large strings.
const MAX_ECHO: usize = 64;

/// The `type` and `id` strings of a frame, if it is a JSON object that has them
/// (for naming a refused frame in the `error`). Long values are cut.
pub fn describe_frame(text: &str) -> (Option<String>, Option<String>) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return (None, None);
    };
    let get = |k: &str| {
        map.get(k)
            .and_then(|v| v.as_str())
            .map(|s| truncate(s, MAX_ECHO))
    };
    (get("type"), get("id"))
}

fn diagnose(text: &str, first: serde_json::Error, known: &[&str]) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return DecodeError::Malformed(format!("not valid JSON: {e}")),
    };
    let serde_json::Value::Object(map) = value else {
        return DecodeError::Malformed("a frame must be a JSON object".into());
    };
    let frame_type = match map.get("type") {
        None => return DecodeError::Malformed("missing \"type\" field".into()),
        Some(serde_json::Value::String(t)) => t,
        Some(_) => return DecodeError::Malformed("\"type\" must be a string".into()),
    };
    if !known.contains(&frame_type.as_str()) {
        return DecodeError::UnknownType(truncate(frame_type, MAX_ECHO));
    }
    DecodeError::Invalid {
        frame_type: frame_type.clone(),
        detail: strip_position(&first.to_string()),
    }
}

/// serde_json appends " at line 1 column 42"; the position means little to a
/// client that built the frame as an object.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_problem() {
        assert!(
            matches!(decode_client_frame("{"), Err(DecodeError::Malformed(m)) if m.starts_with("not valid JSON"))
        );
        assert_eq!(
            decode_client_frame("[1]"),
            Err(DecodeError::Malformed(
                "a frame must be a JSON object".into()
            ))
        );
        assert_eq!(
            decode_client_frame(r#"{"id":"x"}"#),
            Err(DecodeError::Malformed("missing \"type\" field".into()))
        );
        assert_eq!(
            decode_client_frame(r#"{"type":7}"#),
            Err(DecodeError::Malformed("\"type\" must be a string".into()))
        );
        assert_eq!(
            decode_client_frame(r#"{"type":"teleport"}"#),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        let e = decode_client_frame(r#"{"type":"send","id":"c1","to":{"user":"u"}}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidFrame);
        assert_eq!(
            e.to_string(),
            "invalid \"send\" frame: missing field `body`"
        );
        let e = decode_client_frame(r#"{"type":"send","id":"c1","to":{"user":"u"},"body":"!!"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("base64"), "{e}");
        let e = decode_client_frame(r#"{"type":"delivered","ids":[-1]}"#).unwrap_err();
        assert!(e.to_string().contains("invalid value"), "{e}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f = decode_client_frame(r#"{"type":"ping","nonce":3,"future":true}"#).unwrap();
        assert_eq!(f, ClientFrame::Ping(crate::Ping { nonce: Some(3) }));
    }

    #[test]
    fn describe_cuts_long_values() {
        let long = "x".repeat(500);
        let (t, id) = describe_frame(&format!(r#"{{"type":"{long}","id":"c9"}}"#));
        assert_eq!(t.unwrap().len(), 64 + '…'.len_utf8());
        assert_eq!(id.as_deref(), Some("c9"));
        assert_eq!(describe_frame("nope"), (None, None));
    }
}
