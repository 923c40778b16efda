//! One core's connection to one peer node: pipelined native-protocol requests.
//!
//! Shared-nothing: each core keeps its own connection to each peer and never borrows another
//! core's. Requests queued in the same turn of the event loop leave in one write (batching);
//! answers are matched by request id. A broken connection fails its pending requests and is
//! re-established (the peer's name resolved again) on the next request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::client::Reply;
use crate::core::version::Version;
use crate::limits::{
    PEER_CONNECT_TIMEOUT_MS, PEER_RECONNECT_BACKOFF_MS, READ_CHUNK_BYTES, VALUE_BYTES_CEILING,
};
use crate::server::notify::Notify;
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
    pending: RefCell<HashMap<u64, flume::Sender<Reply>>>,
    next_id: Cell<u64>,
    broken: Cell<bool>,
}

/// A peer node as seen from one core.
pub struct Peer {
    addr: String,
    conn: RefCell<Option<Rc<Conn>>>,
    connecting: Cell<bool>,
    connected: Notify,
    /// After a failed connect, requests fail at once until this instant (no reconnect storm).
    retry_after: Cell<Option<std::time::Instant>>,
}

impl Peer {
    pub fn new(addr: &str) -> Peer {
        Peer {
            addr: addr.to_string(),
            conn: RefCell::new(None),
            connecting: Cell::new(false),
            connected: Notify::default(),
            retry_after: Cell::new(None),
        }
    }

    /// Send one request and wait up to `timeout` for its answer.
    pub async fn request(
        &self,
        opcode: Opcode,
        key: &[u8],
        value: &[u8],
        version: Version,
        flags: u8,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let conn = self.connection().await?;
        let id = conn.next_id.get();
        conn.next_id.set(id + 1);
        let (tx, rx) = flume::bounded(1);
        conn.pending.borrow_mut().insert(id, tx);
        let req = Request {
            request_id: id,
            opcode: opcode as u8,
            version,
            flags,
            key,
            value,
        };
        native::encode_request(&mut conn.out.borrow_mut(), &req);
        conn.out_ready.notify_all();
        match glommio::timer::timeout(timeout, async { Ok(rx.recv_async().await) }).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(Error::Broken(self.addr.clone())),
            Err(_) => {
                conn.pending.borrow_mut().remove(&id);
                Err(Error::Timeout(self.addr.clone()))
            }
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
        self.connecting.set(true);
        let r = self.connect().await;
        self.connecting.set(false);
        self.connected.notify_all();
        let backoff = Duration::from_millis(PEER_RECONNECT_BACKOFF_MS);
        self.retry_after
            .set(r.is_err().then(|| std::time::Instant::now() + backoff));
        let conn = r?;
        *self.conn.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<Rc<Conn>, Error> {
        // Resolved again on every connect (a restarted container comes back with a new IP), on
        // glommio's blocking-thread pool: a slow DNS answer must not stall this core.
        let name = self.addr.clone();
        let resolved: Option<SocketAddr> = glommio::executor()
            .spawn_blocking(move || name.to_socket_addrs().ok().and_then(|mut a| a.next()))
            .await;
        let sa = resolved.ok_or_else(|| Error::Resolve(self.addr.clone()))?;
        let timeout = Duration::from_millis(PEER_CONNECT_TIMEOUT_MS);
        let stream = TcpStream::connect_timeout(sa, timeout)
            .await
            .map_err(|e| Error::Connect {
                addr: self.addr.clone(),
                cause: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let conn = Rc::new(Conn {
            out: RefCell::new(Vec::with_capacity(4096)),
            out_ready: Notify::default(),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            broken: Cell::new(false),
        });
        let (reader, writer) = futures_lite::io::split(stream);
        glommio::spawn_local(write_loop(conn.clone(), writer)).detach();
        glommio::spawn_local(read_loop(conn.clone(), reader, self.addr.clone())).detach();
        Ok(conn)
    }
}

async fn write_loop(conn: Rc<Conn>, mut w: futures_lite::io::WriteHalf<TcpStream>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        conn.out_ready
            .wait_until(|| conn.broken.get() || !conn.out.borrow().is_empty())
            .await;
        if conn.broken.get() {
            return;
        }
        std::mem::swap(&mut buf, &mut conn.out.borrow_mut());
        if w.write_all(&buf).await.is_err() {
            fail(&conn);
            return;
        }
        buf.clear();
    }
}

async fn read_loop(conn: Rc<Conn>, mut r: futures_lite::io::ReadHalf<TcpStream>, addr: String) {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        loop {
            match native::decode_response(&buf[start..end], VALUE_BYTES_CEILING) {
                Ok(Some((resp, used))) => {
                    let tx = conn.pending.borrow_mut().remove(&resp.request_id);
                    if let Some(tx) = tx {
                        let _ = tx.try_send(Reply {
                            request_id: resp.request_id,
                            status: resp.status,
                            flags: resp.flags,
                            version: resp.version,
                            value: resp.value.to_vec(),
                        });
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
        match r.read(&mut buf[end..]).await {
            Ok(0) | Err(_) => {
                fail(&conn);
                return;
            }
            Ok(n) => end += n,
        }
    }
}

fn fail(conn: &Conn) {
    conn.broken.set(true);
    conn.pending.borrow_mut().clear();
    conn.out_ready.notify_all();
}
