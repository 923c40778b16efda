//! One consensus round of a coordinator for one key (CASPaxos): prepare at a ballot, and once
//! a quorum promised, accept the command's result on the value accepted at the highest ballot
//! among the promises; decided once a quorum accepted.
//!
//! Owns the proposer's rules: answers for another ballot, and duplicates, are ignored; the
//! round is lost once a quorum can no longer promise (retry above the highest promise seen)
//! or accept (the outcome is unknown: the command is never run twice). Never: timers (the shell fails a replica that did not answer in time) or backoff.

use super::acceptor::Answer;
use super::change::{Change, Reply};
use super::{Ballot, Value};

/// What the shell does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Wait for more answers.
    Wait,
    /// Send Accept(ballot, value) to every replica.
    Accept { ballot: Ballot, value: Value },
    /// A quorum accepted: answer the client.
    Decided(Reply),
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
    change: Change,
    replicas: usize,
    prepare_quorum: usize,
    accept_quorum: usize,
    phase: Phase,
    promised: Vec<usize>,
    accepted: Vec<usize>,
    refused: Vec<usize>,
    /// The value accepted at the highest ballot among the promises.
    highest: Option<(Ballot, Value)>,
    /// The highest ballot a refusal named.
    above: Ballot,
    reply: Option<Reply>,
}

impl Round {
    /// A round over `replicas` replicas: a majority must promise and accept.
    pub fn new(ballot: Ballot, change: Change, replicas: usize) -> Round {
        let majority = replicas / 2 + 1;
        Round::with_quorums(ballot, change, replicas, majority, majority)
    }

    /// With other quorums: only for showing that the checker catches a broken protocol.
    pub fn with_quorums(
        ballot: Ballot,
        change: Change,
        replicas: usize,
        prepare_quorum: usize,
        accept_quorum: usize,
    ) -> Round {
        Round {
            ballot,
            change,
            replicas,
            prepare_quorum,
            accept_quorum,
            phase: Phase::Preparing,
            promised: Vec::new(),
            accepted: Vec::new(),
            refused: Vec::new(),
            highest: None,
            above: ballot,
            reply: None,
        }
    }

    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// Replica `from`'s answer.
    pub fn on_answer(&mut self, from: usize, answer: Answer) -> Step {
        match (self.phase, answer) {
            (Phase::Preparing, Answer::Promise { ballot, accepted }) if ballot == self.ballot => {
                if self.promised.contains(&from) {
                    return Step::Wait;
                }
                self.promised.push(from);
                if let Some((b, v)) = accepted {
                    if self.highest.as_ref().is_none_or(|(h, _)| b > *h) {
                        self.highest = Some((b, v));
                    }
                }
                if self.promised.len() < self.prepare_quorum {
                    return Step::Wait;
                }
                let current = self.highest.as_ref().and_then(|(_, v)| v.clone());
                let (value, reply) = self.change.apply(&current);
                self.reply = Some(reply);
                self.phase = Phase::Accepting;
                self.refused.clear();
                Step::Accept {
                    ballot: self.ballot,
                    value,
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
                Step::Decided(self.reply.clone().unwrap_or(Reply::Value(None)))
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

    fn b(round: u64, proposer: u32) -> Ballot {
        Ballot { round, proposer }
    }

    /// Run a round against `acceptors` answering in order; the decided reply.
    fn run(acceptors: &mut [Acceptor], ballot: Ballot, change: Change) -> Step {
        let mut r = Round::new(ballot, change, acceptors.len());
        let mut step = Step::Wait;
        for (i, a) in acceptors.iter_mut().enumerate() {
            step = r.on_answer(i, a.prepare(ballot));
            if step != Step::Wait {
                break;
            }
        }
        let Step::Accept { ballot, value } = step else {
            return step;
        };
        for (i, a) in acceptors.iter_mut().enumerate() {
            let s = r.on_answer(i, a.accept(ballot, value.clone()));
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
            Step::Decided(Reply::Int(1))
        );
        assert_eq!(
            run(&mut acc, b(2, 2), Change::Incr(1)),
            Step::Decided(Reply::Int(2))
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
        acc[0].prepare(b(1, 1));
        acc[0].accept(b(1, 1), Some(b"5".to_vec()));
        // the next round's quorum includes that acceptor: it builds on 5
        let mut r = Round::new(b(2, 2), Change::Incr(1), 3);
        assert_eq!(r.on_answer(1, acc[1].prepare(b(2, 2))), Step::Wait);
        let step = r.on_answer(0, acc[0].prepare(b(2, 2)));
        assert_eq!(
            step,
            Step::Accept {
                ballot: b(2, 2),
                value: Some(b"6".to_vec())
            }
        );
    }

    #[test]
    fn duplicates_and_other_ballots_are_ignored_and_failures_lose_the_round() {
        let mut r = Round::new(b(5, 1), Change::Get, 3);
        let promise = Answer::Promise {
            ballot: b(5, 1),
            accepted: None,
        };
        assert_eq!(r.on_answer(0, promise.clone()), Step::Wait);
        assert_eq!(r.on_answer(0, promise), Step::Wait, "a duplicate promise");
        let other = Answer::Promise {
            ballot: b(4, 1),
            accepted: None,
        };
        assert_eq!(r.on_answer(1, other), Step::Wait, "another ballot's");
        assert_eq!(r.on_failed(1), Step::Wait);
        assert_eq!(r.on_failed(2), Step::Retry { above: b(5, 1) });
    }
}
