//! One core's consensus acceptors (`core::consensus::acceptor`): the promised and accepted
//! ballots of each key this core has seen a consensus round for, and their WAL records.
//!
//! Owns: the in-memory table, the record that makes one key's state durable (kind `Paxos`:
//! the key, then the promised ballot and the accepted ballot and entry, `wire::consensus`
//! layout), and replay's rule (a key's states only rise: promised, then accepted at it; the
//! highest wins, whatever order segments and staging replay in). Compaction and the start-up
//! snapshot log every state again. Never answers before the caller made the record durable.
//!
//! Bounded: `ACCEPTOR_KEYS_PER_CORE_MAX` keys; a round for a new key past it is refused. A
//! state is kept for as long as its key's replica lives here (a forgotten promise could let two
//! rounds both win); FLUSHALL drops accepted entries below its floor.

use std::collections::HashMap;

use crate::core::consensus::acceptor::{Acceptor, Answer};
use crate::core::consensus::{Ballot, Entry};
use crate::core::version::Version;
use crate::limits::{ACCEPTOR_KEYS_PER_CORE_MAX, WAL_RECORD_HEADER_BYTES};
use crate::wire::consensus::{
    decode_accept, decode_ballot, encode_accept, BALLOT_BYTES, CONSENSUS_OVERHEAD_BYTES_MAX,
};

#[derive(Default)]
pub struct AcceptorStore {
    keys: HashMap<Box<[u8]>, Acceptor>,
    /// What `bytes` answers, kept as states change (not a walk of the table per check).
    bytes: u64,
}

/// A state's WAL record: the version its header carries (the promised ballot) and its value.
pub type Record = (Version, Vec<u8>);

/// Bytes one key's state takes in a snapshot.
fn snapshot_bytes(key_len: usize, a: &Acceptor) -> u64 {
    let value = a.accepted.as_ref().and_then(|(_, e)| e.value.as_ref());
    (WAL_RECORD_HEADER_BYTES + CONSENSUS_OVERHEAD_BYTES_MAX + key_len) as u64
        + value.map_or(0, |v| v.len_bytes() as u64)
}

/// Why a round was refused here.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this core holds consensus state for {ACCEPTOR_KEYS_PER_CORE_MAX} keys, its limit: no \
     round for a new key"
)]
pub struct Full;

impl AcceptorStore {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes a snapshot of the table takes in the WAL (compaction's trigger).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Change `key`'s state (made if new, within the bound), keeping `bytes` true.
    fn change<T>(&mut self, key: &[u8], f: impl FnOnce(&mut Acceptor) -> T) -> Result<T, Full> {
        let known = self.keys.contains_key(key);
        if !known && self.keys.len() >= ACCEPTOR_KEYS_PER_CORE_MAX {
            return Err(Full);
        }
        let a = self.keys.entry(Box::from(key)).or_default();
        let before = if known {
            snapshot_bytes(key.len(), a)
        } else {
            0
        };
        let out = f(a);
        let after = snapshot_bytes(key.len(), a);
        self.bytes = (self.bytes + after).saturating_sub(before);
        Ok(out)
    }

    /// Prepare: the answer, and the record to log when the state changed.
    pub fn prepare(
        &mut self,
        key: &[u8],
        ballot: Ballot,
        stored: Option<Entry>,
    ) -> Result<(Answer, Option<Record>), Full> {
        self.change(key, |a| {
            let answer = a.prepare(ballot, stored);
            let record = matches!(answer, Answer::Promise { .. }).then(|| record(a));
            (answer, record)
        })
    }

    /// Accept: the answer, and the record to log when the state changed.
    pub fn accept(
        &mut self,
        key: &[u8],
        ballot: Ballot,
        entry: Entry,
    ) -> Result<(Answer, Option<Record>), Full> {
        self.change(key, |a| {
            let answer = a.accept(ballot, entry);
            let record = matches!(answer, Answer::Accepted { .. }).then(|| record(a));
            (answer, record)
        })
    }

    /// Replay one record: kept if it is the key's highest state yet.
    pub fn replay(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(state) = decode_state(value) else {
            return false;
        };
        let rank = |a: &Acceptor| (a.promised, a.accepted.as_ref().map(|(b, _)| *b));
        let higher = self.keys.get(key).is_none_or(|a| rank(a) < rank(&state));
        // a replay is not bounded: what was accepted before a restart stays
        if higher {
            let before = self
                .keys
                .get(key)
                .map_or(0, |a| snapshot_bytes(key.len(), a));
            self.bytes = (self.bytes + snapshot_bytes(key.len(), &state)).saturating_sub(before);
            self.keys.insert(Box::from(key), state);
        }
        true
    }

    /// FLUSHALL: accepted entries at or below the floor are gone (promises stay).
    pub fn drop_at_or_below(&mut self, floor: Version) {
        for (k, a) in self.keys.iter_mut() {
            if a.accepted.as_ref().is_some_and(|(_, e)| e.version <= floor) {
                let before = snapshot_bytes(k.len(), a);
                a.accepted = None;
                self.bytes = (self.bytes + snapshot_bytes(k.len(), a)).saturating_sub(before);
            }
        }
    }

    /// Each key with its state's record (compaction, the start-up snapshot).
    pub fn records(&self) -> impl Iterator<Item = (&[u8], Record)> {
        self.keys.iter().map(|(k, a)| (&k[..], record(a)))
    }
}

/// A state's record: its promised ballot as the header's version, and the state.
fn record(a: &Acceptor) -> Record {
    let version = Version {
        hlc: a.promised.round,
        writer: a.promised.proposer,
    };
    let mut out = crate::wire::consensus::encode_ballot(a.promised);
    if let Some((b, e)) = &a.accepted {
        out.extend_from_slice(&encode_accept(*b, e));
    }
    (version, out)
}

fn decode_state(b: &[u8]) -> Option<Acceptor> {
    let promised = decode_ballot(b.get(..BALLOT_BYTES)?)?;
    let rest = &b[BALLOT_BYTES..];
    let accepted = if rest.is_empty() {
        None
    } else {
        Some(decode_accept(rest)?)
    };
    Some(Acceptor { promised, accepted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::consensus::Data;

    fn b(round: u64) -> Ballot {
        Ballot { round, proposer: 2 }
    }

    #[test]
    fn replay_keeps_each_keys_highest_state_in_any_order() {
        let mut live = AcceptorStore::default();
        let mut records = Vec::new();
        let (_, r) = live.prepare(b"k", b(1), None).unwrap();
        records.extend(r);
        let e = Entry {
            value: Some(Data::Str(b"v".to_vec())),
            ..Entry::ABSENT
        };
        let (_, r) = live.accept(b"k", b(1), e.clone()).unwrap();
        records.extend(r);
        // a refused prepare changes nothing and logs nothing
        let (answer, r) = live.prepare(b"k", b(1), None).unwrap();
        assert!(matches!(answer, Answer::Nack { .. }));
        assert!(r.is_none());
        assert_eq!(records.len(), 2);
        for order in [[0, 1], [1, 0]] {
            let mut replayed = AcceptorStore::default();
            for i in order {
                assert!(replayed.replay(b"k", &records[i].1));
            }
            let walked: u64 = replayed
                .keys
                .iter()
                .map(|(k, a)| snapshot_bytes(k.len(), a))
                .sum();
            assert_eq!(replayed.bytes(), walked, "the kept size is the table's");
            let state = &replayed.keys[&b"k"[..]];
            assert_eq!(state.promised, b(1));
            assert_eq!(state.accepted, Some((b(1), e.clone())));
        }
        assert!(!live.replay(b"k", &[1, 2, 3]), "garbage is refused");
        assert_eq!(records[0].0.hlc, 1);
        live.drop_at_or_below(Version::ZERO);
        assert_eq!(live.keys[&b"k"[..]].accepted, None);
        assert_eq!(live.bytes(), snapshot_bytes(1, &live.keys[&b"k"[..]]));
    }

    #[test]
    fn new_keys_past_the_bound_are_refused() {
        let mut s = AcceptorStore::default();
        for i in 0..ACCEPTOR_KEYS_PER_CORE_MAX as u32 {
            s.keys
                .insert(Box::from(&i.to_le_bytes()[..]), Acceptor::default());
        }
        assert_eq!(s.prepare(b"new", b(1), None).err(), Some(Full));
        // a key it holds still goes on
        assert!(s.prepare(&0u32.to_le_bytes(), b(1), None).is_ok());
    }
}
