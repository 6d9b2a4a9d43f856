//! The hand-out: answers a commit's operations and hands its queue entries to
//! sockets, on a thread of its own, in commit order.
//!
//! Why not on the writer: under load the writer thread is the ceiling of the
//! whole pipeline (one SQLite connection commits everything), and a tenth of
//! its time went to serialising frames and waking sockets after each commit.
//! Here that work runs beside the next transaction instead of before it.
//! Order is kept because one thread takes the commits from one queue.

use crate::hub::Hub;
use crate::pipeline::{Delivery, ItemRef};
use crate::push::PushNotice;
use crate::store::{BatchOp, GroupOutcome, OpOutcome, Queued, QueuedFrame};
use crate::writer::Reply;
use natter_common::UnixMillis;
use natter_proto::{MsgId, ServerFrame};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Commits that may wait for the hand-out while the writer goes on: enough to
/// overlap one transaction with the hand-out of the one before, few enough
/// that a stalled hand-out soon holds the writer back (memory stays bounded).
pub(crate) const HANDOUT_QUEUE: usize = 4;

/// One commit's results.
pub(crate) enum Handout {
    /// A group commit: one reply per operation, in order (`Err` when the
    /// commit failed, so every sender is told to retry).
    Batch {
        /// The operations themselves, bodies included: freed on the
        /// hand-out thread rather than on the writer's.
        ops: Vec<BatchOp>,
        replies: Vec<Option<Reply>>,
        outcome: Result<(Vec<OpOutcome>, Vec<Queued>), ()>,
        now: UnixMillis,
    },
    /// A group change, committed alone.
    Group {
        reply: oneshot::Sender<Result<GroupOutcome, String>>,
        outcome: Result<(GroupOutcome, Vec<Queued>), String>,
        now: UnixMillis,
    },
}

impl Handout {
    /// Answers every waiting operation with a failure, without touching any
    /// socket: for when the hand-out itself is gone.
    pub(crate) fn fail(self) {
        match self {
            Handout::Batch { replies, .. } => {
                for r in replies.into_iter().flatten() {
                    r(Err(()));
                }
            }
            Handout::Group { reply, .. } => {
                let _ = reply.send(Err("the chat writer has stopped".to_owned()));
            }
        }
    }
}

/// What the hand-out needs to reach sockets.
pub(crate) struct HandOut {
    pub(crate) hub: Arc<Hub>,
    pub(crate) cluster: Arc<dyn crate::cluster::Cluster>,
    pub(crate) push: mpsc::Sender<PushNotice>,
}

impl HandOut {
    /// Starts the hand-out thread; it ends once every sender of `rx` is gone
    /// and what they queued is handed out, and then completes `done`.
    pub(crate) fn spawn(
        self,
        mut rx: mpsc::Receiver<Handout>,
        done: oneshot::Sender<()>,
    ) -> std::io::Result<()> {
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        std::thread::Builder::new()
            .name("chat-handout".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                while let Some(h) = rx.blocking_recv() {
                    self.hand_out(h);
                }
                tracing::debug!("chat hand-out stopped");
                let _ = done.send(());
            })
            .map(|_| ())
    }

    /// Answers one commit's operations, then hands its entries out.
    pub(crate) fn hand_out(&self, h: Handout) {
        // Answers and deliveries of this commit reach each socket together.
        let _handing_out = self.hub.dispatch_scope();
        match h {
            Handout::Batch {
                ops,
                replies,
                outcome: Ok((outcomes, queued)),
                now,
            } => {
                drop(ops);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    if let OpOutcome::Send(crate::store::SendOutcome::Stored(_)) = &outcome {
                        metrics::counter!("chat_messages_stored_total").increment(1);
                    }
                    if let Some(r) = reply {
                        r(Ok(outcome));
                    }
                }
                self.dispatch(queued, now);
            }
            Handout::Batch {
                replies,
                outcome: Err(()),
                ..
            } => {
                for r in replies.into_iter().flatten() {
                    r(Err(()));
                }
            }
            Handout::Group {
                reply,
                outcome: Ok((outcome, queued)),
                now,
            } => {
                let _ = reply.send(Ok(outcome));
                self.dispatch(queued, now);
            }
            Handout::Group {
                reply,
                outcome: Err(e),
                ..
            } => {
                let _ = reply.send(Err(e));
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
            let d = delivery_of(&q, &mut json_cache);
            if !self.hub.deliver(&q.user, q.device, q.generation, d) {
                elsewhere.push(q);
            }
        }
        for q in self.cluster.forward(elsewhere, now) {
            crate::cluster::push_if_due(&self.hub, &self.push, &q, now);
        }
        metrics::counter!("chat_queue_entries_total").increment(n as u64);
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
    use crate::hub::{Closer, Outbound};
    use natter_proto::{ClientMsgId, Receipt, ReceiptStatus, Target, UserId};
    use std::sync::Mutex;
    use std::time::Duration;

    /// A receipt entry for `alice`'s device 1 at queue position `seq`.
    fn receipt_entry(seq: i64) -> Queued {
        Queued {
            user: UserId::new("alice"),
            device: 1,
            generation: 1,
            seq,
            prev: None,
            frame: QueuedFrame::Receipt(Receipt {
                receipt_id: seq as u64,
                msg_id: 7,
                id: ClientMsgId::new("c1"),
                to: Target::User(UserId::new("bob")),
                status: ReceiptStatus::Delivered,
                by: UserId::new("bob"),
                ts: 0,
            }),
        }
    }

    /// A reply that writes what it was answered with into `log`.
    fn logged(log: &Arc<Mutex<Vec<String>>>, name: &'static str) -> Option<Reply> {
        let log = log.clone();
        Some(Box::new(move |r: Result<OpOutcome, ()>| {
            let what = match r {
                Ok(OpOutcome::Unknown(_)) => "ok",
                Ok(_) => "other",
                Err(()) => "retry",
            };
            log.lock().unwrap().push(format!("{name}: {what}"));
        }))
    }

    fn batch(log: &Arc<Mutex<Vec<String>>>, name: &'static str, seqs: &[i64]) -> Handout {
        Handout::Batch {
            ops: Vec::new(),
            replies: vec![logged(log, name)],
            outcome: Ok((
                vec![OpOutcome::Unknown(Vec::new())],
                seqs.iter().copied().map(receipt_entry).collect(),
            )),
            now: 0,
        }
    }

    /// Commits go through the hand-out thread in the order they were queued:
    /// answers in order, and a device gets entries in sequence order; a
    /// failed commit answers "retry" and hands nothing out. The thread ends once its senders are gone.
    #[test]
    fn commits_are_answered_and_handed_out_in_order() {
        let hub = Arc::new(Hub::new(0));
        let (dev_tx, mut dev_rx) = mpsc::channel(16);
        hub.register(
            &UserId::new("alice"),
            1,
            1,
            0,
            dev_tx,
            Arc::new(Closer::default()),
        );
        let (push, _push_rx) = mpsc::channel(4);
        let out = HandOut {
            hub,
            cluster: Arc::new(crate::cluster::Embedded),
            push,
        };
        let (tx, rx) = mpsc::channel(HANDOUT_QUEUE);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (done, done_sig) = oneshot::channel();
        out.spawn(rx, done).expect("thread");
        std::thread::spawn(move || {
            let _ = done_tx.send(done_sig.blocking_recv());
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        tx.blocking_send(batch(&log, "first", &[1, 2])).unwrap();
        tx.blocking_send(Handout::Batch {
            ops: Vec::new(),
            replies: vec![logged(&log, "failed"), None],
            outcome: Err(()),
            now: 0,
        })
        .unwrap();
        tx.blocking_send(batch(&log, "second", &[3])).unwrap();
        drop(tx);
        done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the hand-out ends once its senders are gone")
            .expect("and says so");
        assert_eq!(
            *log.lock().unwrap(),
            ["first: ok", "failed: retry", "second: ok"]
        );
        let mut seqs = Vec::new();
        while let Ok(Outbound::Delivery(d)) = dev_rx.try_recv() {
            seqs.push(d.seq);
        }
        assert_eq!(
            seqs,
            [1, 2, 3],
            "entries in commit order, none from the failed commit"
        );
    }

    /// With the hand-out gone, the writer answers every waiting operation
    /// with "retry" itself, so no sender waits for an answer that never comes.
    #[test]
    fn a_handout_that_cannot_run_answers_retry() {
        let log = Arc::new(Mutex::new(Vec::new()));
        batch(&log, "op", &[1]).fail();
        assert_eq!(*log.lock().unwrap(), ["op: retry"]);
        let (reply, answer) = oneshot::channel();
        Handout::Group {
            reply,
            outcome: Err("never handed out".into()),
            now: 0,
        }
        .fail();
        assert!(answer.blocking_recv().expect("answered").is_err());
    }
}
