//! Clients for the providers Natter hands things to: Firebase Cloud Messaging
//! (HTTP v1) and Apple Push Notification service (token auth, HTTP/2) wake
//! devices; Twilio sends one-time codes by SMS or voice call.
//!
//! Each provider is a sans-IO part (request building, token signing, response
//! classification: plain functions, unit-tested) and a thin client over
//! `reqwest` that adds the token cache and the retry loop. The callers (chat's
//! push sender, auth's code sender) turn a [`Report`] into metrics, logs and
//! token clean-up.

pub mod apns;
pub mod fcm;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod http;
pub mod jwt;
pub mod pem;
pub mod retry;
pub mod twilio;

/// Why a device is woken. Push payloads say only this: never who wrote or what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// Messages are waiting: the app connects and fetches them.
    Message,
    /// A call is ringing: the app connects and fetches the offer.
    Call,
}

impl PushKind {
    /// As written in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Message => "message",
            PushKind::Call => "call",
        }
    }
}

/// How one hand-over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The provider accepted it.
    Delivered,
    /// The provider says the device token is dead (app uninstalled, token
    /// rotated): delete it and never send to it again.
    Unregistered,
    /// Refused for good (a malformed or foreign token, a bad number): retrying
    /// will not help. The text is the provider's reason.
    Rejected(String),
    /// Our credentials were refused: a configuration error, not this device's.
    AuthFailed(String),
    /// Still failing after the retries, or a wait longer than allowed was asked.
    Failed(String),
}

impl Delivery {
    /// A metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Delivery::Delivered => "ok",
            Delivery::Unregistered => "unregistered",
            Delivery::Rejected(_) => "rejected",
            Delivery::AuthFailed(_) => "auth",
            Delivery::Failed(_) => "failed",
        }
    }
}

/// A [`Delivery`] and the HTTP attempts it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The end.
    pub delivery: Delivery,
    /// Requests made to the send endpoint (token requests not counted).
    pub attempts: u32,
}
