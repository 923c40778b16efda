//! How much one batch's replies may hold: per command (`REPLY_BYTES_MAX`) and, with every
//! other connection of the core, per core (`CORE_REPLY_BYTES_MAX`, also counted toward
//! `--max-memory` through the shard's `reply_bytes`).
//!
//! Owns: the bytes of values gathered for the command being resolved, whether it went past
//! a limit (it then answers one error, and what it gathered is dropped), and giving the
//! core's count back when the batch's replies are sent. Never fetches a value: the
//! connection asks before each one and drops what is refused.

use std::cell::Cell;
use std::rc::Rc;

use crate::limits::{CORE_REPLY_BYTES_MAX, REPLY_BYTES_MAX};

#[derive(Debug)]
pub struct ReplyBudget {
    /// The core's count of reply bytes in flight (every connection of the core).
    core: Rc<Cell<usize>>,
    /// Bytes the current command holds.
    command: usize,
    /// Why the current command answers an error instead.
    over: Option<String>,
    /// Bytes this batch added to the core's count (given back by `release`).
    held: usize,
}

impl ReplyBudget {
    pub fn new(core: Rc<Cell<usize>>) -> ReplyBudget {
        ReplyBudget {
            core,
            command: 0,
            over: None,
            held: 0,
        }
    }

    /// The next command starts.
    pub fn begin(&mut self) {
        self.command = 0;
        self.over = None;
    }

    /// Why the current command is refused, if it is.
    pub fn over(&self) -> Option<&str> {
        self.over.as_deref()
    }

    /// Take `bytes` for the current command out of `core` (the core's in-flight count):
    /// false when that passes a limit (the command then answers `over`).
    pub fn take(&mut self, bytes: usize) -> bool {
        let core = &self.core;
        if self.over.is_some() {
            return false;
        }
        if self.command + bytes > REPLY_BYTES_MAX {
            self.over = Some(format!(
                "reply too large: this command's reply passed {REPLY_BYTES_MAX} bytes (the \
                 per-reply limit); ask for fewer or smaller values at once"
            ));
            return false;
        }
        if core.get() + bytes > CORE_REPLY_BYTES_MAX {
            self.over = Some(format!(
                "replies in flight on this core passed {CORE_REPLY_BYTES_MAX} bytes (other \
                 clients' large replies); try again"
            ));
            return false;
        }
        self.command += bytes;
        self.held += bytes;
        core.set(core.get() + bytes);
        true
    }

    /// Bytes of values this batch holds (what its replies will take to encode).
    pub fn held(&self) -> usize {
        self.held
    }

    /// The batch's replies are sent (or dropped): give the core its bytes back.
    pub fn release(&mut self) {
        self.core.set(self.core.get().saturating_sub(self.held));
        self.held = 0;
        self.begin();
    }
}

/// A connection that ends mid-batch gives its bytes back too.
impl Drop for ReplyBudget {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_refused_just_past_the_per_reply_limit() {
        let core = Rc::new(Cell::new(0));
        let mut b = ReplyBudget::new(core.clone());
        b.begin();
        assert!(b.take(REPLY_BYTES_MAX - 10));
        assert!(b.take(10), "at the limit");
        assert!(!b.take(1), "one byte past it");
        assert!(b.over().is_some_and(|m| m.contains("reply too large")));
        assert!(!b.take(0), "refused for the rest of the command");
        b.begin();
        assert!(b.take(1), "the next command starts afresh");
        b.release();
        assert_eq!(core.get(), 0, "everything given back");
    }

    #[test]
    fn the_core_limit_counts_every_connection() {
        let core = Rc::new(Cell::new(CORE_REPLY_BYTES_MAX - 5));
        let mut b = ReplyBudget::new(core.clone());
        b.begin();
        assert!(b.take(5));
        assert!(!b.take(1));
        assert!(b.over().is_some_and(|m| m.contains("in flight")));
        b.release();
        assert_eq!(
            core.get(),
            CORE_REPLY_BYTES_MAX - 5,
            "only its own bytes given back"
        );
        assert!(b.take(1));
        drop(b);
        assert_eq!(
            core.get(),
            CORE_REPLY_BYTES_MAX - 5,
            "a dropped budget gives back too"
        );
    }
}
