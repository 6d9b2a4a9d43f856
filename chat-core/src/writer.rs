//! The group-commit writer: one task owns every write that adds to a device
//! queue. While a transaction commits, new operations queue up in the channel;
//! the next transaction takes all of them (up to `commit_max_batch`), so under
//! load one fsync serves many senders. Each operation is answered only after
//! its transaction committed, and only then are its entries handed to the
//! sockets (so a `sent` ack always means durable, and sequence numbers reach
//! each device in commit order). The answering and handing out run on the
//! hand-out thread ([`crate::handout`]), beside the next transaction.

use crate::handout::{HandOut, Handout};
use crate::store::{BatchOp, GroupChange, GroupOutcome, MessageStore, OpOutcome, StoreError};
use natter_common::SharedClock;
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
    pub(crate) handout: HandOut,
    pub(crate) clock: SharedClock,
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

/// The writer's side of a running writer: where commits go to be handed out.
struct Committer {
    store: Arc<dyn MessageStore>,
    out: mpsc::Sender<Handout>,
    clock: SharedClock,
    ttl_ms: i64,
    max_batch: usize,
    max_group: u32,
    delay: Duration,
}

impl WriterTask {
    /// Starts the writer and its hand-out thread. For a store that allows it
    /// (SQLite), the writer gets an OS thread with a single-threaded runtime
    /// of its own. Why: a commit is a chain of statements, each a round trip
    /// to the driver's thread, and on the shared runtime every one of those
    /// hops waited in the run queue behind socket tasks (12 ms commits at
    /// 5,000 messages/s while the database thread was half idle). The
    /// returned handle ends once the writer has stopped and everything it
    /// committed is handed out.
    pub(crate) fn spawn(
        self,
        rx: mpsc::Receiver<WriteOp>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (out, out_rx) = mpsc::channel(crate::handout::HANDOUT_QUEUE);
        let (handed_tx, handed_rx) = oneshot::channel::<()>();
        if let Err(e) = self.handout.spawn(out_rx, handed_tx) {
            // Nothing could be answered after a commit, so nothing is committed:
            // the receiver is gone, and every submit is told to retry.
            tracing::error!(error = %e, "could not start the chat hand-out thread");
            return tokio::spawn(async {});
        }
        let committer = Committer {
            store: self.store,
            out,
            clock: self.clock,
            ttl_ms: self.ttl_ms,
            max_batch: self.max_batch,
            max_group: self.max_group,
            delay: self.delay,
        };
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let wait_both = async move {
            let _ = done_rx.await;
            let _ = handed_rx.await;
        };
        if !committer.store.wants_writer_thread() {
            return tokio::spawn(async move {
                committer.run(rx, shutdown).await;
                let _ = done_tx.send(());
                wait_both.await;
            });
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the chat writer thread; sharing the main one");
                return tokio::spawn(async move {
                    committer.run(rx, shutdown).await;
                    let _ = done_tx.send(());
                    wait_both.await;
                });
            }
        };
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let started = std::thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                runtime.block_on(committer.run(rx, shutdown));
                let _ = done_tx.send(());
            });
        if let Err(e) = started {
            // The closure (and the writer in it) is gone; without a writer
            // nothing could be committed, so this is fatal for the service.
            tracing::error!(error = %e, "could not start the chat writer thread");
        }
        tokio::spawn(wait_both)
    }
}

impl Committer {
    /// Runs until `shutdown`, then commits what is already queued and stops.
    async fn run(self, mut rx: mpsc::Receiver<WriteOp>, shutdown: CancellationToken) {
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

    /// Queues a commit's results for the hand-out; waits while it is
    /// `HANDOUT_QUEUE` commits behind.
    async fn hand_over(&self, h: Handout) {
        if let Err(mpsc::error::SendError(h)) = self.out.send(h).await {
            tracing::error!("the chat hand-out has stopped; answering with retry");
            h.fail();
        }
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
        let outcome = match result {
            Ok(c) => Ok((c.outcomes, c.queued)),
            Err(e) => {
                metrics::counter!("chat_commit_errors_total").increment(1);
                tracing::error!(error = %e, ops = ops.len(), "chat commit failed; senders will be told to retry");
                Err(())
            }
        };
        self.hand_over(Handout::Batch {
            ops,
            replies,
            outcome,
            now,
        })
        .await;
    }

    async fn apply_group(
        &self,
        change: GroupChange,
        reply: oneshot::Sender<Result<GroupOutcome, String>>,
    ) {
        let now = self.clock.now_ms();
        let outcome = self
            .store
            .commit_group(&change, now, self.ttl_ms, self.max_group)
            .await
            .map_err(|e| StoreError::to_string(&e));
        self.hand_over(Handout::Group {
            reply,
            outcome,
            now,
        })
        .await;
    }
}
