//! Anti-entropy (Dynamo §4.7): replicas compare hash trees of the keys they share and exchange
//! only the keys that differ, so replicas converge without client reads — after a replica was
//! down past the hint window, restored from an old disk, or lost its WAL.
//!
//! Owns: a round with one peer, the periodic rounds (core 0, every
//! `--anti-entropy-interval-ms`, with every ALIVE ring member), `kv repair` (a round with every
//! peer now), and the answers to a peer's AE_TREE and AE_ENTRIES requests. The tree and the
//! reconcile rule are `core::merkle`'s (pure); each core builds its part of the tree over its
//! own map and the node merges them.
//!
//! A round with peer P, run by us:
//! 1. build our tree of the keys whose current replicas include both us and P and send P its
//!    root (AE_TREE); P answers nothing if its root of the same keys is equal (done), else its
//!    leaves;
//! 2. for the leaves that differ, `ANTI_ENTROPY_LEAVES_PER_REQUEST` at a time, list both sides'
//!    (key, version) entries (AE_ENTRIES);
//! 3. per key, newest wins: pull P's copy (REPLICA_GET there, stored here as a replica write) or
//!    push ours (REPLICA_PUT there). Tombstones travel like values. A collection is compared
//!    by its version and a digest of its state, and where it differs goes both ways: P's
//!    pulled and joined here, the join pushed back (the store joins, never picks). At most
//!    `ANTI_ENTROPY_KEYS_PER_ROUND_MAX` keys per round.
//!
//! Never decides which version wins (replicas apply replica writes, last-write-wins), never
//! blocks requests (rounds run in a low-share queue; answers are built core by core).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::core::membership::{Role, Status as MemberStatus};
use crate::core::merkle::{self, Action, Tree};
use crate::core::version::Version;
use crate::limits::{
    ANTI_ENTROPY_KEYS_PER_ROUND_MAX, ANTI_ENTROPY_LEAVES_PER_REQUEST, REPLICA_TIMEOUT_MS,
    WAL_REPAIR_RETRY_MS,
};
use crate::server::cluster::links::PeerLinks;
use crate::server::cluster::peer::{Call, Error as PeerError};
use crate::server::data::coordinator::local_call;
use crate::server::data::messages::{CoreMsg, Op, OpResult};
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::wire::native::Reply;
use crate::wire::native::{Opcode, Status, FLAG_TOMBSTONE};

/// What rounds did (summed over peers for `kv repair`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub peers: usize,
    pub peers_failed: usize,
    /// Peers whose roots matched at once.
    pub peers_equal: usize,
    pub leaves_differing: usize,
    pub keys_compared: usize,
    pub keys_pulled: usize,
    pub keys_pushed: usize,
    /// Tree and entry bytes received from peers (what comparing cost on the wire, one way).
    pub bytes_received: usize,
    /// A round stopped at `ANTI_ENTROPY_KEYS_PER_ROUND_MAX` keys: differences may remain.
    pub cut_short: bool,
}

/// Periodic rounds with every ALIVE ring member, until shutdown (core 0).
pub async fn run(ctx: Rc<CoreCtx>) {
    let every = Duration::from_millis(ctx.node.anti_entropy_interval_ms);
    let owed = Duration::from_millis(WAL_REPAIR_RETRY_MS).min(every);
    loop {
        // A node owing a repair after WAL damage retries soon, not at the next interval.
        let wait = if ctx.node.wal.repair_pending() {
            owed
        } else {
            every
        };
        futures_lite::future::or(glommio::timer::sleep(wait), ctx.shutdown.wait()).await;
        if ctx.shutdown.is_set() {
            return;
        }
        let r = repair(&ctx).await;
        if r.keys_pulled + r.keys_pushed > 0 || r.peers_failed > 0 {
            log::info!(
                "anti-entropy: {} peers ({} equal, {} failed), {} leaves differed, {} keys \
                 pulled, {} pushed",
                r.peers,
                r.peers_equal,
                r.peers_failed,
                r.leaves_differing,
                r.keys_pulled,
                r.keys_pushed
            );
        }
    }
}

/// One round with every ALIVE ring member now. When every one of them completed, tombstones
/// older than the round's start are known to be on every replica (compaction may purge them).
pub async fn repair(ctx: &Rc<CoreCtx>) -> Report {
    let started_ms = wall_clock_ms();
    let view = ctx.view();
    let peers: Vec<(String, String)> = view
        .listing
        .iter()
        .filter(|u| u.id != view.me && u.status == MemberStatus::Alive)
        .filter(|u| matches!(u.role, Role::Member | Role::Leaving))
        .map(|u| (u.id.clone(), u.addr.clone()))
        .collect();
    let mut total = Report::default();
    for (id, addr) in &peers {
        total.peers += 1;
        match round(ctx, id, addr).await {
            Ok(r) => {
                total.peers_equal += usize::from(r.leaves_differing == 0);
                total.leaves_differing += r.leaves_differing;
                total.keys_compared += r.keys_compared;
                total.keys_pulled += r.keys_pulled;
                total.keys_pushed += r.keys_pushed;
                total.bytes_received += r.bytes_received;
                total.cut_short |= r.cut_short;
            }
            Err(e) => {
                total.peers_failed += 1;
                log::info!("anti-entropy with {id}: {e}");
            }
        }
    }
    let every_member_alive = view.listing.iter().all(|u| {
        u.status == MemberStatus::Alive || u.status == MemberStatus::Left || u.id == view.me
    });
    if total.peers_failed == 0 && every_member_alive {
        ctx.node
            .repaired_through_ms
            .fetch_max(started_ms, Ordering::Relaxed);
        // Every member's copies compared and pulled: the hole WAL damage left is filled. A
        // node that knows no peer yet has repaired nothing.
        if total.peers > 0 && !total.cut_short {
            if let Err(e) = ctx.node.wal.repaired() {
                log::error!("wal damage repaired, but the marker stays: {e}");
            }
        }
    }
    ctx.metrics.anti_entropy(&total);
    total
}

/// One round with `peer` (see the module doc).
async fn round(ctx: &Rc<CoreCtx>, peer: &str, addr: &str) -> Result<Report, String> {
    let timeout = Duration::from_millis(REPLICA_TIMEOUT_MS);
    let mine = node_tree(ctx, peer).await?;
    let p = ctx.peer(addr);
    let me = ctx.node.node_id.as_bytes();
    // Our root goes with the request: the peer answers nothing when its root is the same.
    let root = mine.root().to_le_bytes();
    let call = Call {
        value: &root,
        ..Call::new(Opcode::AeTree, me)
    };
    // a member just back is waited for, not counted failed
    let reply = p
        .request_when_back(call, timeout)
        .await
        .map_err(|e| e.to_string())?;
    if reply.status != Status::Ok {
        return Err(String::from_utf8_lossy(&reply.value).into_owned());
    }
    let mut report = Report {
        bytes_received: reply.value.len(),
        ..Report::default()
    };
    if reply.value.is_empty() {
        return Ok(report);
    }
    let theirs = Tree::from_bytes(&reply.value).ok_or("malformed tree")?;
    let differing = mine.diff(&theirs);
    report.leaves_differing = differing.len();
    for leaves in differing.chunks(ANTI_ENTROPY_LEAVES_PER_REQUEST) {
        let leaves: Vec<u16> = leaves.iter().map(|&l| l as u16).collect();
        let body: Vec<u8> = leaves.iter().flat_map(|l| l.to_le_bytes()).collect();
        let reply = p
            .request(
                Call {
                    value: &body,
                    ..Call::new(Opcode::AeEntries, me)
                },
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
        if reply.status != Status::Ok {
            return Err(String::from_utf8_lossy(&reply.value).into_owned());
        }
        report.bytes_received += reply.value.len();
        let theirs = decode_entries(&reply.value).ok_or("malformed entries")?;
        let mine = node_entries(ctx, peer, &leaves).await?;
        exchange(ctx, addr, mine, theirs, &mut report).await?;
        if report.keys_pulled + report.keys_pushed >= ANTI_ENTROPY_KEYS_PER_ROUND_MAX {
            report.cut_short = true;
            break;
        }
    }
    Ok(report)
}

fn holds_collection(cell: &[u8]) -> bool {
    crate::core::cell::decode(cell).is_ok_and(|c| c.kind == crate::core::cell::Kind::Collection)
}

/// Reconcile two sides' entries of the same leaves, key by key (a collection both ways: its
/// states are joined, not ordered).
async fn exchange(
    ctx: &Rc<CoreCtx>,
    addr: &str,
    mine: Vec<(Box<[u8]>, Version)>,
    theirs: Vec<(Box<[u8]>, Version)>,
    report: &mut Report,
) -> Result<(), String> {
    // key -> (our version, theirs)
    type Both = (Option<Version>, Option<Version>);
    let mut all: std::collections::BTreeMap<Box<[u8]>, Both> = std::collections::BTreeMap::new();
    for (k, v) in mine {
        all.entry(k).or_default().0 = Some(v);
    }
    for (k, v) in theirs {
        all.entry(k).or_default().1 = Some(v);
    }
    report.keys_compared += all.len();
    let mut pulls = Vec::new();
    let mut pushes = Vec::new();
    // collections held here: pulled (joined here), then the join pushed back
    let mut joins = Vec::new();
    for (key, (m, t)) in all {
        let action = merkle::reconcile(m, t);
        if action == Action::Keep {
            continue;
        }
        let op = Op::ReplicaGet {
            key: key.clone(),
            fields: Box::default(),
        };
        let (value, version) = match local_call(ctx, op).await {
            OpResult::Value { value, version } => (Some(value), version),
            OpResult::Tombstone { version } => (None, version),
            _ if action == Action::Pull => {
                pulls.push(key);
                continue;
            }
            _ => continue,
        };
        if value.as_deref().is_some_and(holds_collection) && t.is_some() {
            pulls.push(key.clone());
            joins.push(key);
            continue;
        }
        match action {
            Action::Pull => pulls.push(key),
            _ => pushes.push((key, value, version)),
        }
    }
    // Pulls: every REPLICA_GET queued at once on the peer connection, then stored here.
    let calls: Vec<Call<'_>> = pulls
        .iter()
        .map(|k| Call::new(Opcode::ReplicaGet, k))
        .collect();
    for (key, got) in pulls.iter().zip(pipelined(&ctx.links, addr, &calls).await) {
        let r = got.map_err(|e| format!("pull failed: {e}"))?;
        let value = match r.status {
            Status::Ok => Some(r.value.into_boxed_slice()),
            Status::NotFound if r.version > Version::ZERO => None,
            Status::NotFound => continue,
            s => return Err(format!("pull failed: {s:?}")),
        };
        let op = Op::ReplicaPut {
            key: key.clone(),
            value,
            version: r.version,
        };
        if let r @ OpResult::Failed { .. } = local_call(ctx, op).await {
            return Err(format!("storing a pulled key: {r:?}"));
        }
        report.keys_pulled += 1;
    }
    for key in joins {
        let op = Op::ReplicaGet {
            key: key.clone(),
            fields: Box::default(),
        };
        if let OpResult::Value { value, version } = local_call(ctx, op).await {
            pushes.push((key, Some(value), version));
        }
    }
    // Pushes: every REPLICA_PUT queued at once.
    let calls: Vec<Call<'_>> = pushes
        .iter()
        .map(|(key, value, version)| Call {
            opcode: Opcode::ReplicaPut,
            key,
            value: value.as_deref().unwrap_or_default(),
            version: *version,
            flags: if value.is_none() { FLAG_TOMBSTONE } else { 0 },
        })
        .collect();
    for got in pipelined(&ctx.links, addr, &calls).await {
        match got {
            Ok(r) if matches!(r.status, Status::Ok | Status::Stale) => report.keys_pushed += 1,
            Ok(r) => return Err(format!("push failed: {:?}", r.status)),
            Err(e) => return Err(format!("push failed: {e}")),
        }
    }
    Ok(())
}

/// Send `calls` to the peer at `addr` all at once (queued on one connection; the first one
/// connects if needed) and gather their answers in order.
async fn pipelined(
    links: &PeerLinks,
    addr: &str,
    calls: &[Call<'_>],
) -> Vec<Result<Reply, PeerError>> {
    let timeout = Duration::from_millis(REPLICA_TIMEOUT_MS);
    let peer = links.get(addr);
    let mut out = Vec::with_capacity(calls.len());
    let mut queued = Vec::with_capacity(calls.len());
    for call in calls {
        if !peer.has_room() {
            peer.wait_for_space().await;
        }
        match peer.send_now(*call, timeout) {
            Some(answer) => queued.push(answer),
            None => {
                // Not connected: gather what is queued, then connect with this one.
                for a in queued.drain(..) {
                    out.push(answer_of(a, addr).await);
                }
                out.push(peer.request(*call, timeout).await);
            }
        }
    }
    for a in queued {
        out.push(answer_of(a, addr).await);
    }
    out
}

async fn answer_of(
    a: crate::server::notify::Receiver<Result<Reply, PeerError>>,
    addr: &str,
) -> Result<Reply, PeerError> {
    a.recv()
        .await
        .unwrap_or_else(|| Err(PeerError::Broken(addr.to_string())))
}

/// This node's tree of the keys it shares with `peer`: every core's part, merged.
pub async fn node_tree(ctx: &CoreCtx, peer: &str) -> Result<Tree, String> {
    let mut tree = ctx.shard.ae_tree(&ctx.view(), peer);
    let parts = ctx
        .ask_other_cores(|reply| CoreMsg::AeTree {
            peer: peer.to_string(),
            reply,
        })
        .await?;
    for part in &parts {
        tree.merge(part);
    }
    Ok(tree)
}

/// This node's (key, version) entries in `leaves` that it shares with `peer`.
pub async fn node_entries(
    ctx: &CoreCtx,
    peer: &str,
    leaves: &[u16],
) -> Result<Vec<(Box<[u8]>, Version)>, String> {
    let mut all = ctx.shard.ae_entries(&ctx.view(), peer, leaves);
    let parts = ctx
        .ask_other_cores(|reply| CoreMsg::AeEntries {
            peer: peer.to_string(),
            leaves: leaves.to_vec(),
            reply,
        })
        .await?;
    all.extend(parts.into_iter().flatten());
    Ok(all)
}

/// Entries on the wire: per entry `key_len u16, key, hlc u64, writer u32` (little-endian).
pub fn encode_entries(entries: &[(Box<[u8]>, Version)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&v.hlc.to_le_bytes());
        out.extend_from_slice(&v.writer.to_le_bytes());
    }
    out
}

pub fn decode_entries(mut b: &[u8]) -> Option<Vec<(Box<[u8]>, Version)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = u16::from_le_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let key = b.get(2..2 + n)?;
        let rest = b.get(2 + n..2 + n + 12)?;
        let hlc = u64::from_le_bytes(rest[..8].try_into().ok()?);
        let writer = u32::from_le_bytes(rest[8..].try_into().ok()?);
        out.push((Box::from(key), Version { hlc, writer }));
        b = &b[2 + n + 12..];
    }
    Some(out)
}

/// The leaves named in an AE_ENTRIES request body (u16 each), if well formed.
pub fn decode_leaves(b: &[u8]) -> Option<Vec<u16>> {
    if b.len() % 2 != 0 || b.len() / 2 > ANTI_ENTROPY_LEAVES_PER_REQUEST {
        return None;
    }
    let leaves: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    leaves
        .iter()
        .all(|&l| (l as usize) < merkle::LEAVES)
        .then_some(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_leaves_round_trip_and_garbage_is_refused() {
        let e = vec![
            (Box::from(&b"a"[..]), Version { hlc: 1, writer: 2 }),
            (Box::from(&b"key-2"[..]), Version { hlc: 9, writer: 0 }),
        ];
        assert_eq!(decode_entries(&encode_entries(&e)), Some(e));
        assert_eq!(decode_entries(&[5, 0, b'a']), None, "truncated");
        assert_eq!(decode_leaves(&[1, 0, 2, 0]), Some(vec![1, 2]));
        assert_eq!(decode_leaves(&[1]), None);
        assert_eq!(decode_leaves(&[0xff, 0xff]), None, "no such leaf");
        let too_many = vec![0u8; 2 * (ANTI_ENTROPY_LEAVES_PER_REQUEST + 1)];
        assert_eq!(decode_leaves(&too_many), None);
    }

    proptest::proptest! {
        /// A peer's bytes never panic the decoders (AE_ENTRIES answers, leaf lists, trees).
        #[test]
        fn garbage_from_a_peer_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode_entries(&bytes);
            let _ = decode_leaves(&bytes);
            let _ = Tree::from_bytes(&bytes);
            let _ = crate::storage::hints::decode_key(&bytes);
        }
    }
}
