//! `kv check --workload cas|counter|lock`: the conditional commands (linearizable per key, by
//! consensus) checked on a live cluster. Clients on every node run them for `--duration`;
//! each operation's call and return times and reply are recorded, an error counting as an
//! unknown outcome (it may have taken effect or not).
//!
//! - `cas`: random SET NX, SET … IFEQ, DELIFEQ, INCR, APPEND, GET and GETDEL on `--keys`
//!   keys; the history must be linearizable per key (`core::linearizable`, Wing and Gong).
//! - `counter`: INCR of one key: replies distinct, none above the final value, and the final
//!   value between the acknowledged count and that plus the unknown ones.
//! - `lock`: SET NX PX and DELIFEQ of one lock: no two clients hold it at once (a hold lasts
//!   from the acquiring reply to the release's call, or the lease's end if sooner; the lease
//!   runs from the acquiring call, so a reply that comes back after it ended held nothing);
//!   now and then a holder stalls past its lease before releasing.
//! - `queue`: RPUSH of unique jobs and LPOP by workers: each job taken at most once, every
//!   acknowledged job taken or still queued at the end (but for as many as pops whose outcome
//!   is unknown), nothing taken that nobody pushed.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvstore::client::Client;
use kvstore::core::consensus::change::{self, Change, Cond, End, Reply};
use kvstore::core::consensus::command::{Command, Ttl};
use kvstore::core::linearizable::{self, Op, OPS_PER_KEY_MAX};
use kvstore::wire::consensus::Decoded;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Plain writes and reads (last-write-wins): no lost write, no stale read.
    Register,
    Cas,
    Counter,
    Lock,
    /// Half the clients RPUSH unique jobs, half LPOP them: each job taken at most once,
    /// every acknowledged job taken or still queued, nothing taken that nobody pushed.
    Queue,
    /// SADD of unique members and SREM of added ones (convergent sets): every acknowledged
    /// add kept unless a remove was sent, nothing removed present, nothing nobody added.
    Set,
    /// The same with HSET of unique fields and HDEL.
    Hash,
}

/// A lock's lease in the `lock` workload.
const LOCK_LEASE_MS: u64 = 2_000;
/// How much earlier than the checker's reckoning a node may end a lease: the lease's instant
/// is taken just before the call is timed, and the node judges it by its own clock (the same
/// machine's here; across machines, add the clock-offset bound).
const LEASE_SLACK_US: u64 = 5_000;

/// What one workload found.
pub struct Found {
    pub summary: String,
    pub violation: Option<String>,
}

fn us_since(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// Redis's error texts, as the commands' model answers them.
fn model_error(text: &str) -> Option<&'static str> {
    [
        change::NOT_AN_INTEGER,
        change::NOT_A_FLOAT,
        change::OVERFLOW,
        change::NAN_OR_INFINITY,
    ]
    .into_iter()
    .find(|e| *e == text)
}

/// One client's connections, one per node, opened when first used.
struct Conns<'a> {
    nodes: &'a [String],
    timeout: Duration,
    open: Vec<Option<Client>>,
}

impl Conns<'_> {
    /// Run `command` on `key` through node `n`: `Some(Some(reply))` when it answered,
    /// `Some(None)` when its outcome is unknown, `None` when it was not sent (no connection).
    fn run(&mut self, n: usize, key: &str, command: &Command) -> Option<Option<Reply>> {
        if self.open[n].is_none() {
            self.open[n] = Client::connect(&self.nodes[n], self.timeout).ok();
        }
        let conn = self.open[n].as_mut()?;
        Some(match conn.conditional(key.as_bytes(), command) {
            Ok(Decoded::Reply(r)) => Some(r),
            Ok(Decoded::Error(e)) => model_error(&e).map(Reply::Error),
            Err(e) => {
                log::debug!("kv check: {key}: {e}");
                if e.is_unreachable() {
                    self.open[n] = None;
                }
                None
            }
        })
    }
}

/// A run: `workload` with `clients` threads over `nodes` until `deadline`.
pub struct Setup<'a> {
    pub workload: Workload,
    pub nodes: &'a [String],
    pub timeout: Duration,
    pub clients: usize,
    pub keys: u32,
    pub prefix: &'a str,
    pub deadline: Instant,
    pub seed: u64,
}

pub fn run(setup: &Setup<'_>) -> Found {
    if matches!(setup.workload, Workload::Set | Workload::Hash) {
        return crate::check_collection::run(setup);
    }
    let Setup {
        workload,
        nodes,
        timeout,
        clients,
        keys,
        prefix,
        deadline,
        seed,
    } = *setup;
    let start = Instant::now();
    let history = Mutex::new(Vec::<Op>::new());
    // operations per key so far: the checker takes at most OPS_PER_KEY_MAX per key
    let budget = &Mutex::new(vec![0usize; keys as usize]);
    std::thread::scope(|s| {
        for c in 0..clients {
            let history = &history;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ ((c as u64 + 1) * 0x9e37_79b9));
                let mut conns = Conns {
                    nodes,
                    timeout,
                    open: nodes.iter().map(|_| None).collect(),
                };
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    let n = rng.usize(..nodes.len());
                    let (key, command) = match workload {
                        Workload::Counter => (0, Command::of(Change::Incr(1))),
                        Workload::Lock => (0, lock_step(c, seq)),
                        Workload::Queue if c % 2 == 0 => (
                            0,
                            Command::of(Change::Push {
                                end: End::Right,
                                items: vec![format!("job-{c}-{seq}").into_bytes()],
                                only_existing: false,
                            }),
                        ),
                        Workload::Queue => (
                            0,
                            Command::of(Change::Pop {
                                end: End::Left,
                                count: None,
                            }),
                        ),
                        _ => (rng.u32(..keys), cas_command(&mut rng)),
                    };
                    if workload == Workload::Cas && !reserve(budget, key) {
                        if budget
                            .lock()
                            .map_or(true, |b| b.iter().all(|n| *n >= OPS_PER_KEY_MAX))
                        {
                            break;
                        }
                        continue;
                    }
                    let call = us_since(start);
                    let Some(reply) = conns.run(n, &format!("{prefix}{key}"), &command) else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let ret = reply.is_some().then(|| us_since(start));
                    let op_reply = reply.clone();
                    let op = Op {
                        key: key.to_le_bytes().to_vec(),
                        change: command.change,
                        call,
                        ret,
                        reply,
                    };
                    if let Ok(mut h) = history.lock() {
                        h.push(op);
                    }
                    if workload == Workload::Lock {
                        // now and then a holder stalls past its lease (a paused holder): the
                        // lock passes on, and its late release must not free the next one's
                        let held = matches!(op_reply, Some(Reply::Done(true)));
                        let stall = held && rng.u8(0..40) == 0;
                        let pause = if stall {
                            LOCK_LEASE_MS + 300
                        } else {
                            rng.u64(1..20)
                        };
                        std::thread::sleep(Duration::from_millis(pause));
                    }
                }
            });
        }
    });
    let history = history.into_inner().unwrap_or_default();
    let answered = history.iter().filter(|o| o.ret.is_some()).count();
    let unknown = history.len() - answered;
    let mut head = format!(
        "workload={workload:?} operations={} answered={answered} unknown={unknown}",
        history.len()
    );
    if workload == Workload::Lock {
        let late = history.iter().filter(|o| late_acquisition(o)).count();
        head.push_str(&format!(" acquired_after_lease_end={late}"));
    }
    let violation = match workload {
        Workload::Cas | Workload::Register => linearizable::check(&history).err(),
        Workload::Counter => counter_violation(&history, nodes, timeout, prefix),
        Workload::Lock => lock_violation(&history),
        Workload::Queue => queue_violation(&history, nodes, timeout, prefix),
        Workload::Set | Workload::Hash => None,
    };
    Found {
        summary: head,
        violation,
    }
}

/// Take one of `key`'s operations from the budget, if any is left.
fn reserve(budget: &Mutex<Vec<usize>>, key: u32) -> bool {
    let Ok(mut b) = budget.lock() else {
        return false;
    };
    match b.get_mut(key as usize) {
        Some(n) if *n < OPS_PER_KEY_MAX => {
            *n += 1;
            true
        }
        _ => false,
    }
}

fn cas_command(rng: &mut fastrand::Rng) -> Command {
    let token = |rng: &mut fastrand::Rng| format!("t{}", rng.u8(0..3)).into_bytes();
    Command::of(match rng.u8(0..8) {
        0 | 1 => Change::Incr(1),
        2 => Change::Set {
            value: token(rng),
            cond: Cond::Nx,
            get: false,
        },
        3 => Change::Set {
            value: token(rng),
            cond: Cond::IfEq(token(rng)),
            get: false,
        },
        4 => Change::Del(Cond::IfEq(token(rng))),
        5 => Change::Append(b"a".to_vec()),
        6 => Change::Get,
        _ => Change::GetDel,
    })
}

/// A lock client alternates: acquire with its token (odd steps), release it (even).
fn lock_step(c: usize, seq: u64) -> Command {
    let token = format!("c{c}-{}", seq.div_ceil(2)).into_bytes();
    if seq % 2 == 1 {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + LOCK_LEASE_MS;
        Command {
            ttl: Ttl::At(at),
            ..Command::of(Change::Set {
                value: token,
                cond: Cond::Nx,
                get: false,
            })
        }
    } else {
        Command::of(Change::Del(Cond::IfEq(token)))
    }
}

fn counter_violation(
    history: &[Op],
    nodes: &[String],
    timeout: Duration,
    prefix: &str,
) -> Option<String> {
    let replies: Vec<i64> = history
        .iter()
        .filter_map(|o| match o.reply {
            Some(Reply::Int(n)) => Some(n),
            _ => None,
        })
        .collect();
    let distinct: HashSet<i64> = replies.iter().copied().collect();
    if distinct.len() != replies.len() {
        return Some(format!(
            "{} INCR replies, only {} distinct",
            replies.len(),
            distinct.len()
        ));
    }
    let unknown = history.iter().filter(|o| o.ret.is_none()).count() as i64;
    let key = format!("{prefix}0");
    let get = Command::of(Change::Get);
    let last = nodes.iter().find_map(|n| {
        let mut c = Client::connect(n, timeout).ok()?;
        match c.conditional(key.as_bytes(), &get).ok()? {
            Decoded::Reply(Reply::Value(v)) => Some(v),
            _ => None,
        }
    });
    let Some(value) = last else {
        return Some("the final value could not be read".into());
    };
    let fin = value
        .as_deref()
        .and_then(change::parse_i64)
        .unwrap_or_default();
    let acked = replies.len() as i64;
    let max = replies.iter().copied().max().unwrap_or(0);
    if max > fin || fin < acked || fin > acked + unknown {
        return Some(format!(
            "final value {fin}: {acked} increments acknowledged, {unknown} unknown, highest \
             reply {max}"
        ));
    }
    None
}

fn queue_violation(
    history: &[Op],
    nodes: &[String],
    timeout: Duration,
    prefix: &str,
) -> Option<String> {
    let job = |o: &Op| match &o.change {
        Change::Push { items, .. } => items.first().cloned(),
        _ => None,
    };
    let pushed: HashSet<Vec<u8>> = history.iter().filter_map(job).collect();
    let acked: Vec<Vec<u8>> = history
        .iter()
        .filter(|o| o.ret.is_some())
        .filter_map(job)
        .collect();
    let mut taken = HashSet::new();
    for o in history {
        if let Some(Reply::Value(Some(j))) = &o.reply {
            if !pushed.contains(j) {
                return Some(format!(
                    "took {:?}, which nobody pushed",
                    String::from_utf8_lossy(j)
                ));
            }
            if !taken.insert(j.clone()) {
                return Some(format!("{:?} was taken twice", String::from_utf8_lossy(j)));
            }
        }
    }
    let key = format!("{prefix}0");
    let all = Command::of(Change::Range { start: 0, stop: -1 });
    let left = nodes.iter().find_map(|n| {
        let mut c = Client::connect(n, timeout).ok()?;
        match c.conditional(key.as_bytes(), &all).ok()? {
            Decoded::Reply(Reply::Array(Some(items))) => Some(items),
            _ => None,
        }
    });
    let Some(left) = left else {
        return Some("the queue could not be read at the end".into());
    };
    let left: HashSet<Vec<u8>> = left.into_iter().collect();
    let lost: Vec<&Vec<u8>> = acked
        .iter()
        .filter(|j| !taken.contains(*j) && !left.contains(*j))
        .collect();
    // a pop whose outcome is unknown may have taken a job nobody saw taken
    let unknown_pops = history
        .iter()
        .filter(|o| o.ret.is_none() && matches!(o.change, Change::Pop { .. }))
        .count();
    (lost.len() > unknown_pops).then(|| {
        format!(
            "{} acknowledged jobs neither taken nor queued (pops with an unknown outcome: \
             {unknown_pops}), e.g. {:?}",
            lost.len(),
            String::from_utf8_lossy(lost[0])
        )
    })
}

/// When the lease an acquisition called at `call` asked for ends, by the checker's reckoning.
fn lease_end(call: u64) -> u64 {
    (call + LOCK_LEASE_MS * 1000).saturating_sub(LEASE_SLACK_US)
}

/// An acquisition whose reply came back after its lease (reckoned from its call) had ended.
fn late_acquisition(o: &Op) -> bool {
    matches!(
        (&o.change, &o.reply),
        (Change::Set { .. }, Some(Reply::Done(true)))
    ) && o.ret.is_some_and(|r| r >= lease_end(o.call))
}

fn lock_violation(history: &[Op]) -> Option<String> {
    // each acquisition that held the lock: (token, call, from its reply, to its release's call
    // or the lease's end). A reply that came back after the lease's end held nothing: the lease
    // ran out while the round was out (a client must take the lease from its call, as Redlock's
    // validity time does), and the lock may rightly have passed on meanwhile.
    let mut holds: Vec<(Vec<u8>, u64, u64, u64)> = Vec::new();
    for o in history {
        if let (Change::Set { value, .. }, Some(Reply::Done(true)), Some(ret)) =
            (&o.change, &o.reply, o.ret)
        {
            let release = history
                .iter()
                .filter(|r| matches!(&r.change, Change::Del(Cond::IfEq(t)) if t == value))
                .map(|r| r.call)
                .min()
                .unwrap_or(u64::MAX);
            let end = release.min(lease_end(o.call));
            if ret < end {
                holds.push((value.clone(), o.call, ret, end));
            }
        }
    }
    // sorted by start, two holds overlap only if two neighbours do
    holds.sort_by_key(|h| h.2);
    holds.windows(2).find(|w| w[1].2 < w[0].3).map(|w| {
        format!(
            "{} held the lock from {} µs to {} µs (called at {} µs), {} took it at {} µs \
             (called at {} µs)",
            String::from_utf8_lossy(&w[0].0),
            w[0].2,
            w[0].3,
            w[0].1,
            String::from_utf8_lossy(&w[1].0),
            w[1].2,
            w[1].1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(token: &str, call: u64, ret: u64) -> Op {
        Op {
            key: 0u32.to_le_bytes().to_vec(),
            change: Change::Set {
                value: token.as_bytes().to_vec(),
                cond: Cond::Nx,
                get: false,
            },
            call,
            ret: Some(ret),
            reply: Some(Reply::Done(true)),
        }
    }

    fn release(token: &str, call: u64) -> Op {
        Op {
            key: 0u32.to_le_bytes().to_vec(),
            change: Change::Del(Cond::IfEq(token.as_bytes().to_vec())),
            call,
            ret: Some(call + 1_000),
            reply: Some(Reply::Done(true)),
        }
    }

    const LEASE: u64 = LOCK_LEASE_MS * 1000;

    #[test]
    fn two_holders_at_once_are_a_violation() {
        let h = [acquire("a", 0, 1_000), acquire("b", 500, 2_000)];
        assert!(lock_violation(&h).is_some());
        // released before the next one took it: none
        let h = [
            acquire("a", 0, 1_000),
            release("a", 1_500),
            acquire("b", 500, 2_000),
        ];
        assert_eq!(lock_violation(&h), None);
    }

    #[test]
    fn a_lease_ends_at_its_call_plus_the_lease_not_at_its_reply() {
        // b took it just after a's lease ended (reckoned from a's call)
        let h = [acquire("a", 0, 1_000), acquire("b", LEASE, LEASE + 10)];
        assert_eq!(lock_violation(&h), None);
        // and just before: a violation
        let h = [
            acquire("a", 0, 1_000),
            acquire("b", 1_000, LEASE - LEASE_SLACK_US - 1),
        ];
        assert!(lock_violation(&h).is_some());
    }

    #[test]
    fn a_reply_after_its_own_lease_ended_held_nothing() {
        // a's round took longer than the lease: b rightly took the lock after a's lease ended,
        // while a's reply was still on its way
        let h = [
            acquire("a", 0, LEASE + 50_000),
            acquire("b", LEASE + 10_000, LEASE + 20_000),
        ];
        assert_eq!(lock_violation(&h), None);
        // one whose reply came in time still counts
        let h = [
            acquire("a", 0, LEASE - LEASE_SLACK_US - 100),
            acquire("b", 1_000, LEASE - LEASE_SLACK_US - 50),
        ];
        assert!(lock_violation(&h).is_some());
    }
}
