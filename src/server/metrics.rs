//! Metrics: per-core counters and latency histograms, and their Prometheus exposition.
//!
//! Owns: what is counted (`CoreMetrics`, one per core, plain `Cell`s: no atomics or locks on
//! the data path), how a scrape gathers every core's snapshot by message, and the text served
//! at `GET /metrics` on `--metrics-port` (encoded with the `prometheus-client` crate, OpenMetrics
//! text, which Prometheus scrapes). Never decides anything about requests.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::core::membership::Status as MemberStatus;
use crate::limits::{METRICS_REQUEST_BYTES_MAX, METRICS_TIMEOUT_MS};
use crate::server::data::messages::{CoreMsg, CoreStats, OpResult};
use crate::server::front::listener::next_accepted;
use crate::server::runtime::CoreCtx;
use crate::storage::wal_file::GROUP_BUCKETS;
use crate::wire::native::{Opcode, Status};

/// Bytes read per `read` of a scraper's request head (bounded by `METRICS_REQUEST_BYTES_MAX`).
const METRICS_READ_CHUNK_BYTES: usize = 1024;

/// Upper bounds of the latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Request kinds, by native opcode.
const KINDS: [(Opcode, &str); 29] = [
    (Opcode::Get, "get"),
    (Opcode::Put, "put"),
    (Opcode::Delete, "delete"),
    (Opcode::Ping, "ping"),
    (Opcode::Info, "info"),
    (Opcode::LocalGet, "local_get"),
    (Opcode::Leave, "leave"),
    (Opcode::ReplicaPut, "replica_put"),
    (Opcode::ReplicaGet, "replica_get"),
    (Opcode::Gossip, "gossip"),
    (Opcode::PingReq, "ping_req"),
    (Opcode::Stream, "stream"),
    (Opcode::AeTree, "ae_tree"),
    (Opcode::AeEntries, "ae_entries"),
    (Opcode::Repair, "repair"),
    (Opcode::Auth, "auth"),
    (Opcode::PeerHello, "peer_hello"),
    (Opcode::PeerProve, "peer_prove"),
    (Opcode::RangeKeys, "range_keys"),
    (Opcode::Scan, "scan"),
    (Opcode::Update, "update"),
    (Opcode::FlushAll, "flush_all"),
    (Opcode::Consensus, "consensus"),
    (Opcode::Collection, "collection"),
    (Opcode::Scrub, "scrub"),
    (Opcode::FlushBelow, "flush_below"),
    (Opcode::Prepare, "prepare"),
    (Opcode::Accept, "accept"),
    // the last row counts what no row above names
    (Opcode::Get, "unknown"),
];
const OUTCOMES: [&str; 4] = ["ok", "not_found", "stale", "error"];

/// A latency histogram of one core.
#[derive(Default)]
pub struct Histogram {
    counts: [Cell<u64>; LATENCY_BUCKETS_US.len() + 1],
    sum_us: Cell<u64>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.counts[i].set(self.counts[i].get() + 1);
        self.sum_us.set(self.sum_us.get() + us);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// One core's counters (single-threaded; read by the scrape through a message).
#[derive(Default)]
pub struct CoreMetrics {
    requests: [[Cell<u64>; OUTCOMES.len()]; KINDS.len()],
    pub read_latency: Histogram,
    pub write_latency: Histogram,
    pub replica_rpc_latency: Histogram,
    pub quorum_failures_read: Cell<u64>,
    pub quorum_failures_write: Cell<u64>,
    pub read_repairs: Cell<u64>,
    pub replicas_skipped: Cell<u64>,
    pub stale_retries: Cell<u64>,
    pub compactions: Cell<u64>,
    pub tombstones_purged: Cell<u64>,
    pub keys_expired: Cell<u64>,
    pub hints_stored: Cell<u64>,
    pub hints_delivered: Cell<u64>,
    pub hints_dropped: Cell<u64>,
    pub ae_rounds: Cell<u64>,
    pub ae_leaves_differing: Cell<u64>,
    pub ae_keys_exchanged: Cell<u64>,
    pub refused_unauthorized: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

impl CoreMetrics {
    /// Count one request of native opcode `opcode` and its result.
    pub fn count(&self, opcode: u8, result: &OpResult) {
        let kind = KINDS
            .iter()
            .position(|(o, _)| *o as u8 == opcode)
            .unwrap_or(KINDS.len() - 1);
        let outcome = match result {
            OpResult::Value { .. } | OpResult::Written { .. } => 0,
            OpResult::NotFound | OpResult::Tombstone { .. } => 1,
            OpResult::Stale { .. } => 2,
            OpResult::Failed { status, .. } if *status == Status::NotFound => 1,
            OpResult::Failed { .. } => 3,
        };
        bump(&self.requests[kind][outcome]);
    }

    pub fn quorum_failure(&self, read: bool) {
        bump(if read {
            &self.quorum_failures_read
        } else {
            &self.quorum_failures_write
        });
    }

    pub fn read_repair(&self) {
        bump(&self.read_repairs);
    }

    pub fn replica_skipped(&self) {
        bump(&self.replicas_skipped);
    }

    pub fn stale_retry(&self) {
        bump(&self.stale_retries);
    }

    pub fn anti_entropy(&self, r: &crate::server::cluster::anti_entropy::Report) {
        bump(&self.ae_rounds);
        let add = |c: &Cell<u64>, n: usize| c.set(c.get() + n as u64);
        add(&self.ae_leaves_differing, r.leaves_differing);
        add(&self.ae_keys_exchanged, r.keys_pulled + r.keys_pushed);
    }

    pub fn refused(&self) {
        bump(&self.refused_unauthorized);
    }

    pub fn hint_stored(&self) {
        bump(&self.hints_stored);
    }

    pub fn hint_delivered(&self) {
        bump(&self.hints_delivered);
    }

    pub fn hint_dropped(&self) {
        bump(&self.hints_dropped);
    }

    pub fn compacted(&self, purged: u64) {
        bump(&self.compactions);
        self.tombstones_purged
            .set(self.tombstones_purged.get() + purged);
    }

    pub fn expired(&self, n: u64) {
        self.keys_expired.set(self.keys_expired.get() + n);
    }

    pub fn snapshot(
        &self,
        stats: CoreStats,
        queue_depth: usize,
        (hop_messages, hop_groups): (u64, u64),
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            hop_messages,
            hop_groups,
            requests: self
                .requests
                .iter()
                .map(|row| row.iter().map(Cell::get).collect())
                .collect(),
            read_latency: self.read_latency.snapshot(),
            write_latency: self.write_latency.snapshot(),
            replica_rpc_latency: self.replica_rpc_latency.snapshot(),
            quorum_failures_read: self.quorum_failures_read.get(),
            quorum_failures_write: self.quorum_failures_write.get(),
            read_repairs: self.read_repairs.get(),
            replicas_skipped: self.replicas_skipped.get(),
            stale_retries: self.stale_retries.get(),
            compactions: self.compactions.get(),
            hints_stored: self.hints_stored.get(),
            hints_delivered: self.hints_delivered.get(),
            hints_dropped: self.hints_dropped.get(),
            ae_rounds: self.ae_rounds.get(),
            ae_leaves_differing: self.ae_leaves_differing.get(),
            ae_keys_exchanged: self.ae_keys_exchanged.get(),
            refused_unauthorized: self.refused_unauthorized.get(),
            tombstones_purged: self.tombstones_purged.get(),
            keys_expired: self.keys_expired.get(),
            stats,
            queue_depth,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct HistogramSnapshot {
    counts: Vec<u64>,
    sum_us: u64,
}

/// One core's metrics at scrape time (sent across cores).
#[derive(Clone, Debug, Default)]
pub struct MetricsSnapshot {
    requests: Vec<Vec<u64>>,
    read_latency: HistogramSnapshot,
    write_latency: HistogramSnapshot,
    replica_rpc_latency: HistogramSnapshot,
    quorum_failures_read: u64,
    quorum_failures_write: u64,
    read_repairs: u64,
    replicas_skipped: u64,
    stale_retries: u64,
    compactions: u64,
    tombstones_purged: u64,
    keys_expired: u64,
    hints_stored: u64,
    hints_delivered: u64,
    hints_dropped: u64,
    ae_rounds: u64,
    ae_leaves_differing: u64,
    ae_keys_exchanged: u64,
    refused_unauthorized: u64,
    /// Cross-core hop messages sent, and the callers' groups they carried.
    hop_messages: u64,
    hop_groups: u64,
    pub stats: CoreStats,
    queue_depth: usize,
}

/// Label pairs of one series.
type Labels = Vec<(String, String)>;

/// One histogram series: labels, sum, count, (upper bound, count) per bucket.
type HistogramSeries = (Labels, f64, u64, Vec<(f64, u64)>);

/// Histograms (one per label set) in the exposition, from summed bucket counts.
#[derive(Debug)]
struct ConstHistograms {
    series: Vec<HistogramSeries>,
}

impl EncodeMetric for ConstHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, sum, count, buckets) in &self.series {
            if labels.is_empty() {
                encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            } else {
                encoder
                    .encode_family(labels)?
                    .encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `counts` per bucket (last: overflow) as (upper bound, count) pairs and their total (the
/// encoder makes them cumulative).
fn buckets(bounds: &[f64], counts: &[u64]) -> (u64, Vec<(f64, u64)>) {
    let out = counts
        .iter()
        .enumerate()
        .map(|(i, c)| (bounds.get(i).copied().unwrap_or(f64::INFINITY), *c))
        .collect();
    (counts.iter().sum(), out)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What replay and the scrubber found damaged (`server::wal_health`).
fn render_wal_health(r: &mut Registry, w: &crate::server::wal_health::WalHealthStats) {
    let pending = Gauge::<i64>::default();
    pending.set(i64::from(w.repair_pending));
    r.register(
        "wal_repair_pending",
        "1 while this node owes a repair after WAL damage (it answers no replica read)",
        pending,
    );
    for (name, help, v) in [
        (
            "wal_damaged_segments",
            "WAL segments found holding corruption (kept under damaged/)",
            w.damaged_segments,
        ),
        (
            "wal_records_lost",
            "WAL records lost to corruption, counted from sequence numbers",
            w.records_lost,
        ),
        (
            "wal_unknown_losses",
            "Damaged WAL stretches whose record count is unknown (bad tail before later \
             segments, missing or unreadable segment)",
            w.unknown_losses,
        ),
        (
            "wal_torn_tails",
            "Torn WAL tails cut at replay (the write in flight at a crash)",
            w.torn_tails,
        ),
        (
            "scrub_passes",
            "Scrub passes over sealed WAL segments completed",
            w.scrub_passes,
        ),
        (
            "scrub_bytes",
            "WAL bytes re-read and verified by the scrubber",
            w.scrub_bytes,
        ),
        (
            "scrub_damaged_segments",
            "Sealed WAL segments the scrubber found damaged",
            w.scrub_damaged_segments,
        ),
    ] {
        counter(r, name, help, v);
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, v: u64) {
    registry.register(name, help, ConstCounter::new(v));
}

/// This node's clock against its peers' (`server::clock_fence`).
fn render_clock(r: &mut Registry, c: &crate::server::clock_fence::ClockStats) {
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    r.register(
        "clock_fenced",
        "1 while this node's clock is off its peers (or not yet measured): it writes nothing",
        gauge(i64::from(c.fenced)),
    );
    r.register(
        "clock_offset_ms",
        "Median offset of this node's clock from its peers' (positive: ahead)",
        gauge(c.ahead_ms),
    );
    r.register(
        "clock_max_offset_ms",
        "--max-clock-offset-ms: the offset past which this node fences itself",
        gauge(c.bound_ms as i64),
    );
    let offsets = Family::<Vec<(String, String)>, Gauge>::default();
    let errors = Family::<Vec<(String, String)>, Gauge>::default();
    for p in &c.peers {
        let l = labels(&[("peer", &p.peer)]);
        offsets.get_or_create(&l).set(p.ahead_ms);
        errors.get_or_create(&l).set(p.error_ms as i64);
    }
    r.register(
        "clock_peer_offset_ms",
        "This node's clock minus the peer's, from the last probe's round trip",
        offsets,
    );
    r.register(
        "clock_peer_offset_error_ms",
        "Half the last probe's round trip: the offset's error bound",
        errors,
    );
    counter(
        r,
        "clock_fence_events",
        "Times this node fenced itself for its clock",
        c.fence_events,
    );
    counter(
        r,
        "clock_refused_writes",
        "Writes refused (coordinated or as a replica) while the clock was fenced",
        c.refused_writes,
    );
}

/// The exposition text for every core's snapshot and the membership view.
pub fn render(
    cores: &[MetricsSnapshot],
    members: &[(MemberStatus, u64)],
    wal: &crate::server::wal_health::WalHealthStats,
    clock: &crate::server::clock_fence::ClockStats,
) -> String {
    let mut r = Registry::with_prefix("kvstore");
    render_wal_health(&mut r, wal);
    render_clock(&mut r, clock);
    let mut req_counts = vec![vec![0u64; OUTCOMES.len()]; KINDS.len()];
    for c in cores {
        for (k, row) in c.requests.iter().enumerate() {
            for (o, v) in row.iter().enumerate() {
                req_counts[k][o] += v;
            }
        }
    }
    let mut request_series = Vec::new();
    for (k, row) in req_counts.iter().enumerate() {
        for (o, v) in row.iter().enumerate() {
            if *v > 0 {
                request_series.push((
                    labels(&[("kind", KINDS[k].1), ("outcome", OUTCOMES[o])]),
                    *v,
                ));
            }
        }
    }
    r.register(
        "requests",
        "Requests by kind and outcome (a counter: only grows)",
        RequestCounters(request_series),
    );
    let us_bounds: Vec<f64> = LATENCY_BUCKETS_US.iter().map(|b| *b as f64 / 1e6).collect();
    let latency = |pick: fn(&MetricsSnapshot) -> &HistogramSnapshot, kind: &str| {
        let mut counts = vec![0u64; LATENCY_BUCKETS_US.len() + 1];
        let mut sum_us = 0;
        for c in cores {
            let h = pick(c);
            for (i, v) in h.counts.iter().enumerate() {
                counts[i] += v;
            }
            sum_us += h.sum_us;
        }
        let (count, buckets) = buckets(&us_bounds, &counts);
        (
            labels(&[("kind", kind)]),
            sum_us as f64 / 1e6,
            count,
            buckets,
        )
    };
    r.register(
        "request_duration_seconds",
        "Time from decoding a request to its answer, by kind (read, write)",
        ConstHistograms {
            series: vec![
                latency(|c| &c.read_latency, "read"),
                latency(|c| &c.write_latency, "write"),
            ],
        },
    );
    r.register(
        "replica_rpc_duration_seconds",
        "Round trip of a replica operation to another node",
        ConstHistograms {
            series: vec![latency(|c| &c.replica_rpc_latency, "replica")],
        },
    );
    let sum = |f: fn(&MetricsSnapshot) -> u64| cores.iter().map(f).sum::<u64>();
    counter(
        &mut r,
        "quorum_failures_read",
        "Reads that did not reach R answers",
        sum(|c| c.quorum_failures_read),
    );
    counter(
        &mut r,
        "quorum_failures_write",
        "Writes that did not reach W acknowledgements",
        sum(|c| c.quorum_failures_write),
    );
    counter(
        &mut r,
        "read_repairs",
        "Replica writes sent by read repair",
        sum(|c| c.read_repairs),
    );
    counter(
        &mut r,
        "replicas_skipped",
        "Replica operations left out because the replica's connection stayed full",
        sum(|c| c.replicas_skipped),
    );
    counter(
        &mut r,
        "stale_retries",
        "Writes refused as stale by a replica and retried with a newer version",
        sum(|c| c.stale_retries),
    );
    counter(
        &mut r,
        "compactions",
        "Online WAL compactions completed",
        sum(|c| c.compactions),
    );
    counter(
        &mut r,
        "hints_stored",
        "Writes a replica missed, kept as hints for it (hinted handoff)",
        sum(|c| c.hints_stored),
    );
    counter(
        &mut r,
        "hints_delivered",
        "Hints delivered to their replica",
        sum(|c| c.hints_delivered),
    );
    counter(
        &mut r,
        "hints_dropped",
        "Missed writes not kept as hints: the hint bounds or the hint window were reached",
        sum(|c| c.hints_dropped),
    );
    counter(
        &mut r,
        "anti_entropy_rounds",
        "Anti-entropy rounds run by this node (each with every live member)",
        sum(|c| c.ae_rounds),
    );
    counter(
        &mut r,
        "anti_entropy_leaves_differing",
        "Hash-tree leaves found to differ from a peer's",
        sum(|c| c.ae_leaves_differing),
    );
    counter(
        &mut r,
        "anti_entropy_keys_exchanged",
        "Keys pulled from or pushed to a peer by anti-entropy",
        sum(|c| c.ae_keys_exchanged),
    );
    counter(
        &mut r,
        "refused_unauthorized",
        "Requests refused: no AUTH, a wrong password, protected mode, or a cluster opcode from \
         a connection that did not prove the cluster secret",
        sum(|c| c.refused_unauthorized),
    );
    counter(
        &mut r,
        "tombstones_purged",
        "Tombstones past --tombstone-grace-ms dropped at compaction",
        sum(|c| c.tombstones_purged),
    );
    counter(
        &mut r,
        "keys_expired",
        "Keys past their expiry turned into tombstones by the expiry sweep (their values freed)",
        sum(|c| c.keys_expired),
    );
    counter(
        &mut r,
        "hop_messages",
        "Messages carrying operations to the core that owns their keys (one per core per turn)",
        sum(|c| c.hop_messages),
    );
    counter(
        &mut r,
        "hop_groups",
        "Callers' operation groups those messages carried (groups per message: the batching)",
        sum(|c| c.hop_groups),
    );
    counter(
        &mut r,
        "wal_records",
        "Records appended to the WAL",
        sum(|c| c.stats.wal_records),
    );
    counter(
        &mut r,
        "wal_writes",
        "Device writes of the WAL",
        sum(|c| c.stats.wal_writes),
    );
    counter(
        &mut r,
        "wal_syncs",
        "WAL syncs: fdatasync calls, or O_DSYNC writes with --fsync batch",
        sum(|c| c.stats.wal_syncs),
    );
    let group_bounds: Vec<f64> = GROUP_BUCKETS.iter().map(|b| *b as f64).collect();
    let mut group = vec![0u64; GROUP_BUCKETS.len() + 1];
    for c in cores {
        for (i, v) in c.stats.wal_group_sizes.iter().enumerate() {
            group[i] += v;
        }
    }
    let (count, group_buckets) = buckets(&group_bounds, &group);
    let records: u64 = sum(|c| c.stats.wal_records);
    r.register(
        "wal_group_commit_records",
        "Records per WAL device write (group commit)",
        ConstHistograms {
            series: vec![(Vec::new(), records as f64, count, group_buckets)],
        },
    );
    let per_core = |name: &str, help: &str, f: fn(&MetricsSnapshot) -> i64, r: &mut Registry| {
        let fam = Family::<Vec<(String, String)>, Gauge>::default();
        for c in cores {
            fam.get_or_create(&labels(&[("core", &c.stats.core.to_string())]))
                .set(f(c));
        }
        r.register(name, help, fam);
    };
    per_core(
        "core_queue_depth",
        "Messages waiting in the core's inbox",
        |c| c.queue_depth as i64,
        &mut r,
    );
    per_core(
        "core_keys",
        "Live keys on the core",
        |c| c.stats.keys as i64,
        &mut r,
    );
    per_core(
        "core_reply_bytes",
        "Values the core's connections hold for replies not yet sent (counted toward \
         --max-memory, bounded per core)",
        |c| c.stats.reply_bytes as i64,
        &mut r,
    );
    per_core(
        "core_memory_bytes",
        "Memory of the core's keys, values and table (what --max-memory limits)",
        |c| c.stats.memory_bytes as i64,
        &mut r,
    );
    per_core(
        "core_hints",
        "Hints held by the core, waiting for their replica",
        |c| c.stats.hints as i64,
        &mut r,
    );
    per_core(
        "core_wal_bytes",
        "Record bytes in the core's live WAL segments (falls when it compacts)",
        |c| c.stats.wal_bytes as i64,
        &mut r,
    );
    per_core(
        "core_connections",
        "Client connections served by the core",
        |c| c.stats.connections as i64,
        &mut r,
    );
    let states = Family::<Vec<(String, String)>, Gauge>::default();
    for st in [
        MemberStatus::Alive,
        MemberStatus::Suspect,
        MemberStatus::Dead,
        MemberStatus::Left,
    ] {
        let n = members.iter().filter(|(s, _)| *s == st).count();
        states
            .get_or_create(&labels(&[("status", &st.as_str().to_ascii_lowercase())]))
            .set(n as i64);
    }
    r.register(
        "members",
        "Members by gossip status, as this node sees them",
        states,
    );
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &r).is_err() {
        text = "# encoding failed\n".into();
    }
    text
}

/// Request counters by kind and outcome.
#[derive(Debug)]
struct RequestCounters(Vec<(Vec<(String, String)>, u64)>);

impl EncodeMetric for RequestCounters {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, u64>(v, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Every core's snapshot (this core's directly, the others' by message).
pub async fn gather(ctx: &Rc<CoreCtx>) -> Vec<MetricsSnapshot> {
    let mut out = Vec::with_capacity(ctx.peers.len());
    for (i, peer) in ctx.peers.iter().enumerate() {
        if i == ctx.core {
            out.push(ctx.metrics_snapshot());
            continue;
        }
        let (tx, rx) = flume::bounded(1);
        if peer
            .send_async(CoreMsg::Metrics { reply: tx })
            .await
            .is_ok()
        {
            if let Ok(s) = rx.recv_async().await {
                out.push(s);
            }
        }
    }
    out
}

/// Serve `GET /metrics` on `listener` until shutdown (core 0, low-share queue).
pub async fn serve(ctx: Rc<CoreCtx>, listener: glommio::net::TcpListener) {
    while let Some(stream) = next_accepted(&ctx, "metrics", || listener.accept()).await {
        let c = ctx.clone();
        glommio::spawn_local(async move {
            if let Err(e) = answer(&c, stream).await {
                log::debug!("metrics: {e}");
            }
        })
        .detach();
    }
}

/// One HTTP/1.x exchange: read the request head (bounded), answer, close.
async fn answer(ctx: &Rc<CoreCtx>, mut s: glommio::net::TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_millis(METRICS_TIMEOUT_MS)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; METRICS_READ_CHUNK_BYTES];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > METRICS_REQUEST_BYTES_MAX {
            return respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return respond(&mut s, "405 Method Not Allowed", "text/plain", "GET only\n").await;
    }
    if path != b"/metrics" {
        return respond(&mut s, "404 Not Found", "text/plain", "try /metrics\n").await;
    }
    let cores = gather(ctx).await;
    let members: Vec<(MemberStatus, u64)> = ctx
        .view()
        .listing
        .iter()
        .map(|u| (u.status, u.incarnation))
        .collect();
    let body = render(
        &cores,
        &members,
        &ctx.node.wal.stats(),
        &ctx.node.clock.stats(),
    );
    respond(
        &mut s,
        "200 OK",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        &body,
    )
    .await
}

async fn respond(
    s: &mut glommio::net::TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opcode_counts_under_its_own_kind() {
        let named = &KINDS[..KINDS.len() - 1];
        for b in 0..=u8::MAX {
            let Some(op) = Opcode::from_u8(b) else {
                continue;
            };
            let kinds: Vec<&str> = named
                .iter()
                .filter(|(o, _)| *o == op)
                .map(|(_, k)| *k)
                .collect();
            assert_eq!(kinds.len(), 1, "{op:?}: {kinds:?}");
        }
        let m = CoreMetrics::default();
        m.count(Opcode::Prepare as u8, &OpResult::NotFound);
        let prepare = named.iter().position(|(o, _)| *o == Opcode::Prepare);
        assert_eq!(prepare.map(|k| m.requests[k][1].get()), Some(1));
    }

    #[test]
    fn histograms_bucket_and_accumulate() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(10));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 2, "at the bound counts in the bucket");
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[LATENCY_BUCKETS_US.len()], 1, "overflow");
        let (total, b) = buckets(&[1.0, 2.0], &[1, 2, 3]);
        assert_eq!(total, 6);
        assert_eq!(b, vec![(1.0, 1), (2.0, 2), (f64::INFINITY, 3)]);
    }

    #[test]
    fn the_exposition_has_every_family() {
        let m = CoreMetrics::default();
        m.count(Opcode::Put as u8, &OpResult::NotFound);
        m.count(
            Opcode::Get as u8,
            &OpResult::Failed {
                status: Status::Unavailable,
                message: String::new(),
            },
        );
        m.read_latency.observe(Duration::from_micros(300));
        m.quorum_failure(true);
        let snap = m.snapshot(CoreStats::default(), 3, (0, 0));
        let wal = crate::server::wal_health::WalHealthStats {
            records_lost: 7,
            repair_pending: true,
            ..Default::default()
        };
        let clock = crate::server::clock_fence::ClockStats {
            fenced: true,
            ahead_ms: 70_001,
            peers: vec![crate::server::clock_fence::PeerOffset {
                peer: "n2".into(),
                ahead_ms: 70_002,
                error_ms: 1,
            }],
            ..Default::default()
        };
        let text = render(
            &[snap],
            &[(MemberStatus::Alive, 1), (MemberStatus::Dead, 2)],
            &wal,
            &clock,
        );
        for want in [
            "kvstore_requests_total{kind=\"put\",outcome=\"not_found\"} 1",
            "kvstore_requests_total{kind=\"get\",outcome=\"error\"} 1",
            "kvstore_request_duration_seconds_bucket{le=\"0.00025\",kind=\"read\"} 0",
            "kvstore_request_duration_seconds_bucket{le=\"0.0005\",kind=\"read\"} 1",
            "kvstore_request_duration_seconds_bucket{le=\"inf\",kind=\"read\"} 1",
            "kvstore_quorum_failures_read_total 1",
            "kvstore_wal_records_lost_total 7",
            "kvstore_wal_repair_pending 1",
            "kvstore_clock_fenced 1",
            "kvstore_clock_offset_ms 70001",
            "kvstore_clock_peer_offset_ms{peer=\"n2\"} 70002",
            "kvstore_core_queue_depth{core=\"0\"} 3",
            "kvstore_members{status=\"dead\"} 1",
            "kvstore_wal_group_commit_records_count 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
