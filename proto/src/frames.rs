//! Every frame of the protocol. JSON objects tagged by `type`; unknown fields are
//! ignored (so newer clients can talk to older servers), unknown types refused.

use crate::body::Body;
use crate::call::{
    CallAnswer, CallAnswered, CallEnded, CallIce, CallIncoming, CallOffer, CallRef, CallRinging,
    CallUpdate,
};
use crate::codes::ErrorCode;
use crate::ids::{ClientMsgId, DeviceId, From, GroupId, Kind, Millis, MsgId, ReceiptId, UserId};
use serde::{Deserialize, Serialize};

/// Most ids in one `delivered`, `read` or `ack` frame.
pub const MAX_IDS_PER_FRAME: usize = 1000;
/// Most users in one `presence.subscribe` frame.
pub const MAX_USERS_PER_FRAME: usize = 256;

/// What a device sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientFrame {
    /// Authenticates a socket opened without an `Authorization` header. Must be
    /// the first frame then.
    #[serde(rename = "auth")]
    Auth(Auth),
    /// Sends a message; answered by `sent` once it is durable.
    #[serde(rename = "send")]
    Send(Send),
    /// These messages are stored on this device.
    #[serde(rename = "delivered")]
    Delivered(MsgIds),
    /// The user has read these messages.
    #[serde(rename = "read")]
    Read(MsgIds),
    /// These receipts are stored on this device (the server may forget them).
    #[serde(rename = "ack")]
    Ack(ReceiptIds),
    /// Typing state in a conversation (ephemeral).
    #[serde(rename = "typing")]
    Typing(TypingSend),
    /// Start getting `presence` frames for these users.
    #[serde(rename = "presence.subscribe")]
    PresenceSubscribe(Users),
    /// Stop getting `presence` frames for these users.
    #[serde(rename = "presence.unsubscribe")]
    PresenceUnsubscribe(Users),
    /// Application-level heartbeat, for clients that cannot see WebSocket pings.
    #[serde(rename = "ping")]
    Ping(Ping),
    /// Starts a call.
    #[serde(rename = "call.offer")]
    CallOffer(CallOffer),
    /// Accepts a ringing call on this device.
    #[serde(rename = "call.answer")]
    CallAnswer(CallAnswer),
    /// Declines a ringing call (on every device of this user).
    #[serde(rename = "call.reject")]
    CallReject(CallRef),
    /// Ends a call: cancels it before an answer, hangs it up after.
    #[serde(rename = "call.hangup")]
    CallHangup(CallRef),
    /// A trickled ICE candidate for the other party.
    #[serde(rename = "call.ice")]
    CallIce(CallIce),
    /// Renegotiation (ICE restart) of an answered call.
    #[serde(rename = "call.update")]
    CallUpdate(CallUpdate),
}

/// Every client frame type, as on the wire.
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "auth",
    "send",
    "delivered",
    "read",
    "ack",
    "typing",
    "presence.subscribe",
    "presence.unsubscribe",
    "ping",
    "call.offer",
    "call.answer",
    "call.reject",
    "call.hangup",
    "call.ice",
    "call.update",
];

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// First frame after authentication: who you are and the limits in force.
    #[serde(rename = "hello")]
    Hello(Hello),
    /// A sent message is durable on the server.
    #[serde(rename = "sent")]
    Sent(Sent),
    /// A message for this device (from another user, a copy of one this user
    /// sent from another device, or a group system message).
    #[serde(rename = "msg")]
    Msg(Message),
    /// A recipient has the message (`delivered`) or read it (`read`).
    #[serde(rename = "receipt")]
    Receipt(Receipt),
    /// Everything queued for this device when it connected has been sent.
    #[serde(rename = "synced")]
    Synced(Synced),
    /// Someone is typing.
    #[serde(rename = "typing")]
    Typing(TypingEvent),
    /// A subscribed user's presence.
    #[serde(rename = "presence")]
    Presence(Presence),
    /// A frame was refused; the connection stays usable.
    #[serde(rename = "error")]
    Error(ErrorFrame),
    /// Answer to `ping`.
    #[serde(rename = "pong")]
    Pong(Ping),
    /// A call is ringing on this device.
    #[serde(rename = "call.incoming")]
    CallIncoming(CallIncoming),
    /// The callee's devices are ringing (to the caller's device).
    #[serde(rename = "call.ringing")]
    CallRinging(CallRinging),
    /// The callee answered (to the caller's device).
    #[serde(rename = "call.answered")]
    CallAnswered(CallAnswered),
    /// A trickled ICE candidate from the other party.
    #[serde(rename = "call.ice")]
    CallIce(CallIce),
    /// Renegotiation from the other party.
    #[serde(rename = "call.update")]
    CallUpdate(CallUpdate),
    /// The call is over (or never started) for this device.
    #[serde(rename = "call.ended")]
    CallEnded(CallEnded),
}

/// Every server frame type, as on the wire.
pub const SERVER_FRAME_TYPES: &[&str] = &[
    "hello",
    "sent",
    "msg",
    "receipt",
    "synced",
    "typing",
    "presence",
    "error",
    "pong",
    "call.incoming",
    "call.ringing",
    "call.answered",
    "call.ice",
    "call.update",
    "call.ended",
];

/// A conversation: one user or one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A 1:1 conversation with this user.
    User(UserId),
    /// A group conversation.
    Group(GroupId),
}

impl Target {
    /// `u:<user>` or `g:<group>`: the form used in REST filters and logs.
    pub fn key(&self) -> String {
        match self {
            Target::User(u) => format!("u:{u}"),
            Target::Group(g) => format!("g:{g}"),
        }
    }

    /// Parses [`Target::key`].
    pub fn from_key(s: &str) -> Option<Self> {
        let (kind, id) = s.split_once(':')?;
        let t = match kind {
            "u" => Target::User(UserId::new(id)),
            "g" => Target::Group(GroupId::new(id)),
            _ => return None,
        };
        t.is_valid().then_some(t)
    }

    /// The id is well formed.
    pub fn is_valid(&self) -> bool {
        match self {
            Target::User(u) => u.is_valid(),
            Target::Group(g) => g.is_valid(),
        }
    }
}

/// `auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    /// The access token (as for `Authorization: Bearer`).
    pub token: String,
    /// Protocol version the client speaks; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<u32>,
}

/// `send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    /// The client's id for this message; resending it is idempotent.
    pub id: ClientMsgId,
    /// Recipient user or group.
    pub to: Target,
    /// What the body is; default `text`.
    #[serde(default)]
    pub kind: Kind,
    /// Opaque bytes, base64; at most `max_body_bytes` once decoded.
    pub body: Body,
}

/// `delivered` / `read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsgIds {
    /// Message ids (1 to 1000).
    pub ids: Vec<MsgId>,
}

/// `ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptIds {
    /// Receipt ids (1 to 1000).
    pub ids: Vec<ReceiptId>,
}

/// Typing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypingState {
    /// Started typing.
    Composing,
    /// Stopped typing.
    Paused,
}

/// `typing` from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingSend {
    /// The conversation.
    pub to: Target,
    /// Composing or paused.
    pub state: TypingState,
}

/// `presence.subscribe` / `presence.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Users {
    /// Users (1 to 256).
    pub users: Vec<UserId>,
}

/// `ping` / `pong`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed back in the `pong`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<u64>,
}

/// `hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub v: u32,
    /// The authenticated account.
    pub user_id: UserId,
    /// The authenticated device.
    pub device_id: DeviceId,
    /// Limits in force on this connection.
    pub limits: Limits,
}

/// Limits a client should respect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest decoded body.
    pub max_body_bytes: usize,
    /// Largest text frame; a bigger one closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Messages and receipts the server sends before waiting for `delivered`/`ack`.
    pub window: u32,
    /// The server pings this often.
    pub heartbeat_secs: u32,
    /// The server closes a socket it has heard nothing from for this long.
    pub idle_timeout_secs: u32,
}

/// `sent`: the message is stored durably and will be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The client's id.
    pub id: ClientMsgId,
    /// The server's id, used by receipts.
    pub msg_id: MsgId,
    /// Server time of storage.
    pub ts: Millis,
    /// True when this id was sent before: nothing new was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dup: bool,
}

/// `msg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Server id; acknowledge with `delivered`, mark with `read`.
    pub msg_id: MsgId,
    /// The sender's client id.
    pub id: ClientMsgId,
    /// Sender.
    pub from: From,
    /// The recipient as the sender addressed it (a user or a group).
    pub to: Target,
    /// What the body is (`system` for group events).
    pub kind: Kind,
    /// Opaque bytes (empty for system messages).
    pub body: Body,
    /// Server time of storage.
    pub ts: Millis,
    /// For `kind = "system"`: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemEvent>,
}

/// A group event, written by the server as a system message in the group.
/// The actor is the message's `from.user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SystemEvent {
    /// The group was created with these members (the creator included).
    GroupCreated {
        /// Name.
        name: String,
        /// Members.
        members: Vec<UserId>,
    },
    /// New name.
    GroupRenamed {
        /// Name.
        name: String,
    },
    /// Users were added.
    MembersAdded {
        /// Added users.
        users: Vec<UserId>,
    },
    /// A user was removed by an admin.
    MemberRemoved {
        /// Removed user.
        user: UserId,
    },
    /// A user left.
    MemberLeft {
        /// The user.
        user: UserId,
    },
    /// A user became an admin.
    AdminAdded {
        /// The user.
        user: UserId,
    },
    /// A user is no longer an admin.
    AdminRemoved {
        /// The user.
        user: UserId,
    },
}

/// Delivered or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// A device of the recipient stored the message.
    Delivered,
    /// The recipient read it.
    Read,
}

/// `receipt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Acknowledge with `ack`.
    pub receipt_id: ReceiptId,
    /// The message.
    pub msg_id: MsgId,
    /// The message's client id.
    pub id: ClientMsgId,
    /// The conversation the message was sent to.
    pub to: Target,
    /// Delivered or read.
    pub status: ReceiptStatus,
    /// Which recipient (for a `read` by this user's other device: this user).
    pub by: UserId,
    /// When.
    pub ts: Millis,
}

/// `synced`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {}

/// `typing` to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingEvent {
    /// Who is typing.
    pub from: UserId,
    /// The conversation as the typist addressed it.
    pub to: Target,
    /// Composing or paused.
    pub state: TypingState,
}

/// Online, offline, or not visible to you.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    /// At least one device is connected.
    Online,
    /// No device is connected.
    Offline,
    /// The user's privacy setting hides presence from you.
    Hidden,
}

/// `presence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Whose.
    pub user: UserId,
    /// State.
    pub state: PresenceState,
    /// Last time a device was connected (absent when online, hidden or never seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Millis>,
}

/// Who may see a user's presence and last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresencePrivacy {
    /// Anyone.
    #[default]
    Everyone,
    /// Only users in this user's contact list.
    Contacts,
    /// No one.
    Nobody,
}

/// `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// Stable code.
    pub code: ErrorCode,
    /// For people; names the field or value at fault.
    pub message: String,
    /// The `type` of the refused frame, when known.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub ref_type: Option<String>,
    /// The client id (`send.id`) of the refused frame, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For `rate_limited`: when to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorFrame {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            ref_type: None,
            id: None,
            retry_after_ms: None,
        }
    }

    /// Names the refused frame.
    pub fn about(mut self, ref_type: Option<String>, id: Option<String>) -> Self {
        self.ref_type = ref_type;
        self.id = id;
        self
    }
}

impl ServerFrame {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error(ErrorFrame::new(code, message))
    }

    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerFrame::Hello(_) => "hello",
            ServerFrame::Sent(_) => "sent",
            ServerFrame::Msg(_) => "msg",
            ServerFrame::Receipt(_) => "receipt",
            ServerFrame::Synced(_) => "synced",
            ServerFrame::Typing(_) => "typing",
            ServerFrame::Presence(_) => "presence",
            ServerFrame::Error(_) => "error",
            ServerFrame::Pong(_) => "pong",
            ServerFrame::CallIncoming(_) => "call.incoming",
            ServerFrame::CallRinging(_) => "call.ringing",
            ServerFrame::CallAnswered(_) => "call.answered",
            ServerFrame::CallIce(_) => "call.ice",
            ServerFrame::CallUpdate(_) => "call.update",
            ServerFrame::CallEnded(_) => "call.ended",
        }
    }

    /// JSON text for a WebSocket text frame.
    pub fn to_json(&self) -> String {
        // Frames are plain structs of strings, numbers and enums: serialising
        // them cannot fail.
        serde_json::to_string(self).expect("server frames serialise")
    }
}

impl ClientFrame {
    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::Auth(_) => "auth",
            ClientFrame::Send(_) => "send",
            ClientFrame::Delivered(_) => "delivered",
            ClientFrame::Read(_) => "read",
            ClientFrame::Ack(_) => "ack",
            ClientFrame::Typing(_) => "typing",
            ClientFrame::PresenceSubscribe(_) => "presence.subscribe",
            ClientFrame::PresenceUnsubscribe(_) => "presence.unsubscribe",
            ClientFrame::Ping(_) => "ping",
            ClientFrame::CallOffer(_) => "call.offer",
            ClientFrame::CallAnswer(_) => "call.answer",
            ClientFrame::CallReject(_) => "call.reject",
            ClientFrame::CallHangup(_) => "call.hangup",
            ClientFrame::CallIce(_) => "call.ice",
            ClientFrame::CallUpdate(_) => "call.update",
        }
    }

    /// JSON text for a WebSocket text frame.
    pub fn to_json(&self) -> String {
        // As for server frames: cannot fail.
        serde_json::to_string(self).expect("client frames serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let f = ClientFrame::Send(Send {
            id: ClientMsgId::new("c1"),
            to: Target::User(UserId::new("u2")),
            kind: Kind::text(),
            body: Body::new(b"hi".to_vec()),
        });
        assert_eq!(
            f.to_json(),
            r#"{"type":"send","id":"c1","to":{"user":"u2"},"kind":"text","body":"aGk="}"#
        );
        let s = ServerFrame::Sent(Sent {
            id: ClientMsgId::new("c1"),
            msg_id: 7,
            ts: 1000,
            dup: false,
        });
        assert_eq!(
            s.to_json(),
            r#"{"type":"sent","id":"c1","msg_id":7,"ts":1000}"#
        );
        let sys = SystemEvent::MembersAdded {
            users: vec![UserId::new("u3")],
        };
        assert_eq!(
            serde_json::to_string(&sys).unwrap(),
            r#"{"event":"members_added","users":["u3"]}"#
        );
        assert_eq!(
            Target::from_key("g:abc"),
            Some(Target::Group(GroupId::new("abc")))
        );
        assert_eq!(Target::from_key("x:abc"), None);
        assert_eq!(Target::from_key("u:"), None);
    }

    #[test]
    fn every_listed_type_is_known_to_the_decoder() {
        for t in CLIENT_FRAME_TYPES {
            let r = crate::decode_client_frame(&format!(r#"{{"type":"{t}"}}"#));
            assert!(!matches!(r, Err(crate::DecodeError::UnknownType(_))), "{t}");
        }
        for t in SERVER_FRAME_TYPES {
            let r = crate::decode_server_frame(&format!(r#"{{"type":"{t}"}}"#));
            assert!(!matches!(r, Err(crate::DecodeError::UnknownType(_))), "{t}");
        }
        let ping = ClientFrame::Ping(Ping::default());
        assert_eq!(ping.to_json(), r#"{"type":"ping"}"#);
        assert!(CLIENT_FRAME_TYPES.contains(&ping.type_name()));
    }
}
