//! Scripted failures and the record of send attempts, shared by all fakes.

use std::collections::VecDeque;
use std::time::Instant;

/// A failure the next send is answered with instead of normal processing.
///
/// Queued with each fake's `fail_next` and consumed first-in first-out by its
/// send endpoint once the request has passed authentication, so retry and
/// back-off logic can be driven deterministically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// HTTP status of the response.
    pub status: u16,
    /// Provider-specific reason: FCM `errorCode`, APNs `reason`, or the
    /// Twilio error message (a numeric string is taken as the Twilio error
    /// code instead). Empty means the provider's usual one for `status`.
    pub reason: String,
    /// Seconds sent back in a `Retry-After` header, if any.
    pub retry_after: Option<u64>,
}

impl Failure {
    /// A failure with `status` and the provider's default reason.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            reason: String::new(),
            retry_after: None,
        }
    }

    /// The same failure with a `Retry-After` header of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The same failure with an explicit provider reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }
}

/// One request that reached a fake's send endpoint, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the fake answered it.
    pub at: Instant,
    /// Device token (FCM, APNs; or the FCM topic/condition) or the `To`
    /// phone number (Twilio); empty when the request carried none.
    pub target: String,
    /// HTTP status the fake answered with.
    pub status: u16,
    /// Provider reason for a rejection (FCM status or errorCode, APNs reason,
    /// Twilio error code); empty on success.
    pub reason: String,
}

/// Per-fake queue of scripted failures and log of attempts.
#[derive(Debug, Default)]
pub(crate) struct Script {
    failures: VecDeque<Failure>,
    attempts: Vec<Attempt>,
}

impl Script {
    pub(crate) fn push(&mut self, f: Failure) {
        self.failures.push_back(f);
    }

    pub(crate) fn pop(&mut self) -> Option<Failure> {
        self.failures.pop_front()
    }

    pub(crate) fn record(&mut self, target: &str, status: u16, reason: &str) {
        self.attempts.push(Attempt {
            at: Instant::now(),
            target: target.to_owned(),
            status,
            reason: reason.to_owned(),
        });
    }

    pub(crate) fn attempts(&self) -> Vec<Attempt> {
        self.attempts.clone()
    }
}
