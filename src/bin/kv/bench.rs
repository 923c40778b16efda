//! `kv bench`: a closed-loop load generator with one hdrhistogram per operation kind.
//!
//! Each thread owns its share of the connections; per round it sends `--pipeline` requests on
//! each connection, then reads their answers, recording the latency of every request from the
//! moment its batch was sent. Reads go to preloaded keys. Stops at `--ops` or `--duration`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::bench_conn::{Conn, Protocol};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Connections in total, across threads.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// Fraction of reads (0..=1).
    #[arg(long, default_value_t = 0.5)]
    ratio: f64,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Stop after this many seconds even if `--ops` were not done.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long)]
    json: bool,
    /// Seed of the key/operation choice (fixed by default, for repeatable runs).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The protocol to load the server with: `resp` works against any Redis as well.
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    protocol: Protocol,
}

struct Totals {
    read: Histogram<u64>,
    write: Histogram<u64>,
    errors: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("h"))
}

fn key_of(i: u64) -> Vec<u8> {
    format!("key:{i:012}").into_bytes()
}

pub fn run(addr: &str, timeout: Duration, a: &BenchArgs) -> u8 {
    if a.threads == 0 || a.connections == 0 || a.pipeline == 0 || a.keys == 0 {
        eprintln!("kv bench: --threads, --connections, --pipeline and --keys must be positive");
        return crate::EXIT_USAGE;
    }
    if !(0.0..=1.0).contains(&a.ratio) {
        eprintln!("kv bench: --ratio must be within 0..=1");
        return crate::EXIT_USAGE;
    }
    let value = vec![b'x'; a.value_size];
    if a.ratio > 0.0 {
        if let Err(e) = preload(addr, timeout, a.protocol, a.keys, &value) {
            return crate::report(&e);
        }
    }
    let claimed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = a.duration.map(|d| started + Duration::from_secs_f64(d));
    let threads = a.threads.min(a.connections);
    let mut handles = Vec::new();
    for t in 0..threads {
        let conns = a.connections / threads + usize::from(t < a.connections % threads);
        let (addr, a2, value) = (addr.to_string(), a.clone(), value.clone());
        let (claimed, stop) = (claimed.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            worker(
                &addr, timeout, &a2, conns, t as u64, &value, &claimed, &stop, deadline,
            )
        }));
    }
    let progress = std::io::stderr().is_terminal() && !a.json;
    while progress && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let done = claimed.load(Ordering::Relaxed).min(a.ops);
        eprint!(
            "\r[{:<40}] {done}/{}",
            "#".repeat((done * 40 / a.ops.max(1)) as usize),
            a.ops
        );
    }
    if progress {
        eprintln!();
    }
    let mut totals = Totals {
        read: histogram(),
        write: histogram(),
        errors: 0,
    };
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => {
                let _ = totals.read.add(&t.read);
                let _ = totals.write.add(&t.write);
                totals.errors += t.errors;
            }
            Ok(Err(e)) => return crate::report(&e),
            Err(_) => return crate::EXIT_ERROR_REPLY,
        }
    }
    stop.store(true, Ordering::Relaxed);
    print_report(&totals, started.elapsed().as_secs_f64(), a.json);
    0
}

fn preload(
    addr: &str,
    timeout: Duration,
    protocol: Protocol,
    keys: u64,
    value: &[u8],
) -> Result<(), kvstore::client::Error> {
    let mut c = Conn::connect(addr, timeout, protocol)?;
    let batch = 256;
    let mut i = 0;
    while i < keys {
        let n = batch.min(keys - i);
        for k in i..i + n {
            c.queue_set(&key_of(k), value);
        }
        c.flush()?;
        for _ in 0..n {
            c.recv()?;
        }
        i += n;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn worker(
    addr: &str,
    timeout: Duration,
    a: &BenchArgs,
    conns: usize,
    thread: u64,
    value: &[u8],
    claimed: &AtomicU64,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<Totals, kvstore::client::Error> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(Conn::connect(addr, timeout, a.protocol)?);
    }
    let mut rng = fastrand::Rng::with_seed(a.seed ^ (thread.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut t = Totals {
        read: histogram(),
        write: histogram(),
        errors: 0,
    };
    let mut kinds: Vec<Vec<bool>> = vec![Vec::with_capacity(a.pipeline); conns];
    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let want = (conns * a.pipeline) as u64;
        let first = claimed.fetch_add(want, Ordering::Relaxed);
        if first >= a.ops {
            break;
        }
        let mut budget = (a.ops - first).min(want) as usize;
        let mut sent_at = Vec::with_capacity(conns);
        for (c, client) in clients.iter_mut().enumerate() {
            kinds[c].clear();
            let n = budget.min(a.pipeline);
            budget -= n;
            for _ in 0..n {
                let read = rng.f64() < a.ratio;
                let key = key_of(rng.u64(0..a.keys));
                if read {
                    client.queue_get(&key);
                } else {
                    client.queue_set(&key, value);
                }
                kinds[c].push(read);
            }
            client.flush()?;
            sent_at.push(Instant::now());
        }
        for (c, client) in clients.iter_mut().enumerate() {
            for &read in &kinds[c] {
                let failed = client.recv()?;
                let us = sent_at[c].elapsed().as_micros() as u64;
                if let Some(message) = failed {
                    if t.errors == 0 {
                        eprintln!("first error reply: {message}");
                    }
                    t.errors += 1;
                }
                let h = if read { &mut t.read } else { &mut t.write };
                let _ = h.record(us.max(1));
            }
        }
    }
    Ok(t)
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p95_us": h.value_at_quantile(0.95),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn print_report(t: &Totals, elapsed: f64, json: bool) {
    let ops = t.read.len() + t.write.len();
    let rate = ops as f64 / elapsed.max(1e-9);
    if json {
        let doc = serde_json::json!({
            "ops": ops, "errors": t.errors, "elapsed_s": elapsed, "ops_per_s": rate,
            "read": summary(&t.read), "write": summary(&t.write),
        });
        println!("{doc}");
        return;
    }
    println!(
        "ops={ops} errors={} elapsed_s={elapsed:.2} ops_per_s={rate:.0}",
        t.errors
    );
    for (name, h) in [("read", &t.read), ("write", &t.write)] {
        println!(
            "{name:<5} count={} p50={}us p95={}us p99={}us p99.9={}us max={}us",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.95),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}
