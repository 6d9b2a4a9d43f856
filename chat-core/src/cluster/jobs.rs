//! The bus dispatcher's queue, with a bound: a stalled Redis (or a dispatcher
//! that cannot keep up) must not grow memory without end. Ephemeral frames
//! (typing, presence, call signaling) are shed first, once a modest backlog
//! has built up; queue entries, which a device waits for, are refused only far
//! later (they stay in the store and reach the device at its next entry or
//! reconnect).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// What a job weighs in the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Weight {
    /// May be dropped: the frame is best-effort anyway.
    Ephemeral,
    /// Carries this many queue entries (or one close).
    Durable(usize),
}

/// Jobs and entries waiting, shared by both ends.
#[derive(Debug, Default)]
struct Backlog {
    jobs: AtomicUsize,
    entries: AtomicUsize,
}

/// The sending end.
pub(super) struct JobQueue<J> {
    tx: mpsc::UnboundedSender<(J, Weight)>,
    backlog: Arc<Backlog>,
    /// Ephemeral jobs are shed once this many jobs of any kind wait.
    ephemeral_at: usize,
    /// Durable jobs are refused once this many entries wait.
    max_entries: usize,
}

/// The receiving end (the dispatcher).
pub(super) struct JobReceiver<J> {
    rx: mpsc::UnboundedReceiver<(J, Weight)>,
    backlog: Arc<Backlog>,
}

/// A queue shedding ephemeral jobs past `ephemeral_at` waiting jobs and
/// refusing durable ones past `max_entries` waiting entries.
pub(super) fn job_queue<J>(
    ephemeral_at: usize,
    max_entries: usize,
) -> (JobQueue<J>, JobReceiver<J>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::default());
    (
        JobQueue {
            tx,
            backlog: backlog.clone(),
            ephemeral_at,
            max_entries,
        },
        JobReceiver { rx, backlog },
    )
}

impl<J> JobQueue<J> {
    /// Queues `job` unless the bound says no; false (and counted in
    /// `chat_bus_shed_total`) when it was dropped.
    pub(super) fn push(&self, job: J, weight: Weight) -> bool {
        let shed = match weight {
            Weight::Ephemeral => self.backlog.jobs.load(Ordering::Relaxed) >= self.ephemeral_at,
            Weight::Durable(n) => {
                self.backlog.entries.load(Ordering::Relaxed) + n > self.max_entries
            }
        };
        if shed {
            let kind = match weight {
                Weight::Ephemeral => "ephemeral",
                Weight::Durable(_) => "entries",
            };
            metrics::counter!("chat_bus_shed_total", "kind" => kind).increment(1);
            return false;
        }
        self.backlog.jobs.fetch_add(1, Ordering::Relaxed);
        if let Weight::Durable(n) = weight {
            self.backlog.entries.fetch_add(n, Ordering::Relaxed);
        }
        if let Err(mpsc::error::SendError((_, weight))) = self.tx.send((job, weight)) {
            // The dispatcher is gone (shutdown): nothing waits.
            self.taken(weight);
        }
        true
    }

    fn taken(&self, weight: Weight) {
        take(&self.backlog, weight);
    }

    /// Jobs waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.backlog.jobs.load(Ordering::Relaxed)
    }
}

fn take(backlog: &Backlog, weight: Weight) {
    backlog.jobs.fetch_sub(1, Ordering::Relaxed);
    if let Weight::Durable(n) = weight {
        backlog.entries.fetch_sub(n, Ordering::Relaxed);
    }
}

impl<J> JobReceiver<J> {
    /// The next job; `None` once every sender is gone.
    pub(super) async fn recv(&mut self) -> Option<J> {
        let (job, weight) = self.rx.recv().await?;
        take(&self.backlog, weight);
        Some(job)
    }

    /// The next job if one waits.
    pub(super) fn try_recv(&mut self) -> Option<J> {
        let (job, weight) = self.rx.try_recv().ok()?;
        take(&self.backlog, weight);
        Some(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ephemeral_frames_are_shed_first_and_entries_only_far_later() {
        let (q, mut rx) = job_queue::<u32>(4, 10);
        // A backlog of 4 jobs: the fifth ephemeral one is shed…
        for i in 0..4 {
            assert!(q.push(i, Weight::Ephemeral));
        }
        assert!(!q.push(99, Weight::Ephemeral), "shed past the backlog");
        // …but entries are still taken, up to their own bound.
        assert!(q.push(4, Weight::Durable(6)));
        assert!(q.push(5, Weight::Durable(4)));
        assert!(!q.push(6, Weight::Durable(1)), "11 entries waiting");
        assert_eq!(q.waiting(), 6);
        // Taking jobs frees room for both kinds again.
        let mut got = Vec::new();
        while let Some(j) = rx.try_recv() {
            got.push(j);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5], "order is kept");
        assert_eq!(q.waiting(), 0);
        assert!(q.push(7, Weight::Ephemeral));
        assert!(q.push(8, Weight::Durable(10)));
        assert_eq!(rx.recv().await, Some(7));
        assert_eq!(rx.recv().await, Some(8));
    }

    #[test]
    fn a_queue_without_a_receiver_holds_nothing() {
        let (q, rx) = job_queue::<u32>(4, 10);
        drop(rx);
        assert!(q.push(1, Weight::Durable(5)));
        assert_eq!(q.waiting(), 0);
    }
}
