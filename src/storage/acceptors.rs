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

    /// Bytes a snapshot of the table takes in the WAL (compaction's trigger; a walk of the
    /// table, once per compaction check).
    pub fn bytes(&self) -> u64 {
        let per_key = (WAL_RECORD_HEADER_BYTES + CONSENSUS_OVERHEAD_BYTES_MAX) as u64;
        self.keys
            .iter()
            .map(|(k, a)| {
                let value = a.accepted.as_ref().and_then(|(_, e)| e.value.as_ref());
                per_key + k.len() as u64 + value.map_or(0, |v| v.len_bytes() as u64)
            })
            .sum()
    }

    fn slot(&mut self, key: &[u8]) -> Result<&mut Acceptor, Full> {
        if !self.keys.contains_key(key) && self.keys.len() >= ACCEPTOR_KEYS_PER_CORE_MAX {
            return Err(Full);
        }
        Ok(self.keys.entry(Box::from(key)).or_default())
    }

    /// Prepare: the answer, and the record to log when the state changed.
    pub fn prepare(
        &mut self,
        key: &[u8],
        ballot: Ballot,
        stored: Option<Entry>,
    ) -> Result<(Answer, Option<Vec<u8>>), Full> {
        let a = self.slot(key)?;
        let answer = a.prepare(ballot, stored);
        let record = matches!(answer, Answer::Promise { .. }).then(|| encode_state(a));
        Ok((answer, record))
    }

    /// Accept: the answer, and the record to log when the state changed.
    pub fn accept(
        &mut self,
        key: &[u8],
        ballot: Ballot,
        entry: Entry,
    ) -> Result<(Answer, Option<Vec<u8>>), Full> {
        let a = self.slot(key)?;
        let answer = a.accept(ballot, entry);
        let record = matches!(answer, Answer::Accepted { .. }).then(|| encode_state(a));
        Ok((answer, record))
    }

    /// Replay one record: kept if it is the key's highest state yet.
    pub fn replay(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(state) = decode_state(value) else {
            return false;
        };
        let rank = |a: &Acceptor| (a.promised, a.accepted.as_ref().map(|(b, _)| *b));
        match self.keys.get_mut(key) {
            Some(a) if rank(a) >= rank(&state) => {}
            Some(a) => *a = state,
            None => {
                self.keys.insert(Box::from(key), state);
            }
        }
        true
    }

    /// FLUSHALL: accepted entries at or below the floor are gone (promises stay).
    pub fn drop_at_or_below(&mut self, floor: Version) {
        for a in self.keys.values_mut() {
            if a.accepted.as_ref().is_some_and(|(_, e)| e.version <= floor) {
                a.accepted = None;
            }
        }
    }

    /// Each key with its state's record (compaction, the start-up snapshot).
    pub fn records(&self) -> impl Iterator<Item = (&[u8], Vec<u8>)> {
        self.keys.iter().map(|(k, a)| (&k[..], encode_state(a)))
    }
}

/// The version a state's record carries in its header: its promised ballot.
pub fn record_version(value: &[u8]) -> Version {
    decode_state(value)
        .map(|a| Version {
            hlc: a.promised.round,
            writer: a.promised.proposer,
        })
        .unwrap_or_default()
}

fn encode_state(a: &Acceptor) -> Vec<u8> {
    let mut out = crate::wire::consensus::encode_ballot(a.promised);
    if let Some((b, e)) = &a.accepted {
        out.extend_from_slice(&encode_accept(*b, e));
    }
    out
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
                assert!(replayed.replay(b"k", &records[i]));
            }
            let state = &replayed.keys[&b"k"[..]];
            assert_eq!(state.promised, b(1));
            assert_eq!(state.accepted, Some((b(1), e.clone())));
        }
        assert!(!live.replay(b"k", &[1, 2, 3]), "garbage is refused");
        assert_eq!(record_version(&records[0]).hlc, 1);
        live.drop_at_or_below(Version::ZERO);
        assert_eq!(live.keys[&b"k"[..]].accepted, None);
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
