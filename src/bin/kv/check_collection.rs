//! `kv check --workload set|hash`: sets and hashes (convergent, `core::crdt`) checked on a
//! live cluster. Clients on every node add unique members (SADD) or fields (HSET) to `--keys`
//! collections and remove ones they added (SREM, HDEL), through random nodes, for
//! `--duration`; an error counts as an unknown outcome. Then every node's SMEMBERS or HKEYS (a
//! quorum read joining the replicas' states) is polled until they agree, and checked: every
//! acknowledged add is present unless a remove of it was sent; nothing an acknowledged remove
//! took (it answered 1) is present; nothing is present that nobody added.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::check_consensus::{Found, Setup, Workload};

/// The commands of a workload: add, remove, list.
fn verbs(w: Workload) -> (&'static str, &'static str, &'static str) {
    match w {
        Workload::Hash => ("HSET", "HDEL", "HKEYS"),
        _ => ("SADD", "SREM", "SMEMBERS"),
    }
}

/// How long the nodes' answers may take to agree once the load stopped (hints land, read
/// repair and anti-entropy run).
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// A RESP connection (the set commands are Redis commands).
struct Resp {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

enum Answer {
    Int(i64),
    Members(BTreeSet<String>),
}

impl Resp {
    fn connect(addr: &str, timeout: Duration) -> std::io::Result<Resp> {
        let w = TcpStream::connect(addr)?;
        w.set_read_timeout(Some(timeout))?;
        w.set_write_timeout(Some(timeout))?;
        let r = BufReader::new(w.try_clone()?);
        Ok(Resp { w, r })
    }

    fn call(&mut self, args: &[&str]) -> Result<Answer, String> {
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w
            .write_all(cmd.as_bytes())
            .map_err(|e| e.to_string())?;
        let line = self.line()?;
        match line.split_at(1) {
            (":", n) => n.parse().map(Answer::Int).map_err(|_| line.clone()),
            ("*", n) => {
                let n: usize = n.parse().map_err(|_| line.clone())?;
                let mut members = BTreeSet::new();
                for _ in 0..n {
                    let len = self.line()?;
                    let len: usize = len[1..].parse().map_err(|_| len.clone())?;
                    let mut buf = vec![0u8; len + 2];
                    std::io::Read::read_exact(&mut self.r, &mut buf).map_err(|e| e.to_string())?;
                    members.insert(String::from_utf8_lossy(&buf[..len]).into_owned());
                }
                Ok(Answer::Members(members))
            }
            _ => Err(line),
        }
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.r.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("connection closed".into());
        }
        Ok(line.trim_end().to_string())
    }
}

#[derive(Default)]
struct Log {
    /// (key, member) → acknowledged.
    adds: HashMap<(u32, String), bool>,
    /// SREMs sent, and the ones that answered 1.
    removes_sent: BTreeSet<(u32, String)>,
    removed: BTreeSet<(u32, String)>,
    unknown: usize,
}

pub fn run(setup: &Setup<'_>) -> Found {
    let log = Mutex::new(Log::default());
    std::thread::scope(|s| {
        for c in 0..setup.clients {
            let log = &log;
            s.spawn(move || client(setup, c, log));
        }
    });
    let log = log.into_inner().unwrap_or_default();
    let acked = log.adds.values().filter(|a| **a).count();
    let summary = format!(
        "workload={:?} adds={} acknowledged={acked} removes={} removed={} unknown={}",
        setup.workload,
        log.adds.len(),
        log.removes_sent.len(),
        log.removed.len(),
        log.unknown
    );
    Found {
        summary,
        violation: check(setup, &log),
    }
}

fn client(setup: &Setup<'_>, c: usize, log: &Mutex<Log>) {
    let mut rng = fastrand::Rng::with_seed(setup.seed ^ ((c as u64 + 1) * 0x9e37_79b9));
    let mut conns: Vec<Option<Resp>> = setup.nodes.iter().map(|_| None).collect();
    let mut mine: Vec<(u32, String)> = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < setup.deadline {
        seq += 1;
        let n = rng.usize(..setup.nodes.len());
        if conns[n].is_none() {
            conns[n] = Resp::connect(&setup.nodes[n], setup.timeout).ok();
        }
        let Some(conn) = conns[n].as_mut() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let remove = !mine.is_empty() && rng.u8(..10) < 3;
        let (key, member) = if remove {
            mine.swap_remove(rng.usize(..mine.len()))
        } else {
            (rng.u32(..setup.keys), format!("m-{c}-{seq}"))
        };
        let name = format!("{}{key}", setup.prefix);
        let (add, rem, _) = verbs(setup.workload);
        let answer = match (remove, setup.workload) {
            (false, Workload::Hash) => conn.call(&[add, &name, &member, "v"]),
            (false, _) => conn.call(&[add, &name, &member]),
            (true, _) => conn.call(&[rem, &name, &member]),
        };
        if answer.is_err() {
            conns[n] = None;
        }
        let Ok(mut l) = log.lock() else { return };
        match (remove, answer) {
            (false, Ok(Answer::Int(1))) => {
                l.adds.insert((key, member.clone()), true);
                mine.push((key, member));
            }
            (false, _) => {
                l.adds.insert((key, member), false);
                l.unknown += 1;
            }
            (true, a) => {
                if matches!(a, Ok(Answer::Int(1))) {
                    l.removed.insert((key, member.clone()));
                } else if a.is_err() {
                    l.unknown += 1;
                }
                l.removes_sent.insert((key, member));
            }
        }
    }
}

/// Every node's SMEMBERS of `key` (`None`: a node did not answer).
fn members_everywhere(setup: &Setup<'_>, name: &str) -> Option<Vec<BTreeSet<String>>> {
    setup
        .nodes
        .iter()
        .map(|addr| {
            let mut c = Resp::connect(addr, setup.timeout).ok()?;
            match c.call(&[verbs(setup.workload).2, name]).ok()? {
                Answer::Members(m) => Some(m),
                Answer::Int(_) => None,
            }
        })
        .collect()
}

fn check(setup: &Setup<'_>, log: &Log) -> Option<String> {
    for key in 0..setup.keys {
        let name = format!("{}{key}", setup.prefix);
        let until = Instant::now() + SETTLE_MAX;
        let agreed = loop {
            match members_everywhere(setup, &name) {
                Some(all) if all.windows(2).all(|w| w[0] == w[1]) => break all[0].clone(),
                _ if Instant::now() >= until => {
                    return Some(format!("{name}: the nodes' answers still differ"));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        for ((k, m), acked) in &log.adds {
            let sent_remove = log.removes_sent.contains(&(*k, m.clone()));
            if *k == key && *acked && !sent_remove && !agreed.contains(m) {
                return Some(format!("{name}: acknowledged add of {m} lost"));
            }
            if *k == key && log.removed.contains(&(*k, m.clone())) && agreed.contains(m) {
                return Some(format!("{name}: {m} present after its remove answered 1"));
            }
        }
        if let Some(m) = agreed
            .iter()
            .find(|m| !log.adds.contains_key(&(key, (*m).clone())))
        {
            return Some(format!("{name}: {m} present, nobody added it"));
        }
    }
    None
}
