//! Call signaling frames (`call.*`). They ride the chat WebSocket: chat-core
//! hands them to the signaling service, which relays SDP and ICE candidates as
//! opaque strings between the caller's device and the callee device that
//! answered. `docs/protocol.md` ("Calls") describes the flow.

use crate::ids::{DeviceId, UserId};
use crate::ids::{From as Party, Millis};
use serde::{Deserialize, Serialize};

/// Longest SDP accepted in a frame (a video offer with many codecs is ~10 KiB).
pub const MAX_SDP_LEN: usize = 32 * 1024;
/// Longest ICE candidate accepted in a frame.
pub const MAX_CANDIDATE_LEN: usize = 2048;

/// A call, named by the caller's device when it offers: 1 to 64 characters of
/// `[A-Za-z0-9_.:-]` (a UUID is a good choice). Unique among live calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub String);

impl CallId {
    /// Wraps a string.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// 1 to 64 characters of `[A-Za-z0-9_.:-]`.
    pub fn is_valid(&self) -> bool {
        !self.0.is_empty()
            && self.0.len() <= 64
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Audio only, or audio and video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallMedia {
    /// Voice call.
    #[default]
    Audio,
    /// Video call (with audio).
    Video,
}

impl CallMedia {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CallMedia::Audio => "audio",
            CallMedia::Video => "video",
        }
    }
}

/// `call.offer`: the caller's device starts a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallOffer {
    /// The new call's id.
    pub call_id: CallId,
    /// Who to call.
    pub to: UserId,
    /// Audio or video; default audio.
    #[serde(default)]
    pub media: CallMedia,
    /// The SDP offer (opaque to the server).
    pub sdp: String,
}

/// `call.answer`: a callee device accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAnswer {
    /// The call.
    pub call_id: CallId,
    /// The SDP answer (opaque to the server).
    pub sdp: String,
}

/// `call.reject` / `call.hangup`: names a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRef {
    /// The call.
    pub call_id: CallId,
}

/// `call.ice`: one trickled ICE candidate, both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallIce {
    /// The call.
    pub call_id: CallId,
    /// The candidate as the sender's WebRTC stack serialised it (for browsers,
    /// `JSON.stringify(RTCIceCandidateInit)`); empty means end of candidates.
    pub candidate: String,
}

/// Which half of an SDP exchange a `call.update` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    /// A new offer (ICE restart, adding video).
    Offer,
    /// The answer to a `call.update` offer.
    Answer,
}

/// `call.update`: renegotiation of an answered call (ICE restart after a
/// network change), both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallUpdate {
    /// The call.
    pub call_id: CallId,
    /// Offer or answer.
    pub kind: SdpKind,
    /// The SDP (opaque to the server).
    pub sdp: String,
}

/// `call.incoming`: a call is ringing on this device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallIncoming {
    /// The call.
    pub call_id: CallId,
    /// The caller.
    pub from: Party,
    /// Audio or video.
    pub media: CallMedia,
    /// The caller's SDP offer.
    pub sdp: String,
    /// When the call was offered (server time).
    pub ts: Millis,
    /// When it stops ringing unless answered (server time).
    pub expires: Millis,
}

/// `call.ringing`: the callee's devices were reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRinging {
    /// The call.
    pub call_id: CallId,
    /// Connected devices that got `call.incoming`.
    pub devices: u32,
    /// Offline devices woken with a VoIP push.
    pub pushed: u32,
}

/// `call.answered`: the callee answered on `device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallAnswered {
    /// The call.
    pub call_id: CallId,
    /// The callee device that answered.
    pub device: DeviceId,
    /// Its SDP answer.
    pub sdp: String,
}

/// Why a call ended (or never started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The callee declined.
    Rejected,
    /// The callee is in another call.
    Busy,
    /// Nobody answered within the ring timeout.
    Missed,
    /// The caller hung up before an answer.
    Cancelled,
    /// Either side hung up an answered call.
    Hangup,
    /// Another device of this user answered.
    AnsweredElsewhere,
    /// Both users called each other at once; the call with the smaller id won
    /// and this one was dropped.
    Glare,
    /// The callee has no device to ring.
    Unavailable,
    /// A party's device lost its connection and did not come back in time.
    ConnectionLost,
}

impl EndReason {
    /// As on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Rejected => "rejected",
            EndReason::Busy => "busy",
            EndReason::Missed => "missed",
            EndReason::Cancelled => "cancelled",
            EndReason::Hangup => "hangup",
            EndReason::AnsweredElsewhere => "answered_elsewhere",
            EndReason::Glare => "glare",
            EndReason::Unavailable => "unavailable",
            EndReason::ConnectionLost => "connection_lost",
        }
    }

    /// Every reason, for documentation tests.
    pub const ALL: &'static [EndReason] = &[
        EndReason::Rejected,
        EndReason::Busy,
        EndReason::Missed,
        EndReason::Cancelled,
        EndReason::Hangup,
        EndReason::AnsweredElsewhere,
        EndReason::Glare,
        EndReason::Unavailable,
        EndReason::ConnectionLost,
    ];
}

/// `call.ended`: the call is over for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEnded {
    /// The call.
    pub call_id: CallId,
    /// Why.
    pub reason: EndReason,
    /// For an answered call: milliseconds from answer to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A call frame a device sent, taken out of [`crate::ClientFrame`] so that the
/// chat gateway can hand every `call.*` frame to signaling in one piece.
#[derive(Debug, Clone, PartialEq)]
pub enum CallClientFrame {
    /// `call.offer`.
    Offer(CallOffer),
    /// `call.answer`.
    Answer(CallAnswer),
    /// `call.reject`.
    Reject(CallRef),
    /// `call.hangup`.
    Hangup(CallRef),
    /// `call.ice`.
    Ice(CallIce),
    /// `call.update`.
    Update(CallUpdate),
}

impl CallClientFrame {
    /// The call it is about.
    pub fn call_id(&self) -> &CallId {
        match self {
            CallClientFrame::Offer(f) => &f.call_id,
            CallClientFrame::Answer(f) => &f.call_id,
            CallClientFrame::Reject(f) | CallClientFrame::Hangup(f) => &f.call_id,
            CallClientFrame::Ice(f) => &f.call_id,
            CallClientFrame::Update(f) => &f.call_id,
        }
    }

    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            CallClientFrame::Offer(_) => "call.offer",
            CallClientFrame::Answer(_) => "call.answer",
            CallClientFrame::Reject(_) => "call.reject",
            CallClientFrame::Hangup(_) => "call.hangup",
            CallClientFrame::Ice(_) => "call.ice",
            CallClientFrame::Update(_) => "call.update",
        }
    }

    /// Checks what serde cannot: id syntax and payload sizes. The message names
    /// the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.call_id().is_valid() {
            return Err("call_id: 1 to 64 characters of [A-Za-z0-9_.:-]".into());
        }
        let sdp_ok = |s: &str| s.len() <= MAX_SDP_LEN;
        match self {
            CallClientFrame::Offer(o) if !o.to.is_valid() => Err("to: not a valid user id".into()),
            CallClientFrame::Offer(CallOffer { sdp, .. })
            | CallClientFrame::Answer(CallAnswer { sdp, .. })
            | CallClientFrame::Update(CallUpdate { sdp, .. })
                if !sdp_ok(sdp) =>
            {
                Err(format!("sdp: longer than {MAX_SDP_LEN} bytes"))
            }
            CallClientFrame::Ice(i) if i.candidate.len() > MAX_CANDIDATE_LEN => {
                Err(format!("candidate: longer than {MAX_CANDIDATE_LEN} bytes"))
            }
            _ => Ok(()),
        }
    }
}

impl crate::ClientFrame {
    /// Splits off call frames: `Ok` for `call.*`, `Err(self)` for the rest.
    pub fn into_call(self) -> Result<CallClientFrame, Self> {
        use crate::ClientFrame as F;
        match self {
            F::CallOffer(f) => Ok(CallClientFrame::Offer(f)),
            F::CallAnswer(f) => Ok(CallClientFrame::Answer(f)),
            F::CallReject(f) => Ok(CallClientFrame::Reject(f)),
            F::CallHangup(f) => Ok(CallClientFrame::Hangup(f)),
            F::CallIce(f) => Ok(CallClientFrame::Ice(f)),
            F::CallUpdate(f) => Ok(CallClientFrame::Update(f)),
            other => Err(other),
        }
    }
}

impl From<CallClientFrame> for crate::ClientFrame {
    fn from(c: CallClientFrame) -> Self {
        use crate::ClientFrame as F;
        match c {
            CallClientFrame::Offer(f) => F::CallOffer(f),
            CallClientFrame::Answer(f) => F::CallAnswer(f),
            CallClientFrame::Reject(f) => F::CallReject(f),
            CallClientFrame::Hangup(f) => F::CallHangup(f),
            CallClientFrame::Ice(f) => F::CallIce(f),
            CallClientFrame::Update(f) => F::CallUpdate(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientFrame, ServerFrame};

    #[test]
    fn wire_shapes() {
        let f = ClientFrame::CallOffer(CallOffer {
            call_id: CallId::new("c-1"),
            to: UserId::new("u2"),
            media: CallMedia::Audio,
            sdp: "v=0".into(),
        });
        assert_eq!(
            f.to_json(),
            r#"{"type":"call.offer","call_id":"c-1","to":"u2","media":"audio","sdp":"v=0"}"#
        );
        let back = crate::decode_client_frame(
            r#"{"type":"call.offer","call_id":"c-1","to":"u2","sdp":"v=0"}"#,
        )
        .unwrap();
        assert_eq!(back, f);
        let e = ServerFrame::CallEnded(CallEnded {
            call_id: CallId::new("c-1"),
            reason: EndReason::AnsweredElsewhere,
            duration_ms: None,
        });
        assert_eq!(
            e.to_json(),
            r#"{"type":"call.ended","call_id":"c-1","reason":"answered_elsewhere"}"#
        );
        for r in EndReason::ALL {
            assert_eq!(
                serde_json::to_string(r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
    }

    #[test]
    fn validation_names_the_field() {
        let bad = CallClientFrame::Hangup(CallRef {
            call_id: CallId::new("has space"),
        });
        assert!(bad.validate().unwrap_err().starts_with("call_id"));
        let big = CallClientFrame::Answer(CallAnswer {
            call_id: CallId::new("c"),
            sdp: "x".repeat(MAX_SDP_LEN + 1),
        });
        assert!(big.validate().unwrap_err().starts_with("sdp"));
        let ice = CallClientFrame::Ice(CallIce {
            call_id: CallId::new("c"),
            candidate: String::new(),
        });
        assert!(ice.validate().is_ok());
        let f: ClientFrame = ice.clone().into();
        assert_eq!(f.into_call(), Ok(ice));
    }
}
