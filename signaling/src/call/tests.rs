//! The state machine driven through a synthetic world: users with devices,
//! some connected, inboxes per device, and a clock moved by hand, so a
//! 60-second ring timeout runs in microseconds.

use super::*;
use natter_proto::{CallRef, SdpKind};
use std::collections::BTreeMap;

const T0: UnixMillis = 1_700_000_000_000;

struct World {
    calls: Calls,
    now: UnixMillis,
    devices: BTreeMap<UserId, Vec<DeviceId>>,
    online: BTreeMap<UserId, Vec<DeviceId>>,
    inbox: BTreeMap<DeviceAddr, Vec<ServerFrame>>,
    pushes: Vec<(UserId, Vec<DeviceId>, CallId)>,
    records: Vec<CallRecord>,
    /// What the call log holds as live.
    live: BTreeMap<CallId, LiveCall>,
    /// Users whose presence the caller may not see.
    hidden: Vec<UserId>,
}

fn dev(u: &str, d: DeviceId) -> DeviceAddr {
    DeviceAddr::new(UserId::new(u), d)
}

fn id(s: &str) -> CallId {
    CallId::new(s)
}

impl World {
    /// alice (1), bob (1, 2), carol (1); everyone online.
    fn new() -> Self {
        let mut w = World {
            calls: Calls::new(CallRules::default()),
            now: T0,
            devices: BTreeMap::new(),
            online: BTreeMap::new(),
            inbox: BTreeMap::new(),
            pushes: Vec::new(),
            records: Vec::new(),
            live: BTreeMap::new(),
            hidden: Vec::new(),
        };
        for (u, ds) in [("alice", vec![1]), ("bob", vec![1, 2]), ("carol", vec![1])] {
            w.devices.insert(UserId::new(u), ds.clone());
            w.online.insert(UserId::new(u), ds);
        }
        w
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::ToDevice(d, f) => {
                    if self
                        .online
                        .get(&d.user)
                        .is_some_and(|l| l.contains(&d.device))
                    {
                        self.inbox.entry(d).or_default().push(f);
                    }
                }
                Effect::ToUser {
                    user,
                    except,
                    frame,
                } => {
                    for d in self.online.get(&user).cloned().unwrap_or_default() {
                        if Some(d) != except {
                            self.inbox
                                .entry(DeviceAddr::new(user.clone(), d))
                                .or_default()
                                .push(frame.clone());
                        }
                    }
                }
                Effect::Push {
                    user,
                    devices,
                    call_id,
                    ..
                } => self.pushes.push((user, devices, call_id)),
                Effect::Live(l) => {
                    self.live.insert(l.call_id.clone(), l);
                }
                Effect::Record(r) => {
                    self.live.remove(&r.call_id);
                    self.records.push(r);
                }
            }
        }
        // The call log's live rows are exactly the calls in memory, with
        // their answer.
        let live: Vec<(&CallId, Option<DeviceId>)> = self
            .live
            .iter()
            .map(|(id, l)| (id, l.answered.map(|(d, _)| d)))
            .collect();
        let mut calls: Vec<(&CallId, Option<DeviceId>)> = self
            .calls
            .calls
            .values()
            .map(|c| (&c.id, c.answerer().map(|a| a.device)))
            .collect();
        calls.sort();
        assert_eq!(live, calls, "the live call log drifted from the calls");
    }

    fn offer(&mut self, from: &DeviceAddr, call: &str, to: &str) {
        let to = UserId::new(to);
        let callee = Callee {
            exists: self.devices.contains_key(&to),
            devices: self.devices.get(&to).cloned().unwrap_or_default(),
            online: self.online.get(&to).cloned().unwrap_or_default(),
            presence_hidden: self.hidden.contains(&to),
        };
        let offer = CallOffer {
            call_id: id(call),
            to,
            media: CallMedia::Audio,
            sdp: format!("offer-{call}"),
        };
        let e = self.calls.handle_offer(self.now, from, offer, callee);
        self.apply(e);
    }

    fn frame(&mut self, from: &DeviceAddr, f: CallClientFrame) {
        let e = self.calls.handle_frame(self.now, from, f);
        self.apply(e);
    }

    fn answer(&mut self, from: &DeviceAddr, call: &str) {
        self.frame(
            from,
            CallClientFrame::Answer(CallAnswer {
                call_id: id(call),
                sdp: "answer".into(),
            }),
        );
    }

    fn hangup(&mut self, from: &DeviceAddr, call: &str) {
        self.frame(from, CallClientFrame::Hangup(CallRef { call_id: id(call) }));
    }

    fn reject(&mut self, from: &DeviceAddr, call: &str) {
        self.frame(from, CallClientFrame::Reject(CallRef { call_id: id(call) }));
    }

    /// Moves time, firing every timer on the way (as the driver would).
    fn advance(&mut self, ms: i64) {
        let end = self.now + ms;
        while let Some(t) = self.calls.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            let e = self.calls.handle_timeout(self.now);
            self.apply(e);
        }
        self.now = end;
    }

    fn take(&mut self, d: &DeviceAddr) -> Vec<ServerFrame> {
        self.inbox.remove(d).unwrap_or_default()
    }

    fn types(&mut self, d: &DeviceAddr) -> Vec<String> {
        self.take(d)
            .iter()
            .map(|f| match f {
                ServerFrame::CallEnded(e) => format!("call.ended:{}", e.reason.as_str()),
                ServerFrame::Error(e) => format!("error:{}", e.code),
                other => other.type_name().to_owned(),
            })
            .collect()
    }

    fn disconnect(&mut self, d: &DeviceAddr) {
        if let Some(l) = self.online.get_mut(&d.user) {
            l.retain(|x| *x != d.device);
        }
        let e = self.calls.handle_disconnected(self.now, d);
        self.apply(e);
    }

    fn connect(&mut self, d: &DeviceAddr) {
        self.online
            .entry(d.user.clone())
            .or_default()
            .push(d.device);
        let e = self.calls.handle_connected(self.now, d);
        self.apply(e);
    }

    fn only_record(&self) -> &CallRecord {
        assert_eq!(self.records.len(), 1, "{:?}", self.records);
        &self.records[0]
    }
}

#[test]
fn offer_rings_every_device_and_answer_on_one_ends_the_others() {
    let mut w = World::new();
    let (a, b1, b2) = (dev("alice", 1), dev("bob", 1), dev("bob", 2));
    w.offer(&a, "c1", "bob");
    let ringing = w.take(&a);
    assert_eq!(
        ringing,
        vec![ServerFrame::CallRinging(CallRinging {
            call_id: id("c1"),
            devices: 2,
            pushed: 0
        })]
    );
    for d in [&b1, &b2] {
        let f = w.take(d);
        let ServerFrame::CallIncoming(inc) = &f[0] else {
            panic!("{f:?}")
        };
        assert_eq!(inc.sdp, "offer-c1");
        assert_eq!(inc.from.user, UserId::new("alice"));
        assert_eq!(inc.expires, T0 + 60_000);
    }
    w.advance(3_000);
    w.answer(&b2, "c1");
    let f = w.take(&a);
    assert!(matches!(&f[..], [ServerFrame::CallAnswered(x)] if x.device == 2 && x.sdp == "answer"));
    assert_eq!(w.types(&b1), ["call.ended:answered_elsewhere"]);
    assert!(w.take(&b2).is_empty());
    // The answered call never times out.
    w.advance(120_000);
    assert!(w.records.is_empty());
    w.hangup(&a, "c1");
    assert_eq!(w.types(&b2), ["call.ended:hangup"]);
    assert!(w.take(&a).is_empty());
    let r = w.only_record();
    assert_eq!(r.outcome, CallOutcome::Answered);
    assert_eq!(r.answered_device, Some(2));
    assert_eq!(r.duration_ms(), 120_000);
    assert_eq!(r.reason, EndReason::Hangup);
    assert!(w.calls.is_empty());
    assert_eq!(w.calls.poll_timeout(), None);
}

#[test]
fn callee_hangs_up_an_answered_call_with_duration() {
    let mut w = World::new();
    let (a, b1) = (dev("alice", 1), dev("bob", 1));
    w.offer(&a, "c1", "bob");
    w.answer(&b1, "c1");
    w.take(&a);
    w.advance(5_000);
    w.hangup(&b1, "c1");
    let f = w.take(&a);
    assert!(
        matches!(&f[..], [ServerFrame::CallEnded(e)] if e.reason == EndReason::Hangup && e.duration_ms == Some(5_000))
    );
}

#[test]
fn reject_ends_the_call_on_every_device() {
    let mut w = World::new();
    let (a, b1, b2) = (dev("alice", 1), dev("bob", 1), dev("bob", 2));
    w.offer(&a, "c1", "bob");
    w.take(&a);
    w.take(&b1);
    w.take(&b2);
    w.reject(&b1, "c1");
    assert_eq!(w.types(&a), ["call.ended:rejected"]);
    assert_eq!(w.types(&b2), ["call.ended:rejected"]);
    assert!(w.take(&b1).is_empty());
    assert_eq!(w.only_record().outcome, CallOutcome::Rejected);
    // The call is gone: a late answer is refused.
    w.answer(&b2, "c1");
    assert_eq!(w.types(&b2), ["error:unknown_call"]);
}

#[test]
fn ring_timeout_is_a_missed_call() {
    let mut w = World::new();
    let (a, b1) = (dev("alice", 1), dev("bob", 1));
    w.offer(&a, "c1", "bob");
    w.take(&a);
    w.take(&b1);
    assert_eq!(w.calls.poll_timeout(), Some(T0 + 60_000));
    w.advance(59_999);
    assert!(w.records.is_empty());
    w.advance(1);
    assert_eq!(w.types(&a), ["call.ended:missed"]);
    assert_eq!(w.types(&b1), ["call.ended:missed"]);
    assert_eq!(w.only_record().outcome, CallOutcome::Missed);
}

#[test]
fn caller_cancels_before_an_answer() {
    let mut w = World::new();
    let (a, b1, b2) = (dev("alice", 1), dev("bob", 1), dev("bob", 2));
    w.offer(&a, "c1", "bob");
    w.take(&a);
    w.take(&b1);
    w.take(&b2);
    w.advance(2_000);
    w.hangup(&a, "c1");
    assert_eq!(w.types(&b1), ["call.ended:cancelled"]);
    assert_eq!(w.types(&b2), ["call.ended:cancelled"]);
    assert!(w.take(&a).is_empty());
    let r = w.only_record();
    assert_eq!(r.outcome, CallOutcome::Cancelled);
    assert_eq!(r.ended_at - r.started_at, 2_000);
}

#[test]
fn busy_when_the_callee_is_in_a_call() {
    let mut w = World::new();
    let (a, b1, c) = (dev("alice", 1), dev("bob", 1), dev("carol", 1));
    w.offer(&a, "c1", "bob");
    w.answer(&b1, "c1");
    w.take(&a);
    w.take(&b1);
    w.offer(&c, "c2", "bob");
    assert_eq!(w.types(&c), ["call.ended:busy"]);
    assert!(w.take(&b1).is_empty(), "busy callees are not disturbed");
    assert_eq!(w.only_record().outcome, CallOutcome::Busy);
    // A user who is merely being rung is busy too (no call waiting).
    w.hangup(&a, "c1");
    w.offer(&a, "c3", "bob");
    w.offer(&c, "c4", "bob");
    assert_eq!(w.types(&c), ["call.ended:busy"]);
    // ...and so is one placing a call.
    w.offer(&c, "c5", "alice");
    assert_eq!(w.types(&c), ["call.ended:busy"]);
}

#[test]
fn a_caller_in_a_call_cannot_place_another() {
    let mut w = World::new();
    let (a, c) = (dev("alice", 1), dev("carol", 1));
    w.offer(&a, "c1", "bob");
    w.take(&a);
    w.offer(&a, "c2", "carol");
    assert_eq!(w.types(&a), ["error:call_in_progress"]);
    assert!(w.take(&c).is_empty());
    // A reused id is refused.
    w.offer(&c, "c1", "alice");
    assert_eq!(w.types(&c), ["error:call_exists"]);
}

#[test]
fn glare_keeps_the_smaller_call_id_whatever_the_order() {
    for (first, second) in [("a-call", "b-call"), ("b-call", "a-call")] {
        let mut w = World::new();
        let (a, b1, b2) = (dev("alice", 1), dev("bob", 1), dev("bob", 2));
        // Alice offers `first`; Bob's device 1 offers `second` before seeing it.
        w.offer(&a, first, "bob");
        w.offer(&b1, second, "alice");
        let survivor = id("a-call");
        let live: Vec<CallId> = w.calls.calls.keys().cloned().collect();
        assert_eq!(live, vec![survivor.clone()], "{first} then {second}");
        let rec = w.only_record();
        assert_eq!(rec.reason, EndReason::Glare);
        assert_eq!(rec.call_id, id("b-call"));
        assert_eq!(rec.outcome, CallOutcome::Failed);
        // Whoever placed the losing call heard it ended with glare.
        let loser = if first == "b-call" { &a } else { &b1 };
        assert!(
            w.types(loser).contains(&"call.ended:glare".to_owned()),
            "{first} then {second}"
        );
        let _ = w.take(&b2);
    }
}

#[test]
fn offline_devices_get_a_push_and_the_offer_when_they_connect() {
    let mut w = World::new();
    let (a, b1, b2) = (dev("alice", 1), dev("bob", 1), dev("bob", 2));
    w.online.insert(UserId::new("bob"), vec![]);
    w.offer(&a, "c1", "bob");
    assert_eq!(w.pushes, vec![(UserId::new("bob"), vec![1, 2], id("c1"))]);
    assert!(
        matches!(&w.take(&a)[..], [ServerFrame::CallRinging(r)] if r.devices == 0 && r.pushed == 2)
    );
    w.advance(5_000);
    w.connect(&b2);
    assert_eq!(w.types(&b2), ["call.incoming"]);
    w.answer(&b2, "c1");
    assert_eq!(w.types(&a), ["call.answered"]);
    // A device connecting after the answer is not rung.
    w.connect(&b1);
    assert!(w.take(&b1).is_empty());
}

#[test]
fn stale_offers_are_not_delivered() {
    let mut w = World::new();
    let (a, b1) = (dev("alice", 1), dev("bob", 1));
    w.online.insert(UserId::new("bob"), vec![]);
    w.offer(&a, "c1", "bob");
    w.advance(61_000);
    assert_eq!(w.types(&a)[1..], ["call.ended:missed"]);
    w.connect(&b1);
    assert!(w.take(&b1).is_empty());
}

#[test]
fn unknown_and_deviceless_callees() {
    let mut w = World::new();
    let a = dev("alice", 1);
    w.offer(&a, "c1", "nobody");
    assert_eq!(w.types(&a), ["error:unknown_recipient"]);
    w.devices.insert(UserId::new("dave"), vec![]);
    w.offer(&a, "c2", "dave");
    assert_eq!(w.types(&a), ["call.ended:unavailable"]);
    w.offer(&a, "c3", "alice");
    assert_eq!(w.types(&a), ["error:invalid_frame"]);
    w.offer(&a, "bad id", "bob");
    assert_eq!(w.types(&a), ["error:invalid_frame"]);
    assert_eq!(w.records.len(), 1);
}

#[test]
fn ice_and_updates_are_relayed_to_the_peer_only() {
    let mut w = World::new();
    let (a, b1, b2, c) = (
        dev("alice", 1),
        dev("bob", 1),
        dev("bob", 2),
        dev("carol", 1),
    );
    w.offer(&a, "c1", "bob");
    w.take(&b1);
    w.take(&b2);
    let ice = |cand: &str| {
        CallClientFrame::Ice(CallIce {
            call_id: id("c1"),
            candidate: cand.into(),
        })
    };
    // Before the answer the caller's candidates reach every ringing device.
    w.frame(&a, ice("early"));
    assert_eq!(w.types(&b1), ["call.ice"]);
    assert_eq!(w.types(&b2), ["call.ice"]);
    w.answer(&b1, "c1");
    w.take(&a);
    w.take(&b2);
    w.frame(&a, ice("late"));
    assert_eq!(w.types(&b1), ["call.ice"]);
    assert!(w.take(&b2).is_empty());
    w.frame(&b1, ice("from-b"));
    let f = w.take(&a);
    assert!(matches!(&f[..], [ServerFrame::CallIce(i)] if i.candidate == "from-b"));
    // Strangers and the device that did not answer get errors.
    w.frame(&c, ice("x"));
    assert_eq!(w.types(&c), ["error:unknown_call"]);
    w.frame(&b2, ice("x"));
    assert_eq!(w.types(&b2), ["error:unknown_call"]);
    // ICE restart: an update offer one way, its answer back.
    let up = |kind| {
        CallClientFrame::Update(CallUpdate {
            call_id: id("c1"),
            kind,
            sdp: "restart".into(),
        })
    };
    w.frame(&b1, up(SdpKind::Offer));
    assert_eq!(w.types(&a), ["call.update"]);
    w.frame(&a, up(SdpKind::Answer));
    assert_eq!(w.types(&b1), ["call.update"]);
    w.frame(&b2, up(SdpKind::Offer));
    assert_eq!(w.types(&b2), ["error:unknown_call"]);
}

#[test]
fn updates_before_an_answer_are_refused() {
    let mut w = World::new();
    let a = dev("alice", 1);
    w.offer(&a, "c1", "bob");
    w.take(&a);
    w.frame(
        &a,
        CallClientFrame::Update(CallUpdate {
            call_id: id("c1"),
            kind: SdpKind::Offer,
            sdp: String::new(),
        }),
    );
    assert_eq!(w.types(&a), ["error:unknown_call"]);
}

#[test]
fn a_party_that_reconnects_in_time_keeps_the_call() {
    let mut w = World::new();
    let (a, b1) = (dev("alice", 1), dev("bob", 1));
    w.offer(&a, "c1", "bob");
    w.answer(&b1, "c1");
    w.take(&a);
    w.take(&b1);
    w.disconnect(&b1);
    w.advance(29_000);
    w.connect(&b1);
    w.advance(60_000);
    assert!(w.records.is_empty());
    assert_eq!(w.calls.len(), 1);
    // Lost for good this time.
    w.disconnect(&a);
    w.advance(30_000);
    assert_eq!(w.types(&b1), ["call.ended:connection_lost"]);
    let r = w.only_record();
    assert_eq!(r.outcome, CallOutcome::Answered);
    assert_eq!(r.reason, EndReason::ConnectionLost);
}

#[test]
fn a_caller_lost_while_ringing_fails_the_call() {
    let mut w = World::new();
    let (a, b1) = (dev("alice", 1), dev("bob", 1));
    w.offer(&a, "c1", "bob");
    w.take(&b1);
    w.advance(10_000);
    w.disconnect(&a);
    w.advance(30_000);
    assert_eq!(w.types(&b1), ["call.ended:connection_lost"]);
    assert_eq!(w.only_record().outcome, CallOutcome::Failed);
    // A callee device dropping while it rings changes nothing.
    let mut w = World::new();
    w.offer(&a, "c2", "bob");
    w.disconnect(&b1);
    w.advance(59_000);
    assert!(w.records.is_empty());
}

#[test]
fn answering_twice_and_late_answers() {
    let mut w = World::new();
    let (a, b1, b2) = (dev("alice", 1), dev("bob", 1), dev("bob", 2));
    w.offer(&a, "c1", "bob");
    w.answer(&b1, "c1");
    w.take(&a);
    w.take(&b2);
    w.answer(&b1, "c1");
    assert!(w.take(&a).is_empty(), "a repeated answer is ignored");
    w.answer(&b2, "c1");
    assert_eq!(w.types(&b2), ["call.ended:answered_elsewhere"]);
    // The caller cannot answer its own call.
    w.answer(&a, "c1");
    assert_eq!(w.types(&a), ["error:unknown_call"]);
}

#[test]
fn many_calls_time_out_in_deadline_order() {
    let mut w = World::new();
    for i in 0..50u32 {
        let caller = format!("u{i}");
        let callee = format!("v{i}");
        for u in [&caller, &callee] {
            w.devices.insert(UserId::new(u.as_str()), vec![1]);
            w.online.insert(UserId::new(u.as_str()), vec![1]);
        }
        w.offer(&dev(&caller, 1), &format!("call{i:02}"), &callee);
        w.advance(100);
    }
    assert_eq!(w.calls.len(), 50);
    w.advance(60_000);
    assert_eq!(w.calls.len(), 0);
    let order: Vec<String> = w.records.iter().map(|r| r.call_id.0.clone()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert!(w.records.iter().all(|r| r.outcome == CallOutcome::Missed));
}

#[test]
fn ringing_says_nothing_of_a_callee_who_hides_their_presence() {
    let mut w = World::new();
    let (a, b1) = (dev("alice", 1), dev("bob", 1));
    // bob 1 online, bob 2 offline: without privacy the caller learns that.
    w.online.insert(UserId::new("bob"), vec![1]);
    w.offer(&a, "c1", "bob");
    assert!(
        matches!(&w.take(&a)[..], [ServerFrame::CallRinging(r)] if r.devices == 1 && r.pushed == 1)
    );
    w.hangup(&a, "c1");
    let _ = (w.take(&a), w.take(&b1));
    // Hidden: both counts 0, while the devices still ring and get pushed.
    w.hidden.push(UserId::new("bob"));
    w.pushes.clear();
    w.offer(&a, "c2", "bob");
    assert!(
        matches!(&w.take(&a)[..], [ServerFrame::CallRinging(r)] if r.devices == 0 && r.pushed == 0)
    );
    assert_eq!(w.types(&b1), ["call.incoming"]);
    assert_eq!(w.pushes, vec![(UserId::new("bob"), vec![2], id("c2"))]);
}
