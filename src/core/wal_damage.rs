//! What a node's WAL replay found wrong, and what the node does about it. Pure: the replay shell
//! (`storage::recovery`) scans the segments (`storage::record::scan`) and hands in what each one
//! held; this module classifies every problem and decides whether the node may serve.
//!
//! Owns the recovery rules (docs/design.md has them as a table):
//! - **Torn tail**: a bad or zero record with nothing valid after it, in the *last* segment of
//!   its chain. The write in flight at a crash: cut (truncated), logged, nothing acknowledged
//!   lost in `--fsync batch`, at most the unsynced ~1 s on a power loss otherwise.
//! - **Corruption**, everything else: a bad stretch with valid records after it (the records
//!   skipped are counted from the sequence numbers), a bad tail in a segment that is not the
//!   last of its chain (the records after it are lost, their count unknown), or a segment
//!   missing from the middle of its chain. Never cut, never deleted: the shell keeps the
//!   segment aside as evidence.
//! - Chains: one per core per run; every segment opens with a `SegmentStart` naming its run,
//!   core and the run's core count, so the ids of a chain are `run + core + k * cores`. A
//!   `Snapshotted(b)` marker says the chain holds everything from segment `b` on: ids below the
//!   highest such `b` may be gone (compaction removed them). A run whose every chain has its
//!   start snapshot supersedes every older run: older runs' segments may be partly removed, and
//!   damage in them loses nothing.
//!
//! Never does I/O, never decides how to report (the shell logs and counts).

use std::collections::{BTreeMap, BTreeSet};

use crate::storage::record::{Damage, SegmentStart, Stop, Tail};

/// `--wal-recovery`: what a node does when replay finds corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RecoveryMode {
    /// Alone: refuse to start. In a cluster: start, and answer no replica read until a repair
    /// round with the peers has filled what was lost.
    Strict,
    /// Start and serve every valid record; what was lost stays lost (logged and counted).
    SkipCorrupt,
}

/// What replay saw in one segment.
#[derive(Clone, Debug)]
pub struct SegmentSeen {
    pub id: u64,
    /// The core directory it lies in (chains never span directories).
    pub dir: String,
    /// Its `SegmentStart`, if its first record decoded as one (older segments have none).
    pub start: Option<SegmentStart>,
    /// Boundaries of the `Snapshotted` markers it holds.
    pub snapshotted: Vec<u64>,
    pub damage: Vec<Damage>,
    pub tail: Tail,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Cut: the segment is truncated at `at` (`bytes` after it were not records).
    TornTail { segment: u64, at: u64, bytes: u64 },
    /// Bytes `[start, end)` of `segment` held records that are lost; `records` when the
    /// sequence numbers tell how many.
    Lost {
        segment: u64,
        start: u64,
        end: u64,
        records: Option<u64>,
        reason: String,
    },
    /// Segment `segment` of chain (run, core) is gone, with segments of the chain after it.
    Missing { segment: u64, run: u64, core: u32 },
    /// Damage in a segment of a run that a later, complete run supersedes: nothing lost.
    Superseded { segment: u64 },
}

impl Finding {
    /// Whether acknowledged data may be lost (anything but a torn tail or superseded damage).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Finding::Lost { .. } | Finding::Missing { .. })
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::TornTail { segment, at, bytes } => write!(
                f,
                "segment {segment}: torn tail at offset {at} ({bytes} bytes cut)"
            ),
            Finding::Lost {
                segment,
                start,
                end,
                records,
                reason,
            } => {
                let n = records.map_or("an unknown number of".to_string(), |n| n.to_string());
                write!(
                    f,
                    "segment {segment}: bytes {start}..{end} damaged ({reason}); {n} records lost"
                )
            }
            Finding::Missing { segment, run, core } => write!(
                f,
                "segment {segment} (run {run}, core {core}) is missing; its records are lost"
            ),
            Finding::Superseded { segment } => write!(
                f,
                "segment {segment}: damaged, but superseded by a later snapshot (nothing lost)"
            ),
        }
    }
}

/// Every finding of one replay, in segment order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn corruption(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_corruption())
    }

    pub fn is_corrupt(&self) -> bool {
        self.corruption().next().is_some()
    }

    /// Records known lost (a bad tail or a missing segment adds an unknown number).
    pub fn records_lost(&self) -> u64 {
        self.findings
            .iter()
            .map(|f| match f {
                Finding::Lost {
                    records: Some(n), ..
                } => *n,
                _ => 0,
            })
            .sum()
    }

    /// Segments holding corruption (kept aside as evidence).
    pub fn damaged_segments(&self) -> BTreeSet<u64> {
        self.findings
            .iter()
            .filter_map(|f| match f {
                Finding::Lost { segment, .. } => Some(*segment),
                _ => None,
            })
            .collect()
    }

    /// Torn tails to cut: (segment, offset).
    pub fn cuts(&self) -> Vec<(u64, u64)> {
        self.findings
            .iter()
            .filter_map(|f| match f {
                Finding::TornTail { segment, at, .. } => Some((*segment, *at)),
                _ => None,
            })
            .collect()
    }
}

/// What the node does after replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Serve,
    /// Start, but answer no replica read until a repair round with every peer completed.
    RepairFirst,
    /// Exit non-zero, naming what would be lost and `--wal-recovery skip-corrupt`.
    Refuse,
}

/// The recovery rule: `corrupt` (this replay found corruption, or an earlier one's repair never
/// finished), `clustered` (the node has peers to repair from).
pub fn decide(mode: RecoveryMode, corrupt: bool, clustered: bool) -> Decision {
    match (corrupt, mode, clustered) {
        (false, _, _) | (true, RecoveryMode::SkipCorrupt, _) => Decision::Serve,
        (true, RecoveryMode::Strict, true) => Decision::RepairFirst,
        (true, RecoveryMode::Strict, false) => Decision::Refuse,
    }
}

/// Whether the last run may have lost the page cache's share of its writes: it did not stop
/// cleanly (`left_behind`: the boot id its mark names, see `storage::boot_mark`) and the machine
/// has booted since (`current`, unknown when the kernel does not tell). A crash of the process
/// alone keeps the page cache, and so every staged record.
pub fn power_loss_suspected(left_behind: Option<&str>, current: Option<&str>) -> bool {
    match (left_behind, current) {
        (None, _) => false,
        (Some(then), Some(now)) => then != now,
        (Some(_), None) => true,
    }
}

/// The rule after a suspected power loss, which may have taken the last ~1 s of acknowledged
/// writes (the contract of `--fsync interval`; nothing in `--fsync batch`): in a cluster the
/// peers hold them (W replicas acknowledged each), so the node repairs before it answers a
/// replica read, as after corruption; alone, there is nothing to repair from, and it serves
/// what it has.
pub fn after_power_loss(suspected: bool, clustered: bool) -> Decision {
    if suspected && clustered {
        Decision::RepairFirst
    } else {
        Decision::Serve
    }
}

type ChainKey = (String, u64, u32);

/// Classify everything replay saw (see the module docs).
pub fn classify(segments: &[SegmentSeen]) -> Report {
    let chain_of = |s: &SegmentSeen| -> Option<ChainKey> {
        s.start.map(|st| (s.dir.clone(), st.run, st.core))
    };
    // Per chain: its segments present, its floor (the highest snapshot boundary) and whether its
    // start snapshot is there; per run: its core count.
    let mut chains: BTreeMap<ChainKey, (BTreeSet<u64>, u64, bool, u32)> = BTreeMap::new();
    for s in segments {
        if let (Some(key), Some(st)) = (chain_of(s), s.start) {
            let first = st.run + u64::from(st.core);
            let e = chains
                .entry(key)
                .or_insert((BTreeSet::new(), first, false, st.cores));
            e.0.insert(s.id);
            for &b in &s.snapshotted {
                e.1 = e.1.max(b);
                e.2 |= b == first;
            }
        }
    }
    let complete_runs: BTreeSet<u64> = {
        let mut runs: BTreeMap<u64, (u32, BTreeSet<u32>)> = BTreeMap::new();
        for ((_, run, core), (_, _, started, cores)) in &chains {
            let e = runs.entry(*run).or_insert((*cores, BTreeSet::new()));
            if *started {
                e.1.insert(*core);
            }
        }
        runs.into_iter()
            .filter(|(_, (cores, done))| done.len() as u32 == *cores)
            .map(|(run, _)| run)
            .collect()
    };
    let superseded = |run: u64| complete_runs.iter().any(|r| *r > run);
    let last_in_dir: BTreeMap<&str, u64> = segments.iter().fold(BTreeMap::new(), |mut m, s| {
        let e = m.entry(s.dir.as_str()).or_insert(s.id);
        *e = (*e).max(s.id);
        m
    });
    let mut findings = Vec::new();
    let mut ordered: Vec<&SegmentSeen> = segments.iter().collect();
    ordered.sort_by_key(|s| s.id);
    for s in ordered {
        let key = chain_of(s);
        let last_of_chain = match &key {
            Some(k) => chains[k].0.last() == Some(&s.id),
            None => last_in_dir.get(s.dir.as_str()) == Some(&s.id),
        };
        let old = s.start.is_some_and(|st| superseded(st.run));
        let damaged = !s.damage.is_empty() || (s.tail.stop != Stop::End && !last_of_chain);
        if old && damaged {
            findings.push(Finding::Superseded { segment: s.id });
            continue;
        }
        for d in &s.damage {
            findings.push(Finding::Lost {
                segment: s.id,
                start: d.start,
                end: d.end,
                records: Some(d.records_lost()),
                reason: d.reason.clone(),
            });
        }
        if s.tail.stop != Stop::End {
            if last_of_chain {
                findings.push(Finding::TornTail {
                    segment: s.id,
                    at: s.tail.at,
                    bytes: s.tail.written_end - s.tail.at,
                });
            } else {
                findings.push(Finding::Lost {
                    segment: s.id,
                    start: s.tail.at,
                    end: s.tail.written_end,
                    records: None,
                    reason: s.tail.stop.to_string(),
                });
            }
        }
    }
    for ((_, run, core), (present, floor, _, cores)) in &chains {
        if superseded(*run) {
            continue;
        }
        let (Some(&last), step) = (present.last(), u64::from((*cores).max(1))) else {
            continue;
        };
        let first = run + u64::from(*core);
        let mut id = first;
        while id < last {
            if id >= *floor && !present.contains(&id) {
                findings.push(Finding::Missing {
                    segment: id,
                    run: *run,
                    core: *core,
                });
            }
            id += step;
        }
    }
    Report { findings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unclean_stop_in_another_boot_suspects_a_power_loss() {
        assert!(!power_loss_suspected(None, Some("b1")));
        assert!(!power_loss_suspected(None, None));
        assert!(!power_loss_suspected(Some("b1"), Some("b1")));
        assert!(power_loss_suspected(Some("b1"), Some("b2")));
        assert!(power_loss_suspected(Some(""), Some("b2")));
        assert!(power_loss_suspected(Some("b1"), None));
        assert_eq!(after_power_loss(true, true), Decision::RepairFirst);
        assert_eq!(after_power_loss(true, false), Decision::Serve);
        assert_eq!(after_power_loss(false, true), Decision::Serve);
    }

    fn clean(at: u64) -> Tail {
        Tail {
            at,
            stop: Stop::End,
            written_end: at,
        }
    }

    /// Segment `id` of chain (run, core) of a run with `cores` cores, clean.
    fn seg(id: u64, run: u64, core: u32, cores: u32) -> SegmentSeen {
        SegmentSeen {
            id,
            dir: format!("core-{core}"),
            start: Some(SegmentStart {
                prev: 0,
                run,
                core,
                cores,
            }),
            snapshotted: Vec::new(),
            damage: Vec::new(),
            tail: clean(100),
        }
    }

    fn torn(mut s: SegmentSeen) -> SegmentSeen {
        s.tail = Tail {
            at: 100,
            stop: Stop::BadCrc,
            written_end: 150,
        };
        s
    }

    fn snap(mut s: SegmentSeen, b: u64) -> SegmentSeen {
        s.snapshotted.push(b);
        s
    }

    #[test]
    fn a_bad_tail_is_torn_in_the_last_segment_and_lost_records_before_it() {
        let r = classify(&[seg(1, 1, 0, 1), torn(seg(2, 1, 0, 1))]);
        assert_eq!(
            r.findings,
            vec![Finding::TornTail {
                segment: 2,
                at: 100,
                bytes: 50
            }]
        );
        assert!(!r.is_corrupt());
        let r = classify(&[torn(seg(1, 1, 0, 1)), seg(2, 1, 0, 1)]);
        assert!(r.is_corrupt());
        assert_eq!(
            r.damaged_segments().into_iter().collect::<Vec<_>>(),
            vec![1]
        );
        assert!(r.cuts().is_empty(), "corruption is never cut");
    }

    #[test]
    fn damage_with_valid_records_after_it_is_counted() {
        let mut s = seg(1, 1, 0, 1);
        s.damage.push(Damage {
            start: 10,
            end: 90,
            first_seq: 3,
            next_seq: 5,
            reason: "crc mismatch".into(),
        });
        let r = classify(&[s]);
        assert!(r.is_corrupt());
        assert_eq!(r.records_lost(), 2);
    }

    #[test]
    fn a_middle_segment_missing_is_found_and_removed_ones_below_the_floor_are_not() {
        // Two cores from run 1: core 0 has 1, 3, 5; core 1 has 2, 4, 6.
        let all = [1, 3, 5].map(|id| seg(id, 1, 0, 2));
        let r = classify(&[all[0].clone(), all[2].clone(), seg(2, 1, 1, 2)]);
        assert_eq!(
            r.findings,
            vec![Finding::Missing {
                segment: 3,
                run: 1,
                core: 0
            }]
        );
        assert!(r.is_corrupt());
        // Compaction to boundary 5 removed 1 and 3: no finding.
        let r = classify(&[snap(all[2].clone(), 5)]);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        // The chain's first segment gone, its later ones there, no snapshot: missing.
        let r = classify(&[all[1].clone(), all[2].clone()]);
        assert_eq!(r.corruption().count(), 1);
    }

    #[test]
    fn a_complete_later_run_supersedes_older_segments() {
        // Run 1 (one core) partly removed and damaged; run 7 (two cores) has both start
        // snapshots.
        let old = torn(seg(3, 1, 0, 1));
        let newer = [snap(seg(7, 7, 0, 2), 7), snap(seg(8, 7, 1, 2), 8)];
        let mut input = vec![old.clone(), seg(4, 1, 0, 1)];
        input.extend(newer.iter().cloned());
        let r = classify(&input);
        assert!(!r.is_corrupt(), "{:?}", r.findings);
        assert_eq!(r.findings, vec![Finding::Superseded { segment: 3 }]);
        // With only one of run 7's snapshots, run 1 is still needed: its gap and damage count.
        let r = classify(&[old, seg(4, 1, 0, 1), newer[0].clone()]);
        assert!(r.is_corrupt());
    }

    #[test]
    fn segments_without_a_chain_fall_back_to_their_directory() {
        let mut a = torn(seg(1, 1, 0, 1));
        a.start = None;
        let mut b = seg(2, 1, 0, 1);
        b.start = None;
        assert!(classify(&[a.clone(), b]).is_corrupt());
        assert!(!classify(&[a]).is_corrupt(), "last in its directory: torn");
    }

    #[test]
    fn the_decision_table() {
        use Decision::*;
        use RecoveryMode::*;
        assert_eq!(decide(Strict, false, false), Serve);
        assert_eq!(decide(Strict, true, false), Refuse);
        assert_eq!(decide(Strict, true, true), RepairFirst);
        assert_eq!(decide(SkipCorrupt, true, false), Serve);
        assert_eq!(decide(SkipCorrupt, true, true), Serve);
    }
}
