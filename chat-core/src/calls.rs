//! chat-core's side of the call seam ([`natter_common::calls`]): signaling
//! reaches devices through [`ChatState`] as a [`DeviceLink`], and gets `call.*`
//! frames through the [`CallFrames`] handler the binary installs.

use crate::push::{PushNotice, PushReason};
use crate::state::ChatState;
use natter_common::calls::{BoxFuture, CallFrames, DeviceGen, DeviceLink, Devices};
use natter_proto::{CallId, DeviceId, ServerFrame, UserId};
use std::sync::Arc;

impl ChatState {
    /// Installs call signaling. Returns false if one was installed already.
    pub fn set_call_handler(&self, handler: Arc<dyn CallFrames>) -> bool {
        self.0.calls.set(handler).is_ok()
    }

    /// This service as the device link signaling sends through.
    pub fn device_link(&self) -> Arc<dyn DeviceLink> {
        Arc::new(self.clone())
    }

    pub(crate) fn call_handler(&self) -> Option<&Arc<dyn CallFrames>> {
        self.0.calls.get()
    }
}

impl DeviceLink for ChatState {
    /// Through [`ChatState::send_frame`], so devices on other nodes get the
    /// frame too. `AllBut(Some(_))` reaches this node's devices only: the
    /// signaling core addresses devices one by one instead.
    fn send(&self, user: &UserId, to: Devices, frame: &ServerFrame) -> usize {
        let json: Arc<str> = Arc::from(frame.to_json());
        match to {
            Devices::One(d) => self.send_frame(user, Some(d), json),
            Devices::AllBut(None) => self.send_frame(user, None, json),
            Devices::AllBut(Some(except)) => {
                for d in self.0.hub.online_devices(user) {
                    if d != except {
                        self.send_frame(user, Some(d), json.clone());
                    }
                }
            }
        }
        1
    }

    fn online_devices<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, Vec<DeviceId>> {
        Box::pin(async move {
            let mut devices = self.0.hub.online_devices(user);
            for d in self.0.cluster.devices_elsewhere(user).await {
                if !devices.contains(&d) {
                    devices.push(d);
                }
            }
            devices.sort_unstable();
            devices
        })
    }

    fn node_id(&self) -> String {
        self.0.cluster.node_id().to_owned()
    }

    fn node_alive<'a>(&'a self, node: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(self.0.cluster.node_alive(node))
    }

    fn presence_visible<'a>(&'a self, user: &'a UserId, viewer: &'a UserId) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let store = &*self.0.store;
            match store.presence(user).await {
                Ok((privacy, _)) => crate::presence::may_see(store, privacy, user, viewer).await,
                // Unknown: say nothing rather than too much.
                Err(_) => false,
            }
        })
    }

    fn push_call(&self, user: &UserId, devices: &[DeviceGen], _call_id: &CallId, _from: &UserId) {
        let Some(tx) = self.0.push.upgrade() else {
            return; // shutting down
        };
        let at = self.0.clock.now_ms();
        for d in devices {
            let notice = PushNotice {
                user: user.clone(),
                device: d.device,
                generation: d.generation,
                at,
                reason: PushReason::Call,
            };
            if tx.try_send(notice).is_err() {
                metrics::counter!("chat_push_total", "result" => "dropped").increment(1);
            }
        }
    }
}
