//! Connections that have not shown who they are yet: one core's pool of them, bounded, each
//! under a deadline (PostgreSQL's `authentication_timeout`, OpenSSH's `LoginGraceTime` and
//! `MaxStartups`).
//!
//! Owns: which of this core's connections are still unadmitted (no AUTH yet, no proof of the
//! cluster secret), oldest first, and the rule that keeps them from starving everyone else:
//! - at most `unadmitted_max` of them per core (`UNADMITTED_SHARE_PERCENT` of
//!   `--max-connections`, split over the cores); a new connection past it evicts the oldest,
//!   so a client with the password always gets in at once and authenticates;
//! - a connection arriving over `--max-connections` takes the slot of the oldest unadmitted
//!   one, or is closed if every slot is held by admitted clients;
//! - each must be admitted within `--auth-timeout-ms` of opening; bytes it sends do not extend
//!   that (`connection` checks it after every batch and bounds every read by it).
//!
//! Never reads or writes a socket: it ends a connection through its read `Watch`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use crate::limits::UNADMITTED_SHARE_PERCENT;
use crate::server::front::deadline::Watch;

/// Unadmitted connections one core may hold (at least one).
pub fn unadmitted_max(max_connections: usize, cores: usize) -> usize {
    (max_connections * UNADMITTED_SHARE_PERCENT / 100 / cores.max(1)).max(1)
}

/// One core's unadmitted connections, oldest first.
pub struct Pool {
    max: usize,
    waiting: RefCell<VecDeque<Weak<Watch>>>,
}

impl Pool {
    pub fn new(max: usize) -> Pool {
        Pool {
            max,
            waiting: RefCell::new(VecDeque::new()),
        }
    }

    /// A new unadmitted connection joins; past the bound, the oldest is evicted first.
    /// Whether one was evicted.
    pub fn enter(&self, watch: &Rc<Watch>) -> bool {
        self.forget_closed();
        let evicted = self.waiting.borrow().len() >= self.max && self.evict_oldest();
        self.waiting.borrow_mut().push_back(Rc::downgrade(watch));
        evicted
    }

    /// The connection was admitted (or closed): it no longer holds an unadmitted slot.
    pub fn leave(&self, watch: &Rc<Watch>) {
        let w = Rc::downgrade(watch);
        self.waiting.borrow_mut().retain(|x| !x.ptr_eq(&w));
    }

    /// End the oldest unadmitted connection to make room; false when there is none.
    pub fn evict_oldest(&self) -> bool {
        self.forget_closed();
        let oldest = self.waiting.borrow_mut().pop_front();
        match oldest.and_then(|w| w.upgrade()) {
            Some(w) => {
                w.evict();
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.forget_closed();
        self.waiting.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget_closed(&self) {
        self.waiting.borrow_mut().retain(|w| w.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::front::deadline::Ended;

    #[test]
    fn the_share_is_split_over_cores_and_never_zero() {
        assert_eq!(
            unadmitted_max(50, 2),
            50 * UNADMITTED_SHARE_PERCENT / 100 / 2
        );
        assert_eq!(unadmitted_max(1, 4), 1);
        assert_eq!(
            unadmitted_max(10_000, 1),
            10_000 * UNADMITTED_SHARE_PERCENT / 100
        );
    }

    #[test]
    fn at_the_bound_a_new_connection_evicts_the_oldest() {
        let pool = Pool::new(2);
        let a = Rc::new(Watch::default());
        let b = Rc::new(Watch::default());
        let c = Rc::new(Watch::default());
        assert!(!pool.enter(&a));
        assert!(!pool.enter(&b), "at the bound, not past it");
        assert_eq!(pool.len(), 2);
        assert!(pool.enter(&c), "one past: the oldest goes");
        assert_eq!(a.ended_now(), Some(Ended::Evicted));
        assert_eq!(b.ended_now(), None);
        assert_eq!(pool.len(), 2);
        // admitted connections leave; closed ones are forgotten
        pool.leave(&b);
        drop(c);
        assert!(pool.is_empty());
        assert!(!pool.evict_oldest(), "nobody to evict");
    }
}
