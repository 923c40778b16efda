//! `kv check`: a consistency checker to run against a live cluster. Clients write unique
//! values and read keys through every node at random for `--duration`, recording each
//! operation's start, end and outcome; after `--settle-ms` every key is read once more; the
//! history is checked (`history::check`): no acknowledged write lost, no stale read, no value
//! nobody wrote. With `--replicas`, every replica's own copy of every key is compared too.
//! Exit status 0 when everything holds, 1 on a violation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvstore::client::{Client, Error};
use kvstore::wire::native::{Opcode, Status};

use crate::check_consensus::{self, Workload};
use crate::history::{self, Outcome, Read, Write};

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Nodes to drive, HOST:PORT comma-separated (default: every member the node knows).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 50)]
    keys: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Fraction of reads (0..=1).
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Pause between the load and the final reads (hints and repairs land meanwhile).
    #[arg(long, default_value_t = 2_000)]
    settle_ms: u64,
    /// Also compare every replica's own copy of every key (REPLICA_GET on every node).
    #[arg(long)]
    replicas: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// What to check: plain writes and reads (register), or the conditional commands
    /// (cas: linearizable per key; counter: INCR replies distinct; lock: one holder), or sets
    /// (set: convergent, no acknowledged add lost).
    #[arg(long, value_enum, default_value = "register")]
    workload: Workload,
}

#[derive(Default)]
struct Log {
    writes: Vec<Write>,
    reads: Vec<Read>,
}

#[derive(serde::Serialize)]
struct Summary {
    nodes: usize,
    writes: usize,
    writes_acknowledged: usize,
    writes_failed: usize,
    writes_unknown: usize,
    reads: usize,
    verdict: history::Verdict,
    /// Keys whose replicas hold different versions (with `--replicas`).
    divergent_keys: Option<usize>,
}

pub fn run(addr: &str, timeout: Duration, a: &CheckArgs) -> u8 {
    if a.clients == 0 || a.keys == 0 || !(0.0..=1.0).contains(&a.read_ratio) {
        eprintln!("kv check: --clients and --keys must be positive, --read-ratio within 0..=1");
        return crate::EXIT_USAGE;
    }
    let nodes = if a.nodes.is_empty() {
        match discover(addr, timeout) {
            Ok(n) => n,
            Err(e) => return crate::report(&e),
        }
    } else {
        a.nodes.clone()
    };
    // Keys of this run only: a value left by an earlier run would read as one nobody wrote.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let prefix: Arc<str> = format!("check-{run:x}-").into();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.duration);
    if a.workload != Workload::Register {
        let found = check_consensus::run(&check_consensus::Setup {
            workload: a.workload,
            nodes: &nodes,
            timeout,
            clients: a.clients,
            keys: a.keys,
            prefix: &prefix,
            deadline,
            seed: a.seed,
        });
        println!("{}", found.summary);
        return match found.violation {
            None => {
                println!("OK");
                0
            }
            Some(v) => {
                println!("  {v}\nVIOLATION");
                1
            }
        };
    }
    let log = Arc::new(Mutex::new(Log::default()));
    let threads: Vec<_> = (0..a.clients)
        .map(|c| {
            let (nodes, log, a, p) = (nodes.clone(), log.clone(), a.clone(), prefix.clone());
            std::thread::spawn(move || client(c, &nodes, timeout, &a, &p, start, deadline, &log))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::thread::sleep(Duration::from_millis(a.settle_ms));
    let finals = final_reads(&nodes, timeout, &prefix, a.keys, start);
    let log = match Arc::try_unwrap(log).map(|m| m.into_inner()) {
        Ok(Ok(l)) => l,
        _ => {
            eprintln!("kv check: a client thread did not finish");
            return crate::EXIT_ERROR_REPLY;
        }
    };
    let verdict = history::check(&log.writes, &log.reads, &finals);
    let divergent_keys = a
        .replicas
        .then(|| divergent(&nodes, timeout, &prefix, a.keys));
    let count = |o: Outcome| log.writes.iter().filter(|w| w.outcome == o).count();
    let s = Summary {
        nodes: nodes.len(),
        writes: log.writes.len(),
        writes_acknowledged: count(Outcome::Ok),
        writes_failed: count(Outcome::Failed),
        writes_unknown: count(Outcome::Unknown),
        reads: log.reads.len(),
        verdict,
        divergent_keys,
    };
    print(&s, a.json);
    u8::from(!s.verdict.ok() || s.divergent_keys.is_some_and(|d| d > 0))
}

fn print(s: &Summary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    println!(
        "nodes={} writes={} acknowledged={} failed={} unknown={} reads={}",
        s.nodes, s.writes, s.writes_acknowledged, s.writes_failed, s.writes_unknown, s.reads
    );
    println!(
        "lost_writes={} stale_reads={} phantom_reads={}{}",
        s.verdict.lost_writes,
        s.verdict.stale_reads,
        s.verdict.phantom_reads,
        s.divergent_keys
            .map(|d| format!(" divergent_keys={d}"))
            .unwrap_or_default()
    );
    for e in &s.verdict.examples {
        println!("  {e}");
    }
    println!("{}", if s.verdict.ok() { "OK" } else { "VIOLATION" });
}

/// Every non-LEFT member's address, from the node at `addr`.
fn discover(addr: &str, timeout: Duration) -> Result<Vec<String>, Error> {
    let info = Client::connect(addr, timeout)?.info()?;
    let nodes: Vec<String> = info["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["status"] != "LEFT")
        .filter_map(|m| m["addr"].as_str().map(String::from))
        .collect();
    Ok(if nodes.is_empty() {
        vec![addr.to_string()]
    } else {
        nodes
    })
}

fn us_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

#[allow(clippy::too_many_arguments)]
fn client(
    c: usize,
    nodes: &[String],
    timeout: Duration,
    a: &CheckArgs,
    prefix: &str,
    start: Instant,
    deadline: Instant,
    log: &Mutex<Log>,
) {
    let mut rng = fastrand::Rng::with_seed(a.seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
    let mut conns: Vec<Option<Client>> = nodes.iter().map(|_| None).collect();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let n = rng.usize(..nodes.len());
        if conns[n].is_none() {
            conns[n] = Client::connect(&nodes[n], timeout).ok();
        }
        let Some(conn) = conns[n].as_mut() else {
            continue;
        };
        let key = rng.u32(..a.keys);
        let k = format!("{prefix}{key}");
        let start_us = us_since(start);
        if rng.f64() < a.read_ratio {
            match conn.get(k.as_bytes()) {
                Ok(v) => push_read(log, key, v, start_us),
                Err(e) if e.is_unreachable() => conns[n] = None,
                Err(_) => {}
            }
        } else {
            seq += 1;
            let value = format!("c{c}-{seq}");
            let got = conn.put(k.as_bytes(), value.as_bytes());
            let outcome = match &got {
                Ok(_) => Outcome::Ok,
                Err(e) if e.is_unreachable() => {
                    conns[n] = None;
                    Outcome::Unknown
                }
                Err(_) => Outcome::Failed,
            };
            let w = Write {
                key,
                value,
                start_us,
                end_us: us_since(start),
                outcome,
            };
            if let Ok(mut l) = log.lock() {
                l.writes.push(w);
            }
        }
    }
}

fn push_read(log: &Mutex<Log>, key: u32, v: Option<Vec<u8>>, start_us: u64) {
    let r = Read {
        key,
        value: v.map(|v| String::from_utf8_lossy(&v).into_owned()),
        start_us,
    };
    if let Ok(mut l) = log.lock() {
        l.reads.push(r);
    }
}

/// One quorum read of every key, through the first node that answers.
fn final_reads(
    nodes: &[String],
    timeout: Duration,
    prefix: &str,
    keys: u32,
    start: Instant,
) -> Vec<Read> {
    let mut conns: Vec<Option<Client>> = nodes.iter().map(|_| None).collect();
    let mut out = Vec::new();
    for key in 0..keys {
        let k = format!("{prefix}{key}");
        for (n, addr) in nodes.iter().enumerate() {
            if conns[n].is_none() {
                conns[n] = Client::connect(addr, timeout).ok();
            }
            let Some(c) = conns[n].as_mut() else { continue };
            let start_us = us_since(start);
            match c.get(k.as_bytes()) {
                Ok(v) => {
                    out.push(Read {
                        key,
                        value: v.map(|v| String::from_utf8_lossy(&v).into_owned()),
                        start_us,
                    });
                    break;
                }
                Err(e) if e.is_unreachable() => conns[n] = None,
                Err(_) => {}
            }
        }
    }
    out
}

/// Keys whose replicas (the nodes holding any version of them) hold different versions.
fn divergent(nodes: &[String], timeout: Duration, prefix: &str, keys: u32) -> usize {
    let mut conns: Vec<Option<Client>> = nodes
        .iter()
        .map(|a| Client::connect(a, timeout).ok())
        .collect();
    (0..keys)
        .filter(|key| {
            let k = format!("{prefix}{key}");
            let mut versions: Vec<(u64, u32)> = conns
                .iter_mut()
                .flatten()
                .filter_map(|c| c.call(Opcode::ReplicaGet, k.as_bytes(), &[]).ok())
                .filter(|r| matches!(r.status, Status::Ok | Status::NotFound))
                .filter(|r| r.version.hlc > 0)
                .map(|r| (r.version.hlc, r.version.writer))
                .collect();
            versions.sort_unstable();
            versions.dedup();
            versions.len() > 1
        })
        .count()
}
