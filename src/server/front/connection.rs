//! One client connection, served on one core for its whole life.
//!
//! Owns: the read buffer, protocol detection from the first byte, the batch loop shared by all
//! protocols (the `Front` trait: the native protocol here, Redis in `resp_front`, the original
//! design's in `original_front`), dispatching each key operation to the core that owns its key
//! (one message per destination core per batch) or to the coordinator, and writing the answers
//! in request order. Never decides ownership (the ring does) or versions (the shard does).
//!
//! Limits: a frame that has started must complete within `FRAME_DEADLINE_MS`; an idle
//! connection is closed after the configured idle timeout; at most `INFLIGHT_REQUESTS_MAX`
//! operations are decoded per batch. A framing error (each front names its own) is answered
//! with an error and the connection is closed; a bad request inside a good frame (unknown
//! opcode, empty key) is answered with an error and the connection lives on.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::core::cell;
use crate::core::membership::Update;
use crate::core::version::Version;
use crate::limits::{
    AUTH_FAILURE_DELAY_MS, FRAME_DEADLINE_MS, INFLIGHT_REQUESTS_MAX, OUT_BUFFER_KEEP_BYTES,
    REPLY_BUFFER_BYTES_MAX,
};
use crate::server::cluster::view::RingView;
use crate::server::data::messages::{CoreMsg, CoreStats, Op, OpResult};
use crate::server::data::shard::{storage_failure, OpRef};
use crate::server::data::update::Change;
use crate::server::data::{consensus, coordinator};
use crate::server::front::auth::{Session, WRONGPASS};
use crate::server::front::deadline::{Ended, Watch};
use crate::server::front::original_front::OriginalFront;
use crate::server::front::reply_budget::ReplyBudget;
use crate::server::front::resp_front::RespFront;
use crate::server::front::tls::{self, Transport};
use crate::server::runtime::CoreCtx;
use crate::server::wall_clock_ms;
use crate::wire::native::{self, Opcode, Request, Response, Status, FLAG_TOMBSTONE, FLAG_WAS_LIVE};
use crate::wire::{detect_protocol, Protocol};

const READ_BUFFER_BYTES_INITIAL: usize = 16 * 1024;
/// Requests a connection's batch scratch keeps room for between batches (more, from a
/// pipelined burst, is freed after that batch).
const BATCH_SCRATCH_KEEP: usize = 64;

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("framing: {0}")]
    Framing(String),
    #[error("idle or slow client timed out")]
    Timeout,
    #[error("not authenticated within {0} ms (--auth-timeout-ms)")]
    NotAuthenticated(u64),
    #[error("not authenticated, and its slot was given to a newer connection")]
    Evicted,
}

/// Serve `stream` until the peer closes, errs, times out or the node shuts down.
pub async fn serve(ctx: &Rc<CoreCtx>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    match run(ctx, stream).await {
        Ok(()) => {}
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => log::debug!("core {}: connection {:?} closed: {e}", ctx.core, peer),
    }
}

struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room to read into: compacts, then doubles (frames were length-checked already).
    fn spare(&mut self) -> &mut [u8] {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.data.len() * 2).max(READ_BUFFER_BYTES_INITIAL);
                self.data.resize(grown, 0);
            }
        }
        &mut self.data[self.end..]
    }
}

fn read_buf() -> ReadBuf {
    ReadBuf {
        data: vec![0; READ_BUFFER_BYTES_INITIAL],
        start: 0,
        end: 0,
    }
}

async fn run(ctx: &Rc<CoreCtx>, stream: TcpStream) -> Result<(), Error> {
    let watch_rc = ctx.read_deadlines.watch();
    let loopback = stream
        .peer_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    // Until it shows who it is, the connection holds one of the few unadmitted slots, and
    // must do so by a deadline its bytes do not extend (`admission`).
    let creds = &ctx.node.creds;
    let gate = creds.has_password() || creds.secret().is_some() || (creds.protected && !loopback);
    let mut admission = gate.then(|| {
        if ctx.admission.enter(&watch_rc) {
            log::debug!("core {}: evicted an unauthenticated connection", ctx.core);
        }
        Admission {
            ctx,
            watch: watch_rc.clone(),
            by: Instant::now() + Duration::from_millis(ctx.node.auth_timeout_ms),
            peer: false,
        }
    });
    let watch = &*watch_rc;
    let r = run_gated(ctx, watch, stream, loopback, &mut admission).await;
    drop(admission);
    r
}

/// A connection's standing while it has not shown who it is (`admission`), and, once it
/// shows it is a peer, taking it off the client count. Dropped when the connection ends.
struct Admission<'a> {
    ctx: &'a CoreCtx,
    watch: Rc<Watch>,
    /// Admitted by then, or closed.
    by: Instant,
    /// Counted as a peer (not a client) from here on.
    peer: bool,
}

impl Admission<'_> {
    /// After a batch: leave the unadmitted pool once the session is admitted. Err when the
    /// deadline passed without it.
    fn settle(this: &mut Option<Self>, session: &Session) -> Result<(), Error> {
        let Some(a) = this else { return Ok(()) };
        if session.admitted() {
            a.ctx.admission.leave(&a.watch);
            if session.is_peer() && !a.peer {
                // peers are counted apart: clients can never lock them out
                a.peer = true;
                a.ctx.node.connections.fetch_sub(1, Ordering::Relaxed);
            }
            if !a.peer {
                *this = None;
            }
            return Ok(());
        }
        if Instant::now() >= a.by {
            return Err(Error::NotAuthenticated(a.ctx.node.auth_timeout_ms));
        }
        Ok(())
    }

    /// The deadline a read of a connection in `this` standing must keep.
    fn read_by(this: &Option<Self>) -> Option<Instant> {
        this.as_ref().filter(|a| !a.peer).map(|a| a.by)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.ctx.admission.leave(&self.watch);
        if self.peer {
            // `connection_closed` takes it off the count it was on
            self.ctx.node.connections.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run_gated(
    ctx: &Rc<CoreCtx>,
    watch: &Watch,
    mut stream: TcpStream,
    loopback: bool,
    admission: &mut Option<Admission<'_>>,
) -> Result<(), Error> {
    let mut rbuf = read_buf();
    let by = Admission::read_by(admission);
    if read_some(ctx, watch, &mut stream, &mut rbuf, None, by).await? == 0 {
        return Ok(());
    }
    if rbuf.pending()[0] != tls::HANDSHAKE_BYTE {
        if ctx.node.tls.as_ref().is_some_and(|t| t.only) {
            ctx.metrics.refused();
            return Err(Error::Framing(
                "a plain connection, and this node serves TLS only (--tls-only)".into(),
            ));
        }
        return serve_protocol(ctx, watch, &mut stream, rbuf, loopback, admission).await;
    }
    // TLS on the same port: the handshake (replaying the bytes already read), then the
    // protocol inside it, detected the same way.
    let Some(t) = &ctx.node.tls else {
        return Err(Error::Framing(
            "a TLS handshake, but this node has no --tls-cert".into(),
        ));
    };
    let handshake = t
        .acceptor
        .accept(tls::Prefixed::new(rbuf.pending().to_vec(), stream));
    let mut deadline = Instant::now() + Duration::from_millis(FRAME_DEADLINE_MS);
    if let Some(by) = Admission::read_by(admission) {
        deadline = deadline.min(by);
    }
    let mut tls = match watch.within(deadline, handshake).await {
        Ok(tls) => tls?,
        Err(Ended::ShuttingDown) => return Ok(()),
        Err(Ended::TimedOut | Ended::Evicted) => return Err(Error::Timeout),
    };
    let mut rbuf = read_buf();
    let by = Admission::read_by(admission);
    if read_some(ctx, watch, &mut tls, &mut rbuf, None, by).await? == 0 {
        return Ok(());
    }
    serve_protocol(ctx, watch, &mut tls, rbuf, loopback, admission).await
}

/// Detect the protocol from the first byte and serve it.
async fn serve_protocol<S: Transport>(
    ctx: &Rc<CoreCtx>,
    watch: &Watch,
    stream: &mut S,
    rbuf: ReadBuf,
    loopback: bool,
    admission: &mut Option<Admission<'_>>,
) -> Result<(), Error> {
    let protocol = detect_protocol(rbuf.pending()[0]);
    let original = protocol == Protocol::Original;
    let session = Rc::new(Session::new(ctx.node.creds.clone(), loopback, original));
    let a = admission;
    match protocol {
        Protocol::Native => serve_with(ctx, watch, &session, stream, rbuf, NativeFront, a).await,
        Protocol::Resp => {
            let front = RespFront::new(session.clone());
            serve_with(ctx, watch, &session, stream, rbuf, front, a).await
        }
        Protocol::Original => {
            serve_with(ctx, watch, &session, stream, rbuf, OriginalFront, a).await
        }
    }
}

/// Read once into `rbuf` (0: the peer closed or the node is shutting down). `partial_since`:
/// when the unfinished frame in `rbuf` began (it gets the frame deadline, not the idle one).
async fn read_some<S: Transport>(
    ctx: &Rc<CoreCtx>,
    watch: &Watch,
    stream: &mut S,
    rbuf: &mut ReadBuf,
    partial_since: Option<Instant>,
    admit_by: Option<Instant>,
) -> Result<usize, Error> {
    let mut deadline = match partial_since {
        Some(t) => t + Duration::from_millis(FRAME_DEADLINE_MS),
        None => Instant::now() + Duration::from_millis(ctx.node.idle_timeout_ms),
    };
    if let Some(by) = admit_by {
        deadline = deadline.min(by);
    }
    match watch.within(deadline, stream.read(rbuf.spare())).await {
        Err(Ended::ShuttingDown) | Ok(Ok(0)) => Ok(0),
        Err(Ended::TimedOut) if admit_by.is_some_and(|by| Instant::now() >= by) => {
            Err(Error::NotAuthenticated(ctx.node.auth_timeout_ms))
        }
        Err(Ended::TimedOut) => Err(Error::Timeout),
        Err(Ended::Evicted) => Err(Error::Evicted),
        Ok(Ok(n)) => {
            rbuf.end += n;
            Ok(n)
        }
        Ok(Err(e)) => Err(e.into()),
    }
}

async fn serve_with<F: Front, S: Transport>(
    ctx: &Rc<CoreCtx>,
    watch: &Watch,
    session: &Session,
    stream: &mut S,
    mut rbuf: ReadBuf,
    mut front: F,
    admission: &mut Option<Admission<'_>>,
) -> Result<(), Error> {
    let mut out = Vec::with_capacity(READ_BUFFER_BYTES_INITIAL);
    let mut batch = Batch::new(ctx.peers.len(), ctx.shard.reply_bytes.clone());
    let mut partial_since: Option<Instant> = None;
    loop {
        // A batch is capped (requests, reply budget): keep going while whole frames remain,
        // never wait on the socket with answerable requests already buffered.
        loop {
            let (fatal, close) =
                process_batch(ctx, session, &mut rbuf, &mut out, &mut front, &mut batch).await;
            let written = match out.is_empty() {
                true => Ok(()),
                false => write_out(stream, &out).await,
            };
            // the replies' bytes count against the core's limit until they are sent
            batch.budget.release();
            written?;
            if !out.is_empty() {
                out.clear();
                // a large reply's buffer is given back, not kept for the connection's life
                if out.capacity() > OUT_BUFFER_KEEP_BYTES {
                    out = Vec::with_capacity(READ_BUFFER_BYTES_INITIAL);
                    crate::server::give_back_memory();
                }
            }
            Admission::settle(admission, session)?;
            if session.too_many_failures() {
                log::warn!(
                    "core {}: closing a connection after repeated wrong passwords",
                    ctx.core
                );
                return Ok(());
            }
            if let Some(e) = fatal {
                return Err(Error::Framing(e.to_string()));
            }
            if close {
                return Ok(());
            }
            if !front.complete(rbuf.pending(), ctx.node.max_value_bytes) {
                break;
            }
        }
        partial_since = match (rbuf.is_empty(), partial_since) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(Instant::now()),
        };
        let by = Admission::read_by(admission);
        if read_some(ctx, watch, stream, &mut rbuf, partial_since, by).await? == 0 {
            return Ok(());
        }
    }
}

/// Reads one batch may take so that their replies fit `REPLY_BUFFER_BYTES_MAX`.
pub fn reads_per_batch(max_value_bytes: usize) -> usize {
    (REPLY_BUFFER_BYTES_MAX / max_value_bytes.max(1)).clamp(1, INFLIGHT_REQUESTS_MAX)
}

/// Where the answer to one operation comes from.
enum Slot {
    Done {
        result: OpResult,
        local_write: bool,
    },
    Remote {
        core: usize,
        index: usize,
    },
    Pong,
    Info,
    Refused {
        status: Status,
        message: &'static str,
    },
    /// Work that needs other nodes (quorum requests, gossip), running concurrently.
    Task(glommio::task::JoinHandle<OpResult>),
    /// A read past the batch's share, fetched later in a wave (`resolve_all`).
    Deferred {
        opcode: Opcode,
        key: Box<[u8]>,
    },
}

/// What a replica write gets while this node's clock is fenced (`server::clock_fence`).
fn clock_fenced(ctx: &CoreCtx) -> Slot {
    let message = match ctx.node.clock.peek() {
        Err(e) => e.to_string(),
        Ok(()) => "clock fenced".to_string(),
    };
    Slot::Done {
        result: OpResult::Failed {
            status: Status::Unavailable,
            message,
        },
        local_write: false,
    }
}

/// What a replica read or write gets while this node owes a repair after WAL damage.
pub const REPAIRING: &str =
    "LOADING this replica is being repaired from its peers after wal damage; try another node";

/// A client GET/PUT/DELETE through the quorum coordinator (a PUT's value as a cell; a GET's
/// value, when not empty, names the fields of a collection to read).
fn spawn_coordinated(
    ctx: &Rc<CoreCtx>,
    opcode: Opcode,
    key: &[u8],
    cell: Option<Box<[u8]>>,
    fields: &[u8],
) -> glommio::task::JoinHandle<OpResult> {
    let c = ctx.clone();
    let key: Box<[u8]> = key.into();
    let fields: Box<[u8]> = fields.into();
    glommio::spawn_local(async move {
        match opcode {
            Opcode::Get => coordinator::read_fields(c, key, fields).await,
            _ => coordinator::write(c, key, cell).await,
        }
    })
    .detach()
}

/// UPDATE: read-modify-write through the quorum (`data::update`).
fn spawn_update(
    ctx: &Rc<CoreCtx>,
    key: &[u8],
    change: Change,
) -> glommio::task::JoinHandle<OpResult> {
    let c = ctx.clone();
    let key: Box<[u8]> = key.into();
    glommio::spawn_local(async move { crate::server::data::update::update(c, key, change).await })
        .detach()
}

/// Gossip from a peer (its node id in the key): merged by the gossip core, answered with its
/// view.
fn spawn_gossip(
    ctx: &Rc<CoreCtx>,
    from: &[u8],
    body: &[u8],
) -> glommio::task::JoinHandle<OpResult> {
    let c = ctx.clone();
    let from = String::from_utf8_lossy(from).into_owned();
    let updates: Result<Vec<Update>, _> = serde_json::from_slice(body);
    glommio::spawn_local(async move {
        let Ok(updates) = updates else {
            let message = "gossip body is not a member list".to_string();
            return OpResult::Failed {
                status: Status::BadRequest,
                message,
            };
        };
        let snapshot = match &c.gossip {
            Some(g) => g.merge(&c, &updates, Some(&from)),
            None => {
                let (tx, rx) = flume::bounded(1);
                let _ = c.peers[0]
                    .send_async(CoreMsg::Gossip {
                        from,
                        updates,
                        reply: tx,
                    })
                    .await;
                rx.recv_async().await.unwrap_or_default()
            }
        };
        let json = serde_json::to_vec(&snapshot).unwrap_or_default();
        // the answer carries our wall clock: the prober measures its offset from us
        OpResult::Value {
            value: json.into(),
            version: Version::at_physical_ms(wall_clock_ms()),
        }
    })
    .detach()
}

/// `kv leave` (`stream_to: None`, run by the gossip core) or a stream of our records to a
/// joining member (`Some(id)`, every core). The answer is the number of records sent.
fn spawn_topology(
    ctx: &Rc<CoreCtx>,
    stream_to: Option<String>,
) -> glommio::task::JoinHandle<OpResult> {
    let c = ctx.clone();
    glommio::spawn_local(async move {
        let r = match stream_to {
            Some(target) => crate::server::cluster::topology::stream_node(&c, Some(target)).await,
            None => match &c.gossip {
                Some(g) => crate::server::cluster::topology::leave(&c, g).await,
                None => {
                    let (tx, rx) = flume::bounded(1);
                    let _ = c.peers[0].send_async(CoreMsg::Leave { reply: tx }).await;
                    rx.recv_async()
                        .await
                        .unwrap_or_else(|_| Err("the membership core did not answer".into()))
                }
            },
        };
        answer_result(r.map(|n| n.to_string().into_bytes()))
    })
    .detach()
}

/// The reply to a node-level request: its bytes, or why it could not be served.
fn answer_result(answer: Result<Vec<u8>, String>) -> OpResult {
    match answer {
        Ok(v) => OpResult::Value {
            value: v.into(),
            version: Version::ZERO,
        },
        Err(message) => OpResult::Failed {
            status: Status::Unavailable,
            message,
        },
    }
}

/// SCAN (a client: cursor and count in the key, the glob in the value) or a peer's RANGE_KEYS
/// (the hash range in the key).
fn spawn_scan(
    ctx: &Rc<CoreCtx>,
    opcode: Opcode,
    key: &[u8],
    value: &[u8],
) -> glommio::task::JoinHandle<OpResult> {
    use crate::server::data::scan;
    let c = ctx.clone();
    let (key, pattern) = (key.to_vec(), value.to_vec());
    glommio::spawn_local(async move {
        let answer = match opcode {
            Opcode::RangeKeys => match crate::wire::scan::decode_bounds(&key) {
                Some((lo, hi)) => scan::node_range(&c, lo, hi)
                    .await
                    .map(|e| crate::wire::scan::encode_entries(&e)),
                None => Err("malformed hash range".into()),
            },
            _ => match crate::wire::scan::decode_cursor(&key) {
                Some((cursor, count)) => {
                    // 0: every key (KEYS), refused past SCAN_KEYS_MAX
                    let count = match count as usize {
                        0 => usize::MAX,
                        n => n.min(crate::limits::SCAN_KEYS_MAX),
                    };
                    scan::scan(&c, cursor, count, &pattern)
                        .await
                        .map(|(next, keys)| crate::wire::scan::encode_page(next, &keys))
                }
                None => Err("SCAN takes a cursor (u64) and a count (u32) as its key".into()),
            },
        };
        answer_result(answer)
    })
    .detach()
}

/// FLUSHALL from a client (every member), or a peer's FLUSH_BELOW (this node's step).
fn spawn_flush(
    ctx: &Rc<CoreCtx>,
    opcode: Opcode,
    key: &[u8],
) -> glommio::task::JoinHandle<OpResult> {
    use crate::server::data::flush;
    let c = ctx.clone();
    let (floor, empty) = (flush::decode_floor(key), key.is_empty());
    glommio::spawn_local(async move {
        let answer = match (opcode, floor) {
            (Opcode::FlushAll, _) => flush::flush_all(&c)
                .await
                .map(|n| n.to_string().into_bytes()),
            (_, Some(floor)) => flush::flush_node(&c, floor)
                .await
                .map(|n| n.to_string().into_bytes()),
            (_, None) if empty => flush::node_clock(&c)
                .await
                .map(|v| flush::encode_floor(v).to_vec()),
            (_, None) => Err("FLUSH_BELOW takes a version (12 bytes) as its key".into()),
        };
        answer_result(answer)
    })
    .detach()
}

/// Anti-entropy: a peer asks for our tree or entries of the keys we share with it (its id in
/// the key), or `kv repair` asks for a round with every member now.
/// `kv scrub`: a scrub pass on every core now, answered as one JSON report.
fn spawn_scrub(ctx: &Rc<CoreCtx>) -> glommio::task::JoinHandle<OpResult> {
    let c = ctx.clone();
    glommio::spawn_local(async move {
        let mut report = crate::server::data::scrubber::pass(&c).await;
        let answer = match c.ask_other_cores(|reply| CoreMsg::Scrub { reply }).await {
            Ok(others) => {
                others.into_iter().for_each(|r| report.add(r));
                serde_json::to_vec(&report).map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        answer_result(answer)
    })
    .detach()
}

fn spawn_anti_entropy(
    ctx: &Rc<CoreCtx>,
    opcode: Opcode,
    key: &[u8],
    value: &[u8],
) -> glommio::task::JoinHandle<OpResult> {
    use crate::server::cluster::anti_entropy as ae;
    let c = ctx.clone();
    let peer = String::from_utf8_lossy(key).into_owned();
    let leaves = ae::decode_leaves(value);
    let value = value.to_vec();
    glommio::spawn_local(async move {
        let answer: Result<Vec<u8>, String> = match opcode {
            // The asker's root in the value: equal roots need no leaves.
            Opcode::AeTree => ae::node_tree(&c, &peer).await.map(|t| {
                if value == t.root().to_le_bytes() {
                    Vec::new()
                } else {
                    t.to_bytes()
                }
            }),
            Opcode::AeEntries => match leaves {
                Some(leaves) => ae::node_entries(&c, &peer, &leaves)
                    .await
                    .map(|e| ae::encode_entries(&e)),
                None => Err("malformed leaf list".into()),
            },
            _ => serde_json::to_vec(&ae::repair(&c).await).map_err(|e| e.to_string()),
        };
        answer_result(answer)
    })
    .detach()
}

/// An indirect probe request: the gossip core probes the named member for the asker.
fn spawn_ping_req(ctx: &Rc<CoreCtx>, target: &[u8]) -> glommio::task::JoinHandle<OpResult> {
    let c = ctx.clone();
    let target = String::from_utf8_lossy(target).into_owned();
    glommio::spawn_local(async move {
        let reached = match &c.gossip {
            Some(g) => g.probe_for(&c, &target).await,
            None => {
                let (tx, rx) = flume::bounded(1);
                let _ = c.peers[0]
                    .send_async(CoreMsg::PingReq { target, reply: tx })
                    .await;
                rx.recv_async().await.unwrap_or(false)
            }
        };
        if reached {
            OpResult::Written {
                was_live: true,
                version: Version::ZERO,
            }
        } else {
            let message = "member did not answer".to_string();
            OpResult::Failed {
                status: Status::Unavailable,
                message,
            }
        }
    })
    .detach()
}

/// A client protocol as the connection loop sees it: bytes to operations, results to bytes.
///
/// `decode` frames one command and hands every key operation it needs to `op` (in order); the
/// connection runs them (locally, on the owning core or through the coordinator) and gives
/// `encode` that command's results. Everything protocol-specific stays in the front.
pub trait Front {
    /// What `encode` needs to know about one command besides its results.
    type Reply;
    /// A framing error: answered with `encode_fatal`, then the connection is closed.
    type Fatal: std::fmt::Display;

    fn decode(
        &mut self,
        buf: &[u8],
        max_value_bytes: usize,
        op: &mut dyn FnMut(Request<'_>),
    ) -> Result<Option<(Self::Reply, usize)>, Self::Fatal>;

    /// Whether `buf` starts with a whole command (or a framing error).
    fn complete(&self, buf: &[u8], max_value_bytes: usize) -> bool;

    /// Whether the reply needs the node report (key counts, members).
    fn needs_report(reply: &Self::Reply) -> bool;

    /// Encode one reply; `true` closes the connection once it is written.
    fn encode(
        &mut self,
        out: &mut Vec<u8>,
        reply: Self::Reply,
        results: &mut [OpResult],
        cx: &ReplyCtx<'_>,
    ) -> bool;

    fn encode_fatal(&self, out: &mut Vec<u8>, fatal: &Self::Fatal);
}

/// What replies may draw on besides their results.
pub struct ReplyCtx<'a> {
    pub ctx: &'a CoreCtx,
    pub view: &'a RingView,
    /// Present when a reply of the batch asked for it (`Front::needs_report`).
    pub report: Option<&'a NodeReport>,
}

/// Every core's counters, gathered once per batch that needs them.
pub struct NodeReport {
    pub cores: Vec<CoreStats>,
}

impl NodeReport {
    /// Live keys stored on this node (all cores; replicas included).
    pub fn keys(&self) -> usize {
        self.cores.iter().map(|c| c.keys).sum()
    }
}

/// Decode every complete command in `rbuf`, run them, and encode the answers into `out`.
/// Returns a fatal framing error (after its error reply has been encoded) and whether a reply
/// asked to close the connection.
/// One connection's per-batch working space, kept between batches so that serving a request
/// allocates none of it again (an unpipelined client sends one request per batch).
struct Batch<R> {
    slots: Vec<Slot>,
    opcodes: Vec<u8>,
    replies: Vec<(R, usize, usize)>,
    /// Operations for each other core's keys (emptied into one hop per core).
    remote: Vec<Vec<Op>>,
    remote_results: Vec<Option<Vec<OpResult>>>,
    results: Vec<OpResult>,
    budget: ReplyBudget,
}

impl<R> Batch<R> {
    fn new(cores: usize, reply_bytes: Rc<std::cell::Cell<usize>>) -> Self {
        Batch {
            slots: Vec::new(),
            opcodes: Vec::new(),
            replies: Vec::new(),
            remote: (0..cores).map(|_| Vec::new()).collect(),
            remote_results: (0..cores).map(|_| None).collect(),
            results: Vec::new(),
            budget: ReplyBudget::new(reply_bytes),
        }
    }

    /// After a batch: drop its answers (values must not outlive the batch on an idle
    /// connection) and give back what a pipelined burst grew past `BATCH_SCRATCH_KEEP`.
    fn release(&mut self) {
        self.results.clear();
        self.replies.clear();
        if self.slots.capacity() > BATCH_SCRATCH_KEEP {
            self.slots = Vec::new();
            self.opcodes = Vec::new();
            self.replies = Vec::new();
            self.results = Vec::new();
        }
    }
}

async fn process_batch<F: Front>(
    ctx: &Rc<CoreCtx>,
    session: &Session,
    rbuf: &mut ReadBuf,
    out: &mut Vec<u8>,
    front: &mut F,
    batch: &mut Batch<F::Reply>,
) -> (Option<F::Fatal>, bool) {
    let started = Instant::now();
    let Batch {
        slots,
        opcodes,
        replies,
        remote,
        remote_results,
        results,
        budget,
    } = batch;
    slots.clear();
    opcodes.clear();
    replies.clear();
    results.clear();
    let mut last_ticket = None;
    let mut fatal = None;
    // Reads answer with up to `max_value_bytes` each: cap them so a batch's replies stay
    // within REPLY_BUFFER_BYTES_MAX (the rest wait in the socket buffer for the next batch).
    let reads_max = reads_per_batch(ctx.node.max_value_bytes);
    let mut reads = 0usize;
    while slots.len() < INFLIGHT_REQUESTS_MAX && reads < reads_max {
        let first = slots.len();
        let mut op = |req: Request<'_>| {
            let is_read = is_read(req.opcode);
            opcodes.push(req.opcode);
            // A command's reads past the batch's share wait: they are fetched in waves as the
            // reply is resolved, and not at all once the reply is over its limit.
            match Opcode::from_u8(req.opcode) {
                Some(opcode) if is_read && reads >= reads_max => slots.push(Slot::Deferred {
                    opcode,
                    key: req.key.into(),
                }),
                _ => slots.push(dispatch(ctx, session, &req, remote, &mut last_ticket)),
            }
            reads += usize::from(is_read);
        };
        match front.decode(rbuf.pending(), ctx.node.max_value_bytes, &mut op) {
            Ok(Some((reply, used))) => {
                replies.push((reply, first, slots.len()));
                rbuf.consume(used);
            }
            Ok(None) => break,
            Err(e) => {
                fatal = Some(e);
                break;
            }
        }
    }
    let pending = send_hops(ctx, remote);
    let local_failure = match last_ticket {
        Some(t) => ctx
            .shard
            .wal
            .durable(t)
            .await
            .err()
            .map(|e| storage_failure(&e)),
        None => None,
    };
    if local_failure.is_none() && opcodes.contains(&(Opcode::ReplicaPut as u8)) {
        // A replica write applied and durable here, its coordinator not yet answered.
        crate::failpoint::hit("replica:applied");
    }
    for (core, answer) in pending {
        remote_results[core] = answer.recv().await;
    }
    resolve_all(
        ctx,
        session,
        slots,
        replies,
        &local_failure,
        remote_results,
        budget,
        results,
    )
    .await;
    remote_results.iter_mut().for_each(|r| *r = None);
    let elapsed = started.elapsed();
    let m = &ctx.metrics;
    for (opcode, result) in opcodes.iter().zip(results.iter()) {
        m.count(*opcode, result);
        match Opcode::from_u8(*opcode) {
            Some(Opcode::Get | Opcode::LocalGet) => m.read_latency.observe(elapsed),
            Some(Opcode::Put | Opcode::Delete) => m.write_latency.observe(elapsed),
            _ => {}
        }
    }
    let report = if replies.iter().any(|(r, _, _)| F::needs_report(r)) {
        Some(node_report(ctx).await)
    } else {
        None
    };
    let view = ctx.view();
    let cx = ReplyCtx {
        ctx,
        view: &view,
        report: report.as_ref(),
    };
    // one allocation for the replies' values, not a doubling growth past them
    out.reserve(budget.held() + REPLY_FRAMING_BYTES * results.len());
    let mut close = false;
    for (reply, first, end) in replies.drain(..) {
        close |= front.encode(out, reply, &mut results[first..end], &cx);
        if close {
            break;
        }
    }
    if let Some(e) = &fatal {
        front.encode_fatal(out, e);
    }
    batch.release();
    (fatal, close)
}

async fn write_out<S: Transport>(stream: &mut S, out: &[u8]) -> Result<(), Error> {
    stream.write_all(out).await?;
    // TLS holds records until flushed (plain TCP: nothing to do).
    stream.flush().await?;
    Ok(())
}

/// Room reserved per result for its framing (headers, lengths) beside its value.
const REPLY_FRAMING_BYTES: usize = 64;

/// Send each core's queued operations as one hop; the answers to await, by core.
fn send_hops(
    ctx: &CoreCtx,
    remote: &mut [Vec<Op>],
) -> Vec<(usize, crate::server::notify::Receiver<Vec<OpResult>>)> {
    remote
        .iter_mut()
        .enumerate()
        .filter(|(_, ops)| !ops.is_empty())
        .map(|(core, ops)| (core, ctx.hops.call(core, std::mem::take(ops))))
        .collect()
}

fn is_read(opcode: u8) -> bool {
    [
        Opcode::Get as u8,
        Opcode::LocalGet as u8,
        Opcode::ReplicaGet as u8,
    ]
    .contains(&opcode)
}

/// Resolve every slot of a batch into `results`, in order: deferred reads are fetched in
/// waves of at most a batch's reads, and each command's gathered values are counted against
/// the reply limits (`reply_budget`). A command past a limit answers that error, everything it
/// gathered is dropped at once, and its later reads are not fetched.
#[allow(clippy::too_many_arguments)]
async fn resolve_all<R>(
    ctx: &Rc<CoreCtx>,
    session: &Session,
    slots: &mut Vec<Slot>,
    replies: &[(R, usize, usize)],
    local_failure: &Option<OpResult>,
    remote_results: &mut [Option<Vec<OpResult>>],
    budget: &mut ReplyBudget,
    results: &mut Vec<OpResult>,
) {
    let wave_max = reads_per_batch(ctx.node.max_value_bytes);
    let mut commands = replies
        .iter()
        .map(|(_, first, end)| (*first, *end))
        .peekable();
    let mut command_first = 0;
    // other cores' answers to one wave (made at the first wave: most batches have none)
    let mut wave: Vec<Option<Vec<OpResult>>> = Vec::new();
    let n = slots.len();
    let mut i = 0;
    while i < n {
        while commands.peek().is_some_and(|(_, end)| i >= *end) {
            commands.next();
        }
        if commands.peek().is_some_and(|(first, _)| i == *first) {
            command_first = i;
            budget.begin();
        }
        let command_end = commands.peek().map(|(_, end)| *end).unwrap_or(n);
        if matches!(slots[i], Slot::Deferred { .. }) {
            if wave.is_empty() {
                wave.resize_with(ctx.peers.len(), || None);
            }
            // the next wave: deferred reads of this command, fetched together
            let end = (i..command_end.min(i + wave_max))
                .take_while(|&j| matches!(slots[j], Slot::Deferred { .. }))
                .last()
                .map_or(i + 1, |j| j + 1);
            fetch_wave(
                ctx,
                session,
                &mut slots[i..end],
                budget.over().is_some(),
                &mut wave,
            )
            .await;
            for slot in &mut slots[i..end] {
                let slot = std::mem::replace(slot, Slot::Pong);
                let r = resolve(slot, local_failure, &mut wave).await;
                push_counted(r, budget, results, command_first);
            }
            wave.iter_mut().for_each(|r| *r = None);
            i = end;
            continue;
        }
        let slot = std::mem::replace(&mut slots[i], Slot::Pong);
        let r = resolve(slot, local_failure, remote_results).await;
        push_counted(r, budget, results, command_first);
        i += 1;
    }
    slots.clear();
}

/// Dispatch a wave of deferred reads (`skip`: the command is already over its limit, so
/// none is fetched) and gather the answers of other cores into `wave`.
async fn fetch_wave(
    ctx: &Rc<CoreCtx>,
    session: &Session,
    slots: &mut [Slot],
    skip: bool,
    wave: &mut [Option<Vec<OpResult>>],
) {
    let mut remote: Vec<Vec<Op>> = (0..ctx.peers.len()).map(|_| Vec::new()).collect();
    let mut no_ticket = None;
    for slot in slots.iter_mut() {
        let Slot::Deferred { opcode, key } = slot else {
            continue;
        };
        *slot = if skip {
            Slot::Done {
                result: OpResult::NotFound,
                local_write: false,
            }
        } else {
            let req = Request::new(*opcode, key, &[]);
            dispatch(ctx, session, &req, &mut remote, &mut no_ticket)
        };
    }
    let pending = send_hops(ctx, &mut remote);
    for (core, answer) in pending {
        wave[core] = answer.recv().await;
    }
}

/// Keep `r` in `results` if the command's reply budget takes its value; otherwise the
/// command answers the budget's error and what it already gathered is dropped.
fn push_counted(
    r: OpResult,
    budget: &mut ReplyBudget,
    results: &mut Vec<OpResult>,
    command_first: usize,
) {
    let bytes = match &r {
        OpResult::Value { value, .. } => value.len(),
        _ => 0,
    };
    let was_over = budget.over().is_some();
    if !was_over && budget.take(bytes) {
        results.push(r);
        return;
    }
    let message = budget.over().unwrap_or("reply too large").to_string();
    let failed = OpResult::Failed {
        status: Status::TooLarge,
        message,
    };
    if !was_over {
        // free what the command gathered so far (its bytes stay counted until the batch ends)
        for earlier in &mut results[command_first..] {
            *earlier = failed.clone();
        }
    }
    results.push(failed);
}

/// The native protocol: one operation per frame, answered by request id.
pub struct NativeFront;

/// A native request's id, whether it asked for INFO, and whether its answer is a stored
/// value the client sees without its cell (GET, LOCAL_GET, UPDATE).
pub struct NativeReply {
    id: u64,
    info: bool,
    client_value: bool,
}

impl Front for NativeFront {
    type Reply = NativeReply;
    type Fatal = native::DecodeError;

    fn decode(
        &mut self,
        buf: &[u8],
        max_value_bytes: usize,
        op: &mut dyn FnMut(Request<'_>),
    ) -> Result<Option<(NativeReply, usize)>, native::DecodeError> {
        let Some((req, used)) = native::decode_request(buf, max_value_bytes)? else {
            return Ok(None);
        };
        let client_value = [Opcode::Get, Opcode::LocalGet, Opcode::Update]
            .iter()
            .any(|o| *o as u8 == req.opcode);
        let reply = NativeReply {
            id: req.request_id,
            info: req.opcode == Opcode::Info as u8,
            client_value,
        };
        op(req);
        Ok(Some((reply, used)))
    }

    fn complete(&self, buf: &[u8], max_value_bytes: usize) -> bool {
        !matches!(native::decode_request(buf, max_value_bytes), Ok(None))
    }

    fn needs_report(reply: &NativeReply) -> bool {
        reply.info
    }

    fn encode(
        &mut self,
        out: &mut Vec<u8>,
        reply: NativeReply,
        results: &mut [OpResult],
        cx: &ReplyCtx<'_>,
    ) -> bool {
        let refused = matches!(results.first(), Some(OpResult::Failed { .. }));
        let result = match (reply.info && !refused, cx.report) {
            (true, Some(report)) => OpResult::Value {
                value: info_json(cx.ctx, cx.view, report).into_bytes().into(),
                version: Version::ZERO,
            },
            _ => results
                .first_mut()
                .map(|r| std::mem::replace(r, OpResult::NotFound))
                .unwrap_or(OpResult::NotFound),
        };
        if reply.client_value {
            encode_client_value(out, reply.id, &result);
        } else {
            encode_result(out, reply.id, &result);
        }
        false
    }

    fn encode_fatal(&self, out: &mut Vec<u8>, e: &native::DecodeError) {
        native::encode_error(out, e.request_id(), e.status(), &e.to_string());
    }
}

/// The result of one slot, once its task, core or WAL sync has answered.
async fn resolve(
    slot: Slot,
    local_failure: &Option<OpResult>,
    remote: &mut [Option<Vec<OpResult>>],
) -> OpResult {
    match slot {
        Slot::Done {
            result,
            local_write,
        } => match (local_write, local_failure) {
            (true, Some(f)) => f.clone(),
            _ => result,
        },
        Slot::Task(task) => task.await.unwrap_or_else(|| OpResult::Failed {
            status: Status::Internal,
            message: "request task cancelled".into(),
        }),
        Slot::Remote { core, index } => {
            let r = remote[core]
                .as_mut()
                .and_then(|v| v.get_mut(index))
                .map(|r| std::mem::replace(r, OpResult::NotFound));
            r.unwrap_or_else(|| OpResult::Failed {
                status: Status::Internal,
                message: format!("core {core} did not answer"),
            })
        }
        Slot::Pong => OpResult::Written {
            was_live: false,
            version: Version::ZERO,
        },
        // The INFO text is built by the front from the node report.
        Slot::Info => OpResult::Value {
            value: Box::default(),
            version: Version::ZERO,
        },
        Slot::Refused { status, message } => OpResult::Failed {
            status,
            message: message.to_string(),
        },
        Slot::Deferred { .. } => OpResult::Failed {
            status: Status::Internal,
            message: "a deferred read was never fetched".into(),
        },
    }
}

/// A refusal for lack of authentication, counted.
fn refused(ctx: &CoreCtx, message: &'static str) -> Slot {
    ctx.metrics.refused();
    Slot::Refused {
        status: Status::Unauthorized,
        message,
    }
}

/// AUTH (user in the key, empty for `default`; password in the value): at once when right; a
/// wrong password is answered only after `AUTH_FAILURE_DELAY_MS`.
fn auth_slot(ctx: &Rc<CoreCtx>, session: &Session, user: &[u8], password: &[u8]) -> Slot {
    if session.authenticate(user, password) {
        return Slot::Pong;
    }
    ctx.metrics.refused();
    Slot::Task(
        glommio::spawn_local(async {
            glommio::timer::sleep(Duration::from_millis(AUTH_FAILURE_DELAY_MS)).await;
            OpResult::Failed {
                status: Status::Unauthorized,
                message: WRONGPASS.into(),
            }
        })
        .detach(),
    )
}

fn dispatch(
    ctx: &Rc<CoreCtx>,
    session: &Session,
    req: &Request<'_>,
    remote: &mut [Vec<Op>],
    last_ticket: &mut Option<u64>,
) -> Slot {
    let Some(opcode) = Opcode::from_u8(req.opcode) else {
        return Slot::Refused {
            status: Status::UnknownOpcode,
            message: "unknown opcode",
        };
    };
    if let Err(message) = session.allows(opcode) {
        ctx.metrics.refused();
        return Slot::Refused {
            status: Status::Unauthorized,
            message,
        };
    }
    let stored: Box<[u8]>;
    let op = match opcode {
        Opcode::Ping => return Slot::Pong,
        Opcode::Auth => return auth_slot(ctx, session, req.key, req.value),
        Opcode::PeerHello => {
            let dialer = String::from_utf8_lossy(req.key);
            return match session.hello(&dialer, req.value) {
                Some(answer) => Slot::Done {
                    result: OpResult::Value {
                        value: answer.into(),
                        version: Version::ZERO,
                    },
                    local_write: false,
                },
                None => refused(ctx, "no cluster secret here, or a malformed hello"),
            };
        }
        Opcode::PeerProve if session.prove(req.value) => return Slot::Pong,
        Opcode::PeerProve => {
            log::warn!(
                "core {}: a peer failed the cluster handshake (wrong secret or a replay)",
                ctx.core
            );
            return refused(ctx, "cluster handshake failed");
        }
        Opcode::Info => return Slot::Info,
        Opcode::Gossip => return Slot::Task(spawn_gossip(ctx, req.key, req.value)),
        Opcode::PingReq => return Slot::Task(spawn_ping_req(ctx, req.key)),
        Opcode::Leave => return Slot::Task(spawn_topology(ctx, None)),
        Opcode::Stream => {
            let target = String::from_utf8_lossy(req.key).into_owned();
            return Slot::Task(spawn_topology(ctx, Some(target)));
        }
        Opcode::RangeKeys | Opcode::Scan => {
            return Slot::Task(spawn_scan(ctx, opcode, req.key, req.value));
        }
        Opcode::Scrub => return Slot::Task(spawn_scrub(ctx)),
        Opcode::FlushAll | Opcode::FlushBelow => {
            return Slot::Task(spawn_flush(ctx, opcode, req.key));
        }
        Opcode::AeTree | Opcode::AeEntries | Opcode::Repair => {
            return Slot::Task(spawn_anti_entropy(ctx, opcode, req.key, req.value));
        }
        _ if req.key.is_empty() => {
            return Slot::Refused {
                status: Status::BadRequest,
                message: "empty key",
            }
        }
        Opcode::Prepare | Opcode::Accept => {
            let (c, key, body) = (ctx.clone(), Box::from(req.key), Box::from(req.value));
            let task = consensus::replica(c, key, opcode, body);
            return Slot::Task(glommio::spawn_local(task).detach());
        }
        Opcode::Consensus => {
            return match crate::wire::consensus::decode_command(req.value) {
                Some(command) => {
                    let forwarded = req.flags & native::FLAG_FORWARDED != 0;
                    // an expiry change on a collection leaves the round for its own path
                    let task = crate::server::data::update::expiry(
                        ctx.clone(),
                        Box::from(req.key),
                        command,
                        forwarded,
                    );
                    Slot::Task(glommio::spawn_local(task).detach())
                }
                None => Slot::Refused {
                    status: Status::BadRequest,
                    message: "malformed CONSENSUS command",
                },
            };
        }
        Opcode::Collection => {
            return match crate::wire::collection::decode_command(req.value) {
                Some(command) => {
                    let forwarded = req.flags & native::FLAG_FORWARDED != 0;
                    let task = crate::server::data::collection::run(
                        ctx.clone(),
                        Box::from(req.key),
                        command,
                        forwarded,
                    );
                    Slot::Task(glommio::spawn_local(task).detach())
                }
                None => Slot::Refused {
                    status: Status::BadRequest,
                    message: "malformed COLLECTION command",
                },
            };
        }
        Opcode::Update => {
            return match Change::of_request(req) {
                Ok(change) => Slot::Task(spawn_update(ctx, req.key, change)),
                Err(message) => Slot::Refused {
                    status: Status::BadRequest,
                    message,
                },
            };
        }
        Opcode::Put
            if req
                .expires_at_ms()
                .is_some_and(|at| cell::check_expiry(at).is_err()) =>
        {
            return Slot::Refused {
                status: Status::BadRequest,
                message: "invalid expire time: past the year 9999",
            };
        }
        // a replica with a wrong clock stores nothing (the coordinator hints it for later)
        Opcode::ReplicaPut if ctx.node.clock.replica_refuses() => return clock_fenced(ctx),
        // Owing a repair, this replica may have lost a key's newest acknowledged version: its
        // write answer could complete a quorum that misses it, and an older version would win.
        // It takes no replica write until repaired (the coordinator hints it for later); its
        // own anti-entropy pulls store what it lacks.
        Opcode::ReplicaPut if ctx.node.wal.repair_pending() => {
            return Slot::Refused {
                status: Status::Unavailable,
                message: REPAIRING,
            };
        }
        Opcode::ReplicaGet | Opcode::LocalGet if ctx.node.wal.repair_pending() => {
            return Slot::Refused {
                status: Status::Unavailable,
                message: REPAIRING,
            };
        }
        Opcode::Get if ctx.is_solo() && ctx.node.wal.repair_pending() => {
            return Slot::Refused {
                status: Status::Unavailable,
                message: REPAIRING,
            };
        }
        Opcode::Get | Opcode::Put | Opcode::Delete if !ctx.is_solo() => {
            let cell =
                (opcode == Opcode::Put).then(|| cell::encode(req.value, req.expires_at_ms()));
            let fields = if opcode == Opcode::Get {
                req.value
            } else {
                &[]
            };
            return Slot::Task(spawn_coordinated(ctx, opcode, req.key, cell, fields));
        }
        Opcode::Get if !req.value.is_empty() => OpRef::ReplicaGet(req.key, req.value),
        Opcode::Get | Opcode::LocalGet => OpRef::Get(req.key),
        Opcode::Put => {
            let cell = cell::encode(req.value, req.expires_at_ms());
            let core = ctx.ring.core_for_key(req.key);
            if core != ctx.core {
                // the cell moves into the message: the value is copied once, not twice
                let op = Op::Put {
                    key: req.key.into(),
                    value: cell,
                };
                return to_core(remote, core, op);
            }
            stored = cell;
            OpRef::Put(req.key, &stored)
        }
        Opcode::Delete => OpRef::Delete(req.key),
        Opcode::ReplicaPut => {
            let value = (req.flags & FLAG_TOMBSTONE == 0).then_some(req.value);
            OpRef::ReplicaPut(req.key, value, req.version)
        }
        Opcode::ReplicaGet => OpRef::ReplicaGet(req.key, req.value),
    };
    let core = ctx.ring.core_for_key(req.key);
    if core == ctx.core {
        let (result, ticket) = ctx.shard.execute(op);
        if ticket.is_some() {
            *last_ticket = ticket;
        }
        return Slot::Done {
            result,
            local_write: ticket.is_some(),
        };
    }
    to_core(remote, core, Op::from_ref(op))
}

/// Queue `op` for core `core` (sent with the batch's other operations for it).
fn to_core(remote: &mut [Vec<Op>], core: usize, op: Op) -> Slot {
    remote[core].push(op);
    Slot::Remote {
        core,
        index: remote[core].len() - 1,
    }
}

/// Encode one operation result as a native response.
pub fn encode_result(out: &mut Vec<u8>, request_id: u64, result: &OpResult) {
    let (status, flags, version, value): (Status, u8, Version, &[u8]) = match result {
        OpResult::Value { value, version } => (Status::Ok, 0, *version, value),
        OpResult::NotFound => (Status::NotFound, 0, Version::ZERO, &[]),
        OpResult::Tombstone { version } => (Status::NotFound, 0, *version, &[]),
        OpResult::Written { was_live, version } => (
            Status::Ok,
            if *was_live { FLAG_WAS_LIVE } else { 0 },
            *version,
            &[],
        ),
        OpResult::Stale { stored } => (Status::Stale, 0, *stored, &[]),
        OpResult::Failed { status, message } => {
            native::encode_error(out, request_id, *status, message);
            return;
        }
    };
    native::encode_response(
        out,
        &Response {
            request_id,
            status,
            flags,
            version,
            value,
        },
    );
}

/// Encode a GET's (or UPDATE's) result as the client sees it: the value without its cell,
/// and an expired key as not found.
pub fn encode_client_value(out: &mut Vec<u8>, request_id: u64, result: &OpResult) {
    match result.live_cell(wall_clock_ms()) {
        Ok(Some((c, _))) if c.kind != crate::core::cell::Kind::String => native::encode_error(
            out,
            request_id,
            Status::BadRequest,
            crate::core::consensus::change::WRONGTYPE,
        ),
        Ok(Some((c, version))) => native::encode_response(
            out,
            &Response {
                request_id,
                status: Status::Ok,
                flags: 0,
                version,
                value: c.value,
            },
        ),
        Ok(None) if matches!(result, OpResult::Value { .. }) => {
            encode_result(out, request_id, &OpResult::NotFound)
        }
        Ok(None) => encode_result(out, request_id, result),
        Err(e) => native::encode_error(out, request_id, Status::Internal, &e.to_string()),
    }
}

/// Every core's counters (this core's directly, the others' by message).
async fn node_report(ctx: &Rc<CoreCtx>) -> NodeReport {
    let mut cores: Vec<CoreStats> = Vec::with_capacity(ctx.peers.len());
    for (i, peer) in ctx.peers.iter().enumerate() {
        if i == ctx.core {
            cores.push(ctx.shard.stats(ctx.connections.get()));
            continue;
        }
        let (tx, rx) = flume::bounded(1);
        if peer.send_async(CoreMsg::Stats { reply: tx }).await.is_ok() {
            if let Ok(s) = rx.recv_async().await {
                cores.push(s);
            }
        }
    }
    NodeReport { cores }
}

/// The node's facts and every core's counters, as JSON (the native INFO reply).
fn info_json(ctx: &CoreCtx, view: &RingView, report: &NodeReport) -> String {
    let node = &ctx.node;
    let members: Vec<serde_json::Value> = view
        .listing
        .iter()
        .map(|u| {
            serde_json::json!({
                "id": u.id,
                "addr": u.addr,
                "status": u.status.as_str(),
                "incarnation": u.incarnation,
                "role": u.role.as_str(),
            })
        })
        .collect();
    let rep = view.replication;
    serde_json::json!({
        "members": members,
        "replication": {"n": rep.n, "r": rep.r, "w": rep.w},
        "node_id": node.node_id,
        "addr": node.addr.to_string(),
        "cores": node.cores,
        "uptime_s": node.started.elapsed().as_secs(),
        "connections": node.connections.load(std::sync::atomic::Ordering::Relaxed),
        "used_memory": report.cores.iter().map(|c| c.memory_bytes).sum::<u64>(),
        "max_memory": node.max_memory.unwrap_or(0),
        "core_stats": report.cores,
        "wal_health": node.wal.stats(),
        "clock": node.clock.stats(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{VALUE_BYTES_CEILING, VALUE_BYTES_MAX_DEFAULT};

    /// A batch keeps room for `BATCH_SCRATCH_KEEP` requests and frees a burst past it; its
    /// answers never outlive the batch.
    #[test]
    fn batch_scratch_is_kept_up_to_its_bound() {
        for (n, kept) in [(BATCH_SCRATCH_KEEP, true), (BATCH_SCRATCH_KEEP + 1, false)] {
            let mut b: Batch<()> = Batch::new(2, Rc::default());
            b.slots = Vec::with_capacity(n);
            b.slots.extend((0..n).map(|_| Slot::Pong));
            b.slots.clear();
            b.results.push(OpResult::NotFound);
            b.release();
            assert!(b.results.is_empty());
            assert_eq!(b.slots.capacity() >= n, kept, "{n} requests");
        }
    }

    #[test]
    fn reads_per_batch_keep_replies_within_the_limit() {
        assert_eq!(reads_per_batch(VALUE_BYTES_MAX_DEFAULT), 64);
        assert_eq!(
            reads_per_batch(REPLY_BUFFER_BYTES_MAX / INFLIGHT_REQUESTS_MAX),
            1024
        );
        assert_eq!(
            reads_per_batch(REPLY_BUFFER_BYTES_MAX / INFLIGHT_REQUESTS_MAX + 1),
            1023
        );
        assert_eq!(reads_per_batch(VALUE_BYTES_CEILING), 4);
        assert_eq!(reads_per_batch(100), INFLIGHT_REQUESTS_MAX);
        for v in [1usize, 100, 65_536, 1 << 20, VALUE_BYTES_CEILING] {
            assert!(reads_per_batch(v) * v <= REPLY_BUFFER_BYTES_MAX.max(v));
        }
    }
}
