//! The tokio driver of the call state machine: one task owns [`Calls`], fed
//! by a channel of inputs (frames from chat-core's socket tasks, connects and
//! disconnects, answers of callee lookups), sleeping until the core's next
//! deadline. Effects go out through chat-core's [`DeviceLink`]; ended calls go
//! to a log-writer task.
//!
//! Offers need the callee looked up in the database first. The lookup runs
//! in its own task so one slow query does not hold up every call; frames for
//! a call whose offer is still being looked up (trickled ICE candidates sent
//! right after the offer) wait and are replayed after it, in order.

use crate::call::{CallRecord, Callee, Calls, DeviceAddr, Effect, OfferLimits};
use crate::store::{CallStore, CalleeInfo};
use natter_common::calls::{CallFrames, DeviceGen, DeviceLink, Devices};
use natter_common::parts::Part;
use natter_common::{SharedClock, Shutdown};
use natter_proto::{
    CallClientFrame, CallId, CallOffer, DeviceId, ErrorCode, ErrorFrame, ServerFrame, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Inputs of the driver task.
#[derive(Debug)]
enum Input {
    Frame(DeviceAddr, CallClientFrame),
    Connected(DeviceAddr),
    Disconnected(DeviceAddr),
    Resolved {
        from: DeviceAddr,
        offer: CallOffer,
        /// The callee, and whether their presence is hidden from the caller.
        info: Result<(CalleeInfo, bool), ()>,
    },
}

/// The handle chat-core calls ([`CallFrames`]); cheap to clone.
#[derive(Clone)]
pub struct CallDriver {
    tx: mpsc::UnboundedSender<Input>,
}

impl CallFrames for CallDriver {
    fn handle_frame(&self, user: &UserId, device: DeviceId, frame: CallClientFrame) {
        let _ = self
            .tx
            .send(Input::Frame(DeviceAddr::new(user.clone(), device), frame));
    }

    fn device_connected(&self, user: &UserId, device: DeviceId) {
        let _ = self
            .tx
            .send(Input::Connected(DeviceAddr::new(user.clone(), device)));
    }

    fn device_disconnected(&self, user: &UserId, device: DeviceId) {
        let _ = self
            .tx
            .send(Input::Disconnected(DeviceAddr::new(user.clone(), device)));
    }
}

/// The driver task, before it is started.
pub(crate) struct DriverTask {
    pub(crate) calls: Calls,
    limits: OfferLimits,
    pub(crate) link: Arc<dyn DeviceLink>,
    pub(crate) store: Arc<dyn CallStore>,
    pub(crate) clock: SharedClock,
    rx: mpsc::UnboundedReceiver<Input>,
    tx: mpsc::UnboundedSender<Input>,
}

/// A handle and its (not yet started) task.
pub(crate) fn channel(
    calls: Calls,
    limits: OfferLimits,
    link: Arc<dyn DeviceLink>,
    store: Arc<dyn CallStore>,
    clock: SharedClock,
) -> (CallDriver, DriverTask) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        CallDriver { tx: tx.clone() },
        DriverTask {
            calls,
            limits,
            link,
            store,
            clock,
            rx,
            tx,
        },
    )
}

impl DriverTask {
    /// Runs until `shutdown`; the log writer then stores what is left.
    pub(crate) fn spawn(self, shutdown: Shutdown) -> Vec<Part> {
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let store = self.store.clone();
        vec![
            Part::spawn("calls", self.run(shutdown, log_tx)),
            Part::spawn("call-log", log_writer(store, log_rx)),
        ]
    }

    async fn run(mut self, shutdown: Shutdown, log: mpsc::UnboundedSender<CallRecord>) {
        // Frames waiting for their call's offer to be looked up.
        let mut waiting: HashMap<CallId, Vec<(DeviceAddr, CallClientFrame)>> = HashMap::new();
        let mut gens: HashMap<UserId, Vec<DeviceGen>> = HashMap::new();
        loop {
            let now = self.clock.now_ms();
            let sleep = self
                .calls
                .poll_timeout()
                .map(|t| Duration::from_millis((t - now).max(0) as u64))
                .unwrap_or(Duration::from_secs(3600));
            let input = tokio::select! {
                _ = shutdown.cancelled() => break,
                i = self.rx.recv() => match i {
                    Some(i) => Some(i),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => None,
            };
            let Some(input) = input else {
                let effects = self.calls.handle_timeout(self.clock.now_ms());
                self.apply(effects, &gens, &log);
                continue;
            };
            match input {
                Input::Frame(from, CallClientFrame::Offer(offer)) => {
                    let span = tracing::info_span!("call", call_id = %offer.call_id, user_id = %from.user, device_id = from.device);
                    if waiting.contains_key(&offer.call_id) {
                        let e = ErrorFrame::new(ErrorCode::CallExists, "this call is being set up")
                            .about(Some("call.offer".into()), None);
                        self.link.send(
                            &from.user,
                            Devices::One(from.device),
                            &ServerFrame::Error(e),
                        );
                        continue;
                    }
                    if let Err(wait) = self
                        .limits
                        .admit(self.clock.now_ms(), &from.user, &offer.to)
                    {
                        metrics::counter!("signaling_offers_limited_total").increment(1);
                        let mut e = ErrorFrame::new(
                            ErrorCode::RateLimited,
                            "too many calls; try again after the wait",
                        )
                        .about(Some("call.offer".into()), None);
                        e.retry_after_ms = Some(wait);
                        self.link.send(
                            &from.user,
                            Devices::One(from.device),
                            &ServerFrame::Error(e),
                        );
                        continue;
                    }
                    waiting.insert(offer.call_id.clone(), Vec::new());
                    let store = self.store.clone();
                    let link = self.link.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(
                        async move {
                            let info = store.callee(&offer.to).await.map_err(|e| {
                                tracing::warn!(error = %e, "callee lookup failed");
                            });
                            // A callee who hides their presence from the caller
                            // must not be seen online through call.ringing.
                            let hidden = !link.presence_visible(&offer.to, &from.user).await;
                            let info = info.map(|i| (i, hidden));
                            let _ = tx.send(Input::Resolved { from, offer, info });
                        }
                        .instrument(span),
                    );
                }
                Input::Frame(from, frame) => {
                    if let Some(q) = waiting.get_mut(frame.call_id()) {
                        q.push((from, frame));
                        continue;
                    }
                    let _g = tracing::info_span!("call", call_id = %frame.call_id(), user_id = %from.user, device_id = from.device).entered();
                    let effects = self.calls.handle_frame(self.clock.now_ms(), &from, frame);
                    self.apply(effects, &gens, &log);
                }
                Input::Resolved { from, offer, info } => {
                    let id = offer.call_id.clone();
                    let _g = tracing::info_span!("call", call_id = %id, user_id = %from.user, device_id = from.device).entered();
                    let queued = waiting.remove(&id).unwrap_or_default();
                    let effects = match info {
                        Ok((info, presence_hidden)) => {
                            let callee = Callee {
                                exists: info.exists,
                                devices: info.devices.iter().map(|d| d.device).collect(),
                                online: self.link.online_devices(&offer.to),
                                presence_hidden,
                            };
                            gens.insert(offer.to.clone(), info.devices);
                            let e = self.calls.handle_offer(
                                self.clock.now_ms(),
                                &from,
                                offer.clone(),
                                callee,
                            );
                            metrics::counter!("signaling_offers_total").increment(1);
                            e
                        }
                        Err(()) => vec![Effect::ToDevice(
                            from.clone(),
                            ServerFrame::Error(
                                ErrorFrame::new(
                                    ErrorCode::InternalError,
                                    "could not look up the callee; try again",
                                )
                                .about(Some("call.offer".into()), None),
                            ),
                        )],
                    };
                    self.apply(effects, &gens, &log);
                    gens.remove(&offer.to);
                    for (f, frame) in queued {
                        let effects = self.calls.handle_frame(self.clock.now_ms(), &f, frame);
                        self.apply(effects, &gens, &log);
                    }
                }
                Input::Connected(d) => {
                    let effects = self.calls.handle_connected(self.clock.now_ms(), &d);
                    self.apply(effects, &gens, &log);
                }
                Input::Disconnected(d) => {
                    let effects = self.calls.handle_disconnected(self.clock.now_ms(), &d);
                    self.apply(effects, &gens, &log);
                }
            }
            metrics::gauge!("signaling_live_calls").set(self.calls.len() as f64);
        }
    }

    fn apply(
        &self,
        effects: Vec<Effect>,
        gens: &HashMap<UserId, Vec<DeviceGen>>,
        log: &mpsc::UnboundedSender<CallRecord>,
    ) {
        for e in effects {
            match e {
                Effect::ToDevice(d, f) => {
                    self.link.send(&d.user, Devices::One(d.device), &f);
                }
                Effect::ToUser {
                    user,
                    except,
                    frame,
                } => {
                    self.link.send(&user, Devices::AllBut(except), &frame);
                }
                Effect::Push {
                    user,
                    devices,
                    call_id,
                    from,
                } => {
                    let targets: Vec<DeviceGen> = gens
                        .get(&user)
                        .map(|l| {
                            l.iter()
                                .filter(|g| devices.contains(&g.device))
                                .copied()
                                .collect()
                        })
                        .unwrap_or_default();
                    metrics::counter!("signaling_voip_pushes_total")
                        .increment(targets.len() as u64);
                    self.link.push_call(&user, &targets, &call_id, &from);
                }
                Effect::Record(r) => {
                    metrics::counter!("signaling_calls_ended_total", "outcome" => r.outcome.as_str())
                        .increment(1);
                    let _ = log.send(r);
                }
            }
        }
    }
}

async fn log_writer(store: Arc<dyn CallStore>, mut rx: mpsc::UnboundedReceiver<CallRecord>) {
    while let Some(r) = rx.recv().await {
        if let Err(e) = store.record(&r).await {
            tracing::warn!(error = %e, call_id = %r.call_id, "call log write failed");
        }
    }
}
