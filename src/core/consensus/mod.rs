//! Linearizable read-modify-writes of one key by consensus among its N replicas: per-key
//! CASPaxos (Rystsov 2018; Lamport's single-decree Paxos with the value changed by a function
//! in each round). No leader: any node proposes, ballots order the rounds, and each round
//! takes two replica round trips (prepare, accept). Pure: `acceptor` is a replica's state for
//! one key, `proposer` one round of a coordinator; the I/O shells carry their messages and make
//! an acceptor's state durable before it answers. `change` holds the commands, as functions
//! of the value the round read; `command` runs one on a stored entry (expiry, version).
//!
//! Never: clocks, timers, randomness (the shell backs off with its own randomness), I/O.

pub mod acceptor;
pub mod change;
pub mod command;
pub mod proposer;

use crate::core::version::Version;

/// A ballot: rounds are ordered by it. `proposer` (a node's writer id) breaks ties, so two
/// proposers never use the same ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    pub round: u64,
    pub proposer: u32,
}

/// A key's value as a command sees it: absent, or bytes.
pub type Value = Option<Vec<u8>>;

/// A key's stored state as consensus carries it: the value (`None`: deleted or never
/// written), its expiry and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    pub expires_at_ms: Option<u64>,
    pub version: Version,
}

impl Entry {
    pub const ABSENT: Entry = Entry {
        value: None,
        expires_at_ms: None,
        version: Version::ZERO,
    };

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}
