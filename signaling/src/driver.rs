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

use crate::call::{CallRecord, Callee, Calls, DeviceAddr, Effect, LiveCall, OfferLimits};
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
        /// The callee, their devices connected now (on any node), and
        /// whether their presence is hidden from the caller.
        info: Result<(CalleeInfo, Vec<DeviceId>, bool), ()>,
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
    /// This node's name, recorded with its live calls.
    owner: String,
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
            owner: link.node_id(),
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
        let link = self.link.clone();
        let clock = self.clock.clone();
        vec![
            Part::spawn("calls", self.run(shutdown, log_tx)),
            Part::spawn("call-log", log_writer(store, link, clock, log_rx)),
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
                self.apply(effects, &gens, &log).await;
                continue;
            };
            // Group commit: the inputs that are already waiting are handled
            // together, their calls' new states stored in one transaction,
            // then their frames sent (see `apply`).
            let mut effects = Vec::new();
            let mut offered = Vec::new();
            let mut next = Some(input);
            let mut handled = 0;
            while let Some(input) = next.take() {
                self.handle(input, &mut waiting, &mut gens, &mut offered, &mut effects);
                handled += 1;
                if handled < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            self.apply(effects, &gens, &log).await;
            for user in offered {
                gens.remove(&user);
            }
            metrics::gauge!("signaling_live_calls").set(self.calls.len() as f64);
        }
    }

    /// Handles one input: effects go to `out` (applied with the rest of the
    /// batch), callees whose device generations were looked up to `offered`.
    fn handle(
        &mut self,
        input: Input,
        waiting: &mut HashMap<CallId, Vec<(DeviceAddr, CallClientFrame)>>,
        gens: &mut HashMap<UserId, Vec<DeviceGen>>,
        offered: &mut Vec<UserId>,
        out: &mut Vec<Effect>,
    ) {
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
                    return;
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
                    return;
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
                        // Through the registry: a device on another node is
                        // online, rung there, and not pushed.
                        let online = link.online_devices(&offer.to).await;
                        let info = info.map(|i| (i, online, hidden));
                        let _ = tx.send(Input::Resolved { from, offer, info });
                    }
                    .instrument(span),
                );
            }
            Input::Frame(from, frame) => {
                if let Some(q) = waiting.get_mut(frame.call_id()) {
                    q.push((from, frame));
                    return;
                }
                let span = tracing::info_span!("call", call_id = %frame.call_id(), user_id = %from.user, device_id = from.device);
                out.extend(
                    span.in_scope(|| self.calls.handle_frame(self.clock.now_ms(), &from, frame)),
                );
            }
            Input::Resolved { from, offer, info } => {
                let id = offer.call_id.clone();
                let _g = tracing::info_span!("call", call_id = %id, user_id = %from.user, device_id = from.device).entered();
                let queued = waiting.remove(&id).unwrap_or_default();
                let effects = match info {
                    Ok((info, online, presence_hidden)) => {
                        let callee = Callee {
                            exists: info.exists,
                            devices: info.devices.iter().map(|d| d.device).collect(),
                            online,
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
                out.extend(effects);
                offered.push(offer.to.clone());
                for (f, frame) in queued {
                    out.extend(self.calls.handle_frame(self.clock.now_ms(), &f, frame));
                }
            }
            Input::Connected(d) => {
                out.extend(self.calls.handle_connected(self.clock.now_ms(), &d));
            }
            Input::Disconnected(d) => {
                out.extend(self.calls.handle_disconnected(self.clock.now_ms(), &d));
            }
        }
    }

    /// Carries out a batch's effects. The calls' new states are stored first,
    /// in one transaction (awaited), then the frames go out: a party never
    /// hears of a state the call log could lose in a crash. Ended calls go to
    /// the log writer (in order).
    async fn apply(
        &self,
        effects: Vec<Effect>,
        gens: &HashMap<UserId, Vec<DeviceGen>>,
        log: &mpsc::UnboundedSender<CallRecord>,
    ) {
        let live: Vec<&LiveCall> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Live(c) => Some(c),
                _ => None,
            })
            .collect();
        if !live.is_empty()
            && let Err(e) = self.store.live_many(&live, &self.owner).await
        {
            tracing::warn!(error = %e, calls = live.len(), "live calls not stored");
        }
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
                Effect::Live(_) => {} // stored above
                Effect::Record(r) => {
                    metrics::counter!("signaling_calls_ended_total", "outcome" => r.outcome.as_str())
                        .increment(1);
                    let _ = log.send(r);
                }
            }
        }
    }
}

/// Most inputs handled (and stored) in one group commit.
const MAX_BATCH: usize = 256;

/// How often the writer looks for live calls of nodes that stopped. With
/// `redis.node_ttl_ms` (10 s) this ends a dead node's calls within about
/// 15 s, inside the default reconnect grace (30 s).
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Stores the call log. First it closes the live calls this node left
/// (a crash or a kill; `local` in the embedded shape, whose only node this
/// is), then it logs calls as they end, and every [`SWEEP_INTERVAL`]
/// closes the live calls of owners whose heartbeat stopped.
async fn log_writer(
    store: Arc<dyn CallStore>,
    link: Arc<dyn DeviceLink>,
    clock: SharedClock,
    mut rx: mpsc::UnboundedReceiver<CallRecord>,
) {
    let me = link.node_id();
    close_abandoned(&*store, &*link, &me, clock.now_ms()).await;
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    loop {
        let r = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
            _ = sweep.tick() => {
                let owners = match store.live_owners().await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(error = %e, "live calls could not be listed");
                        continue;
                    }
                };
                for owner in owners.into_iter().filter(|o| *o != me) {
                    if !link.node_alive(&owner).await {
                        close_abandoned(&*store, &*link, &owner, clock.now_ms()).await;
                    }
                }
                continue;
            }
        };
        // Group commit: the ended calls already waiting go in one transaction.
        let mut batch = vec![r];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if let Err(e) = store.record_many(&batch).await {
            tracing::warn!(error = %e, calls = batch.len(), "call log write failed");
        }
    }
}

/// Logs `owner`'s live calls as failed (`connection_lost`) and tells their
/// parties' connected devices that they ended (the node that held them cannot).
async fn close_abandoned(
    store: &dyn CallStore,
    link: &dyn DeviceLink,
    owner: &str,
    now: natter_common::UnixMillis,
) {
    match store.close_abandoned(owner, now).await {
        Ok(closed) if !closed.is_empty() => {
            for r in &closed {
                let ended = ServerFrame::CallEnded(natter_proto::CallEnded {
                    call_id: r.call_id.clone(),
                    reason: natter_proto::EndReason::ConnectionLost,
                    duration_ms: r.answered_at.map(|t| (now - t).max(0) as u64),
                });
                link.send(&r.caller, Devices::One(r.caller_device), &ended);
                let callee = match r.answered_device {
                    Some(d) => Devices::One(d),
                    None => Devices::AllBut(None),
                };
                link.send(&r.callee, callee, &ended);
            }
            metrics::counter!("signaling_calls_ended_total", "outcome" => "failed")
                .increment(closed.len() as u64);
            tracing::warn!(
                owner,
                calls = closed.len(),
                "calls left live by a stopped node logged as failed"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, owner, "abandoned calls not closed"),
    }
}
