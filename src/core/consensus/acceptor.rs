//! A replica's consensus state for one key: the highest ballot it promised, and the value it
//! accepted last with that value's ballot.
//!
//! Owns the acceptor's two rules: promise a ballot only above every ballot promised before
//! (and answer what it accepted), accept only at a ballot no lower than its promise. Its state
//! must be durable before its answer leaves (a restarted acceptor that forgot a promise could
//! let two proposers both win).

use super::{Ballot, Entry};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acceptor {
    pub promised: Ballot,
    pub accepted: Option<(Ballot, Entry)>,
}

/// An acceptor's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Prepare: promised; the entry accepted last (if any), with its ballot, and the entry
    /// the replica's store holds (plain writes land there, and decided values once written).
    Promise {
        ballot: Ballot,
        accepted: Option<(Ballot, Entry)>,
        stored: Option<Entry>,
    },
    /// Accept: accepted.
    Accepted { ballot: Ballot },
    /// Refused: a higher ballot was promised (the proposer retries above it).
    Nack { ballot: Ballot, promised: Ballot },
}

impl Acceptor {
    /// Prepare at `ballot`; `stored` is what the replica's store holds for the key.
    pub fn prepare(&mut self, ballot: Ballot, stored: Option<Entry>) -> Answer {
        if ballot <= self.promised {
            return Answer::Nack {
                ballot,
                promised: self.promised,
            };
        }
        self.promised = ballot;
        Answer::Promise {
            ballot,
            accepted: self.accepted.clone(),
            stored,
        }
    }

    pub fn accept(&mut self, ballot: Ballot, entry: Entry) -> Answer {
        if ballot < self.promised {
            return Answer::Nack {
                ballot,
                promised: self.promised,
            };
        }
        self.promised = ballot;
        self.accepted = Some((ballot, entry));
        Answer::Accepted { ballot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::consensus::Data;

    fn b(round: u64) -> Ballot {
        Ballot { round, proposer: 1 }
    }

    fn e(v: &str) -> Entry {
        Entry {
            value: Some(Data::Str(v.as_bytes().to_vec())),
            ..Entry::ABSENT
        }
    }

    #[test]
    fn promises_only_rise_and_accepts_respect_them() {
        let mut a = Acceptor::default();
        assert!(matches!(
            a.prepare(b(2), None),
            Answer::Promise { accepted: None, .. }
        ));
        assert_eq!(
            a.prepare(b(2), None),
            Answer::Nack {
                ballot: b(2),
                promised: b(2)
            }
        );
        assert_eq!(
            a.prepare(b(1), None),
            Answer::Nack {
                ballot: b(1),
                promised: b(2)
            }
        );
        assert_eq!(
            a.accept(b(1), e("x")),
            Answer::Nack {
                ballot: b(1),
                promised: b(2)
            }
        );
        assert_eq!(a.accept(b(2), e("y")), Answer::Accepted { ballot: b(2) });
        assert_eq!(
            a.prepare(b(3), Some(e("z"))),
            Answer::Promise {
                ballot: b(3),
                accepted: Some((b(2), e("y"))),
                stored: Some(e("z")),
            }
        );
    }
}
