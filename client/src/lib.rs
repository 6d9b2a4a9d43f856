//! The Natter client SDK: register through auth, then chat over one WebSocket
//! per device with automatic reconnect (exponential backoff) that resends
//! unacknowledged messages, receipts, typing, presence, and groups over REST.
//!
//! ```no_run
//! # async fn demo() -> Result<(), natter_client::Error> {
//! use natter_client::{Account, Api, Chat, ConnectOptions, Event};
//! let api = Api::new("http://127.0.0.1:8080")?;
//! let creds = natter_client::register(&api, "+14155552671", "laptop", |s| async move {
//!     natter_client::code_from_outbox("natter-data/outbox/sms.jsonl".as_ref(), &s.session_id).await
//! })
//! .await?;
//! let (chat, mut events) = Chat::connect(Account::new(api, creds), ConnectOptions::default());
//! chat.send_text(natter_proto::Target::User(natter_proto::UserId::new("someone")), "hi");
//! while let Some(ev) = events.recv().await {
//!     if let Event::Sent(s) = ev { println!("sent {}", s.msg_id); break; }
//! }
//! # Ok(()) }
//! ```

mod account;
mod api;
pub mod call;
mod chat;
pub mod keys;
pub mod media;

pub use account::{Account, CredentialsHook, code_from_outbox, register};
pub use api::{
    Api, CallLog, CallLogEntry, Credentials, Group, GroupMember, IceServer, IceServers,
    MessageStatus, PendingQuery, PresenceInfo, RecipientStatus, RegSession,
};
pub use chat::{Chat, ConnectOptions, Event, Events};
pub use natter_proto as proto;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error body.
    #[error("{code} ({status}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Explanation.
        message: String,
    },
    /// The request did not complete.
    #[error("http: {0}")]
    Http(String),
    /// Bad settings or input.
    #[error("{0}")]
    Config(String),
}
