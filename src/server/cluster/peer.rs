//! One core's connection to one peer node: pipelined native-protocol requests.
//!
//! Shared-nothing: each core keeps its own connection to each peer and never borrows another
//! core's. Requests queued in the same turn of the event loop leave in one write (batching);
//! answers are matched by request id. Timeouts cost no timer per request: each request expires
//! at a tick of its connection's sweep clock (`PEER_TIMEOUT_TICK_MS`, running only while
//! requests are pending), so a request times out between `timeout` and `timeout` + two ticks.
//! Flow control: at most `PEER_INFLIGHT_MAX` requests wait for answers on a connection;
//! coordinators wait for room (up to `PEER_ROOM_WAIT_MS`) before sending, so a replica that
//! falls behind slows the clients of its coordinators instead of growing queues (and then
//! timing out) without bound.
//! A broken connection fails its pending requests and is re-established (the peer's name
//! resolved again) on the next request. A *silent* connection counts as broken: when a request
//! times out and nothing at all was answered on its connection since it was sent, the
//! connection is closed. Keeping it would leave the peer behind TCP's retransmission backoff
//! after a partition heals (seen: `rto:52224 backoff:8`, reunion 46 s after a 60 s cut); a
//! fresh connection reaches a healed peer at once.

use hashbrown::HashMap;
use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::core::round::Standing;
use crate::core::version::Version;
use crate::limits::{
    PEER_CONNECT_TIMEOUT_MS, PEER_INFLIGHT_MAX, PEER_RECONNECT_BACKOFF_MS, PEER_STALL_MS,
    PEER_TIMEOUT_TICK_MS, READ_CHUNK_BYTES, STORED_VALUE_BYTES_CEILING,
};
use crate::server::front::auth;
use crate::server::notify::{channel, Notify, Receiver, Sender};
use crate::wire::native::Reply;
use crate::wire::native::{self, Opcode, Request};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("cannot resolve peer {0}")]
    Resolve(String),
    #[error("cannot connect to peer {addr}: {cause}")]
    Connect { addr: String, cause: String },
    #[error("peer {0} timed out")]
    Timeout(String),
    #[error("connection to peer {0} broke")]
    Broken(String),
}

struct Conn {
    out: RefCell<Vec<u8>>,
    out_ready: Notify,
    /// By request id (hashbrown's default hasher: this map is touched twice per request).
    pending: RefCell<HashMap<u64, Pending>>,
    /// Wakes coordinators waiting for fewer than `PEER_INFLIGHT_MAX` pending requests.
    space: Notify,
    /// Wakes the sweeper when the first request is pending or the connection broke.
    sweep_ready: Notify,
    /// Ticks of the sweep clock so far.
    epoch: Cell<u64>,
    next_id: Cell<u64>,
    broken: Cell<bool>,
    /// Wakes the reader and writer when the connection breaks (they then drop the socket).
    closed: Notify,
    /// Answers read so far (a request that expires with this unchanged since it was sent
    /// found the peer silent).
    answers: Cell<u64>,
    /// When the peer last made progress: an answer read, or the first request queued on an
    /// idle connection (so an idle connection is never stalled).
    progress: Cell<Instant>,
    /// Dialed again after the last connection broke: until it answers something, requests
    /// pending on it count as unanswered (a stopped peer accepts a new connection, and it
    /// would otherwise look healthy for `PEER_STALL_MS`).
    probation: bool,
}

struct Pending {
    reply: Sender<Result<Reply, Error>>,
    /// The request has timed out once the sweep clock reaches this tick.
    expires: u64,
    /// `Conn::answers` when the request was sent.
    answers_at_send: u64,
}

/// Sweep-clock ticks a request may wait: it expires after at least `timeout`.
fn ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() as u64).div_ceil(PEER_TIMEOUT_TICK_MS) + 1
}

/// One request to a peer: everything on the wire but the request id.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub opcode: Opcode,
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub version: Version,
    pub flags: u8,
}

impl<'a> Call<'a> {
    /// A request of `opcode` about `key` (empty when it has none), with no value or version.
    pub fn new(opcode: Opcode, key: &'a [u8]) -> Call<'a> {
        Call {
            opcode,
            key,
            value: &[],
            version: Version::ZERO,
            flags: 0,
        }
    }
}

/// Who we are to peers, when the cluster has a secret: every new connection proves it first
/// (`server::front::auth`'s handshake) before any other frame.
pub struct Identity {
    pub me: String,
    pub secret: Vec<u8>,
}

/// A peer link's byte stream: plain TCP, or TLS over it (`--tls-ca`).
trait Duplex: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin {}
impl<T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> Duplex for T {}

/// A peer node as seen from one core.
pub struct Peer {
    addr: String,
    identity: Option<Rc<Identity>>,
    /// Dial peers over TLS, verifying their certificate (`--tls-ca`).
    tls: Option<futures_rustls::TlsConnector>,
    conn: RefCell<Option<Rc<Conn>>>,
    connecting: Cell<bool>,
    connected: Notify,
    /// After a failed connect, requests fail at once until this instant (no reconnect storm).
    retry_after: Cell<Option<std::time::Instant>>,
}

impl Peer {
    pub fn new(addr: &str) -> Peer {
        Peer::with_identity(addr, None, None)
    }

    /// A peer whose connections use TLS (when `tls` is set) and start with the cluster
    /// handshake (when `identity` is set).
    pub fn with_identity(
        addr: &str,
        identity: Option<Rc<Identity>>,
        tls: Option<futures_rustls::TlsConnector>,
    ) -> Peer {
        Peer {
            addr: addr.to_string(),
            identity,
            tls,
            conn: RefCell::new(None),
            connecting: Cell::new(false),
            connected: Notify::default(),
            retry_after: Cell::new(None),
        }
    }

    /// How long requests still fail at once after a failed connect (`PEER_RECONNECT_BACKOFF_MS`).
    fn backoff_left(&self) -> Option<Duration> {
        let at = self.retry_after.get()?;
        let left = at.saturating_duration_since(std::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Whether another request may be queued now without exceeding `PEER_INFLIGHT_MAX`.
    pub fn has_room(&self) -> bool {
        match self.conn.borrow().as_ref() {
            Some(c) => c.broken.get() || c.pending.borrow().len() < PEER_INFLIGHT_MAX,
            None => true,
        }
    }

    /// Whether requests are pending on this peer's connection and it has answered none of them
    /// for `PEER_STALL_MS`: a silent or stopped peer, not a merely busy one. Coordinators leave
    /// a stalled peer out at once instead of waiting for room on its full connection.
    pub fn stalled(&self) -> bool {
        let stall = Duration::from_millis(PEER_STALL_MS);
        match self.conn.borrow().as_ref() {
            Some(c) => {
                !c.broken.get()
                    && !c.pending.borrow().is_empty()
                    && (c.progress.get().elapsed() >= stall
                        || (c.probation && c.answers.get() == 0))
            }
            None => false,
        }
    }

    /// Milliseconds since this peer's connection last made progress (0 without one).
    pub fn quiet_ms(&self) -> u64 {
        self.conn
            .borrow()
            .as_ref()
            .map_or(0, |c| c.progress.get().elapsed().as_millis() as u64)
    }

    /// How this peer's connection stands (no connection yet counts as answering: the next
    /// request connects).
    pub fn standing(&self) -> Standing {
        match self.conn.borrow().as_ref() {
            Some(c) if c.broken.get() => Standing::Broken,
            Some(c) if self.stalled() && c.probation && c.answers.get() == 0 => Standing::Unproven,
            Some(_) if self.stalled() => Standing::Silent,
            _ => Standing::Answering,
        }
    }

    /// Wait until this peer's connection has room for another request (or is gone: then the
    /// request itself fails or reconnects).
    pub async fn wait_for_space(&self) {
        let conn = self.conn.borrow().clone();
        if let Some(c) = conn {
            c.space
                .wait_until(|| c.broken.get() || c.pending.borrow().len() < PEER_INFLIGHT_MAX)
                .await;
        }
    }

    /// Send one request and wait up to `timeout` for its answer.
    pub async fn request(&self, call: Call<'_>, timeout: Duration) -> Result<Reply, Error> {
        let conn = self.connection().await?;
        let answer = enqueue(&conn, call, timeout);
        match answer.recv().await {
            Some(answer) => answer,
            None => Err(Error::Broken(self.addr.clone())),
        }
    }

    /// Queue a request on the open connection without waiting, if there is one (else `None`:
    /// use `request`, which connects). The answer, or the timeout, arrives on the receiver; it
    /// ends without one if the connection breaks.
    pub fn send_now(
        &self,
        call: Call<'_>,
        timeout: Duration,
    ) -> Option<Receiver<Result<Reply, Error>>> {
        let conn = self.conn.borrow();
        let c = conn.as_ref().filter(|c| !c.broken.get())?;
        Some(enqueue(c, call, timeout))
    }

    /// `request` to a member the view calls ALIVE, for a round every member must answer
    /// (FLUSHALL, anti-entropy): a connect that failed moments ago means it restarted since,
    /// so the short reconnect backoff is waited out instead of failing at once. Never for the
    /// data path, whose writes hint a member that does not answer.
    pub async fn request_when_back(
        &self,
        call: Call<'_>,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        if let Some(left) = self.backoff_left() {
            glommio::timer::sleep(left).await;
        }
        self.request(call, timeout).await
    }

    /// `request` with a timer of its own, for callers whose timing is part of a protocol
    /// (gossip probes): it gives up at `timeout`, not up to two sweep ticks later.
    pub async fn request_exact(&self, call: Call<'_>, timeout: Duration) -> Result<Reply, Error> {
        let answer = self.request(call, timeout);
        match glommio::timer::timeout(timeout, async { Ok(answer.await) }).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout(self.addr.clone())),
        }
    }

    async fn connection(&self) -> Result<Rc<Conn>, Error> {
        loop {
            if let Some(c) = self.conn.borrow().as_ref() {
                if !c.broken.get() {
                    return Ok(c.clone());
                }
            }
            if !self.connecting.get() {
                break;
            }
            self.connected.wait_until(|| !self.connecting.get()).await;
        }
        if let Some(t) = self.retry_after.get() {
            if std::time::Instant::now() < t {
                return Err(Error::Connect {
                    addr: self.addr.clone(),
                    cause: "backing off".into(),
                });
            }
        }
        // The guard clears `connecting` even if this future is dropped mid-connect (a caller's
        // timeout, e.g. `request_exact`): otherwise every later request would wait forever.
        let redial = self.conn.borrow().as_ref().is_some_and(|c| c.broken.get());
        self.connecting.set(true);
        let guard = Connecting(self);
        let r = self.connect(redial).await;
        drop(guard);
        let backoff = Duration::from_millis(PEER_RECONNECT_BACKOFF_MS);
        self.retry_after
            .set(r.is_err().then(|| std::time::Instant::now() + backoff));
        let conn = r?;
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self, probation: bool) -> Result<Rc<Conn>, Error> {
        // Resolved again on every connect (a restarted container comes back with a new IP), on
        // glommio's blocking-thread pool: a slow DNS answer must not stall this core.
        let name = self.addr.clone();
        let resolved: Option<SocketAddr> = glommio::executor()
            .spawn_blocking(move || name.to_socket_addrs().ok().and_then(|mut a| a.next()))
            .await;
        let sa = resolved.ok_or_else(|| Error::Resolve(self.addr.clone()))?;
        let timeout = Duration::from_millis(PEER_CONNECT_TIMEOUT_MS);
        // Our own timer around io_uring's linked timeout: a connect whose SYNs are dropped
        // (a partition) was seen to outlive that timeout until a SYN retransmission got
        // through, tens of seconds after the heal, and every request to the peer waited on it.
        let connect = async {
            TcpStream::connect_timeout(sa, timeout)
                .await
                .map_err(|e| e.to_string())
        };
        let tcp = glommio::timer::timeout(timeout, async { Ok(connect.await) })
            .await
            .unwrap_or_else(|_| Err("connection timed out".to_string()))
            .map_err(|cause| Error::Connect {
                addr: self.addr.clone(),
                cause,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Duplex> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = crate::certs::server_name(&self.addr).ok_or_else(|| Error::Connect {
                    addr: self.addr.clone(),
                    cause: "no host name to verify its certificate against".into(),
                })?;
                let shake = glommio::timer::timeout(timeout, async {
                    Ok(connector.connect(name, tcp).await)
                })
                .await;
                match shake {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        log::warn!("peer {}: TLS handshake failed: {e}", self.addr);
                        return Err(Error::Connect {
                            addr: self.addr.clone(),
                            cause: format!("TLS: {e}"),
                        });
                    }
                    Err(_) => {
                        return Err(Error::Connect {
                            addr: self.addr.clone(),
                            cause: "TLS handshake timed out".into(),
                        })
                    }
                }
            }
        };
        if let Some(id) = &self.identity {
            let shake =
                glommio::timer::timeout(timeout, async { Ok(handshake(&mut stream, id).await) })
                    .await
                    .unwrap_or_else(|_| Err("cluster handshake timed out".to_string()));
            if let Err(cause) = shake {
                log::warn!("peer {}: {cause}", self.addr);
                return Err(Error::Connect {
                    addr: self.addr.clone(),
                    cause,
                });
            }
        }
        let conn = Rc::new(Conn {
            out: RefCell::new(Vec::with_capacity(4096)),
            out_ready: Notify::default(),
            pending: RefCell::new(HashMap::new()),
            space: Notify::default(),
            sweep_ready: Notify::default(),
            epoch: Cell::new(0),
            next_id: Cell::new(1),
            broken: Cell::new(false),
            closed: Notify::default(),
            answers: Cell::new(0),
            progress: Cell::new(Instant::now()),
            probation,
        });
        let (reader, writer) = futures_lite::io::split(stream);
        glommio::spawn_local(write_loop(conn.clone(), writer)).detach();
        glommio::spawn_local(read_loop(conn.clone(), reader, self.addr.clone())).detach();
        glommio::spawn_local(sweep_loop(conn.clone(), self.addr.clone())).detach();
        Ok(conn)
    }
}

/// The dialer's side of the cluster handshake (`server::front::auth`): hello with our id and a fresh
/// nonce, check the listener's proof, answer ours.
async fn handshake(stream: &mut Box<dyn Duplex>, id: &Identity) -> Result<(), String> {
    let ours = auth::nonce();
    let answer = exchange(stream, Opcode::PeerHello, id.me.as_bytes(), &ours).await?;
    let theirs = auth::verify_listener(&id.secret, &answer, &ours, &id.me)
        .ok_or("the peer did not prove the cluster secret: refusing it")?;
    let proof = auth::dialer_proof(&id.secret, theirs, &ours, &id.me);
    exchange(stream, Opcode::PeerProve, &[], &proof).await?;
    Ok(())
}

/// One request and its answer on a bare stream (before the connection's loops start).
async fn exchange(
    stream: &mut Box<dyn Duplex>,
    opcode: Opcode,
    key: &[u8],
    value: &[u8],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    native::encode_request(&mut out, &Request::new(opcode, key, value));
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some((resp, _)) =
            native::decode_response(&buf, STORED_VALUE_BYTES_CEILING).map_err(|e| e.to_string())?
        {
            if resp.status != native::Status::Ok {
                let why = String::from_utf8_lossy(resp.value);
                return Err(format!("cluster handshake refused: {why}"));
            }
            return Ok(resp.value.to_vec());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the peer closed the connection during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn enqueue(conn: &Conn, call: Call<'_>, timeout: Duration) -> Receiver<Result<Reply, Error>> {
    let id = conn.next_id.get();
    conn.next_id.set(id + 1);
    let (tx, rx) = channel();
    let expires = conn.epoch.get() + ticks(timeout);
    if conn.pending.borrow().is_empty() {
        conn.progress.set(Instant::now());
    }
    let pending = Pending {
        reply: tx,
        expires,
        answers_at_send: conn.answers.get(),
    };
    conn.pending.borrow_mut().insert(id, pending);
    conn.sweep_ready.notify_all();
    let req = Request {
        request_id: id,
        opcode: call.opcode as u8,
        version: call.version,
        flags: call.flags,
        key: call.key,
        value: call.value,
    };
    native::encode_request(&mut conn.out.borrow_mut(), &req);
    conn.out_ready.notify_all();
    rx
}

/// While alive, a connect to the peer is in progress.
struct Connecting<'a>(&'a Peer);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.connecting.set(false);
        self.0.connected.notify_all();
    }
}

async fn write_loop(conn: Rc<Conn>, mut w: futures_lite::io::WriteHalf<Box<dyn Duplex>>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        conn.out_ready
            .wait_until(|| conn.broken.get() || !conn.out.borrow().is_empty())
            .await;
        if conn.broken.get() {
            return;
        }
        std::mem::swap(&mut buf, &mut conn.out.borrow_mut());
        // A write blocked on a silent peer ends when the connection is failed (socket closed).
        let written = futures_lite::future::or(
            async {
                match w.write_all(&buf).await {
                    // TLS holds records until flushed (plain TCP: nothing to do).
                    Ok(()) => Some(w.flush().await),
                    Err(e) => Some(Err(e)),
                }
            },
            async {
                conn.closed.wait_until(|| conn.broken.get()).await;
                None
            },
        )
        .await;
        if !matches!(written, Some(Ok(()))) {
            fail(&conn);
            return;
        }
        buf.clear();
    }
}

async fn read_loop(
    conn: Rc<Conn>,
    mut r: futures_lite::io::ReadHalf<Box<dyn Duplex>>,
    addr: String,
) {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        let mut answered = false;
        loop {
            match native::decode_response(&buf[start..end], STORED_VALUE_BYTES_CEILING) {
                Ok(Some((resp, used))) => {
                    let pending = conn.pending.borrow_mut().remove(&resp.request_id);
                    conn.answers.set(conn.answers.get() + 1);
                    conn.progress.set(Instant::now());
                    if let Some(p) = pending {
                        answered = true;
                        let _ = p.reply.send(Ok(Reply {
                            request_id: resp.request_id,
                            status: resp.status,
                            flags: resp.flags,
                            version: resp.version,
                            value: resp.value.to_vec(),
                        }));
                    }
                    start += used;
                }
                Ok(None) => break,
                Err(e) => {
                    log::warn!("peer {addr}: bad reply: {e}");
                    fail(&conn);
                    return;
                }
            }
        }
        if answered {
            conn.space.notify_all();
        }
        if start == end {
            start = 0;
            end = 0;
        } else if end == buf.len() {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        }
        // A read waiting on a silent peer ends when the connection is failed (socket closed).
        let read = futures_lite::future::or(async { Some(r.read(&mut buf[end..]).await) }, async {
            conn.closed.wait_until(|| conn.broken.get()).await;
            None
        })
        .await;
        match read {
            Some(Ok(n)) if n > 0 => end += n,
            _ => {
                fail(&conn);
                return;
            }
        }
    }
}

/// While requests are pending, advance the sweep clock every tick and time out the requests
/// that expired (also those whose caller went away). Parked while nothing is pending.
async fn sweep_loop(conn: Rc<Conn>, addr: String) {
    let tick = Duration::from_millis(PEER_TIMEOUT_TICK_MS);
    loop {
        conn.sweep_ready
            .wait_until(|| conn.broken.get() || !conn.pending.borrow().is_empty())
            .await;
        if conn.broken.get() {
            return;
        }
        glommio::timer::sleep(tick).await;
        let epoch = conn.epoch.get() + 1;
        conn.epoch.set(epoch);
        let expired: Vec<(u64, u64)> = conn
            .pending
            .borrow()
            .iter()
            .filter(|(_, p)| p.expires <= epoch)
            .map(|(id, p)| (*id, p.answers_at_send))
            .collect();
        let silent = expired.iter().any(|(_, a)| *a == conn.answers.get());
        for (id, _) in expired {
            let pending = conn.pending.borrow_mut().remove(&id);
            if let Some(p) = pending {
                let _ = p.reply.send(Err(Error::Timeout(addr.clone())));
            }
        }
        if silent {
            log::info!("peer {addr}: silent past a request's timeout; closing the connection");
            fail(&conn);
            return;
        }
        conn.space.notify_all();
    }
}

fn fail(conn: &Conn) {
    conn.broken.set(true);
    // Pending requests end without an answer (their callers see `Broken`).
    conn.pending.borrow_mut().clear();
    conn.closed.notify_all();
    conn.out_ready.notify_all();
    conn.space.notify_all();
    conn.sweep_ready.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::native::{Response, Status};
    use std::time::Instant;

    use crate::on_executor as run;

    /// A peer that records the ids of the requests it reads and answers (OK) only the ids it
    /// is told to, when it is told to.
    async fn start_server(answer: Receiver<u64>) -> (String, Rc<RefCell<Vec<u64>>>) {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        glommio::spawn_local(async move {
            let stream = listener.accept().await.expect("accept");
            let (mut r, mut w) = futures_lite::io::split(stream);
            glommio::spawn_local(async move {
                while let Some(id) = answer.recv().await {
                    let mut out = Vec::new();
                    let resp = Response {
                        request_id: id,
                        status: Status::Ok,
                        flags: 0,
                        version: Version::ZERO,
                        value: b"",
                    };
                    native::encode_response(&mut out, &resp);
                    if w.write_all(&out).await.is_err() {
                        return;
                    }
                }
            })
            .detach();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 4096];
            loop {
                let n = match r.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                while let Ok(Some((req, len))) = native::decode_request(&buf[used..], 0) {
                    s.borrow_mut().push(req.request_id);
                    used += len;
                }
                buf.drain(..used);
            }
        })
        .detach();
        (addr, seen)
    }

    async fn poll_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_silent_connection_is_closed_and_the_next_request_redials() {
        run(|| async {
            // The first connection is accepted and never answered (a peer behind a partition,
            // whose kernel no longer acknowledges); later ones answer every request.
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let accepted = Rc::new(Cell::new(0u32));
            let a = accepted.clone();
            glommio::spawn_local(async move {
                let mut held = Vec::new();
                while let Ok(stream) = listener.accept().await {
                    a.set(a.get() + 1);
                    if a.get() == 1 {
                        held.push(stream);
                        continue;
                    }
                    glommio::spawn_local(answer_every_request(stream)).detach();
                }
            })
            .detach();
            let peer = Peer::new(&addr);
            let timeout = Duration::from_millis(300);
            let r = peer.request(Call::new(Opcode::Ping, &[]), timeout).await;
            assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
            let r = peer.request(Call::new(Opcode::Ping, &[]), timeout).await;
            assert!(r.is_ok(), "the second request dialed afresh: {r:?}");
            assert_eq!(accepted.get(), 2);
        });
    }

    async fn answer_every_request(stream: TcpStream) {
        let (mut r, mut w) = futures_lite::io::split(stream);
        let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 4096]);
        loop {
            let n = match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut used = 0;
            while let Ok(Some((req, len))) = native::decode_request(&buf[used..], 0) {
                let resp = Response {
                    request_id: req.request_id,
                    status: Status::Ok,
                    flags: 0,
                    version: Version::ZERO,
                    value: b"",
                };
                native::encode_response(&mut out, &resp);
                used += len;
            }
            buf.drain(..used);
            if w.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// A peer that answers some requests is slow, not silent: its connection stays.
    #[test]
    fn a_connection_that_answers_is_kept_when_one_request_times_out() {
        run(|| async {
            let (answer, answers) = channel();
            let (addr, seen) = start_server(answers).await;
            let peer = Rc::new(Peer::new(&addr));
            let timeout = Duration::from_millis(300);
            let p = peer.clone();
            let lost = glommio::spawn_local(async move {
                p.request(Call::new(Opcode::Ping, &[]), timeout).await
            });
            poll_until("the first request", || seen.borrow().len() == 1).await;
            let first = peer.conn.borrow().clone().expect("connected");
            let p = peer.clone();
            let answered = glommio::spawn_local(async move {
                p.request(Call::new(Opcode::Ping, &[]), Duration::from_secs(10))
                    .await
            });
            poll_until("the second request", || seen.borrow().len() == 2).await;
            let second_id = seen.borrow()[1];
            let _ = answer.send(second_id);
            assert!(answered.await.is_ok());
            assert!(matches!(lost.await, Err(Error::Timeout(_))));
            let now = peer.conn.borrow().clone().expect("connected");
            assert!(
                Rc::ptr_eq(&first, &now) && !now.broken.get(),
                "connection kept"
            );
        });
    }

    #[test]
    fn a_silent_peer_times_out_on_the_sweep_clock() {
        run(|| async {
            let (_answer, answers) = channel();
            let (addr, seen) = start_server(answers).await;
            let peer = Peer::new(&addr);
            let timeout = Duration::from_millis(300);
            let started = Instant::now();
            let r = peer.request(Call::new(Opcode::Ping, &[]), timeout).await;
            let waited = started.elapsed();
            assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
            assert_eq!(seen.borrow().len(), 1);
            assert!(waited >= timeout, "gave up after {waited:?}");
            // Two ticks is the bound; the rest is room for a loaded machine.
            let bound = timeout + Duration::from_millis(2 * PEER_TIMEOUT_TICK_MS + 2_000);
            assert!(waited < bound, "gave up only after {waited:?}");
            // request_exact keeps its own timer (a fresh peer: the silent connection is gone).
            let (_answer, answers) = channel();
            let (addr, _) = start_server(answers).await;
            let peer = Peer::new(&addr);
            let started = Instant::now();
            let r = peer
                .request_exact(Call::new(Opcode::Ping, &[]), timeout)
                .await;
            assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
            assert!(started.elapsed() >= timeout);
        });
    }

    /// A loopback listener whose accept queue is full and never drained: a connect to it
    /// hangs (the SYNs are dropped) until the connect timeout.
    fn unanswered_listener() -> (String, Vec<std::net::TcpStream>, libc::c_int) {
        // SAFETY: plain socket calls on a descriptor we own; the address is a valid sockaddr_in.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket");
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len),
                0
            );
            assert_eq!(libc::listen(fd, 0), 0);
            let mut got = len;
            libc::getsockname(fd, &mut sa as *mut _ as *mut libc::sockaddr, &mut got);
            let addr = format!("127.0.0.1:{}", u16::from_be(sa.sin_port));
            let fill = (0..4)
                .filter_map(|_| {
                    let to = Duration::from_millis(200);
                    std::net::TcpStream::connect_timeout(&addr.parse().ok()?, to).ok()
                })
                .collect();
            (addr, fill, fd)
        }
    }

    /// A request given up by its caller's timer while the connect is still in progress (as
    /// gossip probes do) must not leave the peer waiting forever for that connect.
    #[test]
    fn a_request_dropped_mid_connect_does_not_wedge_the_peer() {
        let (addr, _fill, fd) = unanswered_listener();
        run(move || async move {
            let peer = Peer::new(&addr);
            let early = Duration::from_millis(100);
            let r = peer
                .request_exact(Call::new(Opcode::Ping, &[]), early)
                .await;
            assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
            // The next request connects again (and fails: nobody accepts); it must end.
            let deadline = Duration::from_secs(30);
            let next = glommio::timer::timeout(deadline, async {
                Ok(peer.request(Call::new(Opcode::Ping, &[]), early).await)
            })
            .await;
            assert!(
                matches!(next, Ok(Err(_))),
                "the peer stayed wedged: {next:?}"
            );
        });
        // SAFETY: closing the listener we opened.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn a_full_connection_holds_callers_until_an_answer_frees_room() {
        run(|| async {
            let (answer, answers) = channel();
            let (addr, seen) = start_server(answers).await;
            let peer = Rc::new(Peer::new(&addr));
            let long = Duration::from_secs(60);
            let mut calls = Vec::new();
            for _ in 0..PEER_INFLIGHT_MAX {
                let p = peer.clone();
                calls.push(glommio::spawn_local(async move {
                    p.request(Call::new(Opcode::Ping, &[]), long).await
                }));
            }
            poll_until("every request to reach the peer", || {
                seen.borrow().len() == PEER_INFLIGHT_MAX
            })
            .await;
            let mut room = Box::pin(peer.wait_for_space());
            assert!(
                futures_lite::future::poll_once(room.as_mut())
                    .await
                    .is_none(),
                "room reported with {PEER_INFLIGHT_MAX} requests pending"
            );
            let first = seen.borrow()[0];
            answer.send(first).expect("answer");
            let deadline = Duration::from_secs(30);
            glommio::timer::timeout(deadline, async {
                room.await;
                Ok(())
            })
            .await
            .expect("room after one answer");
            for id in seen.borrow().iter().skip(1) {
                answer.send(*id).expect("answer");
            }
            for c in calls {
                let r = c.await;
                assert!(matches!(r, Ok(ref r) if r.status == Status::Ok), "{r:?}");
            }
        });
    }
}
