//! Storage for chat-core: one trait, implemented for SQLite and PostgreSQL from
//! one body of SQL (`sql.rs`), checked by one contract suite
//! (`tests/store_contract.rs`) against both engines.
//!
//! The write path is batch-shaped: the group-commit writer hands [`MessageStore::commit`]
//! every operation that queued up while the previous transaction was committing,
//! and the whole batch becomes one transaction with a fixed number of statements.
//! Every operation that adds to a device queue goes through that one writer, so
//! queue sequence numbers increase in commit order (the gateway relies on it).
//!
//! Auth's `accounts(user_id)` and `devices(user_id, device_id, generation)` are
//! read here (same database), never written.

mod queue_order;
mod sql;

use async_trait::async_trait;
use natter_common::{Db, UnixMillis};
use natter_proto::{
    ClientMsgId, DeviceId, ErrorCode, GroupId, Kind, Message, MsgId, PresencePrivacy, Receipt,
    ReceiptId, Sent, SystemEvent, Target, UserId,
};
use std::sync::Arc;

pub use sql::{PgStore, SqliteStore};

/// PostgreSQL migrations rewritten after release so that they stop blocking
/// reads (docs/runbook.md "Migrations and locks"): their released texts,
/// whose checksums databases recorded and still record
/// ([`natter_common::migrate::Released`]).
pub const RELEASED_POSTGRES_MIGRATIONS: [natter_common::migrate::Released; 2] = [
    natter_common::migrate::Released {
        version: 2003,
        sql: include_str!("../../migrations/postgres-released/2003_client_id_first.sql"),
    },
    natter_common::migrate::Released {
        version: 2004,
        sql: include_str!("../../migrations/postgres-released/2004_sender_generation.sql"),
    },
];

/// A database failure (anything that is not a domain outcome).
#[derive(Debug, thiserror::Error)]
#[error("chat store: {0}")]
pub struct StoreError(#[from] pub sqlx::Error);

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// One device, at one credential generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceRef {
    /// Account.
    pub user: UserId,
    /// Device.
    pub device: DeviceId,
    /// Credential generation (auth's `devices.generation`).
    pub generation: i64,
}

/// A message to store and fan out.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Sender account.
    pub sender: UserId,
    /// Sender device (0 for system messages).
    pub sender_device: DeviceId,
    /// The sender device's credential generation (0 for system messages):
    /// part of the idempotency key, so a re-registered device id that
    /// reuses client ids is not taken for its predecessor.
    pub sender_generation: i64,
    /// The sender's id for it.
    pub client_id: ClientMsgId,
    /// Recipient user or group.
    pub to: Target,
    /// Kind.
    pub kind: Kind,
    /// Opaque body.
    pub body: Vec<u8>,
    /// Group event, for system messages.
    pub system: Option<SystemEvent>,
}

/// One operation of a group commit.
#[derive(Debug, Clone)]
pub enum BatchOp {
    /// Store a message for every recipient device (and the sender's other devices).
    Send(NewMessage),
    /// The device has these messages: drop them from its queue; first delivery to
    /// a recipient user queues a `delivered` receipt for the sender's devices.
    Delivered(DeviceRef, Vec<MsgId>),
    /// The user read these messages: queue `read` receipts for the sender's
    /// devices and a read sync for the reader's other devices.
    Read(DeviceRef, Vec<MsgId>),
    /// The device has these receipts: drop them.
    Ack(DeviceRef, Vec<ReceiptId>),
}

/// What happened to a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored now.
    Stored(Sent),
    /// Stored before under the same client id: the original ack.
    Duplicate(Sent),
    /// Not stored.
    Refused(ErrorCode, String),
}

/// The outcome of one [`BatchOp`], in batch order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// For `Send`.
    Send(SendOutcome),
    /// For `Delivered`, `Read`, `Ack`: ids that named nothing pending for the
    /// device (unknown, already acknowledged, or not a message to this user).
    Unknown(Vec<u64>),
}

/// A frame queued for one device.
#[derive(Debug, Clone)]
pub enum QueuedFrame {
    /// A message (shared by every device it fans out to).
    Msg(Arc<Message>),
    /// A receipt.
    Receipt(Receipt),
}

/// A queue entry as committed: where it goes and what it is.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Recipient device.
    pub user: UserId,
    /// Recipient device id.
    pub device: DeviceId,
    /// Its generation.
    pub generation: i64,
    /// Queue position (increasing in commit order).
    pub seq: i64,
    /// The device's entry before this one when it was committed (0: none);
    /// `None` when the store does not track it (SQLite: one writer, in order).
    pub prev: Option<i64>,
    /// The frame.
    pub frame: QueuedFrame,
}

/// Result of a commit: outcomes in op order, and new queue entries in seq order.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// One per op.
    pub outcomes: Vec<OpOutcome>,
    /// New queue entries, ascending seq.
    pub queued: Vec<Queued>,
}

/// A change to a group, applied with its system message in one transaction.
#[derive(Debug, Clone)]
pub enum GroupChange {
    /// New group; `by` becomes its admin.
    Create {
        /// New id.
        group_id: GroupId,
        /// Name.
        name: String,
        /// Creator.
        by: UserId,
        /// Other initial members.
        members: Vec<UserId>,
    },
    /// New name (admins).
    Rename {
        /// Group.
        group_id: GroupId,
        /// Actor.
        by: UserId,
        /// Name.
        name: String,
    },
    /// Add members (admins).
    AddMembers {
        /// Group.
        group_id: GroupId,
        /// Actor.
        by: UserId,
        /// New members.
        users: Vec<UserId>,
    },
    /// Remove a member (admins), or leave (`user == by`).
    RemoveMember {
        /// Group.
        group_id: GroupId,
        /// Actor.
        by: UserId,
        /// Member.
        user: UserId,
    },
    /// Grant or revoke admin (admins).
    SetAdmin {
        /// Group.
        group_id: GroupId,
        /// Actor.
        by: UserId,
        /// Member.
        user: UserId,
        /// Admin or not.
        admin: bool,
    },
}

impl GroupChange {
    /// The account making the change.
    pub fn by(&self) -> &UserId {
        match self {
            GroupChange::Create { by, .. }
            | GroupChange::Rename { by, .. }
            | GroupChange::AddMembers { by, .. }
            | GroupChange::RemoveMember { by, .. }
            | GroupChange::SetAdmin { by, .. } => by,
        }
    }

    /// The group concerned.
    pub fn group_id(&self) -> &GroupId {
        match self {
            GroupChange::Create { group_id, .. }
            | GroupChange::Rename { group_id, .. }
            | GroupChange::AddMembers { group_id, .. }
            | GroupChange::RemoveMember { group_id, .. }
            | GroupChange::SetAdmin { group_id, .. } => group_id,
        }
    }
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// Account.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// May rename and change membership.
    pub admin: bool,
    /// When added (Unix ms).
    pub added_at: UnixMillis,
}

/// A group and its members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GroupInfo {
    /// Id.
    #[schema(value_type = String)]
    pub group_id: GroupId,
    /// Name.
    pub name: String,
    /// Creator.
    #[schema(value_type = String)]
    pub created_by: UserId,
    /// Unix ms.
    pub created_at: UnixMillis,
    /// Members, by user id.
    pub members: Vec<Member>,
}

/// What a group change came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Applied (or nothing to do); the group as it is now (`None` once the last
    /// member left and the group was deleted).
    Done(Option<GroupInfo>),
    /// No such group.
    NotFound,
    /// The actor is not a member.
    NotMember,
    /// The actor is not an admin.
    NotAdmin,
    /// The target user is not a member.
    UserNotMember,
    /// These users have no account.
    UnknownUsers(Vec<UserId>),
    /// The change would exceed the member limit.
    Full {
        /// The limit.
        limit: u32,
    },
    /// The group id is taken (creation).
    Exists,
}

/// Delivery state of a message for one recipient user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RecipientStatus {
    /// Recipient.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// First delivery to any of their devices (Unix ms).
    pub delivered_at: Option<UnixMillis>,
    /// Read (Unix ms).
    pub read_at: Option<UnixMillis>,
}

/// A sent message's state, for its sender.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MessageStatus {
    /// Server id.
    pub msg_id: MsgId,
    /// Client id.
    #[schema(value_type = String)]
    pub id: ClientMsgId,
    /// Sender.
    #[schema(value_type = String)]
    pub sender: UserId,
    /// Conversation as addressed: `{"user": "<id>"}` or `{"group": "<id>"}`.
    #[schema(value_type = Object)]
    pub to: Target,
    /// Stored at (Unix ms).
    pub created_at: UnixMillis,
    /// Forgotten after (Unix ms).
    pub expires_at: UnixMillis,
    /// Recipient devices that have not received it yet.
    pub pending_devices: i64,
    /// Per recipient user.
    pub recipients: Vec<RecipientStatus>,
}

/// Filter for a device's pending messages.
#[derive(Debug, Clone, Default)]
pub struct PendingFilter {
    /// Only this conversation (as seen by the device's user).
    pub conversation: Option<Target>,
    /// Stored at or after (Unix ms).
    pub since: Option<UnixMillis>,
    /// Stored before (Unix ms).
    pub until: Option<UnixMillis>,
    /// At most this many.
    pub limit: u32,
}

/// A device's push registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushToken {
    /// `fcm`, `apns`, … (free text for the gateway).
    pub platform: String,
    /// The provider token.
    pub token: String,
    /// An iOS device's PushKit token, for VoIP pushes (calls).
    pub voip_token: Option<String>,
}

/// Rows removed by a purge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Expired messages (with their queue entries and status).
    pub messages: u64,
    /// Queue entries of devices that no longer exist at that generation.
    pub orphan_queue: u64,
}

/// Everything chat-core stores.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Creates the schema (idempotent).
    async fn migrate(&self) -> StoreResult<()>;

    /// Whether the writer should drive this store from a thread of its own
    /// (see [`crate::writer::WriterTask::spawn`]). Only for stores whose
    /// connections are not tied to the runtime that opened them.
    fn wants_writer_thread(&self) -> bool {
        false
    }

    // --- the write path (called by the one writer task only) ---
    /// Applies a batch in one transaction. Messages expire `ttl_ms` after `now`.
    async fn commit(
        &self,
        ops: &[BatchOp],
        now: UnixMillis,
        ttl_ms: i64,
        max_group: u32,
    ) -> StoreResult<Committed>;
    /// Applies a group change and its system message in one transaction.
    async fn commit_group(
        &self,
        change: &GroupChange,
        now: UnixMillis,
        ttl_ms: i64,
        max_group: u32,
    ) -> StoreResult<(GroupOutcome, Vec<Queued>)>;

    // --- reads ---
    /// Queue entries of a device after `after_seq`, ascending, at most `limit`.
    async fn fetch(&self, dev: &DeviceRef, after_seq: i64, limit: u32) -> StoreResult<Vec<Queued>>;
    /// A device's pending messages matching `filter`.
    async fn pending(&self, dev: &DeviceRef, filter: &PendingFilter) -> StoreResult<Vec<Message>>;
    /// A message's status (any caller; the API checks it is the sender).
    async fn message_status(&self, msg_id: MsgId) -> StoreResult<Option<MessageStatus>>;
    /// The device's current generation, if it exists (auth's `devices`).
    async fn device_generation(&self, user: &UserId, device: DeviceId) -> StoreResult<Option<i64>>;
    /// Of these connected devices, the ones that no longer exist at that generation.
    async fn stale_devices(&self, devices: &[DeviceRef]) -> StoreResult<Vec<DeviceRef>>;
    /// Whether an account exists (auth's `accounts`).
    async fn user_exists(&self, user: &UserId) -> StoreResult<bool>;

    // --- groups ---
    /// A group with its members.
    async fn group(&self, group_id: &GroupId) -> StoreResult<Option<GroupInfo>>;
    /// Groups the user is a member of.
    async fn groups_of(&self, user: &UserId) -> StoreResult<Vec<GroupInfo>>;

    // --- presence ---
    /// The user's privacy setting and last seen time.
    async fn presence(&self, user: &UserId) -> StoreResult<(PresencePrivacy, Option<UnixMillis>)>;
    /// Sets the privacy setting.
    async fn set_privacy(&self, user: &UserId, privacy: PresencePrivacy) -> StoreResult<()>;
    /// Records last-seen times (upsert).
    async fn save_last_seen(&self, seen: &[(UserId, UnixMillis)]) -> StoreResult<()>;
    /// Replaces the user's contact list.
    async fn set_contacts(&self, user: &UserId, contacts: &[UserId]) -> StoreResult<()>;
    /// The user's contact list.
    async fn contacts(&self, user: &UserId) -> StoreResult<Vec<UserId>>;
    /// Whether `other` is in `user`'s contact list.
    async fn is_contact(&self, user: &UserId, other: &UserId) -> StoreResult<bool>;

    // --- push ---
    /// Sets a device's push token.
    async fn set_push_token(
        &self,
        dev: &DeviceRef,
        token: &PushToken,
        now: UnixMillis,
    ) -> StoreResult<()>;
    /// Removes a device's push token.
    async fn delete_push_token(&self, user: &UserId, device: DeviceId) -> StoreResult<bool>;

    /// Forgets a token the provider called dead: the whole registration when
    /// `token` is the device's token, only the VoIP token when it is that.
    /// A token the device replaced meanwhile stays.
    async fn forget_dead_push_token(
        &self,
        user: &UserId,
        device: DeviceId,
        token: &str,
    ) -> StoreResult<bool>;
    /// Push tokens of these devices (those at the current generation that have one).
    async fn push_tokens(&self, devices: &[DeviceRef]) -> StoreResult<Vec<(DeviceRef, PushToken)>>;

    // --- housekeeping ---
    /// Deletes expired messages and queue entries of vanished devices.
    async fn purge(&self, now: UnixMillis) -> StoreResult<Purged>;
}

/// Opens the store for a pool.
pub fn for_db(db: &Db) -> Arc<dyn MessageStore> {
    match db {
        Db::Sqlite(pool) => Arc::new(SqliteStore::new(pool.clone())),
        Db::Postgres(pool) => Arc::new(PgStore::new(pool.clone())),
    }
}

/// Queue entry kinds (`chat_queue.kind`).
pub(crate) mod item {
    /// A message.
    pub(crate) const MSG: i64 = 0;
    /// A delivered receipt.
    pub(crate) const DELIVERED: i64 = 1;
    /// A read receipt (or read sync).
    pub(crate) const READ: i64 = 2;
}
