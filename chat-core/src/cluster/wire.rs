//! What nodes say to each other on the bus. A pub/sub message is a batch of
//! records, each two lines: a JSON header, then the frame's JSON as sent to the
//! client (empty when there is none). The frame is carried verbatim so the
//! receiving node writes it without re-encoding; serde_json never emits a raw
//! newline, so lines cannot be confused.

use natter_proto::{DeviceId, MsgId, ReceiptId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One record's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Header {
    /// A committed queue entry for a device on the receiving node.
    Deliver {
        u: UserId,
        d: DeviceId,
        g: i64,
        seq: i64,
        prev: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        msg: Option<MsgId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rcpt: Option<ReceiptId>,
    },
    /// An ephemeral frame for a user's devices (or one device) there.
    Frame { u: UserId, d: Option<DeviceId> },
    /// Close one socket (its device connected elsewhere).
    Close { u: UserId, conn: u64, code: u16 },
    /// A device's call event for the calls leader (the frame line holds the
    /// `call.*` frame's JSON for `ev = "frame"`).
    Call { u: UserId, d: DeviceId, ev: String },
    /// A user came online or went offline (broadcast).
    Presence {
        u: UserId,
        online: bool,
        seen: Option<i64>,
    },
}

/// Appends one record to a batch.
pub(crate) fn push_record(out: &mut String, h: &Header, frame: Option<&str>) {
    if !out.is_empty() {
        out.push('\n');
    }
    // A header of ids and numbers always serialises.
    out.push_str(&serde_json::to_string(h).unwrap_or_default());
    out.push('\n');
    if let Some(f) = frame {
        out.push_str(f);
    }
}

/// Splits a batch into records; a malformed record is skipped (logged by the caller).
pub(crate) fn records(payload: &str) -> impl Iterator<Item = Result<(Header, Arc<str>), String>> {
    let mut lines = payload.split('\n');
    std::iter::from_fn(move || {
        let head = lines.next()?;
        let frame = lines.next().unwrap_or("");
        Some(
            serde_json::from_str::<Header>(head)
                .map(|h| (h, Arc::from(frame)))
                .map_err(|e| format!("bad bus record: {e}")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let a = Header::Deliver {
            u: UserId::new("u1"),
            d: 2,
            g: 3,
            seq: 40,
            prev: Some(39),
            msg: Some(7),
            rcpt: None,
        };
        let b = Header::Close {
            u: UserId::new("u2"),
            conn: 9,
            code: 4000,
        };
        let mut out = String::new();
        push_record(&mut out, &a, Some(r#"{"type":"msg","body":"a\nb"}"#));
        push_record(&mut out, &b, None);
        let got: Vec<_> = records(&out).map(Result::unwrap).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, a);
        assert_eq!(&*got[0].1, r#"{"type":"msg","body":"a\nb"}"#);
        assert_eq!(got[1].0, b);
        assert_eq!(&*got[1].1, "");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let got: Vec<_> = records("not json\nx\n{\"t\":\"nope\"}").collect();
        assert!(got.iter().all(Result::is_err));
    }
}
