//! Deterministic simulation of membership: five nodes running `core::membership` (the pure
//! SWIM rules the node's gossip shell drives) the way `server::cluster::gossip` drives it —
//! a probe round every `PROBE_INTERVAL_MS` (direct, then `INDIRECT_PROBES` helpers, then
//! suspicion), a gossip round every `GOSSIP_INTERVAL_MS` to `GOSSIP_FANOUT` members (seeds when
//! alone), each exchange merging both views and counting as direct contact — over a seeded
//! network with message loss, partitions that come and go, and paused nodes.
//!
//! Checked for every seed: started from seeds only, the cluster forms; after the faults heal,
//! every node sees every node ALIVE within a bounded time; and then, with nothing failing,
//! no node ever suspects or convicts a member for a long fault-free stretch (a member that
//! answers is never declared dead). `KV_MEMBERSHIP_SEEDS=<n>` sets how many seeds run
//! (default 100), `KV_MEMBERSHIP_SEED=<n>` replays one, `KV_MEMBERSHIP_TRACE=1` prints how
//! long each seed took to converge after the heal (200–400 ms simulated over 100 seeds).
//! A planted bug — a member that never refutes an accusation about itself — fails seed 1.

mod seeds;

use kvstore::core::membership::{Membership, Status, Timing};
use kvstore::limits::{
    GOSSIP_FANOUT, GOSSIP_INTERVAL_MS, INDIRECT_PROBES, PROBE_INTERVAL_MS,
    SUSPECT_TIMEOUT_MS_DEFAULT,
};

const NODES: usize = 5;
/// Simulated time with faults, then to converge after the heal, then fault-free.
const FAULTY_MS: u64 = 60_000;
const CONVERGE_MS: u64 = 30_000;
const QUIET_MS: u64 = 120_000;
const TICK_MS: u64 = GOSSIP_INTERVAL_MS;

struct Sim {
    rng: fastrand::Rng,
    now: u64,
    nodes: Vec<Membership>,
    /// (a, b, until): a and b cannot reach each other until then.
    cuts: Vec<(usize, usize, u64)>,
    paused_until: Vec<u64>,
    loss: f64,
    /// Suspicions and convictions of a member, by anyone, since the last `quiet` reset.
    accusations: Vec<String>,
}

fn id(n: usize) -> String {
    format!("n{n}")
}

fn index(id: &str) -> usize {
    id[1..].parse().unwrap_or(usize::MAX)
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let timing = Timing {
            suspect_timeout_ms: SUSPECT_TIMEOUT_MS_DEFAULT,
            ..Timing::default()
        };
        Sim {
            rng: fastrand::Rng::with_seed(seed),
            now: 1_000_000,
            nodes: (0..NODES)
                .map(|n| Membership::new(&id(n), &id(n), 1, timing, 1_000_000))
                .collect(),
            cuts: Vec::new(),
            paused_until: vec![0; NODES],
            loss: 0.0,
            accusations: Vec::new(),
        }
    }

    fn up(&self, n: usize) -> bool {
        self.paused_until[n] <= self.now
    }

    /// Whether a request from `a` to `b` and its answer get through.
    fn reaches(&mut self, a: usize, b: usize) -> bool {
        let cut = self
            .cuts
            .iter()
            .any(|&(x, y, until)| until > self.now && (x, y) == (a.min(b), a.max(b)));
        let lost = self.loss > 0.0 && self.rng.f64() < self.loss;
        self.up(a) && self.up(b) && !cut && !lost
    }

    /// `a` and `b` swap views; each hears directly from the other.
    fn exchange(&mut self, a: usize, b: usize) -> bool {
        if !self.reaches(a, b) {
            return false;
        }
        let now = self.now;
        let from_a = self.nodes[a].snapshot();
        self.nodes[b].heard_from(&id(a), now);
        let changes: Vec<_> = from_a
            .iter()
            .filter_map(|u| self.nodes[b].apply(u, now))
            .collect();
        self.note(b, &changes);
        let from_b = self.nodes[b].snapshot();
        self.nodes[a].heard_from(&id(b), now);
        let changes: Vec<_> = from_b
            .iter()
            .filter_map(|u| self.nodes[a].apply(u, now))
            .collect();
        self.note(a, &changes);
        true
    }

    fn note(&mut self, at: usize, changes: &[kvstore::core::membership::Change]) {
        for c in changes {
            if matches!(c.to, Status::Suspect | Status::Dead) {
                self.accusations.push(format!(
                    "t={} {} saw {} -> {:?}",
                    self.now,
                    id(at),
                    c.id,
                    c.to
                ));
            }
        }
    }

    fn probe_round(&mut self, a: usize) {
        let target = self.nodes[a].probe_target(&mut self.rng);
        let Some(target) = target else { return };
        let t = index(&target);
        let alive = self.nodes[a].get(&target).map(|m| m.state.status) == Some(Status::Alive);
        if self.exchange(a, t) || !alive {
            return;
        }
        let helpers = self.nodes[a].indirect_helpers(&mut self.rng, &target, INDIRECT_PROBES);
        for h in helpers {
            let h = index(&h);
            if self.reaches(a, h) && self.exchange(h, t) {
                return;
            }
        }
        let now = self.now;
        if let Some(c) = self.nodes[a].suspect(&target, now) {
            self.note(a, &[c]);
        }
    }

    fn gossip_round(&mut self, a: usize) {
        let mut targets: Vec<usize> = self.nodes[a]
            .members()
            .filter(|m| m.state.id != id(a) && m.state.status == Status::Alive)
            .map(|m| index(&m.state.id))
            .collect();
        self.rng.shuffle(&mut targets);
        targets.truncate(GOSSIP_FANOUT);
        if targets.is_empty() && a != 0 {
            targets.push(0); // the seed
        }
        for t in targets {
            self.exchange(a, t);
        }
    }

    fn faults(&mut self) {
        if self.rng.u32(..100) < 2 {
            let (a, b) = (self.rng.usize(..NODES), self.rng.usize(..NODES));
            if a != b {
                let until = self.now + self.rng.u64(1_000..15_000);
                self.cuts.push((a.min(b), a.max(b), until));
            }
        }
        if self.rng.u32(..1000) < 3 {
            let n = self.rng.usize(..NODES);
            self.paused_until[n] = self.now + self.rng.u64(1_000..12_000);
        }
        self.loss = if self.rng.u32(..100) < 5 {
            self.rng.f64() * 0.3
        } else {
            self.loss
        };
    }

    fn tick(&mut self) {
        self.now += TICK_MS;
        for a in 0..NODES {
            if !self.up(a) {
                continue;
            }
            self.gossip_round(a);
            if self.now % PROBE_INTERVAL_MS == 0 {
                self.probe_round(a);
                let now = self.now;
                let changes = self.nodes[a].tick(now);
                self.note(a, &changes);
            }
        }
    }

    fn everyone_alive(&self) -> Option<String> {
        for (a, m) in self.nodes.iter().enumerate() {
            for b in 0..NODES {
                let status = m.get(&id(b)).map(|x| x.state.status);
                if status != Some(Status::Alive) {
                    return Some(format!("{} sees {}: {status:?}", id(a), id(b)));
                }
            }
        }
        None
    }

    fn heal(&mut self) {
        self.cuts.clear();
        self.loss = 0.0;
        self.paused_until = vec![0; NODES];
    }
}

fn run_seed(seed: u64) -> Result<(), String> {
    let mut sim = Sim::new(seed);
    // it forms from the seed alone
    let formed_by = sim.now + CONVERGE_MS;
    while sim.everyone_alive().is_some() {
        if sim.now > formed_by {
            return Err(format!(
                "seed {seed}: no cluster formed: {:?}",
                sim.everyone_alive()
            ));
        }
        sim.tick();
    }
    let faulty_until = sim.now + FAULTY_MS;
    while sim.now < faulty_until {
        sim.faults();
        sim.tick();
    }
    sim.heal();
    let converge_by = sim.now + CONVERGE_MS;
    while let Some(why) = sim.everyone_alive() {
        if sim.now > converge_by {
            return Err(format!(
                "seed {seed}: not converged {CONVERGE_MS} ms after the heal: {why}"
            ));
        }
        sim.tick();
    }
    if std::env::var("KV_MEMBERSHIP_TRACE").is_ok() {
        eprintln!(
            "seed {seed}: converged {} ms after the heal",
            sim.now + CONVERGE_MS - converge_by
        );
    }
    // nothing fails from here: nobody may be accused
    sim.accusations.clear();
    let quiet_until = sim.now + QUIET_MS;
    while sim.now < quiet_until {
        sim.tick();
    }
    if let Some(a) = sim.accusations.first() {
        return Err(format!(
            "seed {seed}: a member that answers was accused ({} times): {a}",
            sim.accusations.len()
        ));
    }
    if let Some(why) = sim.everyone_alive() {
        return Err(format!(
            "seed {seed}: views drifted apart while nothing failed: {why}"
        ));
    }
    Ok(())
}

#[test]
fn membership_forms_converges_after_faults_and_accuses_no_one_who_answers() {
    let seeds = seeds::seeds("MEMBERSHIP", 100);
    for seed in seeds {
        if let Err(e) = run_seed(seed) {
            panic!("{e}\nreplay: KV_MEMBERSHIP_SEED={seed} cargo test --test membership_sim");
        }
    }
}

/// The checker is not vacuous: a node that stops answering for good is convicted, and the
/// survivors still agree on everyone else.
#[test]
fn a_node_that_never_answers_is_convicted() {
    let mut sim = Sim::new(7);
    while sim.everyone_alive().is_some() {
        sim.tick();
    }
    sim.paused_until[3] = u64::MAX;
    for _ in 0..(3 * SUSPECT_TIMEOUT_MS_DEFAULT / TICK_MS) {
        sim.tick();
    }
    for a in [0, 1, 2, 4] {
        let s = sim.nodes[a].get("n3").map(|m| m.state.status);
        assert_eq!(s, Some(Status::Dead), "n{a} sees n3 {s:?}");
    }
    assert!(sim.everyone_alive().is_some());
    assert!(!sim.accusations.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Clocks: `core::clock_fence` driven the way the gossip shell drives it. Each of five nodes has
// a wall clock of its own (a fixed skew, a drift rate, and steps at seeded times) over a true
// time and a monotonic clock that never steps; every gossip round each node probes
// `GOSSIP_FANOUT` random others over a network with seeded one-way delays and loss, measures
// an offset from each answer, and judges its fence; between rounds, every node tries writes
// and checks its fence as each core does. Two nodes at most are ever off, so a majority always
// has good clocks. Checked for every seed:
// - safety: no write passes the fence while the writer's clock is further from true time than
//   the bound plus what the measurement cannot see (the good nodes' own spread and the largest
//   one-way delay);
// - liveness: a node whose clock has been comfortably inside the bound, and not stepped, for a
//   probe interval passes it (from `CLOCK_FIRST_MEASURED_MS` on, once the first probes are in).
// A planted bug — cores that trust the last verdict and ignore their own clock's steps — must
// fail (`a_fence_that_ignores_clock_steps_is_caught`).

use kvstore::core::clock_fence::{FenceView, Offsets, Probe};

const CLOCK_BOUND_MS: u64 = 500;
const CLOCK_SIM_MS: u64 = 120_000;
/// Good clocks stay within this of true time (NTP-disciplined).
const GOOD_SPREAD_MS: i64 = 20;
const DELAY_MAX_MS: u64 = 40;
/// By then every node has measured a majority of the others (seeded fanout and loss).
const CLOCK_FIRST_MEASURED_MS: u64 = 3 * PROBE_INTERVAL_MS;

#[derive(Clone)]
struct SimClock {
    /// Wall = true + skew + drift_ppm * (true - T0) / 1e6 + the steps taken so far.
    skew_ms: i64,
    drift_ppm: i64,
    steps: Vec<(u64, i64)>,
}

impl SimClock {
    fn wall(&self, t: u64) -> u64 {
        let stepped: i64 = self
            .steps
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|s| s.1)
            .sum();
        let since = (t - T0) as i64;
        (t as i64 + self.skew_ms + self.drift_ppm * since / 1_000_000 + stepped) as u64
    }

    fn off(&self, t: u64) -> i64 {
        self.wall(t) as i64 - t as i64
    }
}

struct ClockSim {
    rng: fastrand::Rng,
    clocks: Vec<SimClock>,
    offsets: Vec<Offsets>,
    views: Vec<Option<FenceView>>,
    /// A verdict being judged: when it takes effect, and what it is.
    pending: Vec<Option<(u64, FenceView)>>,
    /// When each node's clock was last outside the comfortable band.
    last_bad: Vec<u64>,
    ignore_steps: bool,
}

const T0: u64 = 1_700_000_000_000;

impl ClockSim {
    fn new(seed: u64, ignore_steps: bool) -> ClockSim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let bad: Vec<usize> = {
            let mut all: Vec<usize> = (0..NODES).collect();
            rng.shuffle(&mut all);
            all.truncate(2);
            all
        };
        let bound = CLOCK_BOUND_MS as i64;
        let clocks = (0..NODES)
            .map(|n| {
                if !bad.contains(&n) {
                    return SimClock {
                        skew_ms: rng.i64(-GOOD_SPREAD_MS / 2..=GOOD_SPREAD_MS / 2),
                        drift_ppm: rng.i64(-50..=50),
                        steps: Vec::new(),
                    };
                }
                // a bad clock: skewed (maybe far), drifting fast, stepped now and then
                let skew_ms = match rng.u8(0..3) {
                    0 => rng.i64(-70_000..=70_000),
                    1 => rng.i64(-3 * bound..=3 * bound),
                    _ => 0,
                };
                let steps = (0..rng.usize(0..4))
                    .map(|_| {
                        let at = T0 + rng.u64(0..CLOCK_SIM_MS);
                        (at, rng.i64(-4 * bound..=4 * bound))
                    })
                    .collect();
                SimClock {
                    skew_ms,
                    drift_ppm: rng.i64(-20_000..=20_000),
                    steps,
                }
            })
            .collect();
        ClockSim {
            rng,
            clocks,
            offsets: vec![Offsets::default(); NODES],
            views: vec![None; NODES],
            pending: vec![None; NODES],
            last_bad: vec![T0; NODES],
            ignore_steps,
        }
    }

    /// One gossip round at true time `t`: probes, then each node judges.
    fn round(&mut self, t: u64) {
        for a in 0..NODES {
            let mut others: Vec<usize> = (0..NODES).filter(|&b| b != a).collect();
            self.rng.shuffle(&mut others);
            for &b in others.iter().take(GOSSIP_FANOUT) {
                if self.rng.f64() < 0.1 {
                    continue;
                }
                let (d1, d2) = (
                    self.rng.u64(0..=DELAY_MAX_MS),
                    self.rng.u64(0..=DELAY_MAX_MS),
                );
                let back = t + d1 + d2;
                let probe = Probe {
                    sent_mono_ms: t,
                    received_mono_ms: back,
                    received_wall_ms: self.clocks[a].wall(back),
                    peer_wall_ms: self.clocks[b].wall(t + d1),
                };
                self.offsets[a].observe(&id(b), probe);
            }
            // judged once every answer is in, with the clocks of that moment
            let at = t + 2 * DELAY_MAX_MS;
            let (wall, mono) = (self.clocks[a].wall(at), at);
            let live: Vec<String> = (0..NODES).filter(|&b| b != a).map(id).collect();
            let live: Vec<&str> = live.iter().map(String::as_str).collect();
            let v = self.offsets[a].verdict(&live, true, wall, mono, CLOCK_BOUND_MS);
            self.pending[a] = Some((at, FenceView::new(v, wall, mono, CLOCK_BOUND_MS)));
        }
    }

    /// Verdicts judged by `t` take effect.
    fn promote(&mut self, t: u64) {
        for n in 0..NODES {
            if let Some((at, view)) = self.pending[n] {
                if at <= t {
                    self.views[n] = Some(view);
                    self.pending[n] = None;
                }
            }
        }
    }

    /// Node `n` tries a write at true time `t`: may it?
    fn may_write(&self, n: usize, t: u64) -> bool {
        let Some(view) = self.views[n] else {
            return false;
        };
        if self.ignore_steps {
            return matches!(
                view.verdict,
                kvstore::core::clock_fence::Verdict::Serving { .. }
            );
        }
        view.check(self.clocks[n].wall(t), t).is_ok()
    }
}

fn run_clock_seed(seed: u64, ignore_steps: bool) -> Result<(), String> {
    let mut sim = ClockSim::new(seed, ignore_steps);
    // what a measurement cannot tell apart from a good clock
    let slack = GOOD_SPREAD_MS + DELAY_MAX_MS as i64 + 1;
    let unsafe_past = CLOCK_BOUND_MS as i64 + slack;
    let comfortable = CLOCK_BOUND_MS as i64 - slack;
    let mut t = T0;
    while t < T0 + CLOCK_SIM_MS {
        sim.round(t);
        // writes between this round and the next, every 10 ms
        for w in (t + 1..t + TICK_MS).step_by(10) {
            sim.promote(w);
            for n in 0..NODES {
                let off = sim.clocks[n].off(w);
                // a step (even back toward the truth) is re-measured before it is trusted
                let stepped = sim.clocks[n]
                    .steps
                    .iter()
                    .any(|(at, _)| *at <= w && w - at < 10);
                if off.abs() > comfortable || stepped {
                    sim.last_bad[n] = w;
                }
                let ok = sim.may_write(n, w);
                if ok && off.abs() > unsafe_past {
                    return Err(format!(
                        "seed {seed}: n{n} wrote at {w} with its clock {off} ms off (bound \
                         {CLOCK_BOUND_MS})"
                    ));
                }
                // (random fanout with loss may take a few rounds to reach every peer once)
                let settled =
                    w > T0 + CLOCK_FIRST_MEASURED_MS && w - sim.last_bad[n] > PROBE_INTERVAL_MS;
                if !ok && settled {
                    return Err(format!(
                        "seed {seed}: n{n} refused at {w} with its clock {off} ms off, inside \
                         the bound for {} ms; clocks now {:?}; its view {:?}, estimates {:?}",
                        w - sim.last_bad[n],
                        (0..NODES).map(|m| sim.clocks[m].off(w)).collect::<Vec<_>>(),
                        sim.views[n],
                        sim.offsets[n].estimates().collect::<Vec<_>>()
                    ));
                }
            }
        }
        t += TICK_MS;
    }
    Ok(())
}

fn clock_seeds() -> Vec<u64> {
    seeds::seeds("CLOCK", 100)
}

#[test]
fn a_node_with_a_wrong_clock_fences_itself_and_a_good_one_never_does() {
    for seed in clock_seeds() {
        if let Err(e) = run_clock_seed(seed, false) {
            panic!("{e}\nreplay: KV_CLOCK_SEED={seed} cargo test --test membership_sim");
        }
    }
}

/// The checker is not vacuous: cores that trust the last verdict and ignore their own
/// clock's steps let a stepped clock write before the next probe round.
#[test]
fn a_fence_that_ignores_clock_steps_is_caught() {
    let caught = (1..=100)
        .filter(|&s| run_clock_seed(s, true).is_err())
        .count();
    assert!(caught > 0, "no seed caught the planted bug");
}
