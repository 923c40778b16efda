//! One consensus round of a coordinator for one key (CASPaxos): prepare at a ballot, and once
//! a quorum promised, accept the command's result on the current entry (`command`: the newer of
//! the value accepted at the highest ballot among the promises and the newest stored entry
//! they carried); decided once a quorum accepted.
//!
//! Owns the proposer's rules: answers for another ballot, and duplicates, are ignored; the
//! round is lost once a quorum can no longer promise (retry above the highest promise seen)
//! or accept (the outcome is unknown: the command is never run twice). Never: timers (the shell fails a replica that did not answer in time) or backoff.

use super::acceptor::Answer;
use super::change::Reply;
use super::command::{run_all, Command};
use super::{Ballot, Entry};
use crate::core::version::Version;

/// What the shell does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for more answers.
    Wait,
    /// Send Accept(ballot, entry) to every replica. `new`: the entry is the command's write,
    /// to be stored on the replicas once decided (else the current entry, unchanged).
    Accept {
        ballot: Ballot,
        entry: Entry,
        new: bool,
    },
    /// A quorum accepted: answer the clients, one reply per command of the round.
    Decided(Vec<Reply>),
    /// This ballot cannot win, and nothing was accepted for it: go again above `above`
    /// (after a randomised pause).
    Retry { above: Ballot },
    /// This ballot cannot win after its accepts went out: some replica may have accepted the
    /// command's result, which a later round would then build on, so running the command again
    /// could apply it twice. The client is told the outcome is unknown.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Accepting,
    Over,
}

#[derive(Clone, Debug)]
pub struct Round {
    ballot: Ballot,
    commands: Vec<Command>,
    /// The proposer's clock at the round's start (what has expired).
    now_ms: u64,
    replicas: usize,
    prepare_quorum: usize,
    accept_quorum: usize,
    phase: Phase,
    promised: Vec<usize>,
    accepted: Vec<usize>,
    refused: Vec<usize>,
    /// The entry accepted at the highest ballot among the promises.
    highest: Option<(Ballot, Entry)>,
    /// The newest entry a replica's store held, and the highest version any promise carried.
    stored: Option<Entry>,
    seen: Version,
    /// The highest ballot a refusal named.
    above: Ballot,
    replies: Vec<Reply>,
}

impl Round {
    /// A round of `commands` (run in order) over `replicas` replicas started at `now_ms`: a
    /// majority must promise and accept.
    pub fn new(ballot: Ballot, commands: Vec<Command>, replicas: usize, now_ms: u64) -> Round {
        let majority = replicas / 2 + 1;
        Round::with_quorums(ballot, commands, now_ms, replicas, majority, majority)
    }

    /// With other quorums: only for showing that the checker catches a broken protocol.
    pub fn with_quorums(
        ballot: Ballot,
        commands: Vec<Command>,
        now_ms: u64,
        replicas: usize,
        prepare_quorum: usize,
        accept_quorum: usize,
    ) -> Round {
        Round {
            ballot,
            commands,
            now_ms,
            replicas,
            prepare_quorum,
            accept_quorum,
            phase: Phase::Preparing,
            promised: Vec::new(),
            accepted: Vec::new(),
            refused: Vec::new(),
            highest: None,
            stored: None,
            seen: Version::ZERO,
            above: ballot,
            replies: Vec::new(),
        }
    }

    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Replica `from`'s answer.
    pub fn on_answer(&mut self, from: usize, answer: Answer) -> Step {
        match (self.phase, answer) {
            (
                Phase::Preparing,
                Answer::Promise {
                    ballot,
                    accepted,
                    stored,
                },
            ) if ballot == self.ballot => {
                if self.promised.contains(&from) {
                    return Step::Wait;
                }
                self.promised.push(from);
                if let Some((b, e)) = accepted {
                    self.seen = self.seen.max(e.version);
                    if self.highest.as_ref().is_none_or(|(h, _)| b > *h) {
                        self.highest = Some((b, e));
                    }
                }
                if let Some(e) = stored {
                    self.seen = self.seen.max(e.version);
                    if self.stored.as_ref().is_none_or(|s| e.version > s.version) {
                        self.stored = Some(e);
                    }
                }
                if self.promised.len() < self.prepare_quorum {
                    return Step::Wait;
                }
                let accepted = self.highest.as_ref().map(|(_, e)| e);
                let current = match (accepted, self.stored.as_ref()) {
                    (Some(a), Some(s)) if s.version > a.version => Some(s),
                    (Some(a), _) => Some(a),
                    (None, s) => s,
                };
                let (entry, new, replies) =
                    run_all(&self.commands, current, self.now_ms, self.ballot, self.seen);
                self.replies = replies;
                self.phase = Phase::Accepting;
                self.refused.clear();
                Step::Accept {
                    ballot: self.ballot,
                    entry,
                    new,
                }
            }
            (Phase::Accepting, Answer::Accepted { ballot }) if ballot == self.ballot => {
                if self.accepted.contains(&from) {
                    return Step::Wait;
                }
                self.accepted.push(from);
                if self.accepted.len() < self.accept_quorum {
                    return Step::Wait;
                }
                self.phase = Phase::Over;
                Step::Decided(std::mem::take(&mut self.replies))
            }
            (Phase::Preparing | Phase::Accepting, Answer::Nack { ballot, promised })
                if ballot == self.ballot =>
            {
                self.above = self.above.max(promised);
                self.refuse(from)
            }
            _ => Step::Wait,
        }
    }

    /// Replica `from` did not answer in time (or could not be reached).
    pub fn on_failed(&mut self, from: usize) -> Step {
        if self.phase == Phase::Over {
            return Step::Wait;
        }
        self.refuse(from)
    }

    fn refuse(&mut self, from: usize) -> Step {
        if self.refused.contains(&from) {
            return Step::Wait;
        }
        self.refused.push(from);
        let quorum = match self.phase {
            Phase::Preparing => self.prepare_quorum,
            _ => self.accept_quorum,
        };
        if self.replicas - self.refused.len() >= quorum {
            return Step::Wait;
        }
        let accepting = self.phase == Phase::Accepting;
        self.phase = Phase::Over;
        if accepting {
            Step::Unknown
        } else {
            Step::Retry { above: self.above }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::consensus::acceptor::Acceptor;
    use crate::core::consensus::change::Change;
    use crate::core::consensus::Data;

    fn b(round: u64, proposer: u32) -> Ballot {
        Ballot { round, proposer }
    }

    /// Run a round against `acceptors` answering in order; the decided reply.
    fn run(acceptors: &mut [Acceptor], ballot: Ballot, change: Change) -> Step {
        let mut r = Round::new(ballot, vec![Command::of(change)], acceptors.len(), 0);
        let mut step = Step::Wait;
        for (i, a) in acceptors.iter_mut().enumerate() {
            step = r.on_answer(i, a.prepare(ballot, None));
            if step != Step::Wait {
                break;
            }
        }
        let Step::Accept { ballot, entry, .. } = step else {
            return step;
        };
        for (i, a) in acceptors.iter_mut().enumerate() {
            let s = r.on_answer(i, a.accept(ballot, entry.clone()));
            if s != Step::Wait {
                return s;
            }
        }
        Step::Wait
    }

    #[test]
    fn increments_are_decided_once_each_in_ballot_order() {
        let mut acc = vec![Acceptor::default(); 3];
        assert_eq!(
            run(&mut acc, b(1, 1), Change::Incr(1)),
            Step::Decided(vec![Reply::Int(1)])
        );
        assert_eq!(
            run(&mut acc, b(2, 2), Change::Incr(1)),
            Step::Decided(vec![Reply::Int(2)])
        );
        // a stale ballot loses and learns what to go above
        assert_eq!(
            run(&mut acc, b(1, 3), Change::Incr(1)),
            Step::Retry { above: b(2, 2) }
        );
    }

    #[test]
    fn a_value_accepted_by_a_minority_is_carried_forward() {
        let mut acc = vec![Acceptor::default(); 3];
        // proposer 1 got one accept in before it died
        let five = Entry {
            value: Some(Data::Str(b"5".to_vec())),
            expires_at_ms: None,
            version: Version { hlc: 1, writer: 1 },
        };
        acc[0].prepare(b(1, 1), None);
        acc[0].accept(b(1, 1), five);
        // the next round's quorum includes that acceptor: it builds on 5
        let mut r = Round::new(b(2, 2), vec![Command::of(Change::Incr(1))], 3, 0);
        assert_eq!(r.on_answer(1, acc[1].prepare(b(2, 2), None)), Step::Wait);
        let step = r.on_answer(0, acc[0].prepare(b(2, 2), None));
        let Step::Accept { entry, new, .. } = step else {
            panic!("{step:?}");
        };
        assert!(new);
        assert_eq!(entry.value, Some(Data::Str(b"6".to_vec())));
        assert_eq!(entry.version, Version { hlc: 2, writer: 2 });
    }

    #[test]
    fn a_newer_plain_write_in_a_store_is_the_current_value() {
        let acc_entry = |v: &str, hlc| Entry {
            value: Some(Data::Str(v.as_bytes().to_vec())),
            expires_at_ms: None,
            version: Version { hlc, writer: 1 },
        };
        let mut r = Round::new(b(100, 2), vec![Command::of(Change::Incr(1))], 3, 0);
        let promise = |accepted, stored| Answer::Promise {
            ballot: b(100, 2),
            accepted,
            stored,
        };
        let older = Some((b(5, 1), acc_entry("5", 10)));
        assert_eq!(
            r.on_answer(0, promise(older, Some(acc_entry("5", 10)))),
            Step::Wait
        );
        // a plain SET of 40 at version 300 reached replica 1's store after that decision
        let step = r.on_answer(1, promise(None, Some(acc_entry("40", 300))));
        let Step::Accept { entry, .. } = step else {
            panic!("{step:?}");
        };
        assert_eq!(entry.value, Some(Data::Str(b"41".to_vec())));
        assert_eq!(
            entry.version,
            Version {
                hlc: 301,
                writer: 2
            }
        );
    }

    #[test]
    fn duplicates_and_other_ballots_are_ignored_and_failures_lose_the_round() {
        let mut r = Round::new(b(5, 1), vec![Command::of(Change::Get)], 3, 0);
        let promise = Answer::Promise {
            ballot: b(5, 1),
            accepted: None,
            stored: None,
        };
        assert_eq!(r.on_answer(0, promise.clone()), Step::Wait);
        assert_eq!(r.on_answer(0, promise), Step::Wait, "a duplicate promise");
        let other = Answer::Promise {
            ballot: b(4, 1),
            accepted: None,
            stored: None,
        };
        assert_eq!(r.on_answer(1, other), Step::Wait, "another ballot's");
        assert_eq!(r.on_failed(1), Step::Wait);
        assert_eq!(r.on_failed(2), Step::Retry { above: b(5, 1) });
    }
}
