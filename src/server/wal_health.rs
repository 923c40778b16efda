//! The node's WAL health: what replay and the scrubber found damaged, and whether this node
//! still owes a repair before it answers replica reads.
//!
//! Owns: the repair-pending flag (set at start by `core::wal_damage::decide`, or by the
//! scrubber; cleared by an anti-entropy pass that completed with every member) and its durable
//! twin, `damaged/REPAIR_PENDING`; the counters `kv info` and `/metrics` show. Shared by every
//! core through `NodeInfo`: atomics, and one mutex for the few finding lines, touched only at
//! start, by the scrubber and by `INFO` (never on the request path).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::core::wal_damage::Report;
use crate::limits::WAL_FINDINGS_SHOWN_MAX;
use crate::storage::recovery;

/// Counters of damage found, for `kv info` and `/metrics`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WalHealthStats {
    pub repair_pending: bool,
    pub damaged_segments: u64,
    /// Records known lost (sequence numbers skipped).
    pub records_lost: u64,
    /// Damaged stretches whose record count is unknown (a bad tail before later segments, a
    /// missing or unreadable segment).
    pub unknown_losses: u64,
    pub torn_tails: u64,
    pub scrub_passes: u64,
    pub scrub_bytes: u64,
    pub scrub_damaged_segments: u64,
    /// The latest findings, newest last (at most `WAL_FINDINGS_SHOWN_MAX`).
    pub findings: Vec<String>,
}

pub struct WalHealth {
    data_dir: PathBuf,
    repair_pending: AtomicBool,
    damaged_segments: AtomicU64,
    records_lost: AtomicU64,
    unknown_losses: AtomicU64,
    torn_tails: AtomicU64,
    scrub_passes: AtomicU64,
    scrub_bytes: AtomicU64,
    scrub_damaged_segments: AtomicU64,
    findings: Mutex<Vec<String>>,
}

impl WalHealth {
    pub fn new(data_dir: PathBuf) -> WalHealth {
        WalHealth {
            data_dir,
            repair_pending: AtomicBool::new(false),
            damaged_segments: AtomicU64::new(0),
            records_lost: AtomicU64::new(0),
            unknown_losses: AtomicU64::new(0),
            torn_tails: AtomicU64::new(0),
            scrub_passes: AtomicU64::new(0),
            scrub_bytes: AtomicU64::new(0),
            scrub_damaged_segments: AtomicU64::new(0),
            findings: Mutex::new(Vec::new()),
        }
    }

    /// Count what one replay (or one scrubbed segment) found.
    pub fn record(&self, report: &Report) {
        use crate::core::wal_damage::Finding;
        for f in &report.findings {
            match f {
                Finding::TornTail { .. } => {
                    self.torn_tails.fetch_add(1, Ordering::Relaxed);
                }
                Finding::Lost {
                    records: Some(n), ..
                } => {
                    self.records_lost.fetch_add(*n, Ordering::Relaxed);
                }
                Finding::Lost { records: None, .. } | Finding::Missing { .. } => {
                    self.unknown_losses.fetch_add(1, Ordering::Relaxed);
                }
                Finding::Superseded { .. } => {}
            }
        }
        let damaged = report.damaged_segments().len() as u64;
        self.damaged_segments.fetch_add(damaged, Ordering::Relaxed);
        if let Ok(mut lines) = self.findings.lock() {
            lines.extend(report.findings.iter().map(|f| f.to_string()));
            let over = lines.len().saturating_sub(WAL_FINDINGS_SHOWN_MAX);
            lines.drain(..over);
        }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub fn scrubbed(&self, bytes: u64, damaged_segments: u64) {
        self.scrub_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.scrub_damaged_segments
            .fetch_add(damaged_segments, Ordering::Relaxed);
    }

    pub fn scrub_pass_done(&self) {
        self.scrub_passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether replica reads must wait for a repair (the hole must never count as an answer).
    pub fn repair_pending(&self) -> bool {
        self.repair_pending.load(Ordering::Relaxed)
    }

    /// Owe a repair: durably first, so a restart before it completes owes it still.
    pub fn owe_repair(&self) -> Result<(), crate::storage::Error> {
        recovery::set_repair_pending(&self.data_dir, true)?;
        if !self.repair_pending.swap(true, Ordering::Relaxed) {
            log::error!(
                "wal damage: this node answers no replica read until an anti-entropy round with \
                 every member has completed"
            );
        }
        Ok(())
    }

    /// A repair completed with every member: serve replica reads again.
    pub fn repaired(&self) -> Result<(), crate::storage::Error> {
        if !self.repair_pending() {
            return Ok(());
        }
        recovery::set_repair_pending(&self.data_dir, false)?;
        self.repair_pending.store(false, Ordering::Relaxed);
        log::warn!("wal damage repaired from the peers: answering replica reads again");
        Ok(())
    }

    pub fn stats(&self) -> WalHealthStats {
        WalHealthStats {
            repair_pending: self.repair_pending(),
            damaged_segments: self.damaged_segments.load(Ordering::Relaxed),
            records_lost: self.records_lost.load(Ordering::Relaxed),
            unknown_losses: self.unknown_losses.load(Ordering::Relaxed),
            torn_tails: self.torn_tails.load(Ordering::Relaxed),
            scrub_passes: self.scrub_passes.load(Ordering::Relaxed),
            scrub_bytes: self.scrub_bytes.load(Ordering::Relaxed),
            scrub_damaged_segments: self.scrub_damaged_segments.load(Ordering::Relaxed),
            findings: self.findings.lock().map(|l| l.clone()).unwrap_or_default(),
        }
    }
}

/// The message a lone node exits with when replay found corruption in `--wal-recovery strict`.
pub fn refusal(report: &Report, kept: &[PathBuf]) -> String {
    let mut msg = String::from("wal corruption found (not a torn tail):");
    for f in report.corruption() {
        msg.push_str("\n  ");
        msg.push_str(&f.to_string());
    }
    let unknown = report
        .corruption()
        .filter(|f| {
            !matches!(
                f,
                crate::core::wal_damage::Finding::Lost {
                    records: Some(_),
                    ..
                }
            )
        })
        .count();
    msg.push_str(&format!(
        "\nstarting would lose {} records{}; the damaged segments are kept in:",
        report.records_lost(),
        if unknown > 0 {
            format!(" and {unknown} stretches of unknown size")
        } else {
            String::new()
        }
    ));
    for k in kept {
        msg.push_str(&format!("\n  {}", k.display()));
    }
    msg.push_str(
        "\nthis node has no peers to repair from (no --seed): restore the data dir, or start \
         with --wal-recovery skip-corrupt to serve every valid record and accept the loss",
    );
    msg
}
