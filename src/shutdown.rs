//! Graceful shutdown, threaded through every part that runs.
//!
//! A [`Shutdown`] is a cloneable handle on one flag. Anything may trigger it
//! (the signal thread on SIGINT/SIGTERM, a test); listeners stop accepting,
//! open connections finish their current request, and background threads
//! exit. It is built on `tokio::sync::watch`, which needs no tokio runtime, so
//! every reactor can wait on it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
    receiver: watch::Receiver<bool>,
    /// The same flag, for [`Shutdown::is_triggered`]: connections check it
    /// between requests, and a plain load is cheaper than the watch's lock.
    triggered: Arc<AtomicBool>,
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
            triggered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks everything to stop. Idempotent.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::Relaxed);
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::Relaxed)
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut receiver = self.receiver.clone();
        // An error means every sender is gone: nobody can trigger any more,
        // which only happens at exit, so treat it as shutdown too.
        let _ = receiver.wait_for(|stop| *stop).await;
    }
}

/// One thing to do on reload.
type Handler = Box<dyn Fn() + Send>;

/// Things to do again on SIGHUP (re-read access lists, ...). Handlers run on
/// the signal thread, one after another.
#[derive(Clone, Default)]
pub struct Reload {
    handlers: Arc<std::sync::Mutex<Vec<Handler>>>,
}

impl Reload {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` on every reload.
    pub fn subscribe(&self, handler: impl Fn() + Send + 'static) {
        if let Ok(mut handlers) = self.handlers.lock() {
            handlers.push(Box::new(handler));
        }
    }

    /// Runs every handler now.
    pub fn trigger(&self) {
        if let Ok(handlers) = self.handlers.lock() {
            handlers.iter().for_each(|handler| handler());
        }
    }
}

/// Triggers `reload` on SIGHUP, and `shutdown` on the first SIGINT or SIGTERM; another one more
/// than a second later exits at once (for an operator whose shutdown is stuck).
pub fn on_signals(shutdown: Shutdown, reload: Reload) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading");
                    reload.trigger();
                    continue;
                }
                match first {
                    // A signal sent to a whole process group can arrive
                    // twice at once; only a deliberate second one counts.
                    Some(at) if at.elapsed() > std::time::Duration::from_secs(1) => {
                        tracing::warn!(signal, "second signal: exiting now");
                        std::process::exit(130);
                    }
                    Some(_) => {}
                    None => {
                        tracing::info!(signal, "signal received: shutting down");
                        first = Some(std::time::Instant::now());
                        shutdown.trigger();
                    }
                }
            }
        })?;
    Ok(())
}
