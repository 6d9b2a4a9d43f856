//! Graceful shutdown: one token cancelled on SIGTERM/SIGINT, watched by every task.

use tokio_util::sync::CancellationToken;

/// Cancelled once when the process is asked to stop. Clone it into every task;
/// servers stop accepting, drain in-flight work, then return.
pub type Shutdown = CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or SIGINT.
pub fn on_signals() -> Shutdown {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // Both handlers are registered before waiting, so a signal arriving between
    // them is not lost. Registration fails only without a signal driver, which
    // a multi-threaded tokio runtime always has.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler (tokio signal driver)");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler (tokio signal driver)");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
