//! Read deadlines of one core's client connections, enforced by one reaper task per core.
//!
//! Owns: each connection's current read deadline (the idle timeout, or the frame deadline once
//! part of a frame has arrived) and ending the reads that pass it or that are still waiting
//! when the node shuts down. Arming a deadline stores an `Instant`; a read that has to wait
//! also leaves its waker. (A glommio read timeout instead put a timer into the executor's timer
//! tree and took it out again on every request, and every read joined the shutdown latch's
//! waiter list: together ~2 % of an unpipelined GET's CPU under `perf`.) The price is
//! resolution: a deadline is noticed up to one tick late (`tick_for`).
//!
//! Never touches a socket: the connection runs its read inside `Watch::within`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::limits::{
    FRAME_DEADLINE_MS, READ_DEADLINE_TICKS_PER_TIMEOUT, READ_DEADLINE_TICK_MS_MAX,
    READ_DEADLINE_TICK_MS_MIN,
};
use crate::server::notify::{Latch, Notify};

/// Why a connection's read was ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    TimedOut,
    ShuttingDown,
    /// Its slot was given to a newer connection (`admission`): it had not authenticated.
    Evicted,
}

/// One connection's read deadline.
#[derive(Default)]
pub struct Watch {
    deadline: Cell<Option<Instant>>,
    ended: Cell<Option<Ended>>,
    waker: RefCell<Option<Waker>>,
}

impl Watch {
    /// Run `fut` (a read, a handshake) under `deadline`: its output, or why it was ended.
    pub async fn within<T>(
        &self,
        deadline: Instant,
        fut: impl Future<Output = T>,
    ) -> Result<T, Ended> {
        self.arm(deadline);
        let r = future::or(async { Ok(fut.await) }, async { Err(self.ended().await) }).await;
        self.disarm();
        r
    }

    /// Until `disarm`, the connection's read must complete by `deadline`.
    fn arm(&self, deadline: Instant) {
        // A read that completed in the same turn the reaper ended it was not late after all.
        if self.ended.get() == Some(Ended::TimedOut) {
            self.ended.set(None);
        }
        self.deadline.set(Some(deadline));
    }

    /// The read completed: no deadline until the next `arm`.
    fn disarm(&self) {
        self.deadline.set(None);
    }

    /// Resolves once the armed deadline has passed or the node shuts down.
    fn ended(&self) -> EndedFuture<'_> {
        EndedFuture { watch: self }
    }

    /// End this connection's reads for good: it had not authenticated and its slot is needed.
    pub fn evict(&self) {
        self.end(Ended::Evicted);
    }

    /// Whether (and why) this connection's reads have been ended.
    pub fn ended_now(&self) -> Option<Ended> {
        self.ended.get()
    }

    fn end(&self, why: Ended) {
        self.ended.set(Some(why));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

struct EndedFuture<'a> {
    watch: &'a Watch,
}

impl Future for EndedFuture<'_> {
    type Output = Ended;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        if let Some(why) = self.watch.ended.get() {
            return Poll::Ready(why);
        }
        // One waker per connection, replaced (never added to) when the task's changes.
        let mut slot = self.watch.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Every connection watch of one core.
#[derive(Default)]
pub struct Deadlines {
    watches: RefCell<Vec<Weak<Watch>>>,
    closed: Cell<bool>,
    added: Notify,
}

impl Deadlines {
    /// A watch for a new connection (already ended if the node is shutting down).
    pub fn watch(&self) -> Rc<Watch> {
        let w = Rc::new(Watch::default());
        if self.closed.get() {
            w.end(Ended::ShuttingDown);
        } else {
            self.watches.borrow_mut().push(Rc::downgrade(&w));
            self.added.notify_all();
        }
        w
    }

    /// End every armed read whose deadline is at or before `now`; forget closed connections.
    pub fn check(&self, now: Instant) {
        let mut late = Vec::new();
        self.watches.borrow_mut().retain(|w| match w.upgrade() {
            Some(w) => {
                if w.deadline.get().is_some_and(|d| d <= now) {
                    late.push(w);
                }
                true
            }
            None => false,
        });
        // Woken outside the borrow: a woken task may open a connection (and push a watch).
        for w in late {
            w.end(Ended::TimedOut);
        }
    }

    /// End every read, now and of connections opened from now on.
    pub fn shut_down(&self) {
        self.closed.set(true);
        let watches = std::mem::take(&mut *self.watches.borrow_mut());
        for w in watches.iter().filter_map(Weak::upgrade) {
            w.end(Ended::ShuttingDown);
        }
    }

    fn is_empty(&self) -> bool {
        self.watches.borrow().is_empty()
    }
}

/// How often the reaper looks: an eighth of the shortest deadline, within
/// [`READ_DEADLINE_TICK_MS_MIN`, `READ_DEADLINE_TICK_MS_MAX`].
pub fn tick_for(idle_timeout_ms: u64) -> Duration {
    let shortest = idle_timeout_ms.min(FRAME_DEADLINE_MS);
    Duration::from_millis(
        (shortest / READ_DEADLINE_TICKS_PER_TIMEOUT)
            .clamp(READ_DEADLINE_TICK_MS_MIN, READ_DEADLINE_TICK_MS_MAX),
    )
}

/// The reaper: checks the deadlines every `tick` while connections are open (an idle core with
/// none sleeps until one opens), and ends every read at shutdown.
pub async fn run(deadlines: &Deadlines, shutdown: &Latch, tick: Duration) {
    loop {
        let stopping = future::or(
            async {
                if deadlines.is_empty() {
                    deadlines.added.wait_until(|| !deadlines.is_empty()).await;
                }
                glommio::timer::sleep(tick).await;
                false
            },
            async {
                shutdown.wait().await;
                true
            },
        )
        .await;
        if stopping {
            deadlines.shut_down();
            return;
        }
        deadlines.check(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(w: &Watch) -> Poll<Ended> {
        let mut fut = w.ended();
        Pin::new(&mut fut).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A core's deadlines with one connection armed `after` past the returned instant.
    fn one_armed(after: Duration) -> (Deadlines, Rc<Watch>, Instant) {
        let d = Deadlines::default();
        let w = d.watch();
        let t0 = Instant::now();
        w.arm(t0 + after);
        (d, w, t0)
    }

    #[test]
    fn an_armed_read_ends_at_its_deadline_and_not_before() {
        let (d, w, t0) = one_armed(Duration::from_millis(100));
        d.check(t0 + Duration::from_millis(99));
        assert_eq!(poll(&w), Poll::Pending);
        d.check(t0 + Duration::from_millis(100));
        assert_eq!(poll(&w), Poll::Ready(Ended::TimedOut));
    }

    #[test]
    fn a_disarmed_connection_never_times_out() {
        let (d, w, t0) = one_armed(Duration::ZERO);
        w.disarm();
        d.check(t0 + Duration::from_secs(3600));
        assert_eq!(poll(&w), Poll::Pending);
    }

    #[test]
    fn rearming_forgives_a_timeout_the_read_beat() {
        let (d, w, t0) = one_armed(Duration::ZERO);
        d.check(t0);
        // The read completed in the same turn; the next read gets a fresh deadline.
        w.arm(t0 + Duration::from_secs(1));
        assert_eq!(poll(&w), Poll::Pending);
    }

    #[test]
    fn shutdown_ends_every_read_and_every_later_connection() {
        let d = Deadlines::default();
        let (a, b) = (d.watch(), d.watch());
        a.arm(Instant::now() + Duration::from_secs(3600));
        d.shut_down();
        assert_eq!(poll(&a), Poll::Ready(Ended::ShuttingDown));
        assert_eq!(poll(&b), Poll::Ready(Ended::ShuttingDown));
        let c = d.watch();
        c.arm(Instant::now() + Duration::from_secs(3600));
        assert_eq!(
            poll(&c),
            Poll::Ready(Ended::ShuttingDown),
            "arm keeps a shutdown"
        );
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let d = Deadlines::default();
        let kept = d.watch();
        drop(d.watch());
        d.check(Instant::now());
        assert_eq!(d.watches.borrow().len(), 1);
        drop(kept);
        d.check(Instant::now());
        assert!(d.is_empty());
    }

    #[test]
    fn the_tick_is_an_eighth_of_the_shortest_deadline_within_bounds() {
        assert_eq!(tick_for(800), Duration::from_millis(100));
        assert_eq!(tick_for(300), Duration::from_millis(37));
        assert_eq!(
            tick_for(0),
            Duration::from_millis(READ_DEADLINE_TICK_MS_MIN)
        );
        // The default idle timeout: bounded by the frame deadline, then by the maximum.
        assert_eq!(
            tick_for(crate::limits::IDLE_TIMEOUT_MS_DEFAULT),
            Duration::from_millis(READ_DEADLINE_TICK_MS_MAX.min(FRAME_DEADLINE_MS / 8))
        );
    }
}
