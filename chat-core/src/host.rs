//! The chat state as the cluster's host ([`ClusterHost`]): the one place the
//! cluster's background tasks meet the state, so `cluster` does not depend on
//! `state` (nor `presence` or `calls`).

use crate::account_limits::AccountLimit;
use crate::call_event::CallEvent;
use crate::cluster::ClusterHost;
use crate::hub::Hub;
use crate::state::ChatState;
use natter_common::UnixMillis;
use natter_proto::{DeviceId, UserId};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl ClusterHost for ChatState {
    fn hub(&self) -> &Arc<Hub> {
        &self.0.hub
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    fn account_limit(&self, name: &str) -> Option<&Arc<AccountLimit>> {
        match name {
            "sends" => Some(&self.0.user_sends),
            "group_writes" => Some(&self.0.group_writes),
            _ => None,
        }
    }

    fn account_limits(&self) -> Vec<Arc<AccountLimit>> {
        vec![self.0.user_sends.clone(), self.0.group_writes.clone()]
    }

    fn call_event_from_bus(&self, user: &UserId, device: DeviceId, ev: CallEvent) {
        ChatState::call_event_from_bus(self, user, device, ev);
    }

    fn announce_local(&self, user: &UserId, online: bool, last_seen: Option<UnixMillis>) {
        crate::presence::announce_local(self, user, online, last_seen);
    }
}
