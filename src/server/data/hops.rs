//! Cross-core hops: the operations this core's tasks need from other cores of the node,
//! gathered over one executor turn and sent as one `CoreMsg::Ops` per destination core.
//!
//! Owns: the groups of operations waiting to leave this core, and handing each group its
//! results when the owning core answers. Never executes an operation (the owning core does)
//! and never blocks a caller: `call` queues and returns a future.
//!
//! Why a turn and not a request: unpipelined clients give a core about one request per
//! connection per turn, and a message per connection cost the destination a wake-up (an
//! eventfd write, `io_uring_enter` calls and a context switch when it was parked) and the
//! answer one more back. The sender task is woken by the first group queued in a turn, so it
//! runs after every task that the same I/O poll woke (glommio runs a task queue in FIFO
//! order): whatever they asked of a core leaves in one message, and comes back in one.
//!
//! Invariants: groups to one core leave in the order they were queued, and the owning core
//! executes a message's operations in order, so one connection's operations on one core keep
//! their order. Every group is answered exactly once: with its results, or with `None` when the
//! destination is gone or answered with the wrong count.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::server::data::messages::{CoreMsg, Op, OpResult};
use crate::server::notify::{channel, Notify, Receiver, Sender};

/// This core's outbound hops (single-threaded; never crosses cores).
pub struct Hops {
    peers: Vec<flume::Sender<CoreMsg>>,
    /// Groups queued this turn, by destination core.
    queued: RefCell<Vec<Vec<Group>>>,
    queued_changed: Notify,
    /// Messages sent (each carries one or more groups), for `/metrics`.
    messages: Cell<u64>,
    groups: Cell<u64>,
}

struct Group {
    ops: Vec<Op>,
    /// Where the group's results go; dropped unanswered when the destination failed.
    answer: Sender<Vec<OpResult>>,
}

impl Hops {
    pub fn new(peers: Vec<flume::Sender<CoreMsg>>) -> Hops {
        let queued = RefCell::new((0..peers.len()).map(|_| Vec::new()).collect());
        Hops {
            peers,
            queued,
            queued_changed: Notify::default(),
            messages: Cell::new(0),
            groups: Cell::new(0),
        }
    }

    /// Queue `ops` for core `core`; their results come back in order, or `None` if the core is
    /// gone or did not answer.
    pub fn call(&self, core: usize, ops: Vec<Op>) -> Receiver<Vec<OpResult>> {
        let (answer, results) = channel();
        let first = {
            let mut queued = self.queued.borrow_mut();
            let first = queued.iter().all(Vec::is_empty);
            queued[core].push(Group { ops, answer });
            first
        };
        if first {
            self.queued_changed.notify_all();
        }
        results
    }

    /// (messages sent, groups carried): their ratio is how many callers a message served.
    pub fn counts(&self) -> (u64, u64) {
        (self.messages.get(), self.groups.get())
    }

    fn has_queued(&self) -> bool {
        self.queued.borrow().iter().any(|q| !q.is_empty())
    }

    /// The sender task: run it once per core, for the executor's life.
    pub async fn run(self: Rc<Self>) {
        loop {
            self.queued_changed.wait_until(|| self.has_queued()).await;
            for core in 0..self.peers.len() {
                let groups = std::mem::take(&mut self.queued.borrow_mut()[core]);
                if !groups.is_empty() {
                    self.send(core, groups).await;
                }
            }
        }
    }

    async fn send(&self, core: usize, groups: Vec<Group>) {
        let total: usize = groups.iter().map(|g| g.ops.len()).sum();
        let mut ops: Vec<Op> = Vec::new();
        let mut answers = Vec::with_capacity(groups.len());
        for g in groups {
            answers.push((g.answer, g.ops.len()));
            // The first group's vector carries the message (often the only group).
            if ops.is_empty() {
                ops = g.ops;
                ops.reserve(total - ops.len());
            } else {
                ops.extend(g.ops);
            }
        }
        self.messages.set(self.messages.get() + 1);
        self.groups.set(self.groups.get() + answers.len() as u64);
        let (tx, rx) = flume::bounded(1);
        if self.peers[core]
            .send_async(CoreMsg::Ops { ops, reply: tx })
            .await
            .is_err()
        {
            deliver(answers, None);
            return;
        }
        glommio::spawn_local(async move {
            let results = rx.recv_async().await.ok().filter(|r| r.len() == total);
            deliver(answers, results);
        })
        .detach();
    }
}

/// Hand each group its slice of `results` (in queue order); with no results, every group's
/// sender is dropped and its caller gets `None`.
fn deliver(answers: Vec<(Sender<Vec<OpResult>>, usize)>, results: Option<Vec<OpResult>>) {
    let Some(results) = results else {
        return;
    };
    let mut results = results.into_iter();
    for (answer, n) in answers {
        // A caller that went away no longer wants its results.
        let _ = answer.send(results.by_ref().take(n).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::version::Version;

    fn put(k: &str) -> Op {
        Op::Put {
            key: k.as_bytes().into(),
            value: b"v"[..].into(),
        }
    }

    fn written(n: u64) -> OpResult {
        OpResult::Written {
            was_live: false,
            version: Version { hlc: n, writer: 1 },
        }
    }

    /// Groups queued in one turn leave as one message, and each caller gets its own slice of
    /// the answer back, in order.
    #[test]
    fn one_message_per_destination_per_turn() {
        crate::on_executor(|| async {
            let (tx, rx) = flume::bounded(8);
            let (tx0, _rx0) = flume::bounded(8);
            let hops = Rc::new(Hops::new(vec![tx0, tx]));
            glommio::spawn_local(hops.clone().run()).detach();
            let a = hops.call(1, vec![put("a1"), put("a2")]);
            let b = hops.call(1, vec![put("b1")]);
            let Ok(CoreMsg::Ops { ops, reply }) = rx.recv_async().await else {
                panic!("expected one Ops message");
            };
            assert_eq!(ops.len(), 3);
            assert!(rx.is_empty(), "a second message was sent");
            reply
                .send(vec![written(1), written(2), written(3)])
                .expect("reply");
            assert_eq!(a.recv().await, Some(vec![written(1), written(2)]));
            assert_eq!(b.recv().await, Some(vec![written(3)]));
            assert_eq!(hops.counts(), (1, 2));
        });
    }

    /// A destination that answers with the wrong count, or not at all, fails every group.
    #[test]
    fn a_bad_or_missing_answer_fails_every_group() {
        crate::on_executor(|| async {
            let (tx, rx) = flume::bounded(8);
            let hops = Rc::new(Hops::new(vec![tx]));
            glommio::spawn_local(hops.clone().run()).detach();
            let a = hops.call(0, vec![put("a")]);
            let b = hops.call(0, vec![put("b")]);
            let Ok(CoreMsg::Ops { reply, .. }) = rx.recv_async().await else {
                panic!("expected one Ops message");
            };
            reply.send(vec![written(1)]).expect("reply");
            assert_eq!(a.recv().await, None);
            assert_eq!(b.recv().await, None);
            let c = hops.call(0, vec![put("c")]);
            let Ok(CoreMsg::Ops { reply, .. }) = rx.recv_async().await else {
                panic!("expected one Ops message");
            };
            drop(reply);
            assert_eq!(c.recv().await, None);
            drop(rx);
            assert_eq!(hops.call(0, vec![put("d")]).recv().await, None);
        });
    }
}
