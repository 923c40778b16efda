//! Partition tests: three nodes in network namespaces of their own on a bridge, cut apart and
//! healed with nftables rules on the bridge (as a fault-injection run does it). Needs root,
//! `ip` and `nft`; without them the tests say so and pass, except under `CI=true`, where that
//! is a failure (`.ci/run` installs iproute2 and nftables and runs as root).
//!
//! Every name and address is made per test (namespaces `kvp<pid><n>*`, subnet 10.<a>.<b>.0/24)
//! and removed on drop: tests run in parallel and never touch another address.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use kvstore::client::Client;

const PORT: u16 = 7001;

fn run(cmd: &[&str]) -> Result<(), String> {
    let o = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(())
}

/// The tests here load the machine and measure rates: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether namespaces and nftables can be used here; under CI their absence is an error.
/// Also takes the lock that runs these tests one at a time (held by the returned guard).
fn can_partition_serial() -> Result<Option<std::sync::MutexGuard<'static, ()>>, String> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Ok(can_partition()?.then_some(guard))
}

fn can_partition() -> Result<bool, String> {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["ip", "nft"].iter().all(|t| {
        Command::new(t)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if root && tools {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return Err("partition tests need root, ip and nft under CI".into());
    }
    eprintln!("skipping: partition tests need root, ip (iproute2) and nft (nftables)");
    Ok(false)
}

/// A bridge in a namespace of its own, one namespace per node, and a veth from this (the
/// test's) namespace to the bridge so the test's clients reach every node directly.
struct Net {
    prefix: String,
    subnet: String,
    nodes: usize,
}

impl Net {
    fn new(nodes: usize) -> Result<Net, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("kvp{}{n}", pid % 10_000);
        let subnet = format!("10.{}.{}", 100 + (pid % 100), 10 + n);
        let net = Net {
            prefix,
            subnet,
            nodes,
        };
        // Names left by a run that was killed before it could clean up (same pid, reused).
        net.remove();
        net.build()?;
        Ok(net)
    }

    fn br(&self) -> String {
        format!("{}b", self.prefix)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    fn build(&self) -> Result<(), String> {
        let br = self.br();
        run(&["ip", "netns", "add", &br])?;
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("v{i}");
            run(&[
                "ip", "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            ])?;
            run(&["ip", "-n", &br, "link", "set", "eth0", "netns", &ns])?;
            run(&["ip", "-n", &br, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.ip(i));
            run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        }
        // the test's own leg: host side in this namespace, bridge side a port named "vh"
        let host = format!("{}h", self.prefix);
        run(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", "vh",
        ])?;
        run(&["ip", "link", "set", "vh", "netns", &br])?;
        run(&["ip", "-n", &br, "link", "set", "vh", "master", "br0", "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", self.ip(200)),
            "dev",
            &host,
        ])?;
        run(&["ip", "link", "set", &host, "up"])?;
        let rules = "add table bridge cut\n\
                     add chain bridge cut drops { type filter hook forward priority 0; }\n";
        nft(&br, rules)
    }

    /// Drop every frame between the bridge ports of nodes `a` and `b` (both ways).
    fn cut(&self, a: usize, b: usize) -> Result<(), String> {
        let rules = format!(
            "add rule bridge cut drops iifname \"v{a}\" oifname \"v{b}\" drop\n\
             add rule bridge cut drops iifname \"v{b}\" oifname \"v{a}\" drop\n"
        );
        nft(&self.br(), &rules)
    }

    /// Drop `percent` % of the frames to and from node `a`, at random (nftables `numgen`).
    fn lossy(&self, a: usize, percent: u32) -> Result<(), String> {
        let rules = format!(
            "add rule bridge cut drops iifname \"v{a}\" numgen random mod 100 < {percent} drop\n\
             add rule bridge cut drops oifname \"v{a}\" numgen random mod 100 < {percent} drop\n"
        );
        nft(&self.br(), &rules)
    }

    fn heal(&self) -> Result<(), String> {
        nft(&self.br(), "flush chain bridge cut drops\n")
    }

    /// One log file per node, under the test's data.
    fn logs(&self) -> Vec<PathBuf> {
        (1..=self.nodes)
            .map(|i| data_dir(&format!("{}-logs{i}", self.prefix)).join("node.log"))
            .collect()
    }

    /// Start every node on a fresh data dir with `extra` flags, each once it answers.
    fn start_all(&self, logs: &[PathBuf], extra: &[&str]) -> Result<Procs, String> {
        let mut procs = Procs(Vec::new());
        for i in 1..=self.nodes {
            procs.0.push(self.start_with(i, &logs[i - 1], extra, true)?);
            poll(&format!("node{i} to answer"), START_DEADLINE, || {
                status(&self.ip(i), &format!("node{i}"))
            })?;
        }
        Ok(procs)
    }

    /// Wait until every node sees every node as an ALIVE ring member.
    fn wait_all_alive(&self) -> Result<(), String> {
        let all: Vec<usize> = (1..=self.nodes).collect();
        poll(
            "every node ALIVE ring members everywhere",
            START_DEADLINE,
            || {
                all.iter()
                    .all(|m| all_see(self, &all, &format!("node{m}"), "ALIVE"))
                    .then_some(())
            },
        )
    }

    /// Start node `i` in its namespace, seeded by node 1, with `extra` flags; `fresh`: on an
    /// empty data dir (else the one it had). Its log (info) is appended to `log`.
    fn start_with(
        &self,
        i: usize,
        log: &std::path::Path,
        extra: &[&str],
        fresh: bool,
    ) -> Result<Child, String> {
        let name = format!("{}-node{i}", self.prefix);
        let dir = if fresh {
            data_dir(&name)
        } else {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("it")
                .join(&name)
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let addr = format!("{}:{PORT}", self.ip(i));
        let seed = format!("{}:{PORT}", self.ip(1));
        let node = env!("CARGO_BIN_EXE_kvstore-node");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns(i),
            node,
            "--node-id",
            &format!("node{i}"),
        ])
        .args(["--listen", &self.ip(i), "--port", &PORT.to_string()])
        .args(["--advertise", &addr, "--cores", "1"])
        .args(["--wal-segment-bytes", TEST_SEGMENT_BYTES])
        // The test's clients reach the nodes from the bridge, not from loopback.
        .args(["--protected-mode", "no"])
        .args(extra)
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
        if i != 1 {
            cmd.args(["--seed", &seed]);
        }
        cmd.spawn().map_err(|e| format!("start node{i}: {e}"))
    }
}

impl Net {
    /// Delete this net's namespaces and host link (best effort: some may not exist).
    fn remove(&self) {
        for i in 1..=self.nodes {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.br()]);
        let _ = run(&["ip", "link", "del", &format!("{}h", self.prefix)]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let o = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !o.status.success() {
        return Err(format!("nft: {}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(())
}

/// Node processes killed on drop (before the namespaces go).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The status the node at `ip` holds for member `id` (by `INFO` over the native protocol),
/// with ` role` appended unless the member is a plain ring member (`ALIVE` vs `ALIVE joining`).
fn status(ip: &str, id: &str) -> Option<String> {
    let mut c = Client::connect(&format!("{ip}:{PORT}"), Duration::from_secs(2)).ok()?;
    let info = c.info().ok()?;
    let m = info["members"].as_array()?.iter().find(|m| m["id"] == id)?;
    let status = m["status"].as_str()?;
    Some(match m["role"].as_str()? {
        "member" => status.to_string(),
        role => format!("{status} {role}"),
    })
}

fn all_see(net: &Net, ids: &[usize], status_of: &str, want: &str) -> bool {
    ids.iter()
        .all(|i| status(&net.ip(*i), status_of).as_deref() == Some(want))
}

/// Lines of a node's log in which a member's status changed to SUSPECT or DEAD.
fn convictions(log: &std::path::Path, member: &str) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let marker = format!("member {member}: ");
    text.lines()
        .filter(|l| l.contains(&marker) && (l.contains("-> DEAD") || l.contains("-> SUSPECT")))
        .map(String::from)
        .collect()
}

/// node3 cut off from both others for 14 s, then healed. Before: the nodes kept their connections, so reunion waited for the next
/// retransmission (46–48 s after a 60 s cut, 6.5–7.3 s after 20 s), and right after the heal
/// node3's stale DEAD verdicts made node1 and node2 convict each other. Now a silent connection
/// is closed and redialed, and hearsay never beats direct contact: reunion takes about a probe
/// round, and the healthy pair never sees each other as anything but ALIVE.
#[test]
fn a_healed_partition_reunites_at_once_without_false_convictions() -> TestResult {
    /// Healed 1.2 s after the retransmission at 12.8 s: the next one comes 25.6 s after the
    /// cut, so connections kept across the cut reunite ~11.6 s after the heal (the old
    /// behaviour); a redial reunites within a probe round or two.
    const CUT_MS: u64 = 14_000;
    const REUNION_BOUND: Duration = Duration::from_secs(6);
    let Some(_serial) = can_partition_serial()? else {
        return Ok(());
    };
    // KV_PARTITION_CUT_MS measures other cut lengths (the bound then is not asserted).
    let cut_ms: u64 = std::env::var("KV_PARTITION_CUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CUT_MS);
    let net = Net::new(3)?;
    let logs = net.logs();
    let _procs = net.start_all(&logs, &["--suspect-timeout-ms", SUSPECT_MS])?;
    net.wait_all_alive()?;
    let mut c1 = Client::connect(&format!("{}:{PORT}", net.ip(1)), CLIENT_TIMEOUT)?;
    for i in 0..50 {
        c1.put(format!("before-{i}").as_bytes(), b"v")?;
    }
    let healthy_before: Vec<usize> = [(0, "node2"), (1, "node1")]
        .iter()
        .map(|(n, m)| convictions(&logs[*n], m).len())
        .collect();

    net.cut(3, 1)?;
    net.cut(3, 2)?;
    let cut_at = Instant::now();
    // One write through each node at once: every connection between node3 and the others now
    // has unacknowledged data from the same instant, so their TCP retransmission timers back
    // off in step (0.2 s, 0.6, 1.4, ... 12.8, 25.6 s after the cut).
    let writers: Vec<_> = (1..=3)
        .map(|i| {
            let addr = format!("{}:{PORT}", net.ip(i));
            std::thread::spawn(move || {
                Client::connect(&addr, CLIENT_TIMEOUT).map(|mut c| c.put(b"at-the-cut", b"v"))
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
    poll("node1 and node2 to see node3 DEAD", START_DEADLINE, || {
        all_see(&net, &[1, 2], "node3", "DEAD").then_some(())
    })?;
    // writes go on through the majority side meanwhile
    let mut written = 0;
    while cut_at.elapsed() < Duration::from_millis(cut_ms) {
        c1.put(format!("during-{written}").as_bytes(), b"v")?;
        written += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    net.heal()?;
    let healed_at = Instant::now();
    poll("node3 back ALIVE on both sides", START_DEADLINE, || {
        let back = all_see(&net, &[1, 2], "node3", "ALIVE")
            && all_see(&net, &[3], "node1", "ALIVE")
            && all_see(&net, &[3], "node2", "ALIVE");
        back.then_some(())
    })?;
    let reunion = healed_at.elapsed();
    eprintln!("reunion {reunion:?} after a {cut_ms} ms partition ({written} writes during it)");
    assert!(
        reunion < REUNION_BOUND || cut_ms != CUT_MS,
        "reunion took {reunion:?} after the heal"
    );
    // writes through the healed node succeed again
    let mut c3 = Client::connect(&format!("{}:{PORT}", net.ip(3)), CLIENT_TIMEOUT)?;
    poll("a write through node3", START_DEADLINE, || {
        c3.put(b"after-heal", b"v").ok()
    })?;
    // the healthy pair never convicted each other
    for (n, (log, member)) in [(&logs[0], "node2"), (&logs[1], "node1")]
        .iter()
        .enumerate()
    {
        let lines = convictions(log, member);
        eprintln!(
            "convictions of {member}: {}",
            lines.len() - healthy_before[n]
        );
        assert_eq!(
            lines.len(),
            healthy_before[n],
            "a healthy member was convicted: {:?}",
            &lines[healthy_before[n]..]
        );
    }
    Ok(())
}

/// Writers through node1 while node3 is in turn cut off, stopped (SIGSTOP) and behind 30 %
/// packet loss. node3 stays SUSPECT throughout (a long suspect timeout), so coordinators keep
/// addressing it: the worst case. Two healthy replicas answer at once the whole time, so every
/// second must keep most of the healthy rate (it used to fall to 2–40 % until node3 was DEAD,
/// each write waiting `PEER_ROOM_WAIT_MS` for room on node3's full connection), no write may
/// fail, and every acknowledged write reads back. The figures are printed, not asserted tight:
/// the floor here is half the healthy median, a shape that cannot flake on a loaded machine.
#[test]
fn writes_keep_their_rate_while_one_replica_is_silent() -> TestResult {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    const WRITERS: usize = 8;
    const PHASE: Duration = Duration::from_secs(6);
    const SETTLE: Duration = Duration::from_secs(3);
    let Some(_serial) = can_partition_serial()? else {
        return Ok(());
    };
    let net = Net::new(3)?;
    // SUSPECT for ever: the coordinator keeps sending to node3 for the whole test
    let procs = net.start_all(&net.logs(), &["--suspect-timeout-ms", "600000"])?;
    net.wait_all_alive()?;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // (seconds since start, latency in µs, key) of every acknowledged write; failures
    let acked = Arc::new(Mutex::new(Vec::<(u64, u64, String)>::new()));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
            let addr = format!("{}:{PORT}", net.ip(1));
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = Client::connect(&addr, CLIENT_TIMEOUT).map_err(|e| e.to_string())?;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let sent = Instant::now();
                    match c.put(key.as_bytes(), b"v") {
                        Ok(_) => {
                            let us = sent.elapsed().as_micros() as u64;
                            let at = start.elapsed().as_secs();
                            acked.lock().map_err(|e| e.to_string())?.push((at, us, key));
                        }
                        Err(e) => failed
                            .lock()
                            .map_err(|e| e.to_string())?
                            .push(e.to_string()),
                    }
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let pid = procs.0[2].id() as i32;
    let mut phases: Vec<(&str, Instant, Instant)> = Vec::new();
    let mut phase = |name: &'static str, d: Duration| {
        let from = Instant::now();
        std::thread::sleep(d);
        phases.push((name, from, Instant::now()));
    };
    phase("healthy", PHASE);
    net.cut(3, 1)?;
    net.cut(3, 2)?;
    phase("node3 cut off", PHASE);
    net.heal()?;
    phase("healed", SETTLE);
    // SAFETY: kill(2) on our own child (`ip netns exec` execs the node in place).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    phase("node3 stopped", PHASE);
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    phase("resumed", SETTLE);
    net.lossy(3, 30)?;
    phase("node3 30% loss", PHASE);
    net.heal()?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().map_err(|_| "writer panicked")??;
    }
    let acked = std::mem::take(&mut *acked.lock().map_err(|e| e.to_string())?);
    let failed = std::mem::take(&mut *failed.lock().map_err(|e| e.to_string())?);
    // per-second counts of each phase's whole seconds
    let mut per_second = vec![0u64; start.elapsed().as_secs() as usize + 1];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); per_second.len()];
    for (at, us, _) in &acked {
        per_second[*at as usize] += 1;
        latencies[*at as usize].push(*us);
    }
    let p99_ms = |from: Instant, to: Instant| -> f64 {
        let a = from.duration_since(start).as_secs() as usize + 1;
        let b = to.duration_since(start).as_secs() as usize;
        let mut all: Vec<u64> = latencies[a.min(b)..b].concat();
        all.sort_unstable();
        all.get(all.len() * 99 / 100).copied().unwrap_or(0) as f64 / 1000.0
    };
    let seconds = |from: Instant, to: Instant| -> Vec<u64> {
        let a = from.duration_since(start).as_secs() as usize + 1;
        let b = to.duration_since(start).as_secs() as usize;
        per_second[a.min(b)..b].to_vec()
    };
    let mut healthy = seconds(phases[0].1, phases[0].2);
    healthy.sort_unstable();
    let median = healthy[healthy.len() / 2];
    for (name, from, to) in &phases {
        let p99 = p99_ms(*from, *to);
        eprintln!(
            "{name:>16}: writes/s {:?}, p99 {p99:.1} ms",
            seconds(*from, *to)
        );
    }
    assert!(
        failed.is_empty(),
        "{} writes failed: {:?}",
        failed.len(),
        failed.first()
    );
    // The shape, with margins for a loaded CI machine: each fault phase's median second keeps
    // half the healthy median (before: 2-16 %), and no second falls under a tenth (before: 1 %).
    for (name, from, to) in phases.iter().filter(|p| p.0.starts_with("node3")) {
        let mut secs = seconds(*from, *to);
        secs.sort_unstable();
        let phase_median = secs[secs.len() / 2];
        assert!(
            phase_median * 2 >= median,
            "{name}: median {phase_median} writes/s against a healthy median of {median}"
        );
        assert!(
            secs[0] * 10 >= median,
            "{name}: a second of {} writes/s against a healthy median of {median}",
            secs[0]
        );
    }
    // acknowledged writes read back through another coordinator (R = 2): a sample of one in
    // `SAMPLE` (all of them would take longer than the load itself)
    const SAMPLE: usize = 20;
    let mut c2 = Client::connect(&format!("{}:{PORT}", net.ip(2)), CLIENT_TIMEOUT)?;
    for (_, _, key) in acked.iter().step_by(SAMPLE) {
        assert_eq!(c2.get(key.as_bytes())?.as_deref(), Some(&b"v"[..]), "{key}");
    }
    Ok(())
}

/// node3 cut off while 2,000 keys are written through node1, then healed: with no client reads
/// at all, node3's own store (LOCAL_GET) holds every acknowledged key soon after the heal —
/// hinted handoff. Without hints it held none of them 30 s later.
#[test]
fn an_isolated_replica_holds_every_write_soon_after_the_heal() -> TestResult {
    const KEYS: usize = 2_000;
    let Some(_serial) = can_partition_serial()? else {
        return Ok(());
    };
    let net = Net::new(3)?;
    let _procs = net.start_all(&net.logs(), &["--suspect-timeout-ms", SUSPECT_MS])?;
    net.wait_all_alive()?;
    net.cut(3, 1)?;
    net.cut(3, 2)?;
    let mut c1 = Client::connect(&format!("{}:{PORT}", net.ip(1)), CLIENT_TIMEOUT)?;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("during-{i}")).collect();
    for k in &keys {
        c1.put(k.as_bytes(), b"v")?;
    }
    net.heal()?;
    let healed = Instant::now();
    let mut c3 = Client::connect(&format!("{}:{PORT}", net.ip(3)), CLIENT_TIMEOUT)?;
    poll("node3 to hold every key", START_DEADLINE, || {
        let held = keys
            .iter()
            .filter(|k| c3.get_local(k.as_bytes()).ok().flatten().is_some())
            .count();
        (held == KEYS).then_some(())
    })?;
    eprintln!(
        "node3 held all {KEYS} keys {:?} after the heal",
        healed.elapsed()
    );
    Ok(())
}

/// `kv check` (writers and readers through every node, then the history and every replica's
/// copy checked) while faults hit node3 in turn: isolation, a 1|2 split, 25 % packet loss,
/// SIGSTOP, kill -9 and a restart, and a restart with an empty data dir. After each, with no
/// client help beyond the check's own reads, no acknowledged write is lost, no read is stale
/// or made up, and every replica of every key agrees (hints and anti-entropy).
#[test]
fn kv_check_holds_through_partitions_pauses_and_restarts() -> TestResult {
    /// Seconds of load per scenario; the fault starts after `FAULT_AT` and lasts `FAULT_FOR`.
    const LOAD_S: &str = "8";
    const FAULT_AT: Duration = Duration::from_secs(2);
    const FAULT_FOR: Duration = Duration::from_secs(3);
    let Some(_serial) = can_partition_serial()? else {
        return Ok(());
    };
    let net = Net::new(3)?;
    let extra = [
        "--suspect-timeout-ms",
        SUSPECT_MS,
        "--anti-entropy-interval-ms",
        "1000",
    ];
    let logs = net.logs();
    let mut procs = net.start_all(&logs, &extra)?;
    net.wait_all_alive()?;
    let scenarios = [
        "isolate node3",
        "split node1 | node2 node3",
        "25% loss to node3",
        "SIGSTOP node3",
        "kill -9 and restart node3",
        "restart node3 with an empty data dir",
    ];
    for scenario in scenarios {
        let port = PORT.to_string();
        let check = Command::new(env!("CARGO_BIN_EXE_kv"))
            .args([
                "--host",
                &net.ip(1),
                "--port",
                &port,
                "--timeout-ms",
                "3000",
            ])
            .args([
                "check",
                "--duration",
                LOAD_S,
                "--clients",
                "6",
                "--keys",
                "40",
            ])
            .args(["--settle-ms", "4000", "--replicas", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::thread::sleep(FAULT_AT);
        let pid = fault_start(&net, &mut procs, scenario)?;
        std::thread::sleep(FAULT_FOR);
        fault_end(&net, &mut procs, (&logs, &extra), scenario, pid)?;
        let out = check.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{scenario}: {}", text.trim());
        let report: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
            format!(
                "{scenario}: {e}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        assert!(out.status.success(), "{scenario}: {report}");
        assert_eq!(report["verdict"]["lost_writes"], 0, "{scenario}: {report}");
        assert_eq!(report["verdict"]["stale_reads"], 0, "{scenario}: {report}");
        assert_eq!(
            report["verdict"]["phantom_reads"], 0,
            "{scenario}: {report}"
        );
        assert_eq!(report["divergent_keys"], 0, "{scenario}: {report}");
        net.wait_all_alive()?;
    }
    Ok(())
}

/// Start `scenario`'s fault on node3; its pid (for SIGCONT).
fn fault_start(net: &Net, procs: &mut Procs, scenario: &str) -> Result<i32, String> {
    let pid = procs.0[2].id() as i32;
    match scenario {
        "isolate node3" => {
            net.cut(3, 1)?;
            net.cut(3, 2)?;
        }
        "split node1 | node2 node3" => {
            net.cut(1, 2)?;
            net.cut(1, 3)?;
        }
        "25% loss to node3" => net.lossy(3, 25)?,
        // SAFETY: kill(2) on our own child (`ip netns exec` execs the node in place).
        "SIGSTOP node3" => unsafe {
            libc::kill(pid, libc::SIGSTOP);
        },
        _ => {
            let _ = procs.0[2].kill();
            let _ = procs.0[2].wait();
        }
    }
    Ok(pid)
}

/// End `scenario`'s fault: heal, SIGCONT, or restart node3 (with its data, or empty).
fn fault_end(
    net: &Net,
    procs: &mut Procs,
    (logs, extra): (&[PathBuf], &[&str]),
    scenario: &str,
    pid: i32,
) -> Result<(), String> {
    match scenario {
        // SAFETY: kill(2) on our own child.
        "SIGSTOP node3" => unsafe {
            libc::kill(pid, libc::SIGCONT);
        },
        "kill -9 and restart node3" => {
            procs.0[2] = net.start_with(3, &logs[2], extra, false)?;
        }
        "restart node3 with an empty data dir" => {
            procs.0[2] = net.start_with(3, &logs[2], extra, true)?;
        }
        _ => net.heal()?,
    }
    Ok(())
}

/// The conditional commands through the same faults, a `kv check` consensus workload per
/// fault: linearizable per key (cas), distinct increments (counter), one lock holder at a
/// time with the holder paused (lock), each job taken once (queue).
#[test]
fn conditional_commands_hold_through_partitions_pauses_and_restarts() -> TestResult {
    const LOAD_S: &str = "6";
    const FAULT_AT: Duration = Duration::from_secs(2);
    const FAULT_FOR: Duration = Duration::from_secs(2);
    let Some(_serial) = can_partition_serial()? else {
        return Ok(());
    };
    let net = Net::new(3)?;
    let extra = ["--suspect-timeout-ms", SUSPECT_MS];
    let logs = net.logs();
    let mut procs = net.start_all(&logs, &extra)?;
    net.wait_all_alive()?;
    let runs = [
        ("isolate node3", "cas"),
        ("split node1 | node2 node3", "counter"),
        ("SIGSTOP node3", "lock"),
        ("kill -9 and restart node3", "queue"),
        ("split node1 | node2 node3", "lock"),
        ("SIGSTOP node3", "cas"),
    ];
    for (scenario, workload) in runs {
        let port = PORT.to_string();
        let check = Command::new(env!("CARGO_BIN_EXE_kv"))
            .args([
                "--host",
                &net.ip(2),
                "--port",
                &port,
                "--timeout-ms",
                "8000",
            ])
            .args(["check", "--workload", workload, "--duration", LOAD_S])
            .args(["--clients", "6", "--keys", "40"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        std::thread::sleep(FAULT_AT);
        let pid = fault_start(&net, &mut procs, scenario)?;
        std::thread::sleep(FAULT_FOR);
        fault_end(&net, &mut procs, (&logs, &extra), scenario, pid)?;
        let out = check.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{scenario}, {workload}: {}", text.trim());
        assert!(
            out.status.success() && text.contains("\nOK"),
            "{scenario}, {workload}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        net.wait_all_alive()?;
    }
    Ok(())
}

/// Protected mode: a node listening beyond loopback with no password refuses clients that are
/// not on loopback, and says how to fix it; `--protected-mode no` serves them.
#[test]
fn protected_mode_refuses_remote_clients_without_a_password() -> TestResult {
    let Some(_serial) = can_partition_serial()? else {
        return Ok(());
    };
    let net = Net::new(1)?;
    let node = env!("CARGO_BIN_EXE_kvstore-node");
    let mut procs = Procs(Vec::new());
    for (i, protected) in [(1, "yes"), (1, "no")] {
        let dir = data_dir(&format!("{}-protected-{protected}", net.prefix));
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(i), node, "--node-id", "p1"])
            .args(["--listen", "0.0.0.0", "--port", &PORT.to_string()])
            .args([
                "--advertise",
                &format!("{}:{PORT}", net.ip(i)),
                "--cores",
                "1",
            ])
            .args(["--protected-mode", protected])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        procs.0.push(child);
        let addr = format!("{}:{PORT}", net.ip(i));
        let mut c = poll("the node to answer PING", START_DEADLINE, || {
            let mut c = Client::connect(&addr, Duration::from_secs(2)).ok()?;
            c.ping().ok().map(|_| c)
        })?;
        let put = c.put(b"k", b"v");
        if protected == "yes" {
            let e = put
                .err()
                .ok_or("a remote client was served in protected mode")?;
            assert!(e.to_string().contains("protected mode"), "{e}");
        } else {
            put?;
        }
        let mut p = procs.0.pop().ok_or("no process")?;
        let _ = p.kill();
        let _ = p.wait();
    }
    Ok(())
}
