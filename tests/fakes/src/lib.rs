//! Strict local fakes of the push and SMS providers Natter talks to: Firebase
//! Cloud Messaging HTTP v1 (with Google's OAuth2 JWT-bearer token endpoint),
//! Apple Push Notification service with token-based auth, and Twilio's REST
//! API for messages and calls.
//!
//! The real services cannot be reached from tests or benchmarks, so each fake
//! implements the provider's documented wire format and rejects what the real
//! service rejects, with its status codes and error bodies. They serve real
//! TLS on 127.0.0.1 with a certificate from a throwaway CA ([`tls::TestCa`]),
//! so clients exercise the same connection setup (ALPN, HTTP/2) as in
//! production.
//!
//! Every fake can be scripted to fail its next sends ([`Failure`]) and records
//! each attempt at its send endpoint ([`Attempt`]).

pub mod apns;
pub mod fcm;
pub mod tls;
pub mod twilio;

mod jwt;
mod script;
mod util;

pub use script::{Attempt, Failure};
