//! Long-running parts of a service (the chat writer, the Redis bus, the push
//! sender, garbage collectors…), each a named task that must live until
//! shutdown. The binary supervises them: a part that ends or panics before
//! shutdown fails readiness under its name and stops the process (crash-only:
//! nothing restarts a part in place, the orchestrator restarts the process).

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A named background task.
pub struct Part {
    /// Short, stable, operator-facing (`/readyz` and logs show it).
    pub name: &'static str,
    /// Ends when the part stops.
    pub task: JoinHandle<()>,
}

impl Part {
    /// Spawns `fut` on the current runtime as the part `name`.
    pub fn spawn<F>(name: &'static str, fut: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self {
            name,
            task: tokio::spawn(with_test_fault(name, fut)),
        }
    }

    /// A part whose task was started elsewhere (an OS thread's watcher).
    pub fn new(name: &'static str, task: JoinHandle<()>) -> Self {
        Self { name, task }
    }
}

/// Runs `fut`; in debug builds only, when `NATTER_TEST_STOP_PART` names this
/// part, drops it and panics, as a bug in the part would: after a delay
/// (`name` or `name@millis`, default 500 ms) or once a file exists
/// (`name@/absolute/path`, so a test can stop it after start-up however slow
/// that is). Tests use it to stop each part of a real process; release builds
/// ignore the variable.
pub async fn with_test_fault<F: Future<Output = ()>>(name: &'static str, fut: F) {
    #[cfg(debug_assertions)]
    if let Some(trigger) = test_fault(name) {
        let fired = async {
            match trigger {
                Trigger::After(d) => tokio::time::sleep(d).await,
                Trigger::WhenExists(path) => {
                    while !path.exists() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        };
        tokio::select! {
            _ = fut => return,
            _ = fired => {}
        }
        panic!("{name}: stopped by NATTER_TEST_STOP_PART (test fault injection)");
    }
    #[cfg(not(debug_assertions))]
    let _ = name; // only fault injection, in debug builds, reads it
    fut.await
}

/// When an injected fault fires.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(not(debug_assertions), allow(dead_code))]
enum Trigger {
    After(Duration),
    WhenExists(std::path::PathBuf),
}

/// The trigger for `name`, if the variable names it.
#[cfg_attr(not(debug_assertions), allow(dead_code))]
fn test_fault(name: &str) -> Option<Trigger> {
    parse_test_fault(&std::env::var("NATTER_TEST_STOP_PART").ok()?, name)
}

#[cfg_attr(not(debug_assertions), allow(dead_code))]
fn parse_test_fault(value: &str, name: &str) -> Option<Trigger> {
    let (part, trigger) = match value.split_once('@') {
        Some((p, path)) if path.starts_with('/') => (p, Trigger::WhenExists(path.into())),
        Some((p, ms)) => (p, Trigger::After(Duration::from_millis(ms.parse().ok()?))),
        None => (value, Trigger::After(Duration::from_millis(500))),
    };
    (part == name).then_some(trigger)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_variable_names_one_part_and_a_delay() {
        assert_eq!(
            parse_test_fault("chat-writer", "chat-writer"),
            Some(Trigger::After(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_test_fault("chat-bus@50", "chat-bus"),
            Some(Trigger::After(Duration::from_millis(50)))
        );
        assert_eq!(
            parse_test_fault("bus@/tmp/stop-bus", "bus"),
            Some(Trigger::WhenExists("/tmp/stop-bus".into()))
        );
        assert_eq!(parse_test_fault("chat-bus@50", "chat-writer"), None);
        assert_eq!(parse_test_fault("chat-bus@x", "chat-bus"), None);
    }

    #[tokio::test]
    async fn a_part_that_finishes_ends_its_task() {
        let p = Part::spawn("unit", async {});
        assert_eq!(p.name, "unit");
        p.task.await.expect("no panic");
    }
}
