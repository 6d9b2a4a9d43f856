//! Who is connected, in this process: one handle per device socket, presence
//! subscriptions, in-memory last-seen times and the push-coalescing state.
//!
//! Deliveries are `try_send` into a bounded per-socket queue. When a socket's
//! queue is full, the entry is not queued and the socket is told to read its
//! queue in the store again (the entry is durable there), so a burst larger
//! than the queue (one commit of thousands of receipts to a device that is
//! reading) costs a fetch, never a close. A device that does not read at all
//! is closed by the gateway's write-stall timeout (4006), not here.

use crate::pipeline::limits::PushPolicy;
use crate::pipeline::{Delivery, ItemRef};
use crate::store::{Queued, QueuedFrame};
use natter_common::UnixMillis;
use natter_proto::{CloseCode, DeviceId, MsgId, ServerFrame, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Longest a socket holds back its writes for a writer hand-off to finish.
const SETTLE_LIMIT: Duration = Duration::from_millis(5);

/// See [`Hub::dispatch_scope`].
pub(crate) struct DispatchScope<'a>(&'a Hub);

impl Drop for DispatchScope<'_> {
    fn drop(&mut self) {
        if self.0.dispatching.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.dispatched.notify_waiters();
        }
    }
}

/// What a socket task receives from the rest of the service.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A committed queue entry.
    Delivery(Delivery),
    /// An ephemeral frame (typing, presence, asynchronous errors), already JSON.
    Frame(Arc<str>),
    /// Live deliveries may have been lost: read the queue again.
    Resync,
}

/// Asks a socket task to close with a code (the first code wins), or to read
/// its queue in the store again because live entries did not fit its queue.
#[derive(Debug, Default)]
pub(crate) struct Closer {
    code: AtomicU16,
    token: CancellationToken,
    overflowed: AtomicBool,
}

impl Closer {
    /// Live entries were dropped for a full queue: the socket must refetch.
    pub(crate) fn overflow(&self) {
        self.overflowed.store(true, Ordering::Release);
    }

    /// Whether entries were dropped since the last call.
    pub(crate) fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn close(&self, code: CloseCode) {
        if self
            .code
            .compare_exchange(0, code.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.token.cancel();
        }
    }

    pub(crate) fn code(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.code.load(Ordering::SeqCst))
    }

    pub(crate) async fn closed(&self) {
        self.token.cancelled().await
    }
}

#[derive(Debug, Clone)]
struct Conn {
    id: u64,
    device: DeviceId,
    generation: i64,
    since: UnixMillis,
    tx: mpsc::Sender<Outbound>,
    closer: Arc<Closer>,
}

#[derive(Debug, Clone)]
struct Subscriber {
    user: UserId,
    tx: mpsc::Sender<Outbound>,
}

/// The process-wide registry of device sockets.
#[derive(Debug)]
pub(crate) struct Hub {
    conns: RwLock<HashMap<UserId, Vec<Conn>>>,
    /// target user -> conn id -> subscriber.
    subs: RwLock<HashMap<UserId, HashMap<u64, Subscriber>>>,
    last_seen: Mutex<HashMap<UserId, UnixMillis>>,
    dirty_seen: Mutex<HashMap<UserId, UnixMillis>>,
    push: Mutex<PushPolicy>,
    next_id: AtomicU64,
    /// Writer hand-offs in progress (see [`Hub::dispatch_scope`]).
    dispatching: AtomicUsize,
    dispatched: Notify,
}

/// A socket of this node, as the cluster registry records it.
#[derive(Debug, Clone)]
pub(crate) struct LocalConn {
    pub(crate) user: UserId,
    pub(crate) device: DeviceId,
    pub(crate) conn_id: u64,
    /// When it connected (settles which of two sockets of a device is newer).
    pub(crate) since: UnixMillis,
}

/// Result of registering a socket.
pub(crate) struct Registered {
    pub(crate) conn_id: u64,
    /// The user had no other device connected.
    pub(crate) came_online: bool,
}

impl Hub {
    pub(crate) fn new(push_min_interval_ms: i64) -> Self {
        Self {
            conns: RwLock::new(HashMap::new()),
            subs: RwLock::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            dirty_seen: Mutex::new(HashMap::new()),
            push: Mutex::new(PushPolicy::new(push_min_interval_ms)),
            next_id: AtomicU64::new(1),
            dispatching: AtomicUsize::new(0),
            dispatched: Notify::new(),
        }
    }

    /// Marks the writer handing out one commit's answers and deliveries,
    /// until the scope is dropped. Why: a socket task woken by the first of
    /// them would otherwise write each as it arrives — three small writes
    /// per message, each a trip through the TCP stack, which was the largest
    /// share of the gateway's CPU. Sockets wait for the scope to end (see
    /// [`Hub::dispatch_settled`]) and write everything in one go.
    pub(crate) fn dispatch_scope(&self) -> DispatchScope<'_> {
        self.dispatching.fetch_add(1, Ordering::AcqRel);
        DispatchScope(self)
    }

    /// Returns once no writer hand-off is in progress (at most
    /// `SETTLE_LIMIT` later, so a stuck writer cannot hold sockets back).
    pub(crate) async fn dispatch_settled(&self) {
        let done = self.dispatched.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.dispatching.load(Ordering::Acquire) == 0 {
            return;
        }
        let _ = tokio::time::timeout(SETTLE_LIMIT, done).await;
    }

    /// Whether a writer hand-off is in progress.
    pub(crate) fn is_dispatching(&self) -> bool {
        self.dispatching.load(Ordering::Acquire) != 0
    }

    /// Registers a device socket, replacing (close 4000) an older one of the
    /// same device.
    pub(crate) fn register(
        &self,
        user: &UserId,
        device: DeviceId,
        generation: i64,
        since: UnixMillis,
        tx: mpsc::Sender<Outbound>,
        closer: Arc<Closer>,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            id,
            device,
            generation,
            since,
            tx,
            closer,
        };
        let came_online;
        {
            // Locks here are held for map operations only; nothing awaits under them.
            let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
            let list = conns.entry(user.clone()).or_default();
            came_online = list.is_empty();
            if let Some(pos) = list.iter().position(|c| c.device == device) {
                let old = list.swap_remove(pos);
                old.closer.close(CloseCode::Replaced);
            }
            list.push(conn);
        }
        self.push
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_connected(user, device);
        metrics::gauge!("chat_ws_connections").increment(1.0);
        Registered {
            conn_id: id,
            came_online,
        }
    }

    /// Removes a socket (if it was not replaced already). Returns true when the
    /// user has no device connected any more.
    pub(crate) fn unregister(&self, user: &UserId, conn_id: u64) -> bool {
        metrics::gauge!("chat_ws_connections").decrement(1.0);
        let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
        let Some(list) = conns.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|c| c.id != conn_id);
        let removed = list.len() < before;
        if list.is_empty() {
            conns.remove(user);
            return removed;
        }
        false
    }

    /// Hands a committed entry to the device's socket, if it is connected at
    /// that generation. Returns whether it is connected.
    pub(crate) fn deliver(
        &self,
        user: &UserId,
        device: DeviceId,
        generation: i64,
        d: Delivery,
    ) -> bool {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = conns.get(user).and_then(|l| {
            l.iter()
                .find(|c| c.device == device && c.generation == generation)
        }) else {
            return false;
        };
        match conn.tx.try_send(Outbound::Delivery(d)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("chat_outbound_overflows_total").increment(1);
                conn.closer.overflow();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        true
    }

    /// Sends an ephemeral frame to every connected device of `user` (dropped for
    /// a device whose queue is full: ephemeral frames are never worth a close).
    pub(crate) fn send_ephemeral(&self, user: &UserId, json: &Arc<str>) -> usize {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for c in conns.get(user).map(Vec::as_slice).unwrap_or_default() {
            if c.tx.try_send(Outbound::Frame(json.clone())).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sends an ephemeral frame to one device of `user`, if connected here.
    pub(crate) fn send_device(&self, user: &UserId, device: DeviceId, json: &Arc<str>) -> bool {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns
            .get(user)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|c| c.device == device)
            .any(|c| c.tx.try_send(Outbound::Frame(json.clone())).is_ok())
    }

    /// Closes one socket by id (another node took over its device).
    pub(crate) fn close_conn(&self, user: &UserId, conn_id: u64, code: CloseCode) {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.get(user).map(Vec::as_slice).unwrap_or_default() {
            if c.id == conn_id {
                c.closer.close(code);
            }
        }
    }

    /// Every socket of this node (to rebuild the cluster registry).
    pub(crate) fn local_conns(&self) -> Vec<LocalConn> {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .flat_map(|(u, l)| {
                l.iter().map(|c| LocalConn {
                    user: u.clone(),
                    device: c.device,
                    conn_id: c.id,
                    since: c.since,
                })
            })
            .collect()
    }

    /// Asks every socket to read its queue again (live deliveries may be lost).
    pub(crate) fn resync_all(&self) {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.values().flatten() {
            if c.tx.try_send(Outbound::Resync).is_err() {
                // A full queue: the socket refetches once it has read it.
                c.closer.overflow();
            }
        }
    }

    /// A last-seen time learnt from another node (it stores it itself).
    pub(crate) fn note_seen(&self, user: &UserId, at: UnixMillis) {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.clone(), at);
    }

    /// The devices of `user` connected to this node.
    pub(crate) fn online_devices(&self, user: &UserId) -> Vec<DeviceId> {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns
            .get(user)
            .map(|l| l.iter().map(|c| c.device).collect())
            .unwrap_or_default()
    }

    pub(crate) fn is_online(&self, user: &UserId) -> bool {
        self.conns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(user)
    }

    /// Every connected device (for the periodic device check).
    pub(crate) fn connected(&self) -> Vec<crate::store::DeviceRef> {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .flat_map(|(u, l)| {
                l.iter().map(|c| crate::store::DeviceRef {
                    user: u.clone(),
                    device: c.device,
                    generation: c.generation,
                })
            })
            .collect()
    }

    /// Closes the device's socket if it is at `generation`.
    pub(crate) fn close_device(
        &self,
        user: &UserId,
        device: DeviceId,
        generation: i64,
        code: CloseCode,
    ) {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.get(user).map(Vec::as_slice).unwrap_or_default() {
            if c.device == device && c.generation == generation {
                c.closer.close(code);
            }
        }
    }

    /// Number of connected sockets.
    pub(crate) fn socket_count(&self) -> usize {
        self.conns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    // --- presence ---

    pub(crate) fn subscribe(
        &self,
        conn_id: u64,
        subscriber: &UserId,
        targets: &[UserId],
        tx: &mpsc::Sender<Outbound>,
    ) {
        let mut subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
        for t in targets {
            subs.entry(t.clone()).or_default().insert(
                conn_id,
                Subscriber {
                    user: subscriber.clone(),
                    tx: tx.clone(),
                },
            );
        }
    }

    pub(crate) fn unsubscribe<'a>(
        &self,
        conn_id: u64,
        targets: impl IntoIterator<Item = &'a UserId>,
    ) {
        let mut subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
        for t in targets {
            if let Some(m) = subs.get_mut(t) {
                m.remove(&conn_id);
                if m.is_empty() {
                    subs.remove(t);
                }
            }
        }
    }

    /// Subscribers of `target`: (viewer, their socket queue).
    pub(crate) fn subscribers(&self, target: &UserId) -> Vec<(UserId, mpsc::Sender<Outbound>)> {
        let subs = self.subs.read().unwrap_or_else(|p| p.into_inner());
        subs.get(target)
            .map(|m| m.values().map(|s| (s.user.clone(), s.tx.clone())).collect())
            .unwrap_or_default()
    }

    /// Records that the user was seen now (heartbeat or disconnect).
    pub(crate) fn touch(&self, user: &UserId, now: UnixMillis) {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.clone(), now);
        self.dirty_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.clone(), now);
    }

    /// Last seen in this process, if known.
    pub(crate) fn last_seen(&self, user: &UserId) -> Option<UnixMillis> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .copied()
    }

    /// Last-seen times changed since the previous call (to write to the store).
    pub(crate) fn take_dirty_seen(&self) -> Vec<(UserId, UnixMillis)> {
        let mut d = self.dirty_seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = d.drain().collect();
        v.sort();
        // The in-memory cache only needs users still relevant; bound it.
        let mut seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 200_000 {
            seen.clear();
        }
        v
    }

    /// Push-coalescing decision for a message queued to an offline device.
    pub(crate) fn should_push(&self, user: &UserId, device: DeviceId, now: UnixMillis) -> bool {
        self.push
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .should_push(user, device, now)
    }

    /// Asks every socket to close (shutdown).
    pub(crate) fn close_all(&self, code: CloseCode) {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for c in conns.values().flatten() {
            c.closer.close(code);
        }
    }
}

/// A queue entry as a socket writes it (messages serialised once per fan-out).
pub(crate) fn delivery_of(q: &Queued, cache: &mut HashMap<MsgId, Arc<str>>) -> Delivery {
    match &q.frame {
        QueuedFrame::Msg(m) => {
            let json = cache
                .entry(m.msg_id)
                .or_insert_with(|| Arc::from(ServerFrame::Msg((**m).clone()).to_json()))
                .clone();
            Delivery {
                seq: q.seq,
                prev: q.prev,
                item: ItemRef::Msg(m.msg_id),
                json,
            }
        }
        QueuedFrame::Receipt(r) => Delivery {
            seq: q.seq,
            prev: q.prev,
            item: ItemRef::Receipt(r.receipt_id),
            json: Arc::from(ServerFrame::Receipt(r.clone()).to_json()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settled_returns_at_once_without_a_hand_off() {
        let hub = Hub::new(0);
        assert!(!hub.is_dispatching());
        tokio::time::timeout(Duration::from_millis(100), hub.dispatch_settled())
            .await
            .expect("no hand-off in progress: nothing to wait for");
    }

    #[tokio::test]
    async fn settled_waits_for_the_last_scope_to_end() {
        let hub = Arc::new(Hub::new(0));
        let outer = hub.dispatch_scope();
        let inner = hub.dispatch_scope();
        let waiter = tokio::spawn({
            let hub = hub.clone();
            async move { hub.dispatch_settled().await }
        });
        tokio::task::yield_now().await;
        drop(inner);
        tokio::task::yield_now().await;
        assert!(hub.is_dispatching(), "one scope is still open");
        assert!(!waiter.is_finished(), "returned while a scope was open");
        drop(outer);
        tokio::time::timeout(Duration::from_millis(100), waiter)
            .await
            .expect("released when the last scope ended")
            .expect("waiter task");
        assert!(!hub.is_dispatching());
    }

    fn delivery(seq: i64) -> Delivery {
        Delivery {
            seq,
            prev: None,
            item: crate::pipeline::ItemRef::Msg(seq as u64),
            json: Arc::from("{}"),
        }
    }

    /// A burst larger than the queue (one commit of thousands of receipts) hit
    /// sockets that were reading promptly: closing them with 4006 dropped
    /// readers. The entry is durable; the socket is told to fetch instead.
    #[test]
    fn a_full_outbound_queue_asks_the_socket_to_refetch_not_to_close() {
        let hub = Hub::new(0);
        let bob = UserId::new("bob");
        let (tx, mut rx) = mpsc::channel(2);
        let closer = Arc::new(Closer::default());
        hub.register(&bob, 1, 7, 0, tx, closer.clone());
        assert!(hub.deliver(&bob, 1, 7, delivery(1)));
        assert!(hub.deliver(&bob, 1, 7, delivery(2)));
        assert_eq!(closer.code(), None, "room for two entries");
        assert!(
            hub.deliver(&bob, 1, 7, delivery(3)),
            "the device is connected here"
        );
        assert_eq!(closer.code(), None, "a full queue is no reason to close");
        assert!(closer.take_overflow(), "the socket is told to refetch");
        assert!(!closer.take_overflow(), "once");
        assert!(matches!(rx.try_recv(), Ok(Outbound::Delivery(d)) if d.seq == 1));
        assert!(
            !hub.deliver(&bob, 1, 8, delivery(4)),
            "another generation is not this socket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_hand_off_holds_sockets_back_only_briefly() {
        let hub = Hub::new(0);
        let _stuck = hub.dispatch_scope();
        let started = tokio::time::Instant::now();
        hub.dispatch_settled().await;
        assert_eq!(started.elapsed(), SETTLE_LIMIT);
    }
}
