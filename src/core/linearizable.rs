//! A linearizability checker (Wing and Gong's search with Lowe's memoisation, per key as
//! porcupine partitions it) for histories of consensus commands on keys.
//!
//! Owns: deciding whether some total order of the operations, each placed between its call
//! and its return, explains every reply by running the commands (`consensus::command`) on one
//! value and expiry per key from absent. An operation whose outcome is unknown (its client timed out or
//! its coordinator crashed) may take effect at any point after its call, or never. Used by the
//! simulator and by `kv check` on a live cluster. Never runs commands of its own.

use std::collections::{BTreeMap, HashSet};

use crate::core::consensus::change::{Change, Reply};
use crate::core::consensus::command::Command;
use crate::core::consensus::{Ballot, Entry, Value};
use crate::core::version::Version;

/// Operations of one key a history may hold (the search state is a bitmask of them).
pub const OPS_PER_KEY_MAX: usize = 128;

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: Vec<u8>,
    pub change: Change,
    /// When it was called, and when it returned (`None`: outcome unknown).
    pub call: u64,
    pub ret: Option<u64>,
    /// Its reply (`None` with an unknown outcome).
    pub reply: Option<Reply>,
}

/// Check every key's operations; the first key that no order explains, with its operations.
pub fn check(history: &[Op]) -> Result<(), String> {
    let mut by_key: BTreeMap<&[u8], Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if ops.len() > OPS_PER_KEY_MAX {
            return Err(format!(
                "key {:?}: {} operations, more than the checker takes ({OPS_PER_KEY_MAX})",
                String::from_utf8_lossy(key),
                ops.len()
            ));
        }
        // each operation as a round runs it, built once for the whole search
        let commands: Vec<Command> = ops.iter().map(|o| Command::of(o.change.clone())).collect();
        let mut seen = HashSet::new();
        if !search(&ops, &commands, 0, &(None, None), &mut seen) {
            let mut text = format!(
                "key {:?}: no linearization explains these:\n",
                String::from_utf8_lossy(key)
            );
            let mut sorted = ops.clone();
            sorted.sort_by_key(|o| o.call);
            for o in sorted {
                text.push_str(&format!(
                    "  [{}, {}] {:?} -> {:?}\n",
                    o.call,
                    o.ret.map_or("?".into(), |r| r.to_string()),
                    o.change,
                    o.reply
                ));
            }
            return Err(text);
        }
    }
    Ok(())
}

/// A key's state in the search: its value and its expiry (ms since the epoch; histories use
/// instants that never pass while they are checked).
type State = (Value, Option<u64>);

/// `command` run on `state` as a round runs it (`Command::run`, which also keeps or sets the
/// expiry): the next state and the reply.
fn run(command: &Command, (value, expires_at_ms): &State) -> (State, Reply) {
    let entry = Entry {
        value: value.clone(),
        expires_at_ms: *expires_at_ms,
        version: Version::ZERO,
    };
    let (next, _, reply) = command.run(Some(&entry), 0, Ballot::default(), Version::ZERO);
    ((next.value, next.expires_at_ms), reply)
}

/// Whether the operations not in `done` can follow, from `state` (`commands[i]` runs
/// `ops[i]`).
fn search(
    ops: &[&Op],
    commands: &[Command],
    done: u128,
    state: &State,
    seen: &mut HashSet<(u128, State)>,
) -> bool {
    let open = |i: usize| done & (1 << i) == 0;
    // every operation that returned is placed: the rest (unknown outcomes) may never happen
    if (0..ops.len()).all(|i| !open(i) || ops[i].ret.is_none()) {
        return true;
    }
    // the next one placed must have been called before every open operation returned
    let first_return = (0..ops.len())
        .filter(|&i| open(i))
        .filter_map(|i| ops[i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for i in (0..ops.len()).filter(|&i| open(i) && ops[i].call <= first_return) {
        let (next, reply) = run(&commands[i], state);
        if ops[i].reply.as_ref().is_some_and(|r| *r != reply) {
            continue;
        }
        let state = (done | 1 << i, next);
        if seen.insert(state.clone()) && search(ops, commands, state.0, &state.1, seen) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::consensus::change::Cond;

    fn op(call: u64, ret: Option<u64>, change: Change, reply: Option<Reply>) -> Op {
        Op {
            key: b"k".to_vec(),
            change,
            call,
            ret,
            reply,
        }
    }

    #[test]
    fn expiry_conditions_are_part_of_the_state() {
        use crate::core::consensus::change::ExpiryCond;
        let expire_nx = Change::Expiry {
            at: Some(5_000),
            cond: ExpiryCond::Nx,
            get: false,
        };
        let set = Change::Set {
            value: b"v".to_vec(),
            cond: Cond::Always,
            get: false,
        };
        let once = [
            op(0, Some(1), set.clone(), Some(Reply::Done(true))),
            op(2, Some(10), expire_nx.clone(), Some(Reply::Int(0))),
            op(3, Some(9), expire_nx.clone(), Some(Reply::Int(1))),
        ];
        assert!(check(&once).is_ok());
        let twice = [
            op(0, Some(1), set.clone(), Some(Reply::Done(true))),
            op(2, Some(10), expire_nx.clone(), Some(Reply::Int(1))),
            op(3, Some(9), expire_nx.clone(), Some(Reply::Int(1))),
        ];
        assert!(check(&twice).is_err(), "NX set an expiry twice");
        // a SET in between clears the expiry: then both may
        let cleared = [
            op(0, Some(1), set.clone(), Some(Reply::Done(true))),
            op(2, Some(3), expire_nx.clone(), Some(Reply::Int(1))),
            op(4, Some(5), set, Some(Reply::Done(true))),
            op(6, Some(7), expire_nx, Some(Reply::Int(1))),
        ];
        assert!(check(&cleared).is_ok());
    }

    #[test]
    fn concurrent_increments_in_either_order_pass_and_a_repeat_fails() {
        let ok = [
            op(0, Some(10), Change::Incr(1), Some(Reply::Int(2))),
            op(1, Some(5), Change::Incr(1), Some(Reply::Int(1))),
        ];
        assert!(check(&ok).is_ok());
        let repeated = [
            op(0, Some(10), Change::Incr(1), Some(Reply::Int(1))),
            op(1, Some(5), Change::Incr(1), Some(Reply::Int(1))),
        ];
        assert!(check(&repeated).is_err());
    }

    #[test]
    fn real_time_order_binds_and_unknown_outcomes_may_or_may_not_count() {
        // the second increment began after the first returned: it cannot come first
        let stale = [
            op(0, Some(1), Change::Incr(1), Some(Reply::Int(1))),
            op(2, Some(3), Change::Get, Some(Reply::Value(None))),
        ];
        assert!(check(&stale).is_err());
        let pending = |reply| {
            [
                op(0, None, Change::Incr(5), None),
                op(1, Some(2), Change::Get, Some(Reply::Value(reply))),
            ]
        };
        assert!(check(&pending(None)).is_ok(), "not yet applied");
        assert!(check(&pending(Some(b"5".to_vec()))).is_ok(), "applied");
        assert!(check(&pending(Some(b"6".to_vec()))).is_err());
    }

    #[test]
    fn two_lock_holders_at_once_fail() {
        let two = [
            op(
                0,
                Some(5),
                Change::Set {
                    value: b"a".to_vec(),
                    cond: Cond::Nx,
                    get: false,
                },
                Some(Reply::Done(true)),
            ),
            op(
                1,
                Some(6),
                Change::Set {
                    value: b"b".to_vec(),
                    cond: Cond::Nx,
                    get: false,
                },
                Some(Reply::Done(true)),
            ),
        ];
        assert!(check(&two).is_err());
        let released = [
            op(
                0,
                Some(1),
                Change::Set {
                    value: b"a".to_vec(),
                    cond: Cond::Nx,
                    get: false,
                },
                Some(Reply::Done(true)),
            ),
            op(
                2,
                Some(3),
                Change::Del(Cond::IfEq(b"a".to_vec())),
                Some(Reply::Int(1)),
            ),
            op(
                4,
                Some(5),
                Change::Set {
                    value: b"b".to_vec(),
                    cond: Cond::Nx,
                    get: false,
                },
                Some(Reply::Done(true)),
            ),
        ];
        assert!(check(&released).is_ok());
    }
}
