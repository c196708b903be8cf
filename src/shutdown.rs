//! Graceful shutdown, threaded through every part that runs.
//!
//! A [`Shutdown`] is a cloneable handle on one flag. Anything may trigger it
//! (the signal thread on SIGINT/SIGTERM, a test); listeners stop accepting,
//! open connections finish their current request, and background threads
//! exit. It is built on `tokio::sync::watch`, which needs no tokio runtime, so
//! every reactor can wait on it.

use std::io;
use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        Self {
            sender: Arc::new(sender),
            receiver,
        }
    }

    /// Asks everything to stop. Idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        // An error means every sender is gone: nobody can trigger any more,
        // which only happens at exit, so treat it as shutdown too.
        let _ = receiver.wait_for(|stop| *stop).await;
    }
}

/// Triggers `shutdown` on the first SIGINT or SIGTERM; a second one exits
/// at once (for an operator whose shutdown is stuck).
pub fn on_signals(shutdown: Shutdown) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if shutdown.is_triggered() {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(130);
                }
                tracing::info!(signal, "signal received: shutting down");
                shutdown.trigger();
            }
        })?;
    Ok(())
}
