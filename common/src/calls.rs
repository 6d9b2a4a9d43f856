//! The seam between chat-core (which owns device sockets) and signaling (which
//! owns calls), so neither service crate depends on the other; the `natter`
//! binary plugs one into the other.
//!
//! chat-core hands every `call.*` frame, and every socket connect and
//! disconnect, to a [`CallFrames`] handler; signaling answers through a
//! [`DeviceLink`]: frames to a device or to all of a user's connected devices,
//! and VoIP pushes to offline ones.

use natter_proto::{CallClientFrame, CallId, DeviceId, ServerFrame, UserId};

/// Implemented by signaling; called by chat-core from socket tasks. Methods
/// must not block: queue work and return.
pub trait CallFrames: Send + Sync + 'static {
    /// A `call.*` frame from an authenticated device.
    fn handle_frame(&self, user: &UserId, device: DeviceId, frame: CallClientFrame);
    /// A device's socket is registered (it can receive frames now).
    fn device_connected(&self, user: &UserId, device: DeviceId);
    /// A device's socket closed.
    fn device_disconnected(&self, user: &UserId, device: DeviceId);
}

/// Which of a user's connected devices a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// This one.
    One(DeviceId),
    /// All of them but this one (if any).
    AllBut(Option<DeviceId>),
}

/// A registered device of a user, with its credential generation (pushes go to
/// the generation that registered the push token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceGen {
    /// Device.
    pub device: DeviceId,
    /// Its credential generation.
    pub generation: i64,
}

/// Implemented by chat-core; used by signaling. Frames are ephemeral: a device
/// that is not connected does not get them (calls reach offline devices by push).
pub trait DeviceLink: Send + Sync + 'static {
    /// Sends a frame to connected devices of `user`; returns how many got it.
    fn send(&self, user: &UserId, to: Devices, frame: &ServerFrame) -> usize;
    /// The devices of `user` connected now, on any node.
    fn online_devices<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Vec<DeviceId>>;
    /// Whether `viewer` may see `user`'s presence (their privacy setting and
    /// contacts); when not, calls must not reveal which devices are online.
    fn presence_visible<'a>(&'a self, user: &'a UserId, viewer: &'a UserId) -> BoxFuture<'a, bool>;
    /// Wakes offline devices for a ringing call (a VoIP push).
    fn push_call(&self, user: &UserId, devices: &[DeviceGen], call_id: &CallId, from: &UserId);
    /// This node's name in the cluster (`local` in the embedded shape): the
    /// owner recorded with a live call.
    fn node_id(&self) -> String;
    /// Whether `node` runs (a recent heartbeat); the embedded shape knows
    /// only itself. Live calls of a node that does not are closed.
    fn node_alive<'a>(&'a self, node: &'a str) -> BoxFuture<'a, bool>;
}

/// A boxed future (this crate does not depend on `async-trait`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
