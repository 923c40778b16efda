//! A command as a round runs it on a stored entry: the change (`change`), what becomes of the
//! key's expiry, and the version of what it writes.
//!
//! Owns: which entry is current (the one with the highest version among what the promises
//! carried: the value accepted at the highest ballot, and each replica's stored entry, which
//! plain SET and DEL write last-write-wins), liveness at the proposer's clock, and the rule for
//! the written entry's version: above every version the round saw, and at least the ballot.
//! So a conditional write orders after every plain write its round saw, and plain writes
//! newer than it win over it as over any write.

use super::change::{Change, Reply};
use super::{Ballot, Entry, Value};
use crate::core::version::Version;

/// What a write does to the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// The written value never expires (SET without an expiry option).
    Clear,
    /// The written value keeps the stored expiry (KEEPTTL; INCR, APPEND and SETRANGE always).
    Keep,
    /// The written value expires at this instant, ms since the epoch (EX, PX, EXAT, PXAT).
    At(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub change: Change,
    pub ttl: Ttl,
    /// The largest value the command may leave (`--max-value-bytes` where it was asked):
    /// a write past it is refused, and nothing changes.
    pub max_bytes: usize,
}

impl Command {
    /// A command whose writes keep (INCR…) or clear (the rest) the expiry, as Redis's do.
    pub fn of(change: Change) -> Command {
        let ttl = if change.keeps_expiry() {
            Ttl::Keep
        } else {
            Ttl::Clear
        };
        Command {
            change,
            ttl,
            max_bytes: crate::limits::VALUE_BYTES_MAX_DEFAULT,
        }
    }

    /// The same, held to `max_bytes`.
    pub fn limited(self, max_bytes: usize) -> Command {
        Command { max_bytes, ..self }
    }

    /// Run on `current` at `now_ms` within a round at `ballot` that saw versions up to `seen`:
    /// the entry to accept (the current one, unchanged, when nothing is written) and whether
    /// it is new (to be written to the replicas' stores once decided), and the reply.
    pub fn run(
        &self,
        current: Option<&Entry>,
        now_ms: u64,
        ballot: Ballot,
        seen: Version,
    ) -> (Entry, bool, Reply) {
        let live = current.filter(|e| e.value.is_some() && !e.expired(now_ms));
        let value: Value = live.and_then(|e| e.value.clone());
        let (write, reply) = self.change.apply(&value);
        let too_large = write
            .as_ref()
            .is_some_and(|w| w.as_ref().is_some_and(|d| d.len_bytes() > self.max_bytes));
        let (write, reply) = if too_large {
            (None, Reply::Error(super::change::TOO_LARGE))
        } else {
            (write, reply)
        };
        let Some(new) = write else {
            let unchanged = current.cloned().unwrap_or(Entry::ABSENT);
            return (unchanged, false, reply);
        };
        let expires_at_ms = match (&new, self.ttl) {
            (None, _) | (Some(_), Ttl::Clear) => None,
            (Some(_), Ttl::Keep) => live.and_then(|e| e.expires_at_ms),
            (Some(_), Ttl::At(at)) => Some(at),
        };
        let version = Version {
            hlc: ballot.round.max(seen.hlc + 1),
            writer: ballot.proposer,
        };
        let entry = Entry {
            value: new,
            expires_at_ms,
            version,
        };
        (entry, true, reply)
    }
}

/// Run a batch, in order, each on what the one before it left: the entry to accept, whether
/// any of them wrote, and each one's reply. One round decides them all (a coordinator batches
/// the commands queued for a key while a round is out).
pub fn run_all(
    commands: &[Command],
    current: Option<&Entry>,
    now_ms: u64,
    ballot: Ballot,
    seen: Version,
) -> (Entry, bool, Vec<Reply>) {
    let mut entry = current.cloned().unwrap_or(Entry::ABSENT);
    let mut wrote = false;
    let mut replies = Vec::with_capacity(commands.len());
    for c in commands {
        let (next, new, reply) = c.run(Some(&entry), now_ms, ballot, seen);
        wrote |= new;
        entry = next;
        replies.push(reply);
    }
    (entry, wrote, replies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::consensus::change::Cond;
    use crate::core::consensus::Data;

    fn e(value: &str, expires_at_ms: Option<u64>, hlc: u64) -> Entry {
        Entry {
            value: Some(Data::Str(value.as_bytes().to_vec())),
            expires_at_ms,
            version: Version { hlc, writer: 1 },
        }
    }

    const B: Ballot = Ballot {
        round: 50,
        proposer: 7,
    };

    #[test]
    fn expiry_and_version_follow_the_rules() {
        let seen = Version { hlc: 90, writer: 3 };
        // INCR keeps the TTL and writes above every version seen
        let (entry, new, reply) =
            Command::of(Change::Incr(1)).run(Some(&e("4", Some(1_000), 90)), 10, B, seen);
        assert!(new);
        assert_eq!(reply, Reply::Int(5));
        assert_eq!(entry.expires_at_ms, Some(1_000));
        assert_eq!(entry.version, Version { hlc: 91, writer: 7 });
        // an expired value is absent: SET NX takes it, with its own expiry
        let nx = Command {
            ttl: Ttl::At(5_000),
            ..Command::of(Change::Set {
                value: b"me".to_vec(),
                cond: Cond::Nx,
                get: false,
            })
        };
        let (entry, new, reply) = nx.run(Some(&e("other", Some(10), 20)), 10, B, seen);
        assert!(new);
        assert_eq!(reply, Reply::Done(true));
        assert_eq!(entry.expires_at_ms, Some(5_000));
        assert_eq!(entry.version.hlc, 91);
        // a lost SET NX accepts the current entry unchanged
        let held = e("other", Some(10_000), 20);
        let (entry, new, reply) = nx.run(Some(&held), 10, B, Version::ZERO);
        assert!(!new);
        assert_eq!(reply, Reply::Done(false));
        assert_eq!(entry, held);
        // the ballot's round is the floor of the version
        let (entry, _, _) = Command::of(Change::Incr(1)).run(None, 10, B, Version::ZERO);
        assert_eq!(entry.version, Version { hlc: 50, writer: 7 });
        // a SET clears the TTL
        let set = Command::of(Change::Set {
            value: b"x".to_vec(),
            cond: Cond::Always,
            get: false,
        });
        let (entry, ..) = set.run(Some(&e("y", Some(9_999), 1)), 10, B, seen);
        assert_eq!(entry.expires_at_ms, None);
    }

    #[test]
    fn a_batch_runs_in_order_with_one_version() {
        let batch = [
            Command::of(Change::Incr(1)),
            Command::of(Change::Get),
            Command::of(Change::Incr(2)),
        ];
        let (entry, wrote, replies) = run_all(&batch, None, 0, B, Version::ZERO);
        assert!(wrote);
        assert_eq!(
            replies,
            vec![
                Reply::Int(1),
                Reply::Value(Some(b"1".to_vec())),
                Reply::Int(3)
            ]
        );
        assert_eq!(entry.value, Some(Data::Str(b"3".to_vec())));
        assert_eq!(entry.version, Version { hlc: 50, writer: 7 });
        let (_, wrote, _) = run_all(&batch[1..2], Some(&entry), 0, B, Version::ZERO);
        assert!(!wrote, "a read writes nothing");
    }
}
