//! The coordinator: runs one client request against the key's N replicas (Dynamo §4.5).
//!
//! Writes go to all N replicas in parallel (the local one without a network hop) and succeed
//! at W acknowledgements; reads ask all N, answer with the newest of the first R, and repair
//! every replica that answered with an older version or none — including replicas that answer
//! after the client got its reply. A write refused as stale by replicas moves this core's clock
//! past the stored version and is retried after a randomised pause (at most
//! `STALE_WRITE_ATTEMPTS_MAX` attempts), so one client's sequential writes through different
//! coordinators land in order and writers that collide on a hot key do not fail; one that still
//! fails says "stale". A read-modify-write asks for `OnStale::Report` instead and reads again.
//! Fewer than W (R) answers within the timeout is an explicit error naming how many replicas
//! answered.
//!
//! Hot path (`start`, `Answers`): the replica on this core runs inline, requests to peers with
//! an open connection are queued on it directly, and one poll loop gathers the answers — no
//! task, timer or cross-thread channel per replica operation. Only a replica on another core of
//! this node or a peer not yet connected gets a task of its own. Before taking a write's
//! version the coordinator waits for room on its peers' connections (backpressure), so its own
//! writes leave in version order — but only on a peer that is making progress: a stalled one
//! (requests pending, no answer for `PEER_STALL_MS`: silent, stopped or cut off) is left out at
//! once, so a silent replica costs no latency while W (R) others answer.
//!
//! The counting itself is `core::quorum::Tally` (pure); this file only moves messages.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::core::quorum::Outcome;
use crate::core::round::{
    counts_on, take_back, Candidate, Held, ReadRound, Standing, WriteAnswer, WriteRound,
};
use crate::core::version::Version;
use crate::limits::{
    CLOCK_FIRST_PROBE_WAIT_MS, CLOCK_UNMEASURED_POLL_MS, PEER_INFLIGHT_MAX, PEER_ROOM_WAIT_MS,
    PEER_STALL_MS, REPLICA_TIMEOUT_MS,
};
use crate::server::cluster::peer::{Call, Error as PeerError, Peer};
use crate::server::cluster::view::{RingView, Target};
use crate::server::data::messages::{Op, OpResult};
use crate::server::data::shard::storage_failure;
use crate::server::data::shard::OpRef;
use crate::server::notify::{channel, Receiver, Sender};
use crate::server::runtime::CoreCtx;
use crate::storage::hints::Added;
use crate::storage::wal_file::Durable;
use crate::wire::native::Reply;
use crate::wire::native::{Opcode, Status, FLAG_TOMBSTONE, FLAG_WAS_LIVE};

fn timeout() -> Duration {
    Duration::from_millis(REPLICA_TIMEOUT_MS)
}

/// What a write does when replicas refuse it because they hold a newer version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStale {
    /// Go again past the newer version (a plain SET or DEL: the client's write must land).
    Retry,
    /// Answer `OpResult::Stale` at once: the value was derived from a read that is now out of
    /// date (a read-modify-write), and the caller reads again rather than push an older value
    /// past a newer one.
    Report,
}

/// PUT (`Some`) or DELETE (`None`) through the quorum.
pub async fn write(ctx: Rc<CoreCtx>, key: Box<[u8]>, value: Option<Box<[u8]>>) -> OpResult {
    write_with(ctx, key, value, OnStale::Retry).await
}

/// The randomised pause before attempt `attempt` of a write that lost to a newer version
/// (`core::round::stale_pause_cap_ms`), so two writers racing on one key (or one starved of
/// CPU for a moment) stop colliding in step.
pub(crate) async fn stale_pause(attempt: u32) {
    let cap = crate::core::round::stale_pause_cap_ms(attempt);
    if cap > 0 {
        glommio::timer::sleep(Duration::from_millis(fastrand::u64(1..=cap))).await;
    }
}

/// `write`, with the choice of what a lost-to-a-newer-version round does.
pub async fn write_with(
    ctx: Rc<CoreCtx>,
    key: Box<[u8]>,
    value: Option<Box<[u8]>>,
    on_stale: OnStale,
) -> OpResult {
    let view = ctx.view();
    let targets = view.write_targets(&key);
    // Wait for room *before* taking a version: versions leave this core in the order they
    // are issued, so its own concurrent writes to one key never reach a replica stale.
    let skip = wait_for_replicas(&ctx, &targets.0, view.effective().w).await;
    if let Err(fenced) = clock_checked(&ctx).await {
        return clock_fenced(fenced);
    }
    let mut version = match ctx.shard.tick_leased().await {
        Ok(v) => v,
        Err(e) => return storage_failure(&e),
    };
    let mut attempt = 1;
    loop {
        let (result, round) = write_once(
            &ctx,
            &view,
            &targets,
            &skip,
            &key,
            value.as_deref(),
            version,
        )
        .await;
        let stale = round.as_ref().and_then(WriteRound::stale);
        let stored = match (result, stale) {
            (r @ OpResult::Written { .. }, _) => return r,
            (r, None) => return r,
            (_, Some(stored)) => stored,
        };
        // Refused as stale: a replica holds a newer version (a concurrent writer, or this
        // client's own earlier write through a coordinator whose clock runs ahead of ours).
        // Move our clock past it and go again, a bounded number of times.
        if let Err(e) = ctx.shard.observe(stored, "a replica's stored version") {
            return stale_failure(format!("stale: the key holds a {e}"));
        }
        if on_stale == OnStale::Report {
            return OpResult::Stale { stored };
        }
        ctx.metrics.stale_retry();
        if round.and_then(|r| r.retry_past(attempt)).is_none() {
            return stale_failure(format!(
                "stale: replicas kept answering with newer versions of this key (newest \
                 {}.{:#x}), written concurrently; gave up after {attempt} attempts",
                stored.hlc, stored.writer
            ));
        }
        attempt += 1;
        stale_pause(attempt).await;
        if let Err(fenced) = ctx.node.clock.check() {
            return clock_fenced(fenced);
        }
        version = match ctx.shard.tick_leased().await {
            Ok(v) => v,
            Err(e) => return storage_failure(&e),
        };
        log::debug!("stale write retried past {stored:?} (attempt {attempt})");
    }
}

/// Whether this node's clock lets it write. Just after a start, before any peer answered a
/// probe, a write waits for the first measurement (`CLOCK_FIRST_PROBE_WAIT_MS`) rather than
/// fail at once.
pub(crate) async fn clock_checked(ctx: &CoreCtx) -> Result<(), crate::core::clock_fence::Fenced> {
    use crate::core::clock_fence::Fenced;
    let end = Instant::now() + Duration::from_millis(CLOCK_FIRST_PROBE_WAIT_MS);
    while matches!(ctx.node.clock.peek(), Err(Fenced::Unmeasured)) && Instant::now() < end {
        glommio::timer::sleep(Duration::from_millis(CLOCK_UNMEASURED_POLL_MS)).await;
    }
    ctx.node.clock.check()
}

/// A write this node may not coordinate: its clock is off (`core::clock_fence`).
pub(crate) fn clock_fenced(fenced: crate::core::clock_fence::Fenced) -> OpResult {
    OpResult::Failed {
        status: Status::Unavailable,
        message: fenced.to_string(),
    }
}

/// Hinted handoff: if replica `t` missed this write because it could not be reached (down,
/// cut off, skipped, timed out), keep the write as a hint for it. Hints never count toward W.
fn hint_if_missed(
    ctx: &CoreCtx,
    t: &Target,
    r: &OpResult,
    key: &[u8],
    value: Option<&[u8]>,
    version: Version,
) {
    let missed = matches!(
        r,
        OpResult::Failed {
            status: Status::Unavailable | Status::ShuttingDown,
            ..
        }
    );
    if !missed || t.local {
        return;
    }
    match ctx.shard.add_hint(&t.id, key, value, version) {
        Added::Held => ctx.metrics.hint_stored(),
        Added::Moot => {}
        Added::Full | Added::WindowPassed => {
            ctx.metrics.hint_dropped();
            if let Some(more) = ctx.hint_drop_log.due() {
                log::warn!(
                    "core {}: replica {} missed a write and no hint was kept (the hint bounds \
                     or window were reached): anti-entropy will bring it up to date{more}",
                    ctx.core,
                    t.id
                );
            }
        }
    }
}

/// After the quorum was won: gather the replicas still out in a task of its own, and hint
/// the ones that fail.
fn hint_stragglers(
    ctx: &Rc<CoreCtx>,
    mut answers: Answers,
    replicas: Arc<[Target]>,
    key: &[u8],
    value: Option<&[u8]>,
    version: Version,
) {
    let (c, key, value) = (
        ctx.clone(),
        Box::<[u8]>::from(key),
        value.map(Box::<[u8]>::from),
    );
    glommio::spawn_local(async move {
        while let Some((m, r)) = answers.next(&c).await {
            hint_if_missed(&c, &replicas[m], &r, &key, value.as_deref(), version);
        }
    })
    .detach();
}

pub(crate) fn stale_failure(message: String) -> OpResult {
    OpResult::Failed {
        status: Status::Stale,
        message,
    }
}

pub(crate) async fn write_once(
    ctx: &Rc<CoreCtx>,
    view: &Arc<RingView>,
    (replicas, pending): &(Arc<[Target]>, usize),
    skip: &[usize],
    key: &[u8],
    value: Option<&[u8]>,
    version: Version,
) -> (OpResult, Option<WriteRound>) {
    let rep = view.effective();
    let (replicas, pending) = (replicas, *pending);
    let needed = rep.w + pending;
    if replicas.len() < needed {
        let message = view.no_replicas(replicas.len(), needed);
        let failed = OpResult::Failed {
            status: Status::Unavailable,
            message,
        };
        return (failed, None);
    }
    let mut answers = start(ctx, replicas, skip, OpRef::ReplicaPut(key, value, version));
    let mut round = WriteRound::new(replicas.len(), needed);
    let mut last_error = String::new();
    while let Some((m, r)) = answers.next(ctx).await {
        hint_if_missed(ctx, &replicas[m], &r, key, value, version);
        let answer = match r {
            OpResult::Written { was_live, .. } => WriteAnswer::Written { was_live },
            OpResult::Stale { stored } => WriteAnswer::Stale { stored },
            OpResult::Failed { message, status } => {
                last_error = message;
                WriteAnswer::Failed {
                    out_of_memory: status == Status::OutOfMemory,
                }
            }
            _ => WriteAnswer::Failed {
                out_of_memory: false,
            },
        };
        match round.absorb(m, answer) {
            Outcome::Won => {
                if answers.outstanding() {
                    // Replicas still to answer: one that fails gets a hint (Dynamo §4.6).
                    hint_stragglers(ctx, answers, replicas.clone(), key, value, version);
                }
                let was_live = round.was_live();
                return (OpResult::Written { was_live, version }, Some(round));
            }
            // Lost is final, but keep counting until every replica answered or timed out, so
            // the error names how many acknowledged (the write may remain on those).
            Outcome::Lost | Outcome::Pending => {}
        }
    }
    ctx.metrics.quorum_failure(false);
    log::debug!(
        "write quorum lost: skipped {skip:?}, standings {:?}",
        replicas
            .iter()
            .map(|t| (t.id.clone(), t.local, ctx.peer(&t.addr).standing()))
            .collect::<Vec<_>>()
    );
    let message = format!(
        "quorum not reached: {} of {} replicas acknowledged the write, {} needed{}{}",
        round.successes(),
        replicas.len(),
        needed,
        if pending > 0 {
            format!(" ({pending} of them pending owners of a range being moved)")
        } else {
            String::new()
        },
        if last_error.is_empty() {
            String::new()
        } else {
            format!(" (last error: {last_error})")
        }
    );
    // A replica at --max-memory is the reason to tell (RESP answers it as Redis's -OOM).
    let status = if round.out_of_memory() {
        Status::OutOfMemory
    } else {
        Status::Unavailable
    };
    (OpResult::Failed { status, message }, Some(round))
}

/// GET through the quorum, with read repair.
pub async fn read(ctx: Rc<CoreCtx>, key: Box<[u8]>) -> OpResult {
    read_fields(ctx, key, Box::default()).await
}

/// GET through the quorum; with `fields` named (`collection::encode_fields`), a collection's
/// replicas answer only those fields (no read repair then: a projection is never stored).
pub async fn read_fields(ctx: Rc<CoreCtx>, key: Box<[u8]>, fields: Box<[u8]>) -> OpResult {
    let view = ctx.view();
    let rep = view.effective();
    let replicas = view.replicas(&key);
    if replicas.len() < rep.r {
        return OpResult::Failed {
            status: Status::Unavailable,
            message: view.no_replicas(replicas.len(), rep.r),
        };
    }
    let skip = wait_for_replicas(&ctx, &replicas, rep.r).await;
    let mut answers = start(&ctx, &replicas, &skip, OpRef::ReplicaGet(&key, &fields));
    // Every answer is kept once, in `heard` (collections are joined, not picked by version);
    // the round tallies them and names the newest by its index there.
    let mut round: ReadRound<usize> = ReadRound::new(replicas.len(), rep.r);
    let mut outcome = Outcome::Pending;
    let mut heard: Vec<Heard> = Vec::new();
    while outcome != Outcome::Won {
        let Some((m, r)) = answers.next(&ctx).await else {
            break;
        };
        outcome = round.absorb(m, hear(&mut heard, m, r));
    }
    if outcome != Outcome::Won {
        ctx.metrics.quorum_failure(true);
        let message = format!(
            "quorum not reached: {} of {} replicas answered the read, {} needed",
            round.successes(),
            replicas.len(),
            rep.r
        );
        return OpResult::Failed {
            status: Status::Unavailable,
            message,
        };
    }
    if heard.iter().any(|(_, _, c)| is_collection(c.as_deref())) {
        let repair = fields.is_empty();
        return read_joined(ctx, key, replicas, answers, heard, repair).await;
    }
    let answer = match round.newest() {
        Some((version, Some(&i))) => match &heard[i].2 {
            Some(v) => OpResult::Value {
                value: v.clone(),
                version,
            },
            None => OpResult::NotFound,
        },
        _ => OpResult::NotFound,
    };
    // Repair in the background: late answers included.
    let c = ctx.clone();
    glommio::spawn_local(async move {
        while let Some((m, r)) = answers.next(&ctx).await {
            round.absorb(m, hear(&mut heard, m, r));
        }
        let behind = round.behind();
        if let Some((version, newest)) = round.into_newest() {
            let value = newest.and_then(|i| heard[i].2.clone());
            for m in behind {
                let op = Op::ReplicaPut {
                    key: key.clone(),
                    value: value.clone(),
                    version,
                };
                let (tx, _rx) = channel();
                spawn_replica_call(&c, &replicas[m], m, op, tx);
                c.metrics.read_repair();
                log::debug!("read repair of member {m} to {version:?}");
            }
        }
    })
    .detach();
    answer
}

/// A stored version and cell (`None`: a tombstone).
type Stored = (Version, Option<Box<[u8]>>);
/// A replica's answer to a read: its index, version and cell.
type Heard = (usize, Version, Option<Box<[u8]>>);

fn is_collection(cell: Option<&[u8]>) -> bool {
    cell.and_then(|c| crate::core::cell::decode(c).ok())
        .is_some_and(|c| c.kind == crate::core::cell::Kind::Collection)
}

/// The answers fold into one value by `collection::join`, as each replica's store would.
fn join_all(heard: &[Heard]) -> Option<Stored> {
    use crate::core::crdt::collection::{join, Joined};
    let mut acc: Option<Stored> = None;
    for (_, v, c) in heard {
        if *v == Version::ZERO && c.is_none() {
            continue; // never written there
        }
        let stored = acc.as_ref().map(|(sv, sc)| (*sv, sc.as_deref()));
        match join(stored, (*v, c.as_deref())) {
            Ok(Joined::Same) | Err(_) => {}
            Ok(Joined::Store(nv, nc)) => acc = Some((nv, nc)),
            Ok(Joined::NotMine) => {
                if acc.as_ref().is_none_or(|(sv, _)| sv < v) {
                    acc = Some((*v, c.clone()));
                }
            }
        }
    }
    acc
}

/// A read that met a collection: the answers joined, and every replica that answered with
/// something else repaired to the join (late answers included, in the background).
async fn read_joined(
    ctx: Rc<CoreCtx>,
    key: Box<[u8]>,
    replicas: std::sync::Arc<[Target]>,
    mut answers: Answers,
    mut heard: Vec<Heard>,
    repair: bool,
) -> OpResult {
    let answer = match join_all(&heard) {
        Some((version, Some(value))) => OpResult::Value { value, version },
        _ => OpResult::NotFound,
    };
    if !repair {
        return answer;
    }
    let c = ctx.clone();
    glommio::spawn_local(async move {
        while let Some((m, r)) = answers.next(&ctx).await {
            if let Some((v, cell)) = held(r) {
                heard.push((m, v, cell));
            }
        }
        let Some((version, value)) = join_all(&heard) else {
            return;
        };
        for (m, v, cell) in &heard {
            if *v == version && *cell == value {
                continue;
            }
            let op = Op::ReplicaPut {
                key: key.clone(),
                value: value.clone(),
                version,
            };
            let (tx, _rx) = channel();
            spawn_replica_call(&c, &replicas[*m], *m, op, tx);
            c.metrics.read_repair();
            log::debug!("read repair (join) of member {m} to {version:?}");
        }
    })
    .detach();
    answer
}

/// Keep replica `m`'s answer in `heard`; what the read round takes of it (the value named by
/// its index in `heard`).
fn hear(heard: &mut Vec<Heard>, m: usize, r: OpResult) -> Held<usize> {
    let (version, cell) = held(r)?;
    let at = cell.as_ref().map(|_| heard.len());
    heard.push((m, version, cell));
    Some((version, at))
}

/// A replica read's answer as the read round takes it.
fn held(r: OpResult) -> Held<Box<[u8]>> {
    match r {
        OpResult::Value { value, version } => Some((version, Some(value))),
        OpResult::Tombstone { version } => Some((version, None)),
        OpResult::NotFound => Some((Version::ZERO, None)),
        _ => None,
    }
}

/// The replica on this core: executed at once; a write's answer waits for its WAL record.
struct Here {
    m: usize,
    result: OpResult,
    durable: Option<Durable>,
}

impl Here {
    fn run(ctx: &Rc<CoreCtx>, m: usize, op: OpRef<'_>) -> Here {
        let (result, ticket) = ctx.shard.execute(op);
        let durable = ticket.map(|t| ctx.shard.wal.durable(t));
        Here { m, result, durable }
    }
}

/// A replica request queued on an open peer connection.
struct Remote {
    m: usize,
    opcode: Opcode,
    answer: Receiver<Result<Reply, PeerError>>,
    addr: Arc<str>,
    sent: Instant,
}

/// Start `op` on every target: inline when the replica is this core, queued on the peer's
/// connection when it is open, else (another core of this node, a peer not yet connected) in
/// a task of its own. No task, timer or cross-thread channel on the common path.
fn start(ctx: &Rc<CoreCtx>, replicas: &[Target], skip: &[usize], op: OpRef<'_>) -> Answers {
    let (tx, rx) = channel();
    let mut answers = Answers {
        rx,
        here: None,
        remote: Vec::with_capacity(replicas.len()),
    };
    let key = op_key(op);
    let sent = Instant::now();
    for (m, t) in replicas.iter().enumerate() {
        if skip.contains(&m) {
            ctx.metrics.replica_skipped();
            if let Some(more) = ctx.skip_log.due() {
                log::warn!(
                    "core {}: replica {} left out of writes and reads (stalled or full \
                     connection); it gets hints{more}",
                    ctx.core,
                    t.id
                );
            }
            let message = format!(
                "member {} left out: {PEER_INFLIGHT_MAX} requests already pending",
                t.id
            );
            let _ = tx.send((
                m,
                OpResult::Failed {
                    status: Status::Unavailable,
                    message,
                },
            ));
            continue;
        }
        if t.local
            && matches!(op, OpRef::ReplicaGet(..) | OpRef::ReplicaPut(..))
            && ctx.node.wal.repair_pending()
        {
            // This replica's WAL was damaged: its answer could be the hole (a read's value, or
            // a write accepted below a newer version it lost), never count it.
            let _ = tx.send((
                m,
                OpResult::Failed {
                    status: Status::Unavailable,
                    message: crate::server::front::connection::REPAIRING.to_string(),
                },
            ));
            continue;
        }
        if t.local && ctx.ring.core_for_key(key) == ctx.core {
            answers.here = Some(Here::run(ctx, m, op));
            continue;
        }
        if !t.local && !t.dead {
            if let Some(w) = wire_of(op) {
                let queued = ctx.peer(&t.addr).send_now(w, timeout());
                if let Some(answer) = queued {
                    answers.remote.push(Remote {
                        m,
                        opcode: w.opcode,
                        answer,
                        addr: t.addr.clone(),
                        sent,
                    });
                    continue;
                }
            }
        }
        spawn_replica_call(ctx, t, m, Op::from_ref(op), tx.clone());
    }
    answers
}

fn op_key<'a>(op: OpRef<'a>) -> &'a [u8] {
    match op {
        OpRef::Get(key)
        | OpRef::Put(key, _)
        | OpRef::Delete(key)
        | OpRef::ReplicaPut(key, _, _)
        | OpRef::ReplicaGet(key, _)
        | OpRef::Consensus(key, _, _)
        | OpRef::Conditional(key, _)
        | OpRef::Collection(key, _) => key,
    }
}

/// The answers to one replicated operation, as `(replica index, result)`: the replica on
/// this core (if any), the requests queued on peer connections, and by message the others.
/// `None` once every replica answered or gave up.
struct Answers {
    rx: Receiver<(usize, OpResult)>,
    here: Option<Here>,
    remote: Vec<Remote>,
}

impl Answers {
    /// Whether some replica has not answered yet.
    fn outstanding(&self) -> bool {
        self.here.is_some() || !self.remote.is_empty() || !self.rx.is_finished()
    }

    async fn next(&mut self, ctx: &CoreCtx) -> Option<(usize, OpResult)> {
        std::future::poll_fn(|cx| {
            if let Some(h) = self.here.as_mut() {
                let written = match h.durable.as_mut() {
                    None => Poll::Ready(Ok(())),
                    Some(d) => Pin::new(d).poll(cx),
                };
                if let Poll::Ready(w) = written {
                    if let Some(h) = self.here.take() {
                        let r = match w {
                            Ok(()) => h.result,
                            Err(e) => storage_failure(&e),
                        };
                        return Poll::Ready(Some((h.m, r)));
                    }
                }
            }
            for i in 0..self.remote.len() {
                let r = &self.remote[i];
                if let Poll::Ready(answer) = Pin::new(&mut r.answer.recv()).poll(cx) {
                    let r = self.remote.swap_remove(i);
                    ctx.metrics.replica_rpc_latency.observe(r.sent.elapsed());
                    let answer =
                        answer.unwrap_or_else(|| Err(PeerError::Broken(r.addr.to_string())));
                    let result = remote_result(ctx, &r.addr, r.opcode, answer);
                    return Poll::Ready(Some((r.m, result)));
                }
            }
            match Pin::new(&mut self.rx.recv()).poll(cx) {
                // The others answered; ours or a queued request is still out.
                Poll::Ready(None) if self.here.is_some() || !self.remote.is_empty() => {
                    Poll::Pending
                }
                other => other,
            }
        })
        .await
    }
}

/// Backpressure: wait until every live remote replica's connection has room for a request,
/// each for at most `PEER_ROOM_WAIT_MS`. Returns the replicas still without room: they are
/// left out of this operation.
///
/// Leaving out a replica that is busy rather than silent must not cost the quorum: when fewer
/// than `needed` replicas would remain, the coordinator goes on waiting (up to
/// `REPLICA_TIMEOUT_MS`) for room on the full ones still answering, as many as it needs. (Under a
/// burst of more concurrent writes than two connections' windows, both peers of a 3-replica key
/// could be full at once for longer than `PEER_ROOM_WAIT_MS` on a loaded machine; leaving both
/// out failed writes that a short wait would have completed.)
async fn wait_for_replicas(ctx: &Rc<CoreCtx>, replicas: &[Target], needed: usize) -> Vec<usize> {
    // (the clock is read only when some connection is full: the common path reads none)
    let mut room_wait: Option<Instant> = None;
    let mut full = Vec::new();
    let mut roomy = Vec::new();
    for (m, t) in replicas.iter().enumerate() {
        if t.local || t.dead {
            continue;
        }
        let peer = ctx.peer(&t.addr);
        if peer.has_room() {
            roomy.push((m, peer));
            continue;
        }
        let by = *room_wait
            .get_or_insert_with(|| Instant::now() + Duration::from_millis(PEER_ROOM_WAIT_MS));
        if wait_for_room(&peer, by).await {
            roomy.push((m, peer));
        } else {
            full.push(m);
        }
    }
    // A replica with room is not always one to count on: a silent one may have room because it
    // was left out of writes while silent, and a stopped peer's connection breaks and so has
    // room at once. While another replica is merely full, these are not counted on either, and
    // `take_back` ranks them all (the slow but answering one first). With none full, they
    // are used as they are: a broken connection redials.
    if !full.is_empty() {
        full.extend(
            roomy
                .iter()
                .filter(|(_, p)| p.standing() != Standing::Answering)
                .map(|(m, _)| *m),
        );
    }
    let live = replicas.iter().filter(|t| !t.dead).count();
    if live - full.len() < needed {
        // The quorum needs some of them: wait (up to the replica timeout) for room, taking back
        // the best-standing ones first. A stalled one is waited for too (a slow peer looks
        // stalled for a moment), since without it the operation fails anyway; a broken one
        // (it has "room" at once) only when nothing better is left (`round::take_back`).
        let deadline = Instant::now() + timeout();
        // replicas taken back that may not answer (silent, redialed, broken): sent to, but
        // not counted on while a replica still full could yet be
        let mut unsure = 0;
        let peers: Vec<(usize, Rc<Peer>)> = full
            .iter()
            .map(|&m| (m, ctx.peer(&replicas[m].addr)))
            .collect();
        loop {
            let settle = Instant::now() >= deadline;
            let still: Vec<&(usize, Rc<Peer>)> =
                peers.iter().filter(|(m, _)| full.contains(m)).collect();
            let candidates: Vec<Candidate> = still
                .iter()
                .map(|(m, p)| Candidate {
                    index: *m,
                    standing: p.standing(),
                    room: p.has_room(),
                    quiet_ms: p.quiet_ms(),
                })
                .collect();
            let short = needed.saturating_sub(live - full.len() - unsure);
            for m in take_back(&candidates, short, settle) {
                full.retain(|f| *f != m);
                if candidates
                    .iter()
                    .any(|c| c.index == m && !counts_on(c, settle))
                {
                    unsure += 1;
                }
            }
            if live - full.len() - unsure >= needed || settle || full.is_empty() {
                break;
            }
            // Wait one slice for room on the best-ranked replica still full.
            let Some((_, best)) = still
                .iter()
                .filter(|(m, _)| full.contains(m))
                .min_by_key(|(_, p)| (p.standing(), p.quiet_ms()))
            else {
                break;
            };
            wait_one_slice(best).await;
        }
    }
    full
}

/// Wait for room on a busy peer's connection until `deadline`, in slices of `PEER_STALL_MS`;
/// a peer that stops answering meanwhile (silent, not slow) is given up at once, since waiting
/// for it would only add latency to every request. Whether there is room.
async fn wait_for_room(peer: &Peer, deadline: Instant) -> bool {
    loop {
        if peer.has_room() {
            return true;
        }
        if peer.stalled() || Instant::now() >= deadline {
            return false;
        }
        wait_one_slice(peer).await;
    }
}

/// Wait up to `PEER_STALL_MS` for room on `peer`'s connection.
async fn wait_one_slice(peer: &Peer) {
    let slice = Duration::from_millis(PEER_STALL_MS);
    let _ = glommio::timer::timeout(slice, async {
        peer.wait_for_space().await;
        Ok(())
    })
    .await;
}

/// Run `op` on target `t` (locally when it is us) and send `(m, result)` to `tx`, `m` being
/// the target's index in the caller's list.
fn spawn_replica_call(
    ctx: &Rc<CoreCtx>,
    t: &Target,
    m: usize,
    op: Op,
    tx: Sender<(usize, OpResult)>,
) {
    let ctx = ctx.clone();
    let addr = t.addr.clone();
    let local = t.local;
    if !local && t.dead {
        // A DEAD member does not answer: count it as failed at once (strict quorum).
        let message = format!("member {} is DEAD", t.id);
        let _ = tx.send((
            m,
            OpResult::Failed {
                status: Status::Unavailable,
                message,
            },
        ));
        return;
    }
    glommio::spawn_local(async move {
        let r = if local {
            local_call(&ctx, op).await
        } else {
            remote_call(&ctx, &addr, op).await
        };
        let _ = tx.send((m, r));
    })
    .detach();
}

/// A replica operation on this node: on this core, or on the owning core by message.
pub async fn local_call(ctx: &Rc<CoreCtx>, op: Op) -> OpResult {
    let owner = ctx.ring.core_for_key(op_key(op.as_ref()));
    if owner == ctx.core {
        let (result, ticket) = ctx.shard.execute(op.as_ref());
        if let Some(t) = ticket {
            if let Err(e) = ctx.shard.wal.durable(t).await {
                return storage_failure(&e);
            }
        }
        return result;
    }
    match ctx.hops.call(owner, vec![op]).recv().await {
        Some(mut v) if !v.is_empty() => v.swap_remove(0),
        _ => OpResult::Failed {
            status: Status::Internal,
            message: "core did not answer".into(),
        },
    }
}

/// The wire form of a replica operation (`None` for client operations).
fn wire_of(op: OpRef<'_>) -> Option<Call<'_>> {
    match op {
        OpRef::ReplicaPut(key, value, version) => Some(Call {
            opcode: Opcode::ReplicaPut,
            key,
            value: value.unwrap_or_default(),
            version,
            flags: if value.is_none() { FLAG_TOMBSTONE } else { 0 },
        }),
        OpRef::ReplicaGet(key, fields) => Some(Call {
            opcode: Opcode::ReplicaGet,
            key,
            value: fields,
            version: Version::ZERO,
            flags: 0,
        }),
        _ => None,
    }
}

/// A replica operation on the peer at `addr`.
pub async fn remote_call(ctx: &Rc<CoreCtx>, addr: &str, op: Op) -> OpResult {
    let Some(w) = wire_of(op.as_ref()) else {
        return OpResult::Failed {
            status: Status::Internal,
            message: "not a replica op".into(),
        };
    };
    let peer = ctx.peer(addr);
    let sent = Instant::now();
    let reply = peer.request(w, timeout()).await;
    ctx.metrics.replica_rpc_latency.observe(sent.elapsed());
    remote_result(ctx, addr, w.opcode, reply)
}

/// A peer's answer to a replica request, as the result of the operation.
fn remote_result(
    ctx: &CoreCtx,
    addr: &str,
    opcode: Opcode,
    reply: Result<Reply, PeerError>,
) -> OpResult {
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            return OpResult::Failed {
                status: Status::Unavailable,
                message: e.to_string(),
            }
        }
    };
    // A version too far ahead is not adopted (logged by `observe`); the answer still counts.
    let _ = ctx.shard.observe(reply.version, addr);
    match (opcode, reply.status) {
        (Opcode::ReplicaPut, Status::Ok) => OpResult::Written {
            was_live: reply.flags & FLAG_WAS_LIVE != 0,
            version: reply.version,
        },
        (_, Status::Stale) => OpResult::Stale {
            stored: reply.version,
        },
        (Opcode::ReplicaGet, Status::Ok) => OpResult::Value {
            value: reply.value.into(),
            version: reply.version,
        },
        (Opcode::ReplicaGet, Status::NotFound) if reply.version > Version::ZERO => {
            OpResult::Tombstone {
                version: reply.version,
            }
        }
        (Opcode::ReplicaGet, Status::NotFound) => OpResult::NotFound,
        (_, status) => OpResult::Failed {
            status,
            message: String::from_utf8_lossy(&reply.value).into_owned(),
        },
    }
}
