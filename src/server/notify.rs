//! Single-threaded wake-ups for tasks of one executor (never shared across cores).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on a condition it guards.
#[derive(Default)]
pub struct Notify {
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once `cond()` holds; re-checked on every `notify_all`.
    pub fn wait_until<F: Fn() -> bool>(&self, cond: F) -> WaitUntil<'_, F> {
        WaitUntil { notify: self, cond }
    }
}

pub struct WaitUntil<'a, F> {
    notify: &'a Notify,
    cond: F,
}

impl<F: Fn() -> bool> Future for WaitUntil<'_, F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.cond)() {
            return Poll::Ready(());
        }
        // No duplicate scan: every waker is drained by `notify_all`, and a waiting future is
        // only polled again after a wake, so the list stays as long as the waiters.
        self.notify.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// A flag set once (e.g. "shutting down") that tasks can await.
#[derive(Default)]
pub struct Latch {
    set: Cell<bool>,
    notify: Notify,
}

impl Latch {
    pub fn set(&self) {
        self.set.set(true);
        self.notify.notify_all();
    }

    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub async fn wait(&self) {
        self.notify.wait_until(|| self.set.get()).await
    }
}
