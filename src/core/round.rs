//! One coordinator round of a replicated request, as a pure state machine: replica answers in,
//! the decision out (what to answer the client, which replicas to repair, whether to go again).
//!
//! Owns: the coordinator's rules — a write is acknowledged at W successes; a replica that
//! refused it as stale tells the newest version it holds, and a lost round goes again past
//! that version while attempts remain (`STALE_WRITE_ATTEMPTS_MAX`); a read answers the newest
//! version among R answers, and every replica seen with an older one (or none) is repaired.
//! Never: I/O, clocks, timers. `server::data::coordinator` drives these rounds with real
//! replicas and `tests/simulation.rs` with simulated ones, so the simulation checks the rules
//! that run. Each replica answers a round at most once: a duplicate answer is ignored.

use crate::core::quorum::{Outcome, Tally};
use crate::core::version::Version;
use crate::limits::{STALE_RETRY_PAUSE_MS_MAX, STALE_WRITE_ATTEMPTS_MAX};

/// A replica's answer to a replica write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteAnswer {
    Written {
        was_live: bool,
    },
    /// Refused: the replica holds this newer version.
    Stale {
        stored: Version,
    },
    /// Unreachable, timed out, or refused (`out_of_memory`: at `--max-memory`).
    Failed {
        out_of_memory: bool,
    },
}

/// One attempt of a write at one version.
#[derive(Clone, Debug)]
pub struct WriteRound {
    tally: Tally,
    answered: Vec<usize>,
    was_live: bool,
    stale: Option<Version>,
    out_of_memory: bool,
}

impl WriteRound {
    /// A round over `replicas` replicas needing `needed` acknowledgements.
    pub fn new(replicas: usize, needed: usize) -> WriteRound {
        WriteRound {
            tally: Tally::new(replicas, needed),
            answered: Vec::with_capacity(replicas),
            was_live: false,
            stale: None,
            out_of_memory: false,
        }
    }

    /// Replica `from`'s answer; the outcome so far (`Pending` again for a duplicate).
    pub fn absorb(&mut self, from: usize, answer: WriteAnswer) -> Outcome {
        if self.answered.contains(&from) {
            return self.tally.outcome();
        }
        self.answered.push(from);
        match answer {
            WriteAnswer::Written { was_live } => {
                self.was_live |= was_live;
                self.tally.success()
            }
            WriteAnswer::Stale { stored } => {
                self.stale = self.stale.max(Some(stored));
                self.tally.failure()
            }
            WriteAnswer::Failed { out_of_memory } => {
                self.out_of_memory |= out_of_memory;
                self.tally.failure()
            }
        }
    }

    /// Whether any replica held a live value before this write.
    pub fn was_live(&self) -> bool {
        self.was_live
    }

    /// The newest version a replica refused this write for.
    pub fn stale(&self) -> Option<Version> {
        self.stale
    }

    pub fn out_of_memory(&self) -> bool {
        self.out_of_memory
    }

    pub fn successes(&self) -> usize {
        self.tally.successes()
    }

    /// Whether replica `m` has answered (one that has not by the deadline gets a hint).
    pub fn answered(&self, m: usize) -> bool {
        self.answered.contains(&m)
    }

    /// After a lost round of attempt `attempt` (1-based): the version to go past in the next
    /// attempt, or `None` when the write has failed (no replica was newer, or no attempts left).
    pub fn retry_past(&self, attempt: u32) -> Option<Version> {
        self.stale.filter(|_| attempt < STALE_WRITE_ATTEMPTS_MAX)
    }
}

/// The cap (ms) of the randomised pause before attempt `attempt` of a write that lost to a
/// newer version: none before the second (the usual loss is to this client's own earlier write
/// through a node whose clock runs ahead, and going again at once wins), then doubling from
/// 4 ms, at most `STALE_RETRY_PAUSE_MS_MAX` (writers colliding on a hot key fall out of step).
pub fn stale_pause_cap_ms(attempt: u32) -> u64 {
    if attempt <= 2 {
        return 0;
    }
    (1u64 << (attempt - 1).min(16)).min(STALE_RETRY_PAUSE_MS_MAX)
}

/// What a replica holds for a key: `Some((version, value))` (`value: None` is a tombstone;
/// `(Version::ZERO, None)` is nothing), or `None` when it failed to answer.
pub type Held<V> = Option<(Version, Option<V>)>;

/// One quorum read.
#[derive(Clone, Debug)]
pub struct ReadRound<V> {
    tally: Tally,
    /// (replica, version it holds: ZERO for nothing)
    seen: Vec<(usize, Version)>,
    newest: Option<(Version, Option<V>)>,
}

impl<V> ReadRound<V> {
    pub fn new(replicas: usize, needed: usize) -> ReadRound<V> {
        ReadRound {
            tally: Tally::new(replicas, needed),
            seen: Vec::with_capacity(replicas),
            newest: None,
        }
    }

    /// Replica `from`'s answer; the outcome so far (`Pending` again for a duplicate).
    pub fn absorb(&mut self, from: usize, held: Held<V>) -> Outcome {
        if self.seen.iter().any(|(m, _)| *m == from) {
            return self.tally.outcome();
        }
        let Some((version, value)) = held else {
            return self.tally.failure();
        };
        self.seen.push((from, version));
        if version > Version::ZERO && self.newest.as_ref().is_none_or(|(v, _)| version > *v) {
            self.newest = Some((version, value));
        }
        self.tally.success()
    }

    /// The newest version answered and its value (`None`: no replica holds the key).
    pub fn newest(&self) -> Option<(Version, Option<&V>)> {
        self.newest.as_ref().map(|(v, x)| (*v, x.as_ref()))
    }

    pub fn into_newest(self) -> Option<(Version, Option<V>)> {
        self.newest
    }

    pub fn successes(&self) -> usize {
        self.tally.successes()
    }

    /// Replicas that answered with an older version than the newest: read repair targets.
    pub fn behind(&self) -> Vec<usize> {
        let Some((newest, _)) = &self.newest else {
            return Vec::new();
        };
        self.seen
            .iter()
            .filter(|(_, v)| v < newest)
            .map(|(m, _)| *m)
            .collect()
    }
}

/// How a replica's connection stands, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Open and answering lately: a full window frees soon.
    Answering,
    /// Open, requests pending, nothing answered for `PEER_STALL_MS`: stopped, or slow.
    Silent,
    /// Dialed again after its last connection broke, requests pending and nothing answered
    /// on it yet: a stopped peer still accepts connections, so until it answers, a replica
    /// that answered lately (if slowly) is the better bet.
    Unproven,
    /// Broken: a request would reconnect first (and fail fast if the peer is gone).
    Broken,
}

/// A replica left out of a request because its connection's window was full, now looked at
/// again: its index, its standing, and whether its window has room now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub standing: Standing,
    pub room: bool,
    /// How long since its connection last made progress (ms): of two silent replicas, the one
    /// that answered last is the slow one, the other more likely stopped.
    pub quiet_ms: u64,
}

impl Candidate {
    /// Its rank, best first: standing, then the shorter silence, then room.
    pub fn rank(&self) -> (Standing, u64, bool) {
        (self.standing, self.quiet_ms, !self.room)
    }
}

/// Which full replicas a request that needs `short` more of them takes back now: those with
/// room, best ranked first (`Candidate::rank`) — but, unless `settle` (its wait is over), none
/// ranked worse while a better one is still full: a broken connection has "room" at once, and
/// taking it over a working replica that is merely busy would fail the request.
pub fn take_back(candidates: &[Candidate], short: usize, settle: bool) -> Vec<usize> {
    let mut ranked = candidates.to_vec();
    ranked.sort_by_key(Candidate::rank);
    let mut taken = Vec::new();
    for c in ranked {
        if taken.len() >= short {
            break;
        }
        if c.room {
            taken.push(c.index);
        } else if !settle {
            break;
        }
    }
    taken
}

/// Whether a replica taken back counts toward the quorum a request waits for: one that is
/// answering does; a silent, redialed or broken one is sent to but not counted on while a
/// replica still full may yet take its place (unless `settle`: the wait is over). Of a slow
/// replica and a stopped one, both silent, the slow one then gets the request too, and the
/// quorum does not hang on the stopped one.
pub fn counts_on(c: &Candidate, settle: bool) -> bool {
    settle || c.standing == Standing::Answering
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, writer: 1 }
    }

    #[test]
    fn a_write_is_acknowledged_at_w_and_remembers_what_it_learned() {
        let mut r = WriteRound::new(3, 2);
        assert_eq!(
            r.absorb(0, WriteAnswer::Written { was_live: false }),
            Outcome::Pending
        );
        assert_eq!(
            r.absorb(0, WriteAnswer::Written { was_live: true }),
            Outcome::Pending,
            "a duplicate answer counts once"
        );
        assert!(!r.was_live());
        assert_eq!(
            r.absorb(2, WriteAnswer::Stale { stored: v(9) }),
            Outcome::Pending
        );
        assert_eq!(
            r.absorb(1, WriteAnswer::Written { was_live: true }),
            Outcome::Won
        );
        assert!(r.was_live());
        assert_eq!((r.successes(), r.stale()), (2, Some(v(9))));
    }

    #[test]
    fn the_pause_before_a_stale_retry_doubles_up_to_its_cap() {
        assert_eq!(stale_pause_cap_ms(1), 0);
        assert_eq!(stale_pause_cap_ms(2), 0, "the first retry goes at once");
        assert_eq!(stale_pause_cap_ms(3), 4);
        assert_eq!(stale_pause_cap_ms(4), 8);
        let last_below = (STALE_RETRY_PAUSE_MS_MAX as f64).log2() as u32 + 1;
        assert_eq!(
            stale_pause_cap_ms(last_below - 1),
            STALE_RETRY_PAUSE_MS_MAX / 2
        );
        assert_eq!(stale_pause_cap_ms(last_below), STALE_RETRY_PAUSE_MS_MAX);
        assert_eq!(
            stale_pause_cap_ms(last_below + 1),
            STALE_RETRY_PAUSE_MS_MAX,
            "capped"
        );
        assert_eq!(
            stale_pause_cap_ms(STALE_WRITE_ATTEMPTS_MAX),
            STALE_RETRY_PAUSE_MS_MAX
        );
        assert_eq!(stale_pause_cap_ms(u32::MAX), STALE_RETRY_PAUSE_MS_MAX);
    }

    #[test]
    fn a_lost_write_goes_again_past_the_newest_refusal_while_attempts_remain() {
        let mut r = WriteRound::new(3, 2);
        r.absorb(0, WriteAnswer::Stale { stored: v(5) });
        assert_eq!(
            r.absorb(1, WriteAnswer::Stale { stored: v(7) }),
            Outcome::Lost
        );
        assert_eq!(r.retry_past(1), Some(v(7)));
        assert_eq!(r.retry_past(STALE_WRITE_ATTEMPTS_MAX - 1), Some(v(7)));
        assert_eq!(
            r.retry_past(STALE_WRITE_ATTEMPTS_MAX),
            None,
            "attempts spent"
        );
        let mut down = WriteRound::new(3, 2);
        down.absorb(
            0,
            WriteAnswer::Failed {
                out_of_memory: true,
            },
        );
        assert_eq!(
            down.absorb(
                1,
                WriteAnswer::Failed {
                    out_of_memory: false
                }
            ),
            Outcome::Lost
        );
        assert_eq!(
            down.retry_past(1),
            None,
            "unreachable replicas are no reason to retry"
        );
        assert!(down.out_of_memory());
    }

    #[test]
    fn a_read_answers_the_newest_and_repairs_everyone_behind_it() {
        let mut r: ReadRound<&str> = ReadRound::new(3, 2);
        assert_eq!(r.absorb(0, Some((v(3), Some("old")))), Outcome::Pending);
        assert_eq!(r.absorb(1, Some((v(5), None))), Outcome::Won, "a tombstone");
        assert_eq!(r.newest(), Some((v(5), None)));
        assert_eq!(r.absorb(2, Some((Version::ZERO, None))), Outcome::Won);
        assert_eq!(r.behind(), vec![0, 2]);
        assert_eq!(r.into_newest(), Some((v(5), None)));
    }

    #[test]
    fn a_read_of_nothing_repairs_nothing_and_failures_lose_it() {
        let mut r: ReadRound<&str> = ReadRound::new(3, 2);
        r.absorb(0, Some((Version::ZERO, None)));
        assert_eq!(r.absorb(1, Some((Version::ZERO, None))), Outcome::Won);
        assert_eq!((r.newest(), r.behind()), (None, vec![]));
        let mut f: ReadRound<&str> = ReadRound::new(3, 2);
        f.absorb(0, None);
        assert_eq!(f.absorb(1, None), Outcome::Lost);
        assert_eq!(f.successes(), 0);
    }

    fn cand(index: usize, standing: Standing, room: bool) -> Candidate {
        Candidate {
            index,
            standing,
            room,
            quiet_ms: 0,
        }
    }

    /// A stopped replica's connection breaks (and so has "room") while a working one is busy:
    /// the request waits for the working one instead of taking the broken one.
    #[test]
    fn a_busy_working_replica_is_preferred_to_a_broken_one() {
        let busy = cand(1, Standing::Silent, false);
        let broken = cand(2, Standing::Broken, true);
        assert_eq!(take_back(&[broken, busy], 1, false), Vec::<usize>::new());
        assert_eq!(
            take_back(&[broken, cand(1, Standing::Silent, true)], 1, false),
            vec![1]
        );
        // Once its wait is over, the request takes what has room.
        assert_eq!(take_back(&[broken, busy], 1, true), vec![2]);
    }

    /// Two silent replicas: a slow one (quiet for 100 ms, its window full) and a stopped one
    /// (quiet for 900 ms, with room because it was left out of writes while silent): the
    /// request waits for the slow one rather than count on the stopped one.
    #[test]
    fn of_two_silent_replicas_the_one_that_answered_last_is_preferred() {
        let slow = Candidate {
            quiet_ms: 100,
            ..cand(1, Standing::Silent, false)
        };
        let stopped = Candidate {
            quiet_ms: 900,
            ..cand(2, Standing::Silent, true)
        };
        assert_eq!(take_back(&[stopped, slow], 1, false), Vec::<usize>::new());
        let slow_with_room = Candidate { room: true, ..slow };
        assert_eq!(take_back(&[stopped, slow_with_room], 1, false), vec![1]);
        // silent for as long as each other: the one with room is taken, but not counted on
        let stopped = Candidate {
            quiet_ms: 100,
            ..stopped
        };
        assert_eq!(take_back(&[slow, stopped], 1, false), vec![2]);
        assert!(!counts_on(&stopped, false));
        assert!(counts_on(&stopped, true));
        assert!(counts_on(&cand(3, Standing::Answering, true), false));
    }

    /// A stopped replica's redialed connection (accepted by the kernel, never answered) is
    /// not taken over a slow replica that answered lately, whatever their order.
    #[test]
    fn a_slow_replica_is_preferred_to_an_unproven_redial() {
        let slow = cand(1, Standing::Silent, true);
        let redial = cand(2, Standing::Unproven, true);
        assert_eq!(take_back(&[redial, slow], 1, false), vec![1]);
        assert_eq!(take_back(&[slow, redial], 1, false), vec![1]);
        let full = cand(1, Standing::Silent, false);
        assert_eq!(take_back(&[redial, full], 1, false), Vec::<usize>::new());
    }

    #[test]
    fn take_back_takes_the_best_with_room_and_no_more_than_needed() {
        let c = [
            cand(0, Standing::Silent, true),
            cand(1, Standing::Answering, true),
            cand(2, Standing::Answering, true),
        ];
        assert_eq!(take_back(&c, 1, false), vec![1]);
        assert_eq!(take_back(&c, 2, false), vec![1, 2]);
        assert_eq!(take_back(&c, 3, false), vec![1, 2, 0]);
        assert_eq!(take_back(&c, 0, false), Vec::<usize>::new());
        // Equally good: the one with room now is taken while the other is still full.
        let tie = [
            cand(0, Standing::Silent, false),
            cand(1, Standing::Silent, true),
        ];
        assert_eq!(take_back(&tie, 1, false), vec![1]);
    }
}
