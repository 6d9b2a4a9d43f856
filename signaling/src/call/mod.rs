//! The call state machine, sans-IO: no sockets, no database, no clock.
//!
//! [`Calls`] holds every live call of this process. Inputs are `handle_*`
//! methods (a `call.*` frame from a device, a device connecting or
//! disconnecting, a timer); each returns the [`Effect`]s the driver must carry
//! out, in order: frames to one device or to every connected device of a user,
//! VoIP pushes to offline devices, and a [`CallRecord`] for the call log when a
//! call ends.
//!
//! Driving contract: after each `handle_*`, apply every returned effect in
//! order; then sleep until [`Calls::poll_timeout`] and call
//! [`Calls::handle_timeout`]. Time is Unix milliseconds, always passed in.
//!
//! Life of a call: `call.offer` → *ringing* on every device of the callee
//! (connected ones get `call.incoming`, offline ones a push, and devices that
//! connect while it rings get it too) → `call.answer` from one device makes it
//! *active* between the caller's device and that device (the others get
//! `call.ended{answered_elsewhere}`) → `call.hangup` from either ends it.
//! Before an answer it can also end as rejected, busy, missed (ring timeout),
//! cancelled (the caller hangs up) or glare. A device of an active call (or
//! the caller's device of a ringing call) that disconnects has
//! `reconnect_grace_ms` to come back before the call ends as
//! `connection_lost`: mobile sockets drop on network changes while the media
//! path survives (or is restarted with `call.update`).
//!
//! Glare: when A offers B while B's offer to A is still ringing, the call with
//! the smaller id survives and the other ends with `glare`, the same decision
//! whichever offer the server saw first.

mod limits;
mod record;
#[cfg(test)]
mod tests;

pub use limits::OfferLimits;
pub use record::{CallOutcome, CallRecord, LiveCall};

use natter_common::UnixMillis;
use natter_proto::{
    CallAnswer, CallAnswered, CallClientFrame, CallEnded, CallIce, CallId, CallIncoming, CallMedia,
    CallOffer, CallRinging, CallUpdate, DeviceId, EndReason, ErrorCode, ErrorFrame, From as Party,
    ServerFrame, UserId,
};
use std::collections::{BTreeSet, HashMap, HashSet};

/// A device: an account and one of its devices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceAddr {
    /// Account.
    pub user: UserId,
    /// Device.
    pub device: DeviceId,
}

impl DeviceAddr {
    /// `user`'s `device`.
    pub fn new(user: UserId, device: DeviceId) -> Self {
        Self { user, device }
    }
}

/// Timing rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRules {
    /// How long a call rings before it is missed.
    pub ring_timeout_ms: i64,
    /// How long a disconnected party may take to come back.
    pub reconnect_grace_ms: i64,
}

impl Default for CallRules {
    fn default() -> Self {
        Self {
            ring_timeout_ms: 60_000,
            reconnect_grace_ms: 30_000,
        }
    }
}

/// What the driver looked up about the callee before an offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callee {
    /// The account exists.
    pub exists: bool,
    /// Every registered device of the callee.
    pub devices: Vec<DeviceId>,
    /// Those connected now.
    pub online: Vec<DeviceId>,
    /// The callee's presence privacy hides them from the caller: `call.ringing`
    /// then says nothing of which devices are online (both counts 0).
    pub presence_hidden: bool,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a frame to one device (dropped if it is not connected).
    ToDevice(DeviceAddr, ServerFrame),
    /// Send a frame to every connected device of `user` but `except`.
    ToUser {
        /// Whose devices.
        user: UserId,
        /// A device to leave out.
        except: Option<DeviceId>,
        /// The frame.
        frame: ServerFrame,
    },
    /// Wake offline devices with a VoIP push.
    Push {
        /// Whose devices.
        user: UserId,
        /// Which ones.
        devices: Vec<DeviceId>,
        /// The ringing call.
        call_id: CallId,
        /// The caller.
        from: UserId,
    },
    /// A call rings or was answered: keep it in the call log as live.
    Live(LiveCall),
    /// A call ended: append it to the call log.
    Record(CallRecord),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ringing,
    Active { device: DeviceId, since: UnixMillis },
}

#[derive(Debug, Clone)]
struct Call {
    id: CallId,
    caller: DeviceAddr,
    callee: UserId,
    media: CallMedia,
    offer_sdp: String,
    /// The callee's registered devices when it was offered: frames for "all
    /// but one device" go to each of them, so they reach every node.
    callee_devices: Vec<DeviceId>,
    created: UnixMillis,
    state: State,
    /// Parties' devices that disconnected, and when.
    away: HashMap<DeviceAddr, UnixMillis>,
}

impl Call {
    fn deadline(&self, rules: &CallRules) -> Option<UnixMillis> {
        let ring = match self.state {
            State::Ringing => Some(self.created + rules.ring_timeout_ms),
            State::Active { .. } => None,
        };
        let away = self
            .away
            .values()
            .map(|t| t + rules.reconnect_grace_ms)
            .min();
        match (ring, away) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The callee's device, once answered.
    fn answerer(&self) -> Option<DeviceAddr> {
        match self.state {
            State::Active { device, .. } => Some(DeviceAddr::new(self.callee.clone(), device)),
            State::Ringing => None,
        }
    }

    fn live(&self) -> LiveCall {
        LiveCall {
            call_id: self.id.clone(),
            caller: self.caller.user.clone(),
            caller_device: self.caller.device,
            callee: self.callee.clone(),
            media: self.media,
            started_at: self.created,
            answered: match self.state {
                State::Active { device, since } => Some((device, since)),
                State::Ringing => None,
            },
        }
    }

    fn incoming(&self, rules: &CallRules) -> ServerFrame {
        ServerFrame::CallIncoming(CallIncoming {
            call_id: self.id.clone(),
            from: Party {
                user: self.caller.user.clone(),
                device: self.caller.device,
            },
            media: self.media,
            sdp: self.offer_sdp.clone(),
            ts: self.created,
            expires: self.created + rules.ring_timeout_ms,
        })
    }
}

/// Every live call of this process.
#[derive(Debug, Default)]
pub struct Calls {
    rules: CallRules,
    calls: HashMap<CallId, Call>,
    /// Live calls each user takes part in (as caller or callee).
    by_user: HashMap<UserId, HashSet<CallId>>,
    /// (deadline, call) pairs; stale entries are skipped when they fire.
    timers: BTreeSet<(UnixMillis, CallId)>,
}

impl Calls {
    /// No calls yet.
    pub fn new(rules: CallRules) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> CallRules {
        self.rules
    }

    /// Number of live calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call is live.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The earliest time [`Calls::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// A `call.*` frame other than `call.offer` (offers need the callee looked
    /// up first: [`Calls::handle_offer`]).
    pub fn handle_frame(
        &mut self,
        now: UnixMillis,
        from: &DeviceAddr,
        frame: CallClientFrame,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let type_name = frame.type_name();
        if let Err(msg) = frame.validate() {
            out.push(error(from, ErrorCode::InvalidFrame, msg, type_name));
            return out;
        }
        match frame {
            CallClientFrame::Offer(_) => out.push(error(
                from,
                ErrorCode::InternalError,
                "offer handed to the wrong input",
                type_name,
            )),
            CallClientFrame::Answer(a) => self.answer(now, from, a, &mut out),
            CallClientFrame::Reject(r) => self.reject(now, from, &r.call_id, &mut out),
            CallClientFrame::Hangup(r) => self.hangup(now, from, &r.call_id, &mut out),
            CallClientFrame::Ice(i) => self.ice(from, i, &mut out),
            CallClientFrame::Update(u) => self.update(from, u, &mut out),
        }
        out
    }

    /// A `call.offer`, with what the driver looked up about the callee.
    pub fn handle_offer(
        &mut self,
        now: UnixMillis,
        from: &DeviceAddr,
        offer: CallOffer,
        callee: Callee,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let frame = CallClientFrame::Offer(offer);
        if let Err(msg) = frame.validate() {
            out.push(error(from, ErrorCode::InvalidFrame, msg, "call.offer"));
            return out;
        }
        let CallClientFrame::Offer(offer) = frame else {
            unreachable!("built as an offer two lines up")
        };
        if offer.to == from.user {
            out.push(error(
                from,
                ErrorCode::InvalidFrame,
                "to: cannot call yourself",
                "call.offer",
            ));
            return out;
        }
        if !callee.exists {
            out.push(error(
                from,
                ErrorCode::UnknownRecipient,
                format!("no user {}", offer.to),
                "call.offer",
            ));
            return out;
        }
        if self.calls.contains_key(&offer.call_id) {
            out.push(error(
                from,
                ErrorCode::CallExists,
                format!("call {} already exists", offer.call_id),
                "call.offer",
            ));
            return out;
        }
        let call = Call {
            id: offer.call_id.clone(),
            caller: from.clone(),
            callee: offer.to.clone(),
            media: offer.media,
            offer_sdp: offer.sdp,
            callee_devices: callee.devices.clone(),
            created: now,
            state: State::Ringing,
            away: HashMap::new(),
        };
        // Glare: the callee is ringing us right now.
        let glare = self
            .live_of(&from.user)
            .find(|c| c.caller.user == call.callee && c.state == State::Ringing)
            .map(|c| c.id.clone());
        if let Some(other) = glare {
            if call.id < other {
                tracing::debug!(call_id = %call.id, loser = %other, "glare: new offer wins");
                self.end(now, &other, EndReason::Glare, None, &mut out);
            } else {
                tracing::debug!(call_id = %call.id, winner = %other, "glare: new offer loses");
                self.refuse(now, call, EndReason::Glare, &mut out);
                return out;
            }
        }
        if self
            .live_of(&from.user)
            .next()
            .is_some_and(|c| c.caller.user == from.user || matches!(c.state, State::Active { .. }))
        {
            out.push(error(
                from,
                ErrorCode::CallInProgress,
                "hang up the current call first",
                "call.offer",
            ));
            return out;
        }
        if self.live_of(&call.callee).next().is_some() {
            self.refuse(now, call, EndReason::Busy, &mut out);
            return out;
        }
        if callee.devices.is_empty() {
            self.refuse(now, call, EndReason::Unavailable, &mut out);
            return out;
        }
        let online: Vec<DeviceId> = callee
            .online
            .iter()
            .copied()
            .filter(|d| callee.devices.contains(d))
            .collect();
        let offline: Vec<DeviceId> = callee
            .devices
            .iter()
            .copied()
            .filter(|d| !online.contains(d))
            .collect();
        tracing::debug!(call_id = %call.id, online = online.len(), offline = offline.len(), "ringing");
        out.push(Effect::ToUser {
            user: call.callee.clone(),
            except: None,
            frame: call.incoming(&self.rules),
        });
        if !offline.is_empty() {
            out.push(Effect::Push {
                user: call.callee.clone(),
                devices: offline.clone(),
                call_id: call.id.clone(),
                from: from.user.clone(),
            });
        }
        out.push(Effect::ToDevice(
            from.clone(),
            ServerFrame::CallRinging(if callee.presence_hidden {
                CallRinging {
                    call_id: call.id.clone(),
                    devices: 0,
                    pushed: 0,
                }
            } else {
                CallRinging {
                    call_id: call.id.clone(),
                    devices: online.len() as u32,
                    pushed: offline.len() as u32,
                }
            }),
        ));
        out.push(Effect::Live(call.live()));
        self.insert(call);
        out
    }

    /// A device's socket connected: it gets every call ringing for its user
    /// (a device woken by a push connects to fetch the offer), and a party
    /// coming back within the grace period keeps its call.
    pub fn handle_connected(&mut self, _now: UnixMillis, dev: &DeviceAddr) -> Vec<Effect> {
        let mut out = Vec::new();
        let ids: Vec<CallId> = self.live_of(&dev.user).map(|c| c.id.clone()).collect();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if call.away.remove(dev).is_some() {
                tracing::debug!(call_id = %id, "party reconnected");
                self.rearm(&id);
                continue;
            }
            if let Some(call) = self.calls.get(&id)
                && call.state == State::Ringing
                && call.callee == dev.user
            {
                out.push(Effect::ToDevice(dev.clone(), call.incoming(&self.rules)));
            }
        }
        out
    }

    /// A device's socket closed.
    pub fn handle_disconnected(&mut self, now: UnixMillis, dev: &DeviceAddr) -> Vec<Effect> {
        let ids: Vec<CallId> = self
            .live_of(&dev.user)
            .filter(|c| c.caller == *dev || c.answerer().as_ref() == Some(dev))
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            if let Some(call) = self.calls.get_mut(&id) {
                call.away.insert(dev.clone(), now);
            }
            self.rearm(&id);
        }
        Vec::new()
    }

    /// Ring timeouts and reconnect grace periods that have run out.
    pub fn handle_timeout(&mut self, now: UnixMillis) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some((t, id)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, id.clone()));
            let Some(call) = self.calls.get(&id) else {
                continue;
            };
            if call.deadline(&self.rules) != Some(t) {
                continue; // stale entry: the deadline moved
            }
            let lost = call
                .away
                .iter()
                .find(|(_, since)| **since + self.rules.reconnect_grace_ms <= now)
                .map(|(d, _)| d.clone());
            match lost {
                Some(dev) => self.end(now, &id, EndReason::ConnectionLost, Some(&dev), &mut out),
                None => self.end(now, &id, EndReason::Missed, None, &mut out),
            }
        }
        out
    }

    // --- inputs ---

    fn answer(&mut self, now: UnixMillis, from: &DeviceAddr, a: CallAnswer, out: &mut Vec<Effect>) {
        let Some(call) = self
            .calls
            .get_mut(&a.call_id)
            .filter(|c| c.callee == from.user)
        else {
            out.push(unknown(from, &a.call_id, "call.answer"));
            return;
        };
        match call.state {
            State::Ringing => {
                call.state = State::Active {
                    device: from.device,
                    since: now,
                };
                tracing::debug!(call_id = %call.id, device_id = from.device, "answered");
                out.push(Effect::ToDevice(
                    call.caller.clone(),
                    ServerFrame::CallAnswered(CallAnswered {
                        call_id: call.id.clone(),
                        device: from.device,
                        sdp: a.sdp,
                    }),
                ));
                let elsewhere = ended(&call.id, EndReason::AnsweredElsewhere, None);
                for d in call.callee_devices.iter().filter(|d| **d != from.device) {
                    out.push(Effect::ToDevice(
                        DeviceAddr::new(call.callee.clone(), *d),
                        elsewhere.clone(),
                    ));
                }
                out.push(Effect::Live(call.live()));
                self.rearm(&a.call_id);
            }
            // A repeated answer from the same device changes nothing.
            State::Active { device, .. } if device == from.device => {}
            State::Active { .. } => out.push(Effect::ToDevice(
                from.clone(),
                ended(&call.id, EndReason::AnsweredElsewhere, None),
            )),
        }
    }

    fn reject(&mut self, now: UnixMillis, from: &DeviceAddr, id: &CallId, out: &mut Vec<Effect>) {
        match self.calls.get(id) {
            Some(c) if c.callee == from.user && c.state == State::Ringing => {
                self.end(now, id, EndReason::Rejected, Some(from), out)
            }
            // Rejecting an answered call on the device that holds it is hanging up.
            Some(c) if c.answerer().as_ref() == Some(from) || c.caller == *from => {
                self.hangup(now, from, id, out)
            }
            _ => out.push(unknown(from, id, "call.reject")),
        }
    }

    fn hangup(&mut self, now: UnixMillis, from: &DeviceAddr, id: &CallId, out: &mut Vec<Effect>) {
        match self.calls.get(id) {
            Some(c) if c.caller == *from => {
                let reason = match c.state {
                    State::Ringing => EndReason::Cancelled,
                    State::Active { .. } => EndReason::Hangup,
                };
                self.end(now, id, reason, Some(from), out)
            }
            Some(c) if c.answerer().as_ref() == Some(from) => {
                self.end(now, id, EndReason::Hangup, Some(from), out)
            }
            // A ringing device hanging up declines.
            Some(c) if c.callee == from.user && c.state == State::Ringing => {
                self.end(now, id, EndReason::Rejected, Some(from), out)
            }
            _ => out.push(unknown(from, id, "call.hangup")),
        }
    }

    fn ice(&mut self, from: &DeviceAddr, i: CallIce, out: &mut Vec<Effect>) {
        let Some(call) = self.calls.get(&i.call_id) else {
            out.push(unknown(from, &i.call_id, "call.ice"));
            return;
        };
        let frame = ServerFrame::CallIce(i.clone());
        if call.caller == *from {
            match call.answerer() {
                Some(dev) => out.push(Effect::ToDevice(dev, frame)),
                // Trickling before the answer: every ringing device may answer.
                None => out.push(Effect::ToUser {
                    user: call.callee.clone(),
                    except: None,
                    frame,
                }),
            }
        } else if call.answerer().as_ref() == Some(from) {
            out.push(Effect::ToDevice(call.caller.clone(), frame));
        } else {
            out.push(unknown(from, &i.call_id, "call.ice"));
        }
    }

    fn update(&mut self, from: &DeviceAddr, u: CallUpdate, out: &mut Vec<Effect>) {
        let peer = self.calls.get(&u.call_id).and_then(|c| {
            let answerer = c.answerer()?;
            if c.caller == *from {
                Some(answerer)
            } else if answerer == *from {
                Some(c.caller.clone())
            } else {
                None
            }
        });
        match peer {
            Some(p) => out.push(Effect::ToDevice(p, ServerFrame::CallUpdate(u))),
            None => out.push(unknown(from, &u.call_id, "call.update")),
        }
    }

    // --- helpers ---

    fn live_of<'a>(&'a self, user: &UserId) -> impl Iterator<Item = &'a Call> + 'a {
        self.by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| self.calls.get(id))
    }

    fn insert(&mut self, call: Call) {
        let id = call.id.clone();
        for u in [&call.caller.user, &call.callee] {
            self.by_user
                .entry(u.clone())
                .or_default()
                .insert(id.clone());
        }
        self.calls.insert(id.clone(), call);
        self.rearm(&id);
    }

    /// Schedules the call's current deadline (older entries go stale).
    fn rearm(&mut self, id: &CallId) {
        if let Some(t) = self.calls.get(id).and_then(|c| c.deadline(&self.rules)) {
            self.timers.insert((t, id.clone()));
        }
    }

    /// A call that never rang: only the caller hears of it.
    fn refuse(&mut self, now: UnixMillis, call: Call, reason: EndReason, out: &mut Vec<Effect>) {
        out.push(Effect::ToDevice(
            call.caller.clone(),
            ended(&call.id, reason, None),
        ));
        out.push(Effect::Record(CallRecord::of(
            &call.id,
            &call.caller,
            &call.callee,
            call.media,
            call.created,
            None,
            now,
            reason,
        )));
    }

    /// Ends a live call: tells every party but `by` (who knows), logs it.
    fn end(
        &mut self,
        now: UnixMillis,
        id: &CallId,
        reason: EndReason,
        by: Option<&DeviceAddr>,
        out: &mut Vec<Effect>,
    ) {
        let Some(call) = self.calls.remove(id) else {
            return;
        };
        for u in [&call.caller.user, &call.callee] {
            if let Some(set) = self.by_user.get_mut(u) {
                set.remove(id);
                if set.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
        let answered = match call.state {
            State::Active { device, since } => Some((device, since)),
            State::Ringing => None,
        };
        let duration = answered.map(|(_, since)| (now - since).max(0) as u64);
        let frame = ended(id, reason, duration);
        if by != Some(&call.caller) {
            out.push(Effect::ToDevice(call.caller.clone(), frame.clone()));
        }
        match answered {
            Some((device, _)) => {
                let dev = DeviceAddr::new(call.callee.clone(), device);
                if by != Some(&dev) {
                    out.push(Effect::ToDevice(dev, frame));
                }
            }
            None => match by.filter(|d| d.user == call.callee) {
                // Every other device of the callee, one by one (see `callee_devices`).
                Some(dev) => {
                    for d in call.callee_devices.iter().filter(|d| **d != dev.device) {
                        out.push(Effect::ToDevice(
                            DeviceAddr::new(call.callee.clone(), *d),
                            frame.clone(),
                        ));
                    }
                }
                None => out.push(Effect::ToUser {
                    user: call.callee.clone(),
                    except: None,
                    frame,
                }),
            },
        }
        tracing::debug!(call_id = %id, reason = reason.as_str(), "call ended");
        out.push(Effect::Record(CallRecord::of(
            id,
            &call.caller,
            &call.callee,
            call.media,
            call.created,
            answered,
            now,
            reason,
        )));
    }
}

fn ended(id: &CallId, reason: EndReason, duration_ms: Option<u64>) -> ServerFrame {
    ServerFrame::CallEnded(CallEnded {
        call_id: id.clone(),
        reason,
        duration_ms,
    })
}

fn error(
    to: &DeviceAddr,
    code: ErrorCode,
    msg: impl Into<String>,
    ref_type: &'static str,
) -> Effect {
    Effect::ToDevice(
        to.clone(),
        ServerFrame::Error(ErrorFrame::new(code, msg).about(Some(ref_type.into()), None)),
    )
}

fn unknown(to: &DeviceAddr, id: &CallId, ref_type: &'static str) -> Effect {
    error(
        to,
        ErrorCode::UnknownCall,
        format!("no live call {id} on this device"),
        ref_type,
    )
}
