//! The pipeline's decisions for one authenticated device connection, as a
//! sans-IO core: no sockets, no database, no clock.
//!
//! [`Session`] takes inputs (`handle_*`: a text frame, a commit result, a page
//! fetched from the queue, a live delivery, a timer) and returns the
//! [`Effect`]s the driver must carry out, in order: frames to write, operations
//! to persist, pages to fetch, pings, closes.
//!
//! Driving contract: call [`Session::start`] once after registering the
//! connection (subscribe before reading the backlog, so no delivery is lost);
//! after each `handle_*`, apply every returned effect in order; then sleep until
//! [`Session::poll_timeout`] and call [`Session::handle_timeout`]. Stop reading
//! the socket while [`Session::wants_frames`] is false. Time is Unix
//! milliseconds, always passed in.
//!
//! Delivery: the queue in the store is the truth; live deliveries are a
//! shortcut. The session starts *draining* (fetching pages of the queue after
//! `cursor`, the last sequence number written to the socket) and goes *live*
//! once a page comes back short and no live delivery newer than `cursor` was
//! seen meanwhile. Live deliveries at or below `cursor` are duplicates and are
//! dropped. At most `window` messages and receipts are unacknowledged at once;
//! when the window is full the session falls back to draining, and the entries
//! wait in the store (nothing is lost; they are fetched when the device acks).
//! This relies on sequence numbers growing in commit order per device, which
//! the single writer guarantees.

pub mod fuzz;
pub mod limits;

use crate::account_limits::AccountLimit;
use limits::Gcra;
use natter_common::UnixMillis;
use natter_common::ratelimit::Quota;
use natter_proto::{
    CallClientFrame, ClientFrame, CloseCode, DecodeError, ErrorCode, ErrorFrame, Kind,
    MAX_IDS_PER_FRAME, MAX_USERS_PER_FRAME, MsgId, Ping, ReceiptId, Send, ServerFrame, Synced,
    TypingSend, UserId,
};
use std::collections::HashSet;
use std::sync::Arc;

/// Limits one session enforces.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest decoded body.
    pub max_body_bytes: usize,
    /// Unacknowledged deliveries at once.
    pub window: u32,
    /// Sends awaiting commit before the socket is not read further.
    pub max_pending_sends: u32,
    /// Ping interval.
    pub heartbeat_ms: i64,
    /// Close after this much silence.
    pub idle_timeout_ms: i64,
    /// All frames.
    pub limit_frames: Quota,
    /// `send` frames.
    pub limit_sends: Quota,
    /// `typing` frames.
    pub limit_typing: Quota,
    /// Refused frames before a flood close.
    pub limit_refused: Quota,
    /// Presence subscriptions.
    pub max_subscriptions: usize,
}

impl SessionConfig {
    /// From the service configuration.
    pub fn from_chat(cfg: &crate::ChatConfig) -> Self {
        Self {
            max_body_bytes: cfg.max_body_bytes,
            window: cfg.window,
            max_pending_sends: cfg.max_pending_sends,
            heartbeat_ms: i64::from(cfg.heartbeat_secs) * 1000,
            idle_timeout_ms: i64::from(cfg.idle_timeout_secs) * 1000,
            limit_frames: cfg.limit_frames,
            limit_sends: cfg.limit_sends,
            limit_typing: cfg.limit_typing,
            limit_refused: cfg.limit_refused,
            max_subscriptions: cfg.max_presence_subscriptions,
        }
    }
}

/// What a queued delivery is, for window accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemRef {
    /// A message (acknowledged by `delivered`).
    Msg(MsgId),
    /// A receipt (acknowledged by `ack`).
    Receipt(ReceiptId),
}

/// A queue entry ready to write: its position, what it is, and its JSON.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Queue sequence number.
    pub seq: i64,
    /// The device's previous queue entry when this one was committed (0: none),
    /// when the store knows it. With several nodes, live deliveries can arrive
    /// out of commit order; an entry whose predecessor was never written here
    /// reveals the gap, and the session reads the queue instead.
    pub prev: Option<i64>,
    /// What it is.
    pub item: ItemRef,
    /// The frame, serialised once (a message fanned out to many devices shares it).
    pub json: Arc<str>,
}

/// Something to persist through the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Persist {
    /// Store and fan out a message.
    Send(Send),
    /// Messages delivered to this device.
    Delivered(Vec<MsgId>),
    /// Messages read by the user.
    Read(Vec<MsgId>),
    /// Receipts stored by this device.
    Ack(Vec<ReceiptId>),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write a frame built by the session.
    Frame(ServerFrame),
    /// Write a queued entry's JSON.
    Deliver(Arc<str>),
    /// Hand an operation to the writer.
    Persist(Persist),
    /// Read queue entries after `after_seq`, at most `limit`, then call
    /// [`Session::handle_fetched`].
    Fetch {
        /// Exclusive lower bound.
        after_seq: i64,
        /// Page size.
        limit: u32,
    },
    /// Forward a typing indicator to whoever is online.
    Typing(TypingSend),
    /// Start presence updates for these users (and send their current state).
    Subscribe(Vec<UserId>),
    /// Stop presence updates for these users.
    Unsubscribe(Vec<UserId>),
    /// Send a WebSocket ping.
    Ping,
    /// The device is alive: refresh its last-seen time.
    Touch,
    /// Close the socket with this code (the last effect of a session).
    Close(CloseCode),
    /// Hand a `call.*` frame to call signaling.
    Call(CallClientFrame),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Draining,
    Live,
}

/// One device connection's state.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    mode: Mode,
    fetching: bool,
    cursor: i64,
    /// Highest live sequence number seen while draining.
    max_live_seen: i64,
    synced: bool,
    /// A resync arrived while a fetch was in flight: fetch once more after it.
    refetch: bool,
    in_msgs: HashSet<MsgId>,
    in_receipts: HashSet<ReceiptId>,
    pending_sends: u32,
    frames: Gcra,
    sends: Gcra,
    typing: Gcra,
    refused: Gcra,
    subscriptions: HashSet<UserId>,
    /// The account's send budget, shared by its sockets on this node.
    user_sends: Option<(Arc<AccountLimit>, String)>,
    last_heard: UnixMillis,
    next_ping: UnixMillis,
    closed: bool,
}

impl Session {
    /// A session for a device authenticated at `now`.
    pub fn new(cfg: SessionConfig, now: UnixMillis) -> Self {
        Self {
            frames: Gcra::new(cfg.limit_frames),
            sends: Gcra::new(cfg.limit_sends),
            typing: Gcra::new(cfg.limit_typing),
            refused: Gcra::new(cfg.limit_refused),
            next_ping: now + cfg.heartbeat_ms,
            cfg,
            mode: Mode::Draining,
            fetching: false,
            cursor: 0,
            max_live_seen: 0,
            synced: false,
            refetch: false,
            in_msgs: HashSet::new(),
            in_receipts: HashSet::new(),
            pending_sends: 0,
            subscriptions: HashSet::new(),
            user_sends: None,
            last_heard: now,
            closed: false,
        }
    }

    /// Shares `limiter` (keyed by `user`) as the account's send budget, on
    /// top of this socket's own.
    pub fn with_user_sends(mut self, limiter: Arc<AccountLimit>, user: &UserId) -> Self {
        self.user_sends = Some((limiter, user.0.clone()));
        self
    }

    // --- getters ---

    /// Whether the driver should read more frames (false while too many sends
    /// await their commit).
    pub fn wants_frames(&self) -> bool {
        !self.closed && self.pending_sends < self.cfg.max_pending_sends
    }

    /// Deliveries written and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.in_msgs.len() + self.in_receipts.len()
    }

    /// Whether the backlog has been drained and deliveries go straight out.
    pub fn is_live(&self) -> bool {
        self.mode == Mode::Live
    }

    /// Whether a close effect was emitted.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Current presence subscriptions.
    pub fn subscriptions(&self) -> impl Iterator<Item = &UserId> {
        self.subscriptions.iter()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> UnixMillis {
        self.next_ping
            .min(self.last_heard + self.cfg.idle_timeout_ms)
    }

    // --- inputs ---

    /// Begins draining the device's queue.
    pub fn start(&mut self, _now: UnixMillis) -> Vec<Effect> {
        let mut out = Vec::new();
        self.maybe_fetch(&mut out);
        out
    }

    /// A pong or any other sign of life.
    pub fn handle_activity(&mut self, now: UnixMillis) {
        self.last_heard = self.last_heard.max(now);
    }

    /// A binary frame: this protocol has none.
    pub fn handle_binary(&mut self, now: UnixMillis) -> Vec<Effect> {
        self.handle_activity(now);
        let mut out = Vec::new();
        self.refuse(
            now,
            ErrorFrame::new(
                ErrorCode::MalformedFrame,
                "binary frames are not part of this protocol; send JSON text",
            ),
            &mut out,
        );
        out
    }

    /// A text frame from the device.
    pub fn handle_text(&mut self, now: UnixMillis, text: &str) -> Vec<Effect> {
        self.handle_activity(now);
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if let Err(wait) = self.frames.check(now) {
            let (t, id) = natter_proto::describe_frame(text);
            let mut e =
                ErrorFrame::new(ErrorCode::RateLimited, "too many frames on this connection")
                    .about(t, id);
            e.retry_after_ms = Some(wait);
            self.refuse(now, e, &mut out);
            return out;
        }
        let frame = match natter_proto::decode_client_frame(text) {
            Ok(f) => f,
            Err(e) => {
                let id = match &e {
                    DecodeError::Invalid { .. } => natter_proto::describe_frame(text).1,
                    _ => None,
                };
                let err = ErrorFrame::new(e.code(), e.to_string())
                    .about(e.frame_type().map(str::to_owned), id);
                self.refuse(now, err, &mut out);
                return out;
            }
        };
        self.handle_frame(now, frame, &mut out);
        out
    }

    /// The writer answered a send.
    pub fn handle_sent(
        &mut self,
        now: UnixMillis,
        outcome: crate::store::SendOutcome,
        client_id: &str,
    ) -> Vec<Effect> {
        use crate::store::SendOutcome;
        self.pending_sends = self.pending_sends.saturating_sub(1);
        let mut out = Vec::new();
        match outcome {
            SendOutcome::Stored(s) | SendOutcome::Duplicate(s) => {
                out.push(Effect::Frame(ServerFrame::Sent(s)))
            }
            SendOutcome::Refused(code, why) => {
                // A refusal names a real problem of the client's; it does not count
                // towards the flood limit (the client could not know in advance).
                let _ = now;
                out.push(Effect::Frame(ServerFrame::Error(
                    ErrorFrame::new(code, why)
                        .about(Some("send".into()), Some(client_id.to_owned())),
                )));
            }
        }
        out
    }

    /// The writer could not commit a send (the client may resend it).
    pub fn handle_send_failed(&mut self, _now: UnixMillis, client_id: &str) -> Vec<Effect> {
        self.pending_sends = self.pending_sends.saturating_sub(1);
        vec![Effect::Frame(ServerFrame::Error(
            ErrorFrame::new(
                ErrorCode::InternalError,
                "the message could not be stored; send it again",
            )
            .about(Some("send".into()), Some(client_id.to_owned())),
        ))]
    }

    /// Ids of a `delivered`, `read` or `ack` frame that named nothing pending.
    pub fn handle_unknown_ids(
        &mut self,
        _now: UnixMillis,
        frame_type: &str,
        ids: &[u64],
    ) -> Vec<Effect> {
        if ids.is_empty() {
            return Vec::new();
        }
        let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
        let more = if ids.len() > 20 {
            format!(" and {} more", ids.len() - 20)
        } else {
            String::new()
        };
        let what = if frame_type == "ack" {
            "receipt"
        } else {
            "message"
        };
        vec![Effect::Frame(ServerFrame::Error(
            ErrorFrame::new(
                ErrorCode::UnknownMessage,
                format!(
                    "no pending {what} with id {}{more} for this device",
                    shown.join(", ")
                ),
            )
            .about(Some(frame_type.to_owned()), None),
        ))]
    }

    /// A page of the queue, fetched after an [`Effect::Fetch`] with `limit`.
    pub fn handle_fetched(
        &mut self,
        _now: UnixMillis,
        page: Vec<Delivery>,
        limit: u32,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.fetching = false;
        let short = page.len() < limit as usize;
        for d in page {
            if d.seq > self.cursor {
                self.write(d, &mut out);
            }
        }
        if std::mem::take(&mut self.refetch) {
            self.mode = Mode::Draining;
            self.maybe_fetch(&mut out);
        } else if short
            && self.max_live_seen <= self.cursor
            && self.inflight() < self.cfg.window as usize
        {
            self.mode = Mode::Live;
            if !self.synced {
                self.synced = true;
                out.push(Effect::Frame(ServerFrame::Synced(Synced {})));
            }
        } else {
            self.maybe_fetch(&mut out);
        }
        out
    }

    /// Fetching failed; try again on the next acknowledgement or timer.
    pub fn handle_fetch_failed(&mut self, _now: UnixMillis) {
        self.fetching = false;
    }

    /// Live deliveries may have been lost (the cross-node bus reconnected, the
    /// registry was rebuilt): read the queue after `cursor` once more.
    pub fn handle_resync(&mut self, _now: UnixMillis) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if self.fetching {
            self.refetch = true;
        } else {
            self.mode = Mode::Draining;
            self.maybe_fetch(&mut out);
        }
        out
    }

    /// A queue entry committed while this device is connected.
    pub fn handle_live(&mut self, _now: UnixMillis, d: Delivery) -> Vec<Effect> {
        let mut out = Vec::new();
        if d.seq <= self.cursor || self.closed {
            return out;
        }
        if self.mode == Mode::Live && d.prev.is_some_and(|p| p > self.cursor) {
            // An earlier entry of this device has not reached us (it was routed
            // through another node and is still in flight, or was lost): the
            // queue has both, in order.
            self.mode = Mode::Draining;
            self.max_live_seen = d.seq;
            self.maybe_fetch(&mut out);
            return out;
        }
        match self.mode {
            Mode::Live if self.inflight() < self.cfg.window as usize => self.write(d, &mut out),
            Mode::Live => {
                // Window full: the entry waits in the store and is fetched once
                // the device acknowledges.
                self.mode = Mode::Draining;
                self.max_live_seen = d.seq;
            }
            Mode::Draining => {
                self.max_live_seen = self.max_live_seen.max(d.seq);
                self.maybe_fetch(&mut out);
            }
        }
        out
    }

    /// Timers: heartbeat pings and the idle timeout.
    pub fn handle_timeout(&mut self, now: UnixMillis) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if now - self.last_heard >= self.cfg.idle_timeout_ms {
            self.close(CloseCode::IdleTimeout, &mut out);
            return out;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.cfg.heartbeat_ms;
            out.push(Effect::Ping);
            out.push(Effect::Touch);
        }
        if self.mode == Mode::Draining {
            self.maybe_fetch(&mut out);
        }
        out
    }

    // --- helpers ---

    fn handle_frame(&mut self, now: UnixMillis, frame: ClientFrame, out: &mut Vec<Effect>) {
        match frame {
            ClientFrame::Auth(_) => self.refuse(
                now,
                ErrorFrame::new(
                    ErrorCode::AlreadyAuthenticated,
                    "this connection is already authenticated",
                )
                .about(Some("auth".into()), None),
                out,
            ),
            ClientFrame::Send(s) => self.handle_send(now, s, out),
            ClientFrame::Delivered(ids) => {
                if let Some(ids) = self.check_ids(now, "delivered", ids.ids, out) {
                    for id in &ids {
                        self.in_msgs.remove(id);
                    }
                    out.push(Effect::Persist(Persist::Delivered(ids)));
                    self.after_ack(out);
                }
            }
            ClientFrame::Read(ids) => {
                if let Some(ids) = self.check_ids(now, "read", ids.ids, out) {
                    out.push(Effect::Persist(Persist::Read(ids)));
                }
            }
            ClientFrame::Ack(ids) => {
                if let Some(ids) = self.check_ids(now, "ack", ids.ids, out) {
                    for id in &ids {
                        self.in_receipts.remove(id);
                    }
                    out.push(Effect::Persist(Persist::Ack(ids)));
                    self.after_ack(out);
                }
            }
            ClientFrame::Typing(t) => {
                if !t.to.is_valid() {
                    self.invalid(now, "typing", None, "to: not a valid user or group id", out);
                } else if let Err(wait) = self.typing.check(now) {
                    let mut e =
                        ErrorFrame::new(ErrorCode::RateLimited, "too many typing indicators")
                            .about(Some("typing".into()), None);
                    e.retry_after_ms = Some(wait);
                    self.refuse(now, e, out);
                } else {
                    out.push(Effect::Typing(t));
                }
            }
            ClientFrame::PresenceSubscribe(u) => {
                if u.users.is_empty()
                    || u.users.len() > MAX_USERS_PER_FRAME
                    || u.users.iter().any(|u| !u.is_valid())
                {
                    self.invalid(
                        now,
                        "presence.subscribe",
                        None,
                        "users: 1 to 256 valid user ids",
                        out,
                    );
                    return;
                }
                let new: Vec<UserId> = u
                    .users
                    .into_iter()
                    .filter(|u| !self.subscriptions.contains(u))
                    .collect();
                let new: Vec<UserId> = {
                    let mut seen = HashSet::new();
                    new.into_iter().filter(|u| seen.insert(u.clone())).collect()
                };
                if self.subscriptions.len() + new.len() > self.cfg.max_subscriptions {
                    out.push(Effect::Frame(ServerFrame::Error(
                        ErrorFrame::new(
                            ErrorCode::SubscriptionLimit,
                            format!(
                                "at most {} presence subscriptions per connection",
                                self.cfg.max_subscriptions
                            ),
                        )
                        .about(Some("presence.subscribe".into()), None),
                    )));
                    return;
                }
                self.subscriptions.extend(new.iter().cloned());
                if !new.is_empty() {
                    out.push(Effect::Subscribe(new));
                }
            }
            ClientFrame::PresenceUnsubscribe(u) => {
                let gone: Vec<UserId> = u
                    .users
                    .into_iter()
                    .filter(|u| self.subscriptions.remove(u))
                    .collect();
                if !gone.is_empty() {
                    out.push(Effect::Unsubscribe(gone));
                }
            }
            ClientFrame::Ping(Ping { nonce }) => {
                out.push(Effect::Frame(ServerFrame::Pong(Ping { nonce })))
            }
            call => {
                // Every remaining type is a call frame; signaling checks it.
                if let Ok(c) = call.into_call() {
                    out.push(Effect::Call(c));
                }
            }
        }
    }

    fn handle_send(&mut self, now: UnixMillis, s: Send, out: &mut Vec<Effect>) {
        let id = Some(s.id.0.clone());
        if !s.id.is_valid() {
            return self.invalid(
                now,
                "send",
                id,
                "id: 1 to 64 characters of A-Z a-z 0-9 _ - . :",
                out,
            );
        }
        if !s.to.is_valid() {
            return self.invalid(now, "send", id, "to: not a valid user or group id", out);
        }
        if !s.kind.is_valid() || s.kind.as_str() == Kind::SYSTEM {
            return self.invalid(
                now,
                "send",
                id,
                "kind: 1 to 32 characters of a-z 0-9 _ - . (\"system\" is reserved)",
                out,
            );
        }
        if s.body.len() > self.cfg.max_body_bytes {
            let e = ErrorFrame::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "body is {} bytes; the limit is {}",
                    s.body.len(),
                    self.cfg.max_body_bytes
                ),
            )
            .about(Some("send".into()), id);
            return self.refuse(now, e, out);
        }
        if let Err(wait) = self.sends.check(now) {
            let mut e = ErrorFrame::new(
                ErrorCode::RateLimited,
                "too many messages; resend after the wait",
            )
            .about(Some("send".into()), id);
            e.retry_after_ms = Some(wait);
            return self.refuse(now, e, out);
        }
        if let Some((limiter, user)) = &self.user_sends
            && let Err(r) = limiter.check(user, now)
        {
            let mut e = ErrorFrame::new(
                ErrorCode::RateLimited,
                "too many messages from this account (all its devices); resend after the wait",
            )
            .about(Some("send".into()), id);
            e.retry_after_ms = Some(r.wait_ms.max(1) as u64);
            return self.refuse(now, e, out);
        }
        self.pending_sends += 1;
        out.push(Effect::Persist(Persist::Send(s)));
    }

    fn check_ids<T: Copy + Eq + std::hash::Hash>(
        &mut self,
        now: UnixMillis,
        frame_type: &str,
        ids: Vec<T>,
        out: &mut Vec<Effect>,
    ) -> Option<Vec<T>> {
        if ids.is_empty() || ids.len() > MAX_IDS_PER_FRAME {
            self.invalid(
                now,
                frame_type,
                None,
                &format!("ids: 1 to {MAX_IDS_PER_FRAME} ids"),
                out,
            );
            return None;
        }
        let mut seen = HashSet::new();
        Some(ids.into_iter().filter(|i| seen.insert(*i)).collect())
    }

    fn after_ack(&mut self, out: &mut Vec<Effect>) {
        if self.mode == Mode::Draining {
            self.maybe_fetch(out);
        }
    }

    /// Fetches when draining, not already fetching, and the window is at most
    /// half full (so pages are not tiny).
    fn maybe_fetch(&mut self, out: &mut Vec<Effect>) {
        let window = self.cfg.window as usize;
        if self.mode != Mode::Draining || self.fetching || self.closed {
            return;
        }
        let inflight = self.inflight();
        if inflight > window / 2 && inflight != 0 {
            return;
        }
        self.fetching = true;
        out.push(Effect::Fetch {
            after_seq: self.cursor,
            limit: (window - inflight) as u32,
        });
    }

    fn write(&mut self, d: Delivery, out: &mut Vec<Effect>) {
        self.cursor = d.seq;
        match d.item {
            ItemRef::Msg(id) => {
                self.in_msgs.insert(id);
            }
            ItemRef::Receipt(id) => {
                self.in_receipts.insert(id);
            }
        }
        out.push(Effect::Deliver(d.json));
    }

    fn invalid(
        &mut self,
        now: UnixMillis,
        frame_type: &str,
        id: Option<String>,
        why: &str,
        out: &mut Vec<Effect>,
    ) {
        let e = ErrorFrame::new(
            ErrorCode::InvalidFrame,
            format!("invalid {frame_type:?} frame: {why}"),
        )
        .about(Some(frame_type.to_owned()), id);
        self.refuse(now, e, out);
    }

    /// Answers a refused frame; too many refusals close the socket as a flood.
    fn refuse(&mut self, now: UnixMillis, e: ErrorFrame, out: &mut Vec<Effect>) {
        out.push(Effect::Frame(ServerFrame::Error(e)));
        if self.refused.check(now).is_err() {
            self.close(CloseCode::PolicyViolation, out);
        }
    }

    fn close(&mut self, code: CloseCode, out: &mut Vec<Effect>) {
        if !self.closed {
            self.closed = true;
            out.push(Effect::Close(code));
        }
    }
}

#[cfg(test)]
mod tests;
