//! A device's call event as the call driver (and the bus between nodes) sees
//! it: a plain type, apart from `calls` so the cluster can carry it without
//! depending on the chat state.

use natter_proto::CallClientFrame;

/// A device's call event, for the call driver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallEvent {
    /// A `call.*` frame it sent.
    Frame(CallClientFrame),
    /// Its socket is registered.
    Connected,
    /// Its socket closed (and it has none on another node).
    Disconnected,
}

impl CallEvent {
    /// The bus name of the event (`frame`, `connected`, `disconnected`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CallEvent::Frame(_) => "frame",
            CallEvent::Connected => "connected",
            CallEvent::Disconnected => "disconnected",
        }
    }

    /// The event from its bus name and, for a frame, the frame's JSON.
    pub(crate) fn from_bus(kind: &str, frame: &str) -> Option<Self> {
        match kind {
            "frame" => serde_json::from_str::<natter_proto::ClientFrame>(frame)
                .ok()?
                .into_call()
                .ok()
                .map(CallEvent::Frame),
            "connected" => Some(CallEvent::Connected),
            "disconnected" => Some(CallEvent::Disconnected),
            _ => None,
        }
    }

    /// The frame's JSON, for the bus.
    pub(crate) fn frame_json(&self) -> Option<String> {
        match self {
            CallEvent::Frame(f) => {
                serde_json::to_string(&natter_proto::ClientFrame::from(f.clone())).ok()
            }
            _ => None,
        }
    }
}
