//! A future polled again only once its own waker has fired.
//!
//! A connection races its reads against its deadline watchdog and the
//! shutdown signal. `select!` polls every branch each time the task wakes,
//! which on a kept-alive connection is once per request; polling a timer or
//! a notification that is already registered is not free (an atomic swap of
//! the waker, a lock for the notification). [`OnWake`] gives the inner future
//! a waker of its own and skips polling it until that waker fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Wraps `F`, polling it on the first poll and then only after it asked to
/// be woken.
pub(super) struct OnWake<F> {
    inner: F,
    signal: Arc<Signal>,
    waker: Waker,
    polled: bool,
}

/// The inner future's waker: remembers that it fired and wakes the task.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> OnWake<F> {
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            woken: AtomicBool::new(false),
            task: AtomicWaker::new(),
        });
        Self {
            inner,
            waker: Waker::from(signal.clone()),
            signal,
            polled: false,
        }
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read: a wake in between is seen now
        // or wakes the task again.
        this.signal.task.register(cx.waker());
        if this.polled && !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.polled = true;
        let mut inner_cx = Context::from_waker(&this.waker);
        Pin::new(&mut this.inner).poll(&mut inner_cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    /// Pending until released; counts its polls and keeps its waker.
    #[derive(Default)]
    struct Gate {
        polls: AtomicUsize,
        open: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct Wait<'a>(&'a Gate);

    impl Future for Wait<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::Relaxed);
            if self.0.open.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_its_waker_fired() {
        let gate = Gate::default();
        let mut future = OnWake::new(Wait(&gate));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..5 {
            assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        }
        assert_eq!(gate.polls.load(Ordering::Relaxed), 1);

        gate.open.store(true, Ordering::Relaxed);
        // Not woken yet: still not polled, however often the task is.
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        gate.waker.lock().unwrap().take().unwrap().wake();
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
        assert_eq!(gate.polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_wake_reaches_the_task() {
        let woken = Arc::new(AtomicUsize::new(0));
        struct Count(Arc<AtomicUsize>);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let task = Waker::from(Arc::new(Count(woken.clone())));
        let gate = Gate::default();
        let mut future = OnWake::new(Wait(&gate));
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&task))
                .is_pending()
        );
        gate.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(woken.load(Ordering::Relaxed), 1);
    }
}
