//! A command as a round runs it on a stored entry: the change (`change`), what becomes of the
//! key's expiry, and the version of what it writes.
//!
//! Owns: which entry is current (the one with the highest version among what the promises
//! carried: the value accepted at the highest ballot, and each replica's stored entry, which
//! plain SET and DEL write last-write-wins), liveness at the proposer's clock, and the rule for
//! the written entry's version: above every version the round saw, and at least the ballot.
//! So a conditional write orders after every plain write its round saw, and plain writes
//! newer than it win over it as over any write.

use super::change::{Change, ExpiryCond, Reply, ON_A_COLLECTION, WRONGTYPE};
use super::{Ballot, Data, Entry, Value};
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
        if let Change::Expiry { at, cond, get } = self.change {
            return expiry(
                current,
                live,
                (at, cond, get),
                now_ms,
                version_of(ballot, seen),
            );
        }
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
        let entry = Entry {
            value: new,
            expires_at_ms,
            version: version_of(ballot, seen),
        };
        (entry, true, reply)
    }
}

/// The version a round at `ballot` that saw versions up to `seen` writes at.
fn version_of(ballot: Ballot, seen: Version) -> Version {
    Version {
        hlc: ballot.round.max(seen.hlc + 1),
        writer: ballot.proposer,
    }
}

/// `Change::Expiry` on `current` (`live`: it, unless missing, deleted or expired).
fn expiry(
    current: Option<&Entry>,
    live: Option<&Entry>,
    (at, cond, get): (Option<u64>, ExpiryCond, bool),
    now_ms: u64,
    version: Version,
) -> (Entry, bool, Reply) {
    let unchanged = |reply| (current.cloned().unwrap_or(Entry::ABSENT), false, reply);
    let Some(e) = live else {
        return unchanged(if get {
            Reply::Value(None)
        } else {
            Reply::Int(0)
        });
    };
    let value = match &e.value {
        Some(Data::Collection(_)) if !get => return unchanged(Reply::Error(ON_A_COLLECTION)),
        Some(Data::Str(v)) if get => Reply::Value(Some(v.clone())),
        _ if get => return unchanged(Reply::Error(WRONGTYPE)),
        _ => Reply::Int(1),
    };
    let no = if get { value.clone() } else { Reply::Int(0) };
    if !cond.holds(e.expires_at_ms, at) {
        return unchanged(no);
    }
    let gone = at.is_some_and(|t| t <= now_ms);
    if !gone && e.expires_at_ms == at {
        return unchanged(value); // already so: nothing to write
    }
    let entry = Entry {
        value: if gone { None } else { e.value.clone() },
        expires_at_ms: if gone { None } else { at },
        version,
    };
    (entry, true, value)
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
    fn expiry_changes_follow_redis() {
        let seen = Version { hlc: 90, writer: 3 };
        let exp = |at, cond| {
            Command::of(Change::Expiry {
                at,
                cond,
                get: false,
            })
        };
        let run = |c: Command, cur: Option<&Entry>| c.run(cur, 10, B, seen);
        let plain = e("v", None, 5);
        let timed = e("v", Some(1_000), 5);
        // EXPIRE on a missing key: 0, nothing written
        let (_, new, reply) = run(exp(Some(500), ExpiryCond::Always), None);
        assert_eq!((new, reply), (false, Reply::Int(0)));
        // set: the same value, the new expiry, a version above all seen
        let (entry, new, reply) = run(exp(Some(500), ExpiryCond::Always), Some(&plain));
        assert_eq!((new, reply), (true, Reply::Int(1)));
        assert_eq!(
            (entry.value, entry.expires_at_ms),
            (plain.value.clone(), Some(500))
        );
        assert_eq!(entry.version, Version { hlc: 91, writer: 7 });
        // an instant already past deletes
        let (entry, new, reply) = run(exp(Some(10), ExpiryCond::Always), Some(&plain));
        assert_eq!((new, reply, entry.value), (true, Reply::Int(1), None));
        // NX XX GT LT: no expiry is an infinite one
        let cases = [
            (ExpiryCond::Nx, &plain, true),
            (ExpiryCond::Nx, &timed, false),
            (ExpiryCond::Xx, &plain, false),
            (ExpiryCond::Xx, &timed, true),
            (ExpiryCond::Gt, &plain, false),
            (ExpiryCond::Lt, &plain, true),
            (ExpiryCond::XxLt, &plain, false),
        ];
        for (cond, cur, set) in cases {
            let (_, new, reply) = run(exp(Some(500), cond), Some(cur));
            assert_eq!(
                (new, reply),
                (set, Reply::Int(i64::from(set))),
                "{cond:?} {cur:?}"
            );
        }
        for (cond, at, set) in [
            (ExpiryCond::Gt, 1_001, true),
            (ExpiryCond::Gt, 1_000, false),
            (ExpiryCond::Lt, 999, true),
            (ExpiryCond::Lt, 1_000, false),
            (ExpiryCond::XxLt, 999, true),
        ] {
            let (_, new, _) = run(exp(Some(at), cond), Some(&timed));
            assert_eq!(new, set, "{cond:?} {at}");
        }
        // PERSIST: 1 only when there was an expiry to drop
        let (entry, new, reply) = run(exp(None, ExpiryCond::Xx), Some(&timed));
        assert_eq!(
            (new, reply, entry.expires_at_ms),
            (true, Reply::Int(1), None)
        );
        let (_, new, reply) = run(exp(None, ExpiryCond::Xx), Some(&plain));
        assert_eq!((new, reply), (false, Reply::Int(0)));
        // GETEX: the value whatever happens; WRONGTYPE on a list
        let getex = Command::of(Change::Expiry {
            at: Some(500),
            cond: ExpiryCond::Always,
            get: true,
        });
        let (_, new, reply) = getex.run(Some(&plain), 10, B, seen);
        assert_eq!((new, reply), (true, Reply::Value(Some(b"v".to_vec()))));
        let (_, new, reply) = getex.run(None, 10, B, seen);
        assert_eq!((new, reply), (false, Reply::Value(None)));
        let list = Entry {
            value: Some(Data::List(vec![b"a".to_vec()].into())),
            ..plain.clone()
        };
        assert_eq!(
            getex.run(Some(&list), 10, B, seen).2,
            Reply::Error(WRONGTYPE)
        );
        let (_, new, reply) = run(exp(Some(500), ExpiryCond::Always), Some(&list));
        assert_eq!((new, reply), (true, Reply::Int(1)), "EXPIRE takes a list");
        // a collection is left to its own path, unchanged
        let coll = Entry {
            value: Some(Data::Collection(vec![1, 2])),
            ..plain.clone()
        };
        let (entry, new, reply) = run(exp(Some(500), ExpiryCond::Always), Some(&coll));
        assert_eq!(
            (new, reply, entry),
            (false, Reply::Error(ON_A_COLLECTION), coll)
        );
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
