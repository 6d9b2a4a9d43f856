//! What the call log keeps of a call that ended.

use super::DeviceAddr;
use natter_common::UnixMillis;
use natter_proto::{CallId, CallMedia, DeviceId, EndReason, UserId};
use serde::{Deserialize, Serialize};

/// How a call turned out, as the call log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// It was answered (whatever ended it afterwards).
    Answered,
    /// The callee declined.
    Rejected,
    /// The callee was in another call.
    Busy,
    /// Nobody answered in time.
    Missed,
    /// The caller gave up before an answer.
    Cancelled,
    /// The callee had no device.
    Unavailable,
    /// It never connected: glare, or the caller's connection was lost.
    Failed,
}

impl CallOutcome {
    /// As stored and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Busy => "busy",
            CallOutcome::Missed => "missed",
            CallOutcome::Cancelled => "cancelled",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::Failed => "failed",
        }
    }

    /// Parses [`CallOutcome::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            CallOutcome::Answered,
            CallOutcome::Rejected,
            CallOutcome::Busy,
            CallOutcome::Missed,
            CallOutcome::Cancelled,
            CallOutcome::Unavailable,
            CallOutcome::Failed,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    fn of(reason: EndReason, answered: bool) -> Self {
        if answered {
            return CallOutcome::Answered;
        }
        match reason {
            EndReason::Rejected => CallOutcome::Rejected,
            EndReason::Busy => CallOutcome::Busy,
            EndReason::Missed => CallOutcome::Missed,
            EndReason::Cancelled | EndReason::Hangup => CallOutcome::Cancelled,
            EndReason::Unavailable => CallOutcome::Unavailable,
            EndReason::Glare | EndReason::ConnectionLost | EndReason::AnsweredElsewhere => {
                CallOutcome::Failed
            }
        }
    }
}

/// A call that rings or is answered, as the call log keeps it until it
/// ends (so a crash leaves a trace: see migration 4002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    /// The call.
    pub call_id: CallId,
    /// Who called.
    pub caller: UserId,
    /// From which device.
    pub caller_device: DeviceId,
    /// Who is called.
    pub callee: UserId,
    /// Audio or video.
    pub media: CallMedia,
    /// When it was offered.
    pub started_at: UnixMillis,
    /// The callee device that answered, and when.
    pub answered: Option<(DeviceId, UnixMillis)>,
}

impl LiveCall {
    /// The record of this call when it is found abandoned at `now` (its
    /// owner crashed): failed, `connection_lost`.
    pub fn abandoned(&self, now: UnixMillis) -> CallRecord {
        CallRecord {
            call_id: self.call_id.clone(),
            caller: self.caller.clone(),
            caller_device: self.caller_device,
            callee: self.callee.clone(),
            answered_device: self.answered.map(|(d, _)| d),
            media: self.media,
            started_at: self.started_at,
            answered_at: self.answered.map(|(_, t)| t),
            ended_at: now.max(self.started_at),
            outcome: CallOutcome::Failed,
            reason: EndReason::ConnectionLost,
        }
    }
}

/// One ended call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The call.
    pub call_id: CallId,
    /// Who called.
    pub caller: UserId,
    /// From which device.
    pub caller_device: DeviceId,
    /// Who was called.
    pub callee: UserId,
    /// The callee device that answered.
    pub answered_device: Option<DeviceId>,
    /// Audio or video.
    pub media: CallMedia,
    /// When it was offered.
    pub started_at: UnixMillis,
    /// When it was answered.
    pub answered_at: Option<UnixMillis>,
    /// When it ended.
    pub ended_at: UnixMillis,
    /// How it turned out.
    pub outcome: CallOutcome,
    /// What ended it.
    pub reason: EndReason,
}

impl CallRecord {
    #[allow(clippy::too_many_arguments)] // one flat constructor for the core's two call sites
    pub(super) fn of(
        id: &CallId,
        caller: &DeviceAddr,
        callee: &UserId,
        media: CallMedia,
        started_at: UnixMillis,
        answered: Option<(DeviceId, UnixMillis)>,
        ended_at: UnixMillis,
        reason: EndReason,
    ) -> Self {
        Self {
            call_id: id.clone(),
            caller: caller.user.clone(),
            caller_device: caller.device,
            callee: callee.clone(),
            answered_device: answered.map(|(d, _)| d),
            media,
            started_at,
            answered_at: answered.map(|(_, t)| t),
            ended_at,
            outcome: CallOutcome::of(reason, answered.is_some()),
            reason,
        }
    }

    /// Milliseconds from answer to end (0 when never answered).
    pub fn duration_ms(&self) -> u64 {
        self.answered_at
            .map(|a| (self.ended_at - a).max(0) as u64)
            .unwrap_or(0)
    }
}
