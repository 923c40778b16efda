//! The checker behind `kv check`: a history of operations (who, when, what, outcome) and the
//! properties it must satisfy under kvstore's promise (last-write-wins on HLC versions, R + W >
//! N, strict quorum). Pure: no sockets, no clock; times are microseconds since the run began.
//!
//! Checked, per key:
//! - **no read returns a value nobody wrote** (a phantom);
//! - **no acknowledged write is lost, no read is stale**: a read (or the final read) must not
//!   return a write that ended before an acknowledged write began when that acknowledged write
//!   itself ended before the read began — nor "not found" after an acknowledged write ended.
//!   Acknowledged writes are ordered by real time (a coordinator retries a write refused as
//!   stale past the newer version, and W + W > N replicas overlap), so this holds even with
//!   concurrent writers. A write that failed or timed out has an unknown outcome (Dynamo): it
//!   may still win later, so a read returning one is never counted against the store.
//!
//! Not checked: linearizability. Two reads concurrent with a write may disagree, and
//! concurrent writers are ordered by version, not by real time: LWW is weaker than that, by
//! design.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The store said yes.
    Ok,
    /// The store said no (an error reply): a write may still have landed somewhere.
    Failed,
    /// No answer (timeout, connection lost).
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Write {
    pub key: u32,
    pub value: String,
    pub start_us: u64,
    pub end_us: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug)]
pub struct Read {
    pub key: u32,
    /// `None`: not found.
    pub value: Option<String>,
    pub start_us: u64,
}

/// Violations found, with up to `EXAMPLES_MAX` examples each.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Verdict {
    pub phantom_reads: u64,
    pub stale_reads: u64,
    pub lost_writes: u64,
    pub examples: Vec<String>,
}

const EXAMPLES_MAX: usize = 10;

impl Verdict {
    pub fn ok(&self) -> bool {
        self.phantom_reads == 0 && self.stale_reads == 0 && self.lost_writes == 0
    }

    fn note(&mut self, text: String) {
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(text);
        }
    }
}

/// Check `reads` (ordinary ones) and `finals` (one read per key after the run, counted as lost
/// writes when they fail) against `writes`.
pub fn check(writes: &[Write], reads: &[Read], finals: &[Read]) -> Verdict {
    let mut by_key: HashMap<u32, Vec<&Write>> = HashMap::new();
    for w in writes {
        by_key.entry(w.key).or_default().push(w);
    }
    let mut v = Verdict::default();
    for (r, is_final) in reads
        .iter()
        .map(|r| (r, false))
        .chain(finals.iter().map(|r| (r, true)))
    {
        let ws = by_key.get(&r.key).map(Vec::as_slice).unwrap_or(&[]);
        // the newest acknowledged write that ended before the read began (by start time)
        let floor = ws
            .iter()
            .filter(|w| w.outcome == Outcome::Ok && w.end_us < r.start_us)
            .max_by_key(|w| w.start_us);
        let got = match &r.value {
            None => None,
            Some(val) => match ws.iter().find(|w| &w.value == val) {
                Some(w) => Some(*w),
                None => {
                    v.phantom_reads += 1;
                    v.note(format!("key {}: read {val:?}, which nobody wrote", r.key));
                    continue;
                }
            },
        };
        let Some(floor) = floor else { continue };
        let bad = match got {
            None => true,
            Some(w) => w.outcome == Outcome::Ok && w.end_us < floor.start_us,
        };
        if bad {
            let what = got.map_or("not found".to_string(), |w| format!("{:?}", w.value));
            let text = format!(
                "key {}: read at {} us returned {what}, but {:?} was acknowledged at {} us",
                r.key, r.start_us, floor.value, floor.end_us
            );
            if is_final {
                v.lost_writes += 1;
            } else {
                v.stale_reads += 1;
            }
            v.note(text);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: u32, value: &str, start: u64, end: u64, outcome: Outcome) -> Write {
        Write {
            key,
            value: value.into(),
            start_us: start,
            end_us: end,
            outcome,
        }
    }

    fn r(key: u32, value: Option<&str>, start: u64) -> Read {
        Read {
            key,
            value: value.map(String::from),
            start_us: start,
        }
    }

    #[test]
    fn a_correct_history_passes() {
        let writes = [
            w(1, "a", 0, 10, Outcome::Ok),
            w(1, "b", 20, 30, Outcome::Ok),
        ];
        let reads = [
            r(1, None, 5),
            r(1, Some("a"), 15),
            r(1, Some("b"), 25),
            r(1, Some("a"), 25),
        ];
        let v = check(&writes, &reads, &[r(1, Some("b"), 100)]);
        assert!(v.ok(), "{v:?}");
    }

    #[test]
    fn a_stale_read_a_lost_write_and_a_phantom_are_caught() {
        let writes = [
            w(1, "a", 0, 10, Outcome::Ok),
            w(1, "b", 20, 30, Outcome::Ok),
        ];
        let v = check(&writes, &[r(1, Some("a"), 40)], &[]);
        assert_eq!(v.stale_reads, 1, "{v:?}");
        let v = check(&writes, &[], &[r(1, None, 100)]);
        assert_eq!(v.lost_writes, 1, "{v:?}");
        let v = check(&writes, &[r(1, Some("zzz"), 40)], &[]);
        assert_eq!(v.phantom_reads, 1, "{v:?}");
    }

    #[test]
    fn concurrent_and_unknown_writes_are_not_held_against_the_store() {
        // b overlaps a: either may win
        let writes = [w(1, "a", 0, 10, Outcome::Ok), w(1, "b", 5, 15, Outcome::Ok)];
        assert!(check(&writes, &[r(1, Some("a"), 20), r(1, Some("b"), 21)], &[]).ok());
        // a failed write may still win later
        let writes = [
            w(1, "a", 0, 10, Outcome::Failed),
            w(1, "b", 20, 30, Outcome::Ok),
        ];
        assert!(check(&writes, &[r(1, Some("a"), 40)], &[]).ok());
    }
}
