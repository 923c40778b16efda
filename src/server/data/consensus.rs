//! The consensus shell: runs a conditional command (`core::consensus`) for a client, and a
//! replica's side of a round.
//!
//! Owns: where a command runs (the key's home node, on the key's core: one round per key at
//! a time there, carrying every command queued meanwhile), and the I/O of a round — PREPARE to the key's current replicas, ACCEPT once a majority
//! promised, a phase's timeout (a replica silent past it counts as refusing), randomised
//! backoff between lost rounds, and once decided, the write of a new value to the replicas'
//! stores at W (the coordinator's write path, with its hints), so plain GETs read it. A node
//! alone runs the command atomically on the key's core (`Op::Conditional`): there is no one to
//! agree with.
//!
//! Never: decides anything itself (the round does, `core::consensus::proposer`), or runs a
//! command again after its accepts went out (the client is told the outcome is unknown).
//! Bounded: `CONSENSUS_ATTEMPTS_MAX` rounds within `CONSENSUS_TIMEOUT_MS` per command; a
//! side without a majority of the key's replicas answers an error within it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::core::consensus::acceptor::Answer;
use crate::core::consensus::change::Reply;
use crate::core::consensus::command::Command;
use crate::core::consensus::proposer::{Round, Step};
use crate::core::consensus::{Ballot, Entry};
use crate::core::version::Version;
use crate::limits::{
    CONSENSUS_ATTEMPTS_MAX, CONSENSUS_BACKOFF_MS_MAX, CONSENSUS_BATCH_MAX, CONSENSUS_TIMEOUT_MS,
    REPLICA_TIMEOUT_MS,
};
use crate::server::cluster::peer::{Call, Error as PeerError};
use crate::server::cluster::view::Target;
use crate::server::data::coordinator;
use crate::server::data::messages::{CoreMsg, Op, OpResult};
use crate::server::data::shard::storage_failure;
use crate::server::notify::{channel, Sender};
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::wire::consensus::{decode_answer, encode_accept, encode_ballot, encode_reply};
use crate::wire::native::{Opcode, Status, FLAG_FORWARDED};

/// Commands waiting on this core for their key's next round, by key; a key is here while
/// a round for it is out (one round per key at a time, carrying every command queued since).
#[derive(Default)]
pub struct Queues {
    waiting: RefCell<HashMap<Box<[u8]>, Vec<Waiting>>>,
}

/// A command waiting for its round, and where its answer goes.
type Waiting = (Command, Sender<OpResult>);

/// A client's conditional command on `key`: its encoded reply (`wire::consensus`), or why it
/// failed. In a cluster it runs on the key's home (its first replica not DEAD: rounds for a key
/// from one place do not duel) on the key's core; `forwarded`: it was sent here as the home.
pub async fn run(ctx: Rc<CoreCtx>, key: Box<[u8]>, command: Command, forwarded: bool) -> OpResult {
    if ctx.is_solo() {
        return coordinator::local_call(&ctx, Op::Conditional { key, command }).await;
    }
    // The home is the first replica, in ring order, that is not DEAD and takes the command;
    // one that cannot be connected to (down, not yet declared DEAD) never got it, so the next
    // one is tried: every node picks the same next one, and rounds still do not duel.
    if !forwarded {
        let view = ctx.view();
        for t in view.replicas(&key).iter().filter(|t| t.local || !t.dead) {
            if t.local {
                break;
            }
            match forward(&ctx, t, &key, &command).await {
                Some(answer) => return answer,
                None => log::debug!("consensus: home {} unreachable; trying the next", t.id),
            }
        }
    }
    let owner = ctx.ring.core_for_key(&key);
    if owner == ctx.core {
        return enqueue(&ctx, key, command).await;
    }
    let (reply, rx) = flume::bounded(1);
    let msg = CoreMsg::Propose {
        key,
        command,
        reply,
    };
    if ctx.peers[owner].send_async(msg).await.is_err() {
        return unavailable("the key's core is shutting down".into());
    }
    rx.recv_async()
        .await
        .unwrap_or_else(|_| unavailable("the key's core is shutting down".into()))
}

/// Run on this core (the key's): wait for the key's next round.
pub async fn enqueue(ctx: &Rc<CoreCtx>, key: Box<[u8]>, command: Command) -> OpResult {
    let (tx, rx) = channel();
    let first = {
        let mut waiting = ctx.consensus.waiting.borrow_mut();
        match waiting.get_mut(&key) {
            Some(q) => {
                q.push((command, tx));
                false
            }
            None => {
                waiting.insert(key.clone(), vec![(command, tx)]);
                true
            }
        }
    };
    if first {
        glommio::spawn_local(drive(ctx.clone(), key)).detach();
    }
    rx.recv()
        .await
        .unwrap_or_else(|| unavailable("the round was abandoned".into()))
}

/// Rounds for `key` until no command waits: each takes every command queued (up to
/// `CONSENSUS_BATCH_MAX`).
async fn drive(ctx: Rc<CoreCtx>, key: Box<[u8]>) {
    loop {
        let batch: Vec<Waiting> = {
            let mut waiting = ctx.consensus.waiting.borrow_mut();
            let Some(q) = waiting.get_mut(&key) else {
                return;
            };
            if q.is_empty() {
                waiting.remove(&key);
                return;
            }
            let n = q.len().min(CONSENSUS_BATCH_MAX);
            q.drain(..n).collect()
        };
        let commands = batch.iter().map(|(c, _)| c.clone()).collect();
        match propose(&ctx, &key, commands).await {
            Ok(replies) => {
                for ((_, tx), reply) in batch.into_iter().zip(replies) {
                    let _ = tx.send(OpResult::Value {
                        value: encode_reply(&reply).into(),
                        version: Version::ZERO,
                    });
                }
            }
            Err(failed) => {
                for (_, tx) in batch {
                    let _ = tx.send(failed.clone());
                }
            }
        }
    }
}

/// Send the command to its home node, which runs it; `None` when it could not be sent (no
/// connection), so it certainly did not run there.
async fn forward(
    ctx: &Rc<CoreCtx>,
    home: &Target,
    key: &[u8],
    command: &Command,
) -> Option<OpResult> {
    let body = crate::wire::consensus::encode_command(command);
    let call = Call {
        value: &body,
        flags: FLAG_FORWARDED,
        ..Call::new(Opcode::Consensus, key)
    };
    let timeout = Duration::from_millis(CONSENSUS_TIMEOUT_MS + REPLICA_TIMEOUT_MS);
    Some(
        match ctx
            .links
            .forward_link(&home.addr)
            .request(call, timeout)
            .await
        {
            Ok(r) if r.status == Status::Ok => OpResult::Value {
                value: r.value.into(),
                version: Version::ZERO,
            },
            Ok(r) => OpResult::Failed {
                status: r.status,
                message: String::from_utf8_lossy(&r.value).into_owned(),
            },
            Err(PeerError::Connect { .. } | PeerError::Resolve(_)) => return None,
            Err(e) => unavailable(format!(
                "outcome unknown: the key's home {} did not answer ({e}); the command may or may \
             not have taken effect",
                home.id
            )),
        },
    )
}

fn unavailable(message: String) -> OpResult {
    OpResult::Failed {
        status: Status::Unavailable,
        message,
    }
}

/// Rounds until one decides, a round's accepts went out and it lost (unknown outcome), or
/// the attempts or the time run out.
async fn propose(
    ctx: &Rc<CoreCtx>,
    key: &[u8],
    commands: Vec<Command>,
) -> Result<Vec<Reply>, OpResult> {
    if let Err(fenced) = coordinator::clock_checked(ctx).await {
        return Err(coordinator::clock_fenced(fenced));
    }
    let view = ctx.view();
    let replicas = view.replicas(key);
    let deadline = Instant::now() + Duration::from_millis(CONSENSUS_TIMEOUT_MS);
    let mut above = Ballot::default();
    for attempt in 1..=CONSENSUS_ATTEMPTS_MAX {
        let v = ctx
            .shard
            .tick_leased()
            .await
            .map_err(|e| storage_failure(&e))?;
        let ballot = Ballot {
            round: v.hlc.max(above.round + 1),
            proposer: v.writer,
        };
        let mut round = Round::new(ballot, commands.clone(), replicas.len(), wall_clock_ms());
        let step = phase(ctx, &replicas, key, ballot, None, &mut round, deadline).await;
        let (entry, new) = match step {
            Step::Accept { entry, new, .. } => (entry, new),
            Step::Retry { above: a } => {
                above = above.max(a);
                ctx.metrics.stale_retry();
                let cap = (1u64 << attempt.min(16)).min(CONSENSUS_BACKOFF_MS_MAX);
                let pause = Duration::from_millis(fastrand::u64(1..=cap));
                if Instant::now() + pause >= deadline {
                    break;
                }
                glommio::timer::sleep(pause).await;
                continue;
            }
            other => {
                return Err(unavailable(format!(
                    "consensus round ended early: {other:?}"
                )))
            }
        };
        let step = phase(
            ctx,
            &replicas,
            key,
            ballot,
            Some(&entry),
            &mut round,
            deadline,
        )
        .await;
        return match step {
            Step::Decided(replies) => {
                if new {
                    commit(ctx, key, &entry).await;
                }
                Ok(replies)
            }
            _ => Err(unavailable(format!(
                "outcome unknown: the round's accepts went out but a majority of the key's {} \
                 replicas did not accept in time (the command may or may not have taken \
                 effect; read the key before retrying)",
                replicas.len()
            ))),
        };
    }
    Err(unavailable(format!(
        "no consensus: a majority of the key's {} replicas did not promise within {} ms \
         ({CONSENSUS_ATTEMPTS_MAX} rounds at most; unreachable, or many clients on this key); \
         nothing was changed",
        replicas.len(),
        CONSENSUS_TIMEOUT_MS
    )))
}

/// One phase: PREPARE (`accept: None`) or ACCEPT to every replica, answers fed to the round
/// until it steps; replicas silent past the phase's timeout count as refusing.
async fn phase(
    ctx: &Rc<CoreCtx>,
    replicas: &[Target],
    key: &[u8],
    ballot: Ballot,
    accept: Option<&Entry>,
    round: &mut Round,
    deadline: Instant,
) -> Step {
    let (tx, rx) = channel::<(usize, Result<Answer, String>)>();
    let body = match accept {
        None => encode_ballot(ballot),
        Some(e) => encode_accept(ballot, e),
    };
    let body: Rc<[u8]> = body.into();
    let opcode = if accept.is_some() {
        Opcode::Accept
    } else {
        Opcode::Prepare
    };
    for (i, t) in replicas.iter().enumerate() {
        let tx = tx.clone();
        if t.dead && !t.local {
            let _ = tx.send((i, Err(format!("member {} is DEAD", t.id))));
            continue;
        }
        let (ctx, key, body, t) = (ctx.clone(), Box::<[u8]>::from(key), body.clone(), t.clone());
        let op = Op::Consensus {
            key: key.clone(),
            ballot,
            accept: accept.cloned(),
        };
        glommio::spawn_local(async move {
            let r = if t.local {
                coordinator::local_call(&ctx, op).await
            } else {
                let call = Call {
                    value: &body,
                    ..Call::new(opcode, &key)
                };
                let timeout = Duration::from_millis(REPLICA_TIMEOUT_MS);
                match ctx.peer(&t.addr).request(call, timeout).await {
                    Ok(r) if r.status == Status::Ok => OpResult::Value {
                        value: r.value.into(),
                        version: Version::ZERO,
                    },
                    Ok(r) => unavailable(String::from_utf8_lossy(&r.value).into_owned()),
                    Err(e) => unavailable(e.to_string()),
                }
            };
            let answer = match r {
                OpResult::Value { value, .. } => {
                    decode_answer(&value).ok_or_else(|| "a malformed answer".to_string())
                }
                OpResult::Failed { message, .. } => Err(message),
                other => Err(format!("unexpected answer {other:?}")),
            };
            let _ = tx.send((i, answer));
        })
        .detach();
    }
    drop(tx);
    let phase_end = deadline.min(Instant::now() + Duration::from_millis(REPLICA_TIMEOUT_MS));
    let mut answered = vec![false; replicas.len()];
    loop {
        let left = phase_end.saturating_duration_since(Instant::now());
        let next = futures_lite::future::or(async { rx.recv().await.map(Some) }, async {
            glommio::timer::sleep(left).await;
            Some(None)
        })
        .await;
        let step = match next {
            Some(Some((i, Ok(answer)))) => {
                answered[i] = true;
                round.on_answer(i, answer)
            }
            Some(Some((i, Err(e)))) => {
                log::debug!(
                    "consensus: replica {} refused or failed: {e}",
                    replicas[i].id
                );
                answered[i] = true;
                round.on_failed(i)
            }
            // every replica answered, or the phase timed out: the silent ones refuse
            _ => {
                let mut step = Step::Wait;
                for i in (0..replicas.len()).filter(|&i| !answered[i]) {
                    step = round.on_failed(i);
                    if step != Step::Wait {
                        break;
                    }
                }
                if step == Step::Wait {
                    // answered, but not to this phase's end (duplicates): give the round up
                    for i in 0..replicas.len() {
                        step = round.on_failed(i);
                        if step != Step::Wait {
                            break;
                        }
                    }
                }
                return step;
            }
        };
        if step != Step::Wait {
            return step;
        }
    }
}

/// A decided new value into the replicas' stores at W, as a plain write of its version
/// (hints for the ones that miss it). The command is decided whatever this reaches: a later
/// round builds on the accepted value, and read repair and anti-entropy spread it.
async fn commit(ctx: &Rc<CoreCtx>, key: &[u8], entry: &Entry) {
    let view = ctx.view();
    let targets = view.write_targets(key);
    let cell = entry.cell();
    let (result, _) = coordinator::write_once(
        ctx,
        &view,
        &targets,
        &[],
        key,
        cell.as_deref(),
        entry.version,
    )
    .await;
    if let OpResult::Failed { message, .. } = result {
        log::warn!(
            "consensus: a decided value of a key reached fewer than W replicas' stores \
             ({message}); later rounds still see it"
        );
    }
}

/// A replica's side: PREPARE or ACCEPT from a peer, run on the key's core, durable before
/// the answer.
pub async fn replica(
    ctx: Rc<CoreCtx>,
    key: Box<[u8]>,
    opcode: Opcode,
    body: Box<[u8]>,
) -> OpResult {
    let decoded = match opcode {
        Opcode::Prepare => crate::wire::consensus::decode_ballot(&body).map(|b| (b, None)),
        _ => crate::wire::consensus::decode_accept(&body).map(|(b, e)| (b, Some(e))),
    };
    let Some((ballot, accept)) = decoded else {
        return OpResult::Failed {
            status: Status::BadRequest,
            message: format!("malformed {opcode:?} body"),
        };
    };
    coordinator::local_call(
        &ctx,
        Op::Consensus {
            key,
            ballot,
            accept,
        },
    )
    .await
}
