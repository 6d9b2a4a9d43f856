//! State shared by the socket tasks, the REST handlers and the background jobs.

use crate::ChatConfig;
use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::pipeline::SessionConfig;
use crate::store::MessageStore;
use crate::writer::Writer;
use axum::extract::FromRef;
use natter_common::token::TokenKeys;
use natter_common::{SharedClock, TokenVerifier};
use natter_proto::{DeviceId, UserId};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Handler state (cheap to clone).
#[derive(Clone)]
pub struct ChatState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) cfg: ChatConfig,
    pub(crate) session_cfg: SessionConfig,
    pub(crate) store: Arc<dyn MessageStore>,
    pub(crate) hub: Arc<Hub>,
    /// Sockets on other nodes ([`crate::cluster::Embedded`] in one process).
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) writer: Writer,
    pub(crate) clock: SharedClock,
    pub(crate) tokens: Arc<TokenKeys>,
    /// Cancelled when the process drains: sockets close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Call signaling, once the binary plugs it in (`call.*` frames are
    /// refused with `calls_unavailable` until then).
    pub(crate) calls: std::sync::OnceLock<Arc<dyn natter_common::calls::CallFrames>>,
    /// The push queue, for VoIP pushes. Weak: the push task ends when the
    /// writer, its owner, is gone.
    pub(crate) push: tokio::sync::mpsc::WeakSender<crate::push::PushNotice>,
    /// `send` frames per account (`chat.limit_sends_per_user`).
    pub(crate) user_sends: Arc<crate::account_limits::AccountLimit>,
    /// REST group changes per account (`chat.limit_group_writes`).
    pub(crate) group_writes: Arc<crate::account_limits::AccountLimit>,
    /// Sockets not yet authenticated, per client address.
    pub(crate) unauthenticated: Arc<natter_common::listener::AddressCounts>,
}

impl ChatState {
    /// The store (for tests and tools).
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.0.store
    }

    /// Delivers an ephemeral frame (already JSON) to `to`'s connected devices,
    /// or to one device, on whichever node holds their sockets. Never queued:
    /// a device that is not connected now misses it. This is the one way to
    /// reach a device's socket from outside its connection (typing, presence
    /// snapshots' peers, call signaling).
    pub fn send_frame(&self, to: &UserId, device: Option<DeviceId>, json: Arc<str>) {
        let inner = &self.0;
        match device {
            None => {
                inner.hub.send_ephemeral(to, &json);
            }
            Some(d) => {
                inner.hub.send_device(to, d, &json);
            }
        }
        inner.cluster.frame(to, device, json);
    }

    /// Whether any device of `user` has a socket on any node (no privacy
    /// rule applied: for server-side decisions such as ringing or pushing).
    pub async fn is_connected(&self, user: &UserId) -> bool {
        self.0.hub.is_online(user) || self.0.cluster.online_elsewhere(user).await
    }

    /// Number of connected sockets in this process.
    pub fn socket_count(&self) -> usize {
        self.0.hub.socket_count()
    }
}

impl FromRef<ChatState> for TokenVerifier {
    fn from_ref(state: &ChatState) -> Self {
        TokenVerifier {
            keys: state.0.tokens.clone(),
            clock: state.0.clock.clone(),
            // Checks the device itself, with its own store.
            live: None,
        }
    }
}
