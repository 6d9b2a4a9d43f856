//! The group-commit writer: one task owns every write that adds to a device
//! queue. While a transaction commits, new operations queue up in the channel;
//! the next transaction takes all of them (up to `commit_max_batch`), so under
//! load one fsync serves many senders. Each operation is answered only after
//! its transaction committed, and only then are its entries handed to the
//! sockets (so a `sent` ack always means durable, and sequence numbers reach
//! each device in commit order).

use crate::hub::Hub;
use crate::push::PushNotice;
use crate::store::{
    BatchOp, GroupChange, GroupOutcome, MessageStore, OpOutcome, Queued, StoreError,
};
use natter_common::{SharedClock, UnixMillis};
use natter_proto::MsgId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Where the outcome of a batched operation goes: called by the writer, in
/// commit order, right after the commit (or with `Err` when it failed).
pub(crate) type Reply = Box<dyn FnOnce(Result<OpOutcome, ()>) + Send>;

/// A commit at least this slow is logged. On a healthy disk a commit takes
/// about a millisecond; a quarter of a second is a stalled sync, which every
/// message in flight waits out.
const SLOW_COMMIT: Duration = Duration::from_millis(250);

/// An operation for the writer.
pub(crate) enum WriteOp {
    /// Part of a group commit.
    Batch(BatchOp, Option<Reply>),
    /// A group change, committed alone.
    Group(GroupChange, oneshot::Sender<Result<GroupOutcome, String>>),
}

/// Handle to submit operations.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<WriteOp>,
}

impl Writer {
    /// Queues an operation; waits while the writer's queue is full. When the
    /// writer has stopped, the reply is called with `Err` at once.
    pub(crate) async fn submit(&self, op: BatchOp, reply: Option<Reply>) -> bool {
        match self.tx.send(WriteOp::Batch(op, reply)).await {
            Ok(()) => true,
            Err(mpsc::error::SendError(WriteOp::Batch(_, Some(r)))) => {
                r(Err(()));
                false
            }
            Err(_) => false,
        }
    }

    /// Applies a group change and waits for its commit.
    pub(crate) async fn group(&self, change: GroupChange) -> Result<GroupOutcome, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(WriteOp::Group(change, tx))
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        rx.await.map_err(|_| "the writer has stopped".to_owned())?
    }
}

/// The writer task's state.
pub(crate) struct WriterTask {
    pub(crate) store: Arc<dyn MessageStore>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) cluster: Arc<dyn crate::cluster::Cluster>,
    pub(crate) clock: SharedClock,
    pub(crate) push: mpsc::Sender<PushNotice>,
    pub(crate) ttl_ms: i64,
    pub(crate) max_batch: usize,
    pub(crate) max_group: u32,
    pub(crate) delay: Duration,
}

/// A channel pair for the writer.
pub(crate) fn channel(capacity: usize) -> (Writer, mpsc::Receiver<WriteOp>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Writer { tx }, rx)
}

impl WriterTask {
    /// Starts the writer. For a store that allows it (SQLite), the writer gets
    /// an OS thread with a single-threaded runtime of its own. Why: a commit is
    /// a chain of statements, each a round trip to the driver's thread, and on
    /// the shared runtime every one of those hops waited in the run queue
    /// behind socket tasks (12 ms commits at 5,000 messages/s while the
    /// database thread was half idle). The returned handle ends with the writer.
    pub(crate) fn spawn(
        self,
        rx: mpsc::Receiver<WriteOp>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        if !self.store.wants_writer_thread() {
            return tokio::spawn(natter_common::parts::with_test_fault(
                "chat-writer",
                self.run(rx, shutdown),
            ));
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the chat writer thread; sharing the main one");
                return tokio::spawn(natter_common::parts::with_test_fault(
                    "chat-writer",
                    self.run(rx, shutdown),
                ));
            }
        };
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let started = std::thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || {
                // A local, so that a panic drops it (and the watcher hears of
                // the death) while unwinding, before the captured runtime's
                // shutdown, which took over a second.
                let done_tx = done_tx;
                let _log = tracing::dispatcher::set_default(&dispatch);
                runtime.block_on(natter_common::parts::with_test_fault(
                    "chat-writer",
                    self.run(rx, shutdown),
                ));
                let _ = done_tx.send(());
            });
        if let Err(e) = started {
            // The closure (and the writer in it) is gone; without a writer
            // nothing could be committed, so this is fatal for the service.
            tracing::error!(error = %e, "could not start the chat writer thread");
        }
        tokio::spawn(async move {
            if done_rx.await.is_err() {
                // The thread ended without saying so: it panicked (or never started).
                panic!("the chat writer thread died");
            }
        })
    }

    /// Runs until `shutdown`, then commits what is already queued and stops.
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<WriteOp>, shutdown: CancellationToken) {
        let mut carry: Option<WriteOp> = None;
        loop {
            let first = match carry.take() {
                Some(op) => op,
                None => tokio::select! {
                    op = rx.recv() => match op {
                        Some(op) => op,
                        None => break,
                    },
                    _ = shutdown.cancelled() => {
                        // Final drain: what was accepted into the queue is committed.
                        match rx.try_recv() {
                            Ok(op) => op,
                            Err(_) => break,
                        }
                    }
                },
            };
            match first {
                WriteOp::Group(change, reply) => self.apply_group(change, reply).await,
                WriteOp::Batch(op, reply) => {
                    let mut ops = vec![op];
                    let mut replies = vec![reply];
                    // The gather window: at low rates every commit pays a WAL
                    // write and an fsync for a handful of operations, so the
                    // writer may wait up to `delay` after the first one for
                    // more. A full batch commits at once, so under load the
                    // window costs nothing.
                    let gather_until =
                        (!self.delay.is_zero()).then(|| tokio::time::Instant::now() + self.delay);
                    while ops.len() < self.max_batch {
                        let next = match rx.try_recv() {
                            Ok(op) => Some(op),
                            Err(mpsc::error::TryRecvError::Empty) => match gather_until {
                                Some(until) => tokio::time::timeout_at(until, rx.recv())
                                    .await
                                    .ok()
                                    .flatten(),
                                None => None,
                            },
                            Err(mpsc::error::TryRecvError::Disconnected) => None,
                        };
                        match next {
                            Some(WriteOp::Batch(op, reply)) => {
                                ops.push(op);
                                replies.push(reply);
                            }
                            Some(group) => {
                                carry = Some(group);
                                break;
                            }
                            None => break,
                        }
                    }
                    self.apply_batch(ops, replies).await;
                }
            }
        }
        tracing::debug!("chat writer stopped");
    }

    async fn apply_batch(&self, ops: Vec<BatchOp>, replies: Vec<Option<Reply>>) {
        let now = self.clock.now_ms();
        let started = Instant::now();
        let result = self
            .store
            .commit(&ops, now, self.ttl_ms, self.max_group)
            .await;
        let took = started.elapsed();
        metrics::histogram!("chat_commit_duration_seconds").record(took.as_secs_f64());
        metrics::histogram!("chat_commit_batch_ops").record(ops.len() as f64);
        if took >= SLOW_COMMIT {
            // Every send and receipt in the batch, and all queued behind it,
            // waited this long: worth an operator's look (runbook: disk sync).
            tracing::warn!(
                ms = took.as_millis() as u64,
                ops = ops.len(),
                "slow chat commit"
            );
        }
        // Answers and deliveries of this commit reach each socket together.
        let _handing_out = self.hub.dispatch_scope();
        match result {
            Ok(c) => {
                for (reply, outcome) in replies.into_iter().zip(c.outcomes) {
                    if let OpOutcome::Send(crate::store::SendOutcome::Stored(_)) = &outcome {
                        metrics::counter!("chat_messages_stored_total").increment(1);
                    }
                    if let Some(r) = reply {
                        r(Ok(outcome));
                    }
                }
                self.dispatch(c.queued, now);
            }
            Err(e) => {
                metrics::counter!("chat_commit_errors_total").increment(1);
                tracing::error!(error = %e, ops = ops.len(), "chat commit failed; senders will be told to retry");
                for r in replies.into_iter().flatten() {
                    r(Err(()));
                }
            }
        }
    }

    async fn apply_group(
        &self,
        change: GroupChange,
        reply: oneshot::Sender<Result<GroupOutcome, String>>,
    ) {
        let now = self.clock.now_ms();
        match self
            .store
            .commit_group(&change, now, self.ttl_ms, self.max_group)
            .await
        {
            Ok((outcome, queued)) => {
                let _handing_out = self.hub.dispatch_scope();
                let _ = reply.send(Ok(outcome));
                self.dispatch(queued, now);
            }
            Err(e) => {
                let _ = reply.send(Err(StoreError::to_string(&e)));
            }
        }
    }

    /// Hands committed entries to sockets on this node, forwards the rest to
    /// the nodes that hold them, and wakes devices connected nowhere.
    fn dispatch(&self, queued: Vec<Queued>, now: UnixMillis) {
        let mut json_cache: HashMap<MsgId, Arc<str>> = HashMap::new();
        let n = queued.len();
        let mut elsewhere = Vec::new();
        for q in queued {
            let d = crate::hub::delivery_of(&q, &mut json_cache);
            if !self.hub.deliver(&q.user, q.device, q.generation, d) {
                elsewhere.push(q);
            }
        }
        for q in self.cluster.forward(elsewhere, now) {
            crate::push::push_if_due(&self.hub, &self.push, &q, now);
        }
        metrics::counter!("chat_queue_entries_total").increment(n as u64);
    }
}
