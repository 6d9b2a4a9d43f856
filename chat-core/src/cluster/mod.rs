//! Where sockets are, across chat-core nodes.
//!
//! A node's [`Hub`](crate::hub::Hub) knows its own sockets. A [`Cluster`]
//! knows the rest: which node holds which device's socket, and how to reach
//! it. Two implementations:
//!
//! - [`Embedded`] (no Redis configured): one node, nothing to share. Every
//!   call is a no-op, so the single-process shape behaves exactly as before.
//! - [`RedisCluster`] (`redis.url` set): the registry is a Redis hash per user
//!   (device → node), nodes announce themselves with heartbeats, and frames
//!   for a socket on another node go over that node's pub/sub channel.
//!
//! The queue in the store stays the truth. Live deliveries over the bus are a
//! shortcut: one that is lost (a node dies, Redis restarts) or arrives out of
//! order is caught by the session, which then reads its queue (see
//! `Delivery::prev` and `Session::handle_resync`).

mod config;
mod jobs;
mod redis;
pub(crate) mod wire;

pub use config::RedisConfig;
pub(crate) use redis::RedisCluster;

use crate::call_event::CallEvent;
use crate::hub::LocalConn;
use crate::push::{PushNotice, PushWindows};
use crate::store::Queued;
use async_trait::async_trait;
use natter_common::UnixMillis;
use natter_common::parts::Part;
use natter_proto::{DeviceId, UserId};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the cluster's background tasks need from the chat service they serve
/// (the chat state implements it, in `host.rs`): the cluster never reaches
/// into the state itself.
pub(crate) trait ClusterHost: Send + Sync + 'static {
    /// This node's sockets.
    fn hub(&self) -> &Arc<crate::hub::Hub>;
    /// Cancelled when the service stops.
    fn shutdown(&self) -> &tokio_util::sync::CancellationToken;
    /// The per-account limit shared between nodes under `name` (`sends`,
    /// `group_writes`).
    fn account_limit(&self, name: &str) -> Option<&Arc<crate::account_limits::AccountLimit>>;
    /// Every shared per-account limit.
    fn account_limits(&self) -> Vec<Arc<crate::account_limits::AccountLimit>>;
    /// A call event another node forwarded for a device here (or for the
    /// calls leader, when this node is it).
    fn call_event_from_bus(&self, user: &UserId, device: DeviceId, ev: CallEvent);
    /// Another node's device came online or went offline: tell the
    /// subscribers here.
    fn announce_local(&self, user: &UserId, online: bool, last_seen: Option<UnixMillis>);
}

/// The cluster-wide part of routing (see the module docs).
#[async_trait]
/// The push window half ([`PushWindows`]) lets the push sender use a cluster
/// without the push module knowing about clusters.
pub(crate) trait Cluster: PushWindows + Send + Sync {
    /// This node now holds `conn`: make it findable, and close an older socket
    /// of the same device on another node (4000). Returns whether no other
    /// device of the user is connected on another node.
    async fn claim(&self, conn: &LocalConn) -> bool;

    /// `conn` closed. Returns whether no device of the user is connected on
    /// another node.
    async fn release(&self, conn: &LocalConn) -> bool;

    /// Whether a device of `user` is connected on another node.
    async fn online_elsewhere(&self, user: &UserId) -> bool;

    /// The devices of `user` connected on other live nodes.
    async fn devices_elsewhere(&self, user: &UserId) -> Vec<DeviceId>;

    /// This node's name (`local` in the embedded shape).
    fn node_id(&self) -> &str;

    /// Whether `node` is a member whose heartbeat is recent; false for a
    /// node that left or was never seen.
    async fn node_alive(&self, node: &str) -> bool;

    /// The node that runs call signaling for the cluster; `None` for this
    /// one (the embedded shape) or while Redis cannot say (calls are then
    /// handled here).
    fn calls_leader(&self) -> Option<String>;

    /// Sends a device's call event to `node`, the calls leader.
    fn forward_call(&self, node: &str, user: &UserId, device: DeviceId, ev: &CallEvent);

    /// Committed entries for devices with no socket on this node. Returns the
    /// ones it did not take; the caller treats those as offline (push).
    fn forward(&self, entries: Vec<Queued>, now: UnixMillis) -> Vec<Queued>;

    /// An ephemeral frame for `to`'s devices (or one device) on other nodes.
    fn frame(&self, to: &UserId, device: Option<DeviceId>, json: Arc<str>);

    /// Tells other nodes that `user` came online or went offline.
    fn presence(&self, user: &UserId, online: bool, last_seen: Option<UnixMillis>);

    /// Starts the background tasks (bus subscriber, heartbeat, dispatcher).
    fn spawn(
        self: Arc<Self>,
        host: Arc<dyn ClusterHost>,
        push: mpsc::Sender<PushNotice>,
    ) -> Vec<Part>;
}

/// One process, no Redis: everything is in the hub.
#[derive(Debug, Default)]
pub(crate) struct Embedded;

#[async_trait]
impl Cluster for Embedded {
    async fn claim(&self, _conn: &LocalConn) -> bool {
        true
    }

    async fn release(&self, _conn: &LocalConn) -> bool {
        true
    }

    async fn online_elsewhere(&self, _user: &UserId) -> bool {
        false
    }

    async fn devices_elsewhere(&self, _user: &UserId) -> Vec<DeviceId> {
        Vec::new()
    }

    fn node_id(&self) -> &str {
        "local"
    }

    async fn node_alive(&self, node: &str) -> bool {
        node == "local"
    }

    fn calls_leader(&self) -> Option<String> {
        None
    }

    fn forward_call(&self, _node: &str, _user: &UserId, _device: DeviceId, _ev: &CallEvent) {}

    fn forward(&self, entries: Vec<Queued>, _now: UnixMillis) -> Vec<Queued> {
        entries
    }

    fn frame(&self, _to: &UserId, _device: Option<DeviceId>, _json: Arc<str>) {}

    fn presence(&self, _user: &UserId, _online: bool, _last_seen: Option<UnixMillis>) {}

    fn spawn(
        self: Arc<Self>,
        _host: Arc<dyn ClusterHost>,
        _push: mpsc::Sender<PushNotice>,
    ) -> Vec<Part> {
        Vec::new()
    }
}

#[async_trait]
impl PushWindows for Embedded {
    async fn claim_push_windows(&self, notices: &[PushNotice], _window_ms: i64) -> Vec<bool> {
        // One node: the hub's own window is the whole truth.
        vec![true; notices.len()]
    }
}
