//! Single-threaded wake-ups for tasks of one executor (never shared across cores).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
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

/// A single-executor channel: any number of senders, one receiver, unbounded (the callers bound
/// it: one message per replica or per request). For the per-request hot path, where a
/// cross-thread channel's atomics, locks and allocations are pure overhead.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Rc::new(Chan {
        queue: RefCell::new(VecDeque::new()),
        waker: Cell::new(None),
        senders: Cell::new(1),
        receiving: Cell::new(true),
    });
    (Sender(inner.clone()), Receiver(inner))
}

struct Chan<T> {
    queue: RefCell<VecDeque<T>>,
    waker: Cell<Option<Waker>>,
    senders: Cell<usize>,
    receiving: Cell<bool>,
}

impl<T> Chan<T> {
    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

pub struct Sender<T>(Rc<Chan<T>>);

impl<T> Sender<T> {
    /// Queue `v` for the receiver; gives it back when the receiver is gone.
    pub fn send(&self, v: T) -> Result<(), T> {
        if !self.0.receiving.get() {
            return Err(v);
        }
        self.0.queue.borrow_mut().push_back(v);
        self.0.wake();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.set(self.0.senders.get() + 1);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.senders.set(self.0.senders.get() - 1);
        if self.0.senders.get() == 0 {
            self.0.wake();
        }
    }
}

pub struct Receiver<T>(Rc<Chan<T>>);

impl<T> Receiver<T> {
    /// The next message, or `None` once every sender is gone and the queue is empty.
    pub fn recv(&self) -> Recv<'_, T> {
        Recv(self)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiving.set(false);
        self.0.queue.borrow_mut().clear();
    }
}

pub struct Recv<'a, T>(&'a Receiver<T>);

impl<T> Future for Recv<'_, T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let chan = &(self.0).0;
        if let Some(v) = chan.queue.borrow_mut().pop_front() {
            return Poll::Ready(Some(v));
        }
        if chan.senders.get() == 0 {
            return Poll::Ready(None);
        }
        chan.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn channel_delivers_in_order_then_ends_when_senders_are_gone() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        tx.send(1).expect("send");
        tx2.send(2).expect("send");
        drop(tx);
        assert_eq!(block_on(rx.recv()), Some(1));
        assert_eq!(block_on(rx.recv()), Some(2));
        assert!(
            futures_lite::future::block_on(futures_lite::future::poll_once(rx.recv())).is_none()
        );
        drop(tx2);
        assert_eq!(block_on(rx.recv()), None);
    }

    #[test]
    fn a_waiting_receiver_is_woken_and_a_gone_receiver_refuses() {
        let (tx, rx) = channel::<u8>();
        let mut recv = Box::pin(rx.recv());
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        tx.send(7).expect("send");
        assert_eq!(recv.as_mut().poll(&mut cx), Poll::Ready(Some(7)));
        drop(recv);
        drop(rx);
        assert_eq!(tx.send(8), Err(8));
    }
}
