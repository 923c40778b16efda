//! Online WAL compaction and tombstone purge, with real processes and small segments
//! (`--wal-segment-bytes 1 MiB`) so that many rolls and compactions happen in seconds.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use kvstore::client::Client;

const SEGMENT: &str = "1048576";
/// A 1 MiB segment must hold the largest record: values up to 64 KiB here.
const VALUE_MAX: &str = "65536";
/// One core with 1 MiB segments.
const SMALL_SEGMENTS: [&str; 6] = [
    "--cores",
    "1",
    "--wal-segment-bytes",
    SEGMENT,
    "--max-value-bytes",
    VALUE_MAX,
];

/// Record bytes in the node's WAL and its live keys, from `INFO`.
fn wal_and_keys(node: &Node) -> Result<(u64, u64), String> {
    let info = node.client().info().map_err(|e| e.to_string())?;
    let cores = info["core_stats"].as_array().ok_or("no core_stats")?;
    let sum = |field: &str| cores.iter().map(|c| c[field].as_u64().unwrap_or(0)).sum();
    Ok((sum("wal_bytes"), sum("keys")))
}

fn segment_files(dir: &std::path::Path) -> usize {
    let Ok(cores) = std::fs::read_dir(dir) else {
        return 0;
    };
    cores
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("core-"))
        .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().starts_with("wal-"))
        .count()
}

/// 20 MB of overwrites on 100 keys of 1 KB (100 KB live): the WAL used to keep every byte until
/// a restart. It now stays within max(2 x live, one segment) plus what arrives while a
/// compaction runs, and everything reads back, before and after kill -9.
#[test]
fn the_wal_stays_bounded_under_overwrites_and_replays_after_kill9() -> TestResult {
    const KEYS: usize = 100;
    const ROUNDS: usize = 200;
    let dir = data_dir("compact-bounded");
    let args = SMALL_SEGMENTS;
    let mut node = Node::start("c1", &dir, &args)?;
    let mut c = node.client();
    let value = |k: usize, r: usize| format!("{k}-{r}-{}", "x".repeat(1000));
    for r in 0..ROUNDS {
        for k in 0..KEYS {
            c.put(format!("k{k}").as_bytes(), value(k, r).as_bytes())?;
        }
    }
    let segment: u64 = SEGMENT.parse()?;
    let (wal, keys) = poll("the wal to be compacted", START_DEADLINE, || {
        let (wal, keys) = wal_and_keys(&node).ok()?;
        (wal <= 2 * segment).then_some((wal, keys))
    })?;
    assert_eq!(keys, KEYS as u64);
    eprintln!(
        "wal {wal} bytes after {} MB of overwrites",
        ROUNDS * KEYS / 1000
    );
    // current segment, the spare made ahead, at most one more not yet deleted
    assert!(
        segment_files(&dir) <= 3,
        "{} segment files",
        segment_files(&dir)
    );
    for k in 0..KEYS {
        let got = c.get(format!("k{k}").as_bytes())?;
        assert_eq!(got, Some(value(k, ROUNDS - 1).into_bytes()), "k{k}");
    }
    node.kill9();
    let node = Node::start("c1", &dir, &args)?;
    let mut c = node.client();
    for k in 0..KEYS {
        let got = c.get(format!("k{k}").as_bytes())?;
        assert_eq!(
            got,
            Some(value(k, ROUNDS - 1).into_bytes()),
            "k{k} after kill -9"
        );
    }
    Ok(())
}

/// Writers overwrite and delete keys while the node compacts over and over (1 MiB segments);
/// the node is killed with SIGKILL at arbitrary points, several times. After each restart every
/// acknowledged write is there: the newest acknowledged value of every key, deletes included.
#[test]
fn compaction_under_writes_loses_nothing_across_kill9() -> TestResult {
    const WRITERS: usize = 3;
    const KEYS_PER_WRITER: usize = 200;
    const CYCLES: usize = 4;
    let dir = data_dir("compact-kill9");
    let args = SMALL_SEGMENTS;
    // the newest acknowledged state of every key: Some(value) or None (deleted)
    let acked: Arc<Mutex<HashMap<String, Option<String>>>> = Arc::default();
    let mut rng = fastrand::Rng::with_seed(42);
    for cycle in 0..CYCLES {
        let mut node = Node::start("k1", &dir, &args)?;
        {
            let mut c = node.client();
            let want = acked.lock().map_err(|e| e.to_string())?.clone();
            for (key, value) in &want {
                let got = c
                    .get(key.as_bytes())?
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
                assert_eq!(&got, value, "cycle {cycle}: {key}");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stop, acked, addr) = (stop.clone(), acked.clone(), node.addr());
                std::thread::spawn(move || {
                    let Ok(mut c) = Client::connect(&addr, CLIENT_TIMEOUT) else {
                        return;
                    };
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("w{w}-{}", i % KEYS_PER_WRITER);
                        let value = format!("{cycle}-{i}-{}", "v".repeat(200));
                        let ok = if i % 7 == 6 {
                            c.delete(key.as_bytes()).map(|_| None)
                        } else {
                            c.put(key.as_bytes(), value.as_bytes()).map(|_| Some(value))
                        };
                        // Only acknowledged writes count; the one the kill interrupts may or
                        // may not have landed, so its key is no longer checked exactly.
                        match (ok, acked.lock()) {
                            (Ok(v), Ok(mut a)) => {
                                a.insert(key, v);
                            }
                            (Err(_), Ok(mut a)) => {
                                a.remove(&key);
                                return;
                            }
                            _ => return,
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // let several compactions happen, then kill at an arbitrary moment
        let pause = Duration::from_millis(1_500 + rng.u64(0..1_500));
        std::thread::sleep(pause);
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().map_err(|_| "writer panicked")?;
        }
    }
    let node = Node::start("k1", &dir, &args)?;
    let mut c = node.client();
    let want = acked.lock().map_err(|e| e.to_string())?.clone();
    assert!(
        want.len() > 100,
        "the writers wrote too little: {}",
        want.len()
    );
    for (key, value) in &want {
        let got = c
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        assert_eq!(&got, value, "{key}");
    }
    Ok(())
}

/// Tombstones past `--tombstone-grace-ms` are dropped at compaction (counted in /metrics); the
/// deleted keys stay deleted across a restart. Within the grace they are kept.
#[test]
fn tombstones_are_purged_after_the_grace_and_not_before() -> TestResult {
    for (grace, want_purged) in [("1000", true), ("3600000", false)] {
        let dir = data_dir(&format!("purge-{grace}"));
        let mport = free_port();
        let args = [
            "--cores",
            "1",
            "--wal-segment-bytes",
            SEGMENT,
            "--max-value-bytes",
            VALUE_MAX,
            "--tombstone-grace-ms",
            grace,
            "--metrics-port",
            &mport.to_string(),
        ];
        let mut node = Node::start("p1", &dir, &args)?;
        let mut c = node.client();
        for k in 0..500 {
            c.put(format!("gone{k}").as_bytes(), b"v")?;
            c.delete(format!("gone{k}").as_bytes())?;
        }
        // past the 1 s grace, by the clock; then garbage to make compactions due
        std::thread::sleep(Duration::from_millis(1_100));
        let filler = "f".repeat(1000);
        let purged = poll("a compaction", START_DEADLINE, || {
            for k in 0..200 {
                c.put(format!("fill{}", k % 10).as_bytes(), filler.as_bytes())
                    .ok()?;
            }
            let compactions = scrape(mport, "kvstore_compactions_total")?;
            (compactions >= 1.0).then(|| scrape(mport, "kvstore_tombstones_purged_total"))?
        })?;
        if want_purged {
            assert_eq!(purged, 500.0, "grace {grace}");
        } else {
            assert_eq!(purged, 0.0, "grace {grace}");
        }
        node.kill9();
        // restarted without the metrics port (the killed process's may linger a moment)
        let node = Node::start("p1", &dir, &args[..args.len() - 2])?;
        let mut c = node.client();
        for k in (0..500).step_by(25) {
            assert_eq!(
                c.get(format!("gone{k}").as_bytes())?,
                None,
                "gone{k} came back"
            );
        }
    }
    Ok(())
}

/// One sample of a node's `/metrics`.
fn scrape(port: u16, series: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A crash at each step of a compaction (a failpoint kills the process with SIGKILL there)
/// replays to exactly the acknowledged state: the newest acknowledged value of every key,
/// deletes included.
#[test]
fn a_crash_at_every_step_of_a_compaction_replays_the_acknowledged_state() -> TestResult {
    const KEYS: usize = 300;
    let points = [
        "compaction:sealed",
        "compaction:slice",
        "compaction:synced",
        "compaction:removing",
        "compaction:removed",
    ];
    for point in points {
        let dir = data_dir(&format!("failpoint-{}", point.replace(':', "-")));
        let args = SMALL_SEGMENTS;
        let mut node = Node::start_with_env(
            "f1",
            &dir,
            free_port(),
            &args,
            &[("KVSTORE_FAILPOINT", point)],
        )?;
        let mut c = node.client();
        let mut acked: HashMap<String, Option<String>> = HashMap::new();
        let deadline = std::time::Instant::now() + START_DEADLINE;
        let mut i = 0usize;
        loop {
            let key = format!("k{}", i % KEYS);
            let value = format!("{i}-{}", "v".repeat(300));
            let r = if i % 5 == 4 {
                c.delete(key.as_bytes()).map(|_| None)
            } else {
                c.put(key.as_bytes(), value.as_bytes()).map(|_| Some(value))
            };
            match r {
                Ok(v) => {
                    acked.insert(key, v);
                }
                Err(_) => {
                    // the crash point was reached; this write's outcome is unknown
                    acked.remove(&key);
                    break;
                }
            }
            i += 1;
            if std::time::Instant::now() > deadline {
                return Err(format!("{point} was never reached").into());
            }
        }
        let exited = poll("the node to die at the failpoint", START_DEADLINE, || {
            node.child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
        })?;
        assert!(!exited.success(), "{point}: exited {exited}");
        node.child = None;
        let node = Node::start("f1", &dir, &args)?;
        let mut c = node.client();
        for (key, value) in &acked {
            let got = c
                .get(key.as_bytes())?
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            assert_eq!(&got, value, "{point}: {key}");
        }
        eprintln!("{point}: {} writes, {} keys checked", i, acked.len());
    }
    Ok(())
}
