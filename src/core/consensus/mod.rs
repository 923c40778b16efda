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

/// What a key holds: a string, or a list (elements from left to right).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Data {
    Str(Vec<u8>),
    List(std::collections::VecDeque<Vec<u8>>),
    /// A hash, set or sorted set (`core::crdt::collection`), carried opaque: conditional
    /// commands only see that the key holds another kind (WRONGTYPE) or exists.
    Collection(Vec<u8>),
}

impl Data {
    /// The stored bytes: a string's own; a list's elements, each a `u32` little-endian length
    /// then the bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Data::Str(b) | Data::Collection(b) => b.clone(),
            Data::List(items) => {
                let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 4).sum());
                for i in items {
                    out.extend_from_slice(&(i.len() as u32).to_le_bytes());
                    out.extend_from_slice(i);
                }
                out
            }
        }
    }

    /// A list from its stored bytes (`None`: malformed).
    pub fn list_from_bytes(mut b: &[u8]) -> Option<Data> {
        let mut items = std::collections::VecDeque::new();
        while !b.is_empty() {
            let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
            items.push_back(b.get(4..4 + n)?.to_vec());
            b = &b[4 + n..];
        }
        Some(Data::List(items))
    }

    pub fn kind(&self) -> crate::core::cell::Kind {
        match self {
            Data::Str(_) => crate::core::cell::Kind::String,
            Data::List(_) => crate::core::cell::Kind::List,
            Data::Collection(_) => crate::core::cell::Kind::Collection,
        }
    }

    /// Bytes it takes stored.
    pub fn len_bytes(&self) -> usize {
        match self {
            Data::Str(b) | Data::Collection(b) => b.len(),
            Data::List(items) => items.iter().map(|i| i.len() + 4).sum(),
        }
    }
}

/// A key's value as a command sees it: absent, or what it holds.
pub type Value = Option<Data>;

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

    /// The stored cell (`core::cell`) of its value (`None`: a deletion).
    pub fn cell(&self) -> Option<Box<[u8]>> {
        self.value
            .as_ref()
            .map(|d| crate::core::cell::encode_kind(d.kind(), &d.to_bytes(), self.expires_at_ms))
    }

    /// The entry a store's cell (`None`: a tombstone) at `version` is; a cell that does not
    /// decode reads as absent.
    pub fn of_cell(cell: Option<&[u8]>, version: crate::core::version::Version) -> Entry {
        let decoded = cell.and_then(|b| crate::core::cell::decode(b).ok());
        let (value, expires_at_ms) = match decoded {
            Some(c) => {
                let data = match c.kind {
                    crate::core::cell::Kind::String => Some(Data::Str(c.value.to_vec())),
                    crate::core::cell::Kind::List => Data::list_from_bytes(c.value),
                    // an emptied collection is no key
                    crate::core::cell::Kind::Collection => {
                        (crate::core::crdt::collection::stored_elements(c.value) != Some(0))
                            .then(|| Data::Collection(c.value.to_vec()))
                    }
                };
                (data, c.expires_at_ms)
            }
            None => (None, None),
        };
        Entry {
            value,
            expires_at_ms,
            version,
        }
    }
}
