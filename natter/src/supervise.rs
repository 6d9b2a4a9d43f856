//! Crash-only supervision of a process's long-running parts: a part that ends
//! or panics before shutdown fails `/readyz` under its name, and the process
//! stops and exits non-zero within a few seconds. Nothing is restarted in
//! place; an orchestrator restarts a process that exits, not one that runs on
//! half-alive.

use natter_common::Shutdown;
use natter_common::health::{ReadinessCheck, Vital};
use natter_common::parts::Part;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// After a part fails: how long `/readyz` reports it before the process starts
/// to stop, how long the HTTP drain may then take, and the hard deadline after
/// which the process exits whatever is still running.
const FATAL_REPORT: Duration = Duration::from_secs(1);
const FATAL_DRAIN: Duration = Duration::from_secs(2);
const FATAL_HARD_EXIT: Duration = Duration::from_secs(4);
/// How long the parts get to stop after the HTTP drain (SIGTERM), before the
/// process exits anyway and says which did not.
const PARTS_STOP_TIMEOUT: Duration = Duration::from_secs(4);

/// Watches the parts; turns the loss of one into a prompt, non-zero exit.
#[derive(Clone)]
pub(crate) struct Supervisor {
    /// The first failure: (part, reason).
    failure: Arc<Mutex<Option<(&'static str, String)>>>,
    /// Parts still running.
    running: Arc<Mutex<BTreeSet<&'static str>>>,
    /// Each watched part's readiness.
    vitals: Arc<Mutex<HashMap<&'static str, Vital>>>,
    stopped: Shutdown,
    watchers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// A part that drains (TURN) may run until then after the stop.
    stop_deadline: Arc<Mutex<Option<Instant>>>,
}

impl Supervisor {
    pub(crate) fn new() -> Self {
        Self {
            failure: Arc::default(),
            running: Arc::default(),
            vitals: Arc::default(),
            stopped: Shutdown::new(),
            watchers: Arc::default(),
            stop_deadline: Arc::default(),
        }
    }

    /// Watches `part` and returns its readiness check (named after it), which
    /// fails once the part has stopped before `shutdown`.
    pub(crate) fn watch(&self, part: Part, shutdown: &Shutdown) -> (&'static str, ReadinessCheck) {
        let vital = Vital::new();
        let check = (part.name, vital.check());
        let name = part.name;
        self.vitals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, vital);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
        let this = self.clone();
        let shutdown = shutdown.clone();
        let watcher = tokio::spawn(async move {
            let outcome = part.task.await;
            this.running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            let reason = match outcome {
                Ok(()) if shutdown.is_cancelled() => return,
                Ok(()) => "stopped before shutdown".to_owned(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(_) => "was cancelled".to_owned(),
            };
            this.fail(name, reason);
        });
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(watcher);
        check
    }

    /// Records `reason` against `part` (the first failure wins) and starts the
    /// fatal stop.
    pub(crate) fn fail(&self, part: &'static str, reason: String) {
        if let Some(vital) = self
            .vitals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(part)
        {
            if vital.failure().is_some() {
                return; // reported already (the TURN task says why, then ends)
            }
            vital.fail(reason.clone());
        }
        tracing::error!(part, %reason, "a vital part stopped; the process exits so that it is restarted");
        metrics::counter!("natter_part_failures_total", "part" => part).increment(1);
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert((part, reason));
        self.stopped.cancel();
    }

    /// Waits for a signal or a fatal stop, then cancels `shutdown`; returns how
    /// long the HTTP drain may take.
    pub(crate) async fn wait_for_stop(&self, shutdown: &Shutdown, drain: Duration) -> Duration {
        tokio::select! {
            _ = shutdown.cancelled() => drain,
            _ = self.stopped.cancelled() => {
                // Whatever hangs during the drain, the process is gone by then.
                std::thread::spawn(|| {
                    std::thread::sleep(FATAL_HARD_EXIT);
                    eprintln!("natter: a vital part stopped and the drain did not finish; exiting");
                    std::process::exit(1);
                });
                tokio::time::sleep(FATAL_REPORT).await;
                shutdown.cancel();
                FATAL_DRAIN
            }
        }
    }

    /// Lets the parts run until `deadline` before [`Supervisor::finish`] gives up
    /// on them (TURN relays live calls through its drain after SIGTERM).
    pub(crate) fn allow_stop_until(&self, deadline: Instant) {
        let mut d = self.stop_deadline.lock().unwrap_or_else(|p| p.into_inner());
        *d = Some(d.map_or(deadline, |old| old.max(deadline)));
    }

    /// Whether a part has failed (the stop is then fatal, not a drain).
    pub(crate) fn failed(&self) -> bool {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Waits (bounded) for every part to stop, then says how the process ends:
    /// an error names the failed part, or the parts that would not stop.
    pub(crate) async fn finish(&self) -> anyhow::Result<()> {
        let watchers =
            std::mem::take(&mut *self.watchers.lock().unwrap_or_else(|p| p.into_inner()));
        let all = futures_util::future::join_all(watchers);
        let allowed = self
            .stop_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
        let limit = PARTS_STOP_TIMEOUT.max(allowed);
        let timed_out = tokio::time::timeout(limit, all).await.is_err();
        if let Some((part, reason)) = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            anyhow::bail!("{part} {reason}");
        }
        if timed_out {
            let still: Vec<_> = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .copied()
                .collect();
            anyhow::bail!(
                "parts still running {} s after the drain: {}",
                limit.as_secs(),
                still.join(", ")
            );
        }
        Ok(())
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_part_that_panics_fails_readiness_under_its_name_and_stops_the_process() {
        let sup = Supervisor::new();
        let shutdown = Shutdown::new();
        let (name, check) = sup.watch(
            Part::new("chat-writer", tokio::spawn(async { panic!("boom") })),
            &shutdown,
        );
        assert_eq!(name, "chat-writer");
        tokio::time::timeout(Duration::from_secs(5), sup.stopped.cancelled())
            .await
            .expect("the fatal stop starts");
        assert_eq!(check().await, Err("panicked: boom".to_owned()));
        let err = sup.finish().await.unwrap_err().to_string();
        assert_eq!(err, "chat-writer panicked: boom");
    }

    #[tokio::test]
    async fn parts_that_end_after_shutdown_are_fine_and_a_hung_one_is_named() {
        let sup = Supervisor::new();
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let (_, ok) = sup.watch(
            Part::new(
                "auth-cleanup",
                tokio::spawn(async move { s.cancelled().await }),
            ),
            &shutdown,
        );
        shutdown.cancel();
        assert_eq!(ok().await, Ok(()));
        assert!(sup.finish().await.is_ok());

        let sup = Supervisor::new();
        let (_, _) = sup.watch(
            Part::new("bus-dispatch", tokio::spawn(std::future::pending())),
            &shutdown,
        );
        let err = sup.finish().await.unwrap_err().to_string();
        assert!(err.contains("bus-dispatch"), "{err}");
        assert!(
            !sup.stopped.is_cancelled(),
            "a part that hangs has not failed"
        );
    }
}
