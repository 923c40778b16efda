//! Single-threaded wake-ups for tasks of one executor (never shared across cores).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on a condition it guards.
///
/// Each waiting future holds one slot: polled again before a wake-up (as the losing side of a
/// `future::or` is, on every wake of its task) it replaces its waker instead of adding one,
/// and dropped it frees its slot. (Adding a waker per poll grew the list without bound on
/// long-lived connections until glommio's 16-bit task reference count overflowed.)
#[derive(Default)]
pub struct Notify {
    waiters: RefCell<Waiters>,
    /// Bumped by every `notify_all`: a slot taken in an earlier generation is gone.
    generation: Cell<u64>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Notify {
    pub fn notify_all(&self) {
        let slots = {
            let mut w = self.waiters.borrow_mut();
            if w.slots.is_empty() {
                return;
            }
            w.free.clear();
            std::mem::take(&mut w.slots)
        };
        self.generation.set(self.generation.get() + 1);
        for w in slots.into_iter().flatten() {
            w.wake();
        }
    }

    /// Resolves once `cond()` holds; re-checked on every `notify_all`.
    pub fn wait_until<F: Fn() -> bool>(&self, cond: F) -> WaitUntil<'_, F> {
        WaitUntil {
            notify: self,
            cond,
            slot: Cell::new(None),
        }
    }

    /// Wakers registered (one per waiting future).
    #[cfg(test)]
    fn registered(&self) -> usize {
        self.waiters.borrow().slots.iter().flatten().count()
    }
}

pub struct WaitUntil<'a, F> {
    notify: &'a Notify,
    cond: F,
    /// (generation, index) of this future's slot, while it has one.
    slot: Cell<Option<(u64, usize)>>,
}

impl<F> WaitUntil<'_, F> {
    fn release(&self) {
        if let Some((generation, i)) = self.slot.take() {
            if generation == self.notify.generation.get() {
                let mut w = self.notify.waiters.borrow_mut();
                w.slots[i] = None;
                w.free.push(i);
            }
        }
    }
}

impl<F: Fn() -> bool> Future for WaitUntil<'_, F> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if (self.cond)() {
            self.release();
            return Poll::Ready(());
        }
        let generation = self.notify.generation.get();
        let mut w = self.notify.waiters.borrow_mut();
        match self.slot.get() {
            Some((g, i)) if g == generation => {
                let slot = &mut w.slots[i];
                if !slot.as_ref().is_some_and(|old| old.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
            _ => {
                let waker = Some(cx.waker().clone());
                let i = match w.free.pop() {
                    Some(i) => {
                        w.slots[i] = waker;
                        i
                    }
                    None => {
                        w.slots.push(waker);
                        w.slots.len() - 1
                    }
                };
                self.slot.set(Some((generation, i)));
            }
        }
        Poll::Pending
    }
}

impl<F> Drop for WaitUntil<'_, F> {
    fn drop(&mut self) {
        self.release();
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

    /// Whether nothing more can arrive: every sender is gone and the queue is empty.
    pub fn is_finished(&self) -> bool {
        self.0.senders.get() == 0 && self.0.queue.borrow().is_empty()
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

    fn noop_context_poll<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    /// A waiter polled over and over without a wake-up (the losing side of `future::or`)
    /// holds one slot, and gives it back when dropped.
    #[test]
    fn a_waiter_polled_again_and_again_holds_one_slot() {
        let notify = Notify::default();
        let flag = Cell::new(false);
        let mut a = Box::pin(notify.wait_until(|| flag.get()));
        let mut b = Box::pin(notify.wait_until(|| flag.get()));
        for _ in 0..100_000 {
            assert!(noop_context_poll(&mut a).is_pending());
        }
        assert!(noop_context_poll(&mut b).is_pending());
        assert_eq!(notify.registered(), 2);
        drop(b);
        assert_eq!(notify.registered(), 1);
        // A new waiter reuses the freed slot.
        let mut c = Box::pin(notify.wait_until(|| flag.get()));
        assert!(noop_context_poll(&mut c).is_pending());
        assert_eq!(notify.waiters.borrow().slots.len(), 2);
        // notify_all wakes and forgets everyone; a waiter that is still waiting registers anew.
        notify.notify_all();
        assert_eq!(notify.registered(), 0);
        assert!(noop_context_poll(&mut a).is_pending());
        assert_eq!(notify.registered(), 1);
        drop(c); // its slot belonged to the previous generation: nothing to free
        assert_eq!(notify.registered(), 1);
        flag.set(true);
        assert!(noop_context_poll(&mut a).is_ready());
        assert_eq!(notify.registered(), 0);
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
