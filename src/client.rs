//! A blocking Rust client for the native protocol: what `kv`, `kv bench` and the tests use.
//!
//! Owns one TCP connection. Requests may be pipelined with `send`/`recv`; the simple calls
//! (`put`, `get`, …) send one request and wait for its answer. Every call has a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::core::version::Version;
use crate::limits::{FRAME_BYTES_MAX, READ_CHUNK_BYTES, VALUE_BYTES_CEILING};
use crate::wire::native::{self, Opcode, Request, Status};

/// Client errors; `kv` maps them to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out waiting for {addr}")]
    Timeout { addr: String },
    #[error("connection to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} closed by the server")]
    Closed { addr: String },
    #[error("bad reply: {0}")]
    Protocol(#[from] native::DecodeError),
    #[error("server error ({status:?}): {message}")]
    Server { status: Status, message: String },
    #[error("reply for request {got}, expected {expected}")]
    Mismatch { expected: u64, got: u64 },
}

impl Error {
    /// Whether the server could not be reached or did not answer in time.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Timeout { .. } | Error::Closed { .. }
        ) || matches!(self, Error::Io { .. })
    }
}

/// An owned reply (the wire's: the node's peer links hold the same).
pub use crate::wire::native::Reply;

pub struct Client {
    stream: Stream,
    addr: String,
    next_id: u64,
    out: Vec<u8>,
    rbuf: Vec<u8>,
    rstart: usize,
}

/// A connection's bytes: plain TCP, or TLS over it (`set_tls`).
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tls(
        config: std::sync::Arc<rustls::ClientConfig>,
        addr: &str,
        tcp: TcpStream,
    ) -> std::io::Result<Stream> {
        let name = crate::certs::server_name(addr)
            .ok_or_else(|| std::io::Error::other(format!("no host in {addr} to verify")))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
    }
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl std::io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// TLS for every connection made after `set_tls`, verifying the node's certificate.
static TLS: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Make every later `Client::connect` use TLS, trusting the CA certificate(s) in `ca` (PEM).
pub fn set_tls(ca: &std::path::Path) -> Result<(), crate::certs::Error> {
    set_tls_with(ca, None)
}

/// `set_tls`, presenting the certificate and key in `identity` (PEM files) to a node that asks
/// for client certificates (`--tls-client-ca`).
pub fn set_tls_with(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<(), crate::certs::Error> {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(crate::certs::roots(ca)?);
    let config = match identity {
        Some((cert, key)) => {
            let (chain, key) = crate::certs::identity(cert, key)?;
            config.with_client_auth_cert(chain, key)?
        }
        None => config.with_no_client_auth(),
    };
    let _ = TLS.set(std::sync::Arc::new(config));
    Ok(())
}

/// The password every connection made after `set_password` authenticates with (the `kv`
/// binary sets it from `--password-file` or `KVSTORE_PASSWORD`).
static PASSWORD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// The user those connections authenticate as (`default` when unset; `reader` reads only).
static USER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Make every later `Client::connect` authenticate with `password` (first call wins).
pub fn set_password(password: Vec<u8>) {
    let _ = PASSWORD.set(password);
}

/// Make those connections authenticate as `user` (first call wins).
pub fn set_user(user: Vec<u8>) {
    let _ = USER.set(user);
}

/// The password set with `set_password`, if any (for other connection kinds, e.g. RESP).
pub fn password() -> Option<&'static [u8]> {
    PASSWORD.get().map(Vec::as_slice)
}

impl Client {
    /// Connect to `addr` ("host:port"), with `timeout` for connecting and for every reply.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, Error> {
        let err = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        let sockaddrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(err)?.collect();
        let mut last = std::io::Error::other("no address");
        for sa in sockaddrs {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(err)?;
                    stream.set_read_timeout(Some(timeout)).map_err(err)?;
                    stream.set_write_timeout(Some(timeout)).map_err(err)?;
                    let stream = match TLS.get() {
                        None => Stream::Plain(stream),
                        Some(config) => Stream::tls(config.clone(), addr, stream).map_err(err)?,
                    };
                    let mut client = Client {
                        stream,
                        addr: addr.to_string(),
                        next_id: 1,
                        out: Vec::with_capacity(4096),
                        rbuf: Vec::with_capacity(4096),
                        rstart: 0,
                    };
                    if let Some(p) = PASSWORD.get() {
                        let user = USER.get().map(Vec::as_slice).unwrap_or_default();
                        client.auth_as(user, p)?;
                    }
                    return Ok(client);
                }
                Err(e) => last = e,
            }
        }
        Err(err(last))
    }

    /// Queue one request (not sent until `flush`); returns its request id.
    pub fn queue(&mut self, opcode: Opcode, key: &[u8], value: &[u8]) -> u64 {
        self.queue_flagged(opcode, key, value, 0, 0)
    }

    /// Queue one request with flags and the header's `hlc` field (a PUT's or UPDATE's expiry).
    fn queue_flagged(
        &mut self,
        opcode: Opcode,
        key: &[u8],
        value: &[u8],
        flags: u8,
        hlc: u64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            request_id: id,
            opcode: opcode as u8,
            version: Version { hlc, writer: 0 },
            flags,
            key,
            value,
        };
        native::encode_request(&mut self.out, &req);
        id
    }

    /// Send everything queued.
    pub fn flush(&mut self) -> Result<(), Error> {
        let r = self
            .stream
            .write_all(&self.out)
            .and_then(|_| self.stream.flush());
        self.out.clear();
        r.map_err(|e| self.io_err(e))
    }

    /// Write raw bytes (tests use it to send malformed frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush())
            .map_err(|e| self.io_err(e))
    }

    fn io_err(&self, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout {
                addr: self.addr.clone(),
            },
            _ => Error::Io {
                addr: self.addr.clone(),
                source: e,
            },
        }
    }

    /// Receive the next reply, in order.
    pub fn recv(&mut self) -> Result<Reply, Error> {
        loop {
            let pending = &self.rbuf[self.rstart..];
            if let Some((r, used)) = native::decode_response(pending, VALUE_BYTES_CEILING)? {
                let reply = Reply {
                    request_id: r.request_id,
                    status: r.status,
                    flags: r.flags,
                    version: r.version,
                    value: r.value.to_vec(),
                };
                self.rstart += used;
                if self.rstart == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rstart = 0;
                }
                return Ok(reply);
            }
            if self.rstart > 0 {
                self.rbuf.drain(..self.rstart);
                self.rstart = 0;
            }
            let len = self.rbuf.len();
            let want = (len + READ_CHUNK_BYTES).min(FRAME_BYTES_MAX + READ_CHUNK_BYTES);
            self.rbuf.resize(want, 0);
            let n = match self.stream.read(&mut self.rbuf[len..]) {
                Ok(n) => n,
                // A signal interrupted the read (EINTR): nothing was read, read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.rbuf.truncate(len);
                    continue;
                }
                Err(e) => {
                    self.rbuf.truncate(len);
                    return Err(self.io_err(e));
                }
            };
            self.rbuf.truncate(len + n);
            if n == 0 {
                return Err(Error::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
    }

    /// One request, one reply; error statuses become `Error::Server`.
    pub fn call(&mut self, opcode: Opcode, key: &[u8], value: &[u8]) -> Result<Reply, Error> {
        self.call_flagged(opcode, key, value, 0, 0)
    }

    fn call_flagged(
        &mut self,
        opcode: Opcode,
        key: &[u8],
        value: &[u8],
        flags: u8,
        hlc: u64,
    ) -> Result<Reply, Error> {
        let id = self.queue_flagged(opcode, key, value, flags, hlc);
        self.flush()?;
        let reply = self.recv()?;
        if reply.request_id != id {
            return Err(Error::Mismatch {
                expected: id,
                got: reply.request_id,
            });
        }
        if reply.status.is_error() {
            let message = String::from_utf8_lossy(&reply.value).into_owned();
            return Err(Error::Server {
                status: reply.status,
                message,
            });
        }
        Ok(reply)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Reply, Error> {
        self.call(Opcode::Put, key, value)
    }

    /// A conditional command (linearizable per key, by consensus): its reply, or the
    /// command's own error (INCR of a non-integer…) as `Decoded::Error`.
    pub fn conditional(
        &mut self,
        key: &[u8],
        command: &crate::core::consensus::command::Command,
    ) -> Result<crate::wire::consensus::Decoded, Error> {
        let body = crate::wire::consensus::encode_command(command);
        let reply = self.call(Opcode::Consensus, key, &body)?;
        crate::wire::consensus::decode_reply(&reply.value).ok_or_else(|| Error::Server {
            status: Status::Internal,
            message: "a malformed CONSENSUS reply".into(),
        })
    }

    /// Store `value` under `key`, expiring at `expires_at_ms` (ms since the Unix epoch).
    pub fn put_expiring(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
    ) -> Result<Reply, Error> {
        self.call_flagged(Opcode::Put, key, value, native::FLAG_EXPIRES, expires_at_ms)
    }

    /// Set `key`'s expiry (ms since the Unix epoch; `None`: never expires). Returns whether
    /// the key existed.
    pub fn expire(&mut self, key: &[u8], expires_at_ms: Option<u64>) -> Result<bool, Error> {
        let (flags, at) = match expires_at_ms {
            Some(at) => (native::FLAG_EXPIRES, at),
            None => (native::FLAG_PERSIST, 0),
        };
        let r = self.call_flagged(Opcode::Update, key, &[], flags, at)?;
        Ok(r.status == Status::Ok)
    }

    /// The value, or `None` if the key does not exist.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let r = self.call(Opcode::Get, key, &[])?;
        Ok((r.status == Status::Ok).then_some(r.value))
    }

    /// Read only this node's own store (no quorum, no repair).
    pub fn get_local(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let r = self.call(Opcode::LocalGet, key, &[])?;
        Ok((r.status == Status::Ok).then_some(r.value))
    }

    /// Delete; returns whether the key was live.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.call(Opcode::Delete, key, &[])?.was_live())
    }

    pub fn ping(&mut self) -> Result<(), Error> {
        self.call(Opcode::Ping, &[], &[]).map(|_| ())
    }

    /// Ask the node to stream its data to the rest of the cluster, leave it and exit. Waits for
    /// the node's answer (the number of records streamed); the node's own deadlines bound it,
    /// so the caller should connect with a timeout of minutes.
    pub fn leave(&mut self) -> Result<u64, Error> {
        let r = self.call(Opcode::Leave, &[], &[])?;
        Ok(String::from_utf8_lossy(&r.value).parse().unwrap_or(0))
    }

    /// Authenticate this connection (AUTH) with the node's password.
    pub fn auth(&mut self, password: &[u8]) -> Result<(), Error> {
        self.auth_as(b"", password)
    }

    /// Authenticate as `user` (empty: `default`; `reader`: the read-only user).
    pub fn auth_as(&mut self, user: &[u8], password: &[u8]) -> Result<(), Error> {
        self.call(Opcode::Auth, user, password).map(|_| ())
    }

    /// One SCAN step across the cluster from `cursor` (0 to start): the next cursor (0 when
    /// done) and up to about `count` keys matching the Redis glob `pattern` (empty: all).
    pub fn scan(
        &mut self,
        cursor: u64,
        count: u32,
        pattern: &[u8],
    ) -> Result<(u64, Vec<Vec<u8>>), Error> {
        let key = crate::wire::scan::encode_cursor(cursor, count.max(1));
        let r = self.call(Opcode::Scan, &key, pattern)?;
        let (next, keys) =
            crate::wire::scan::decode_page(&r.value).ok_or_else(|| Error::Server {
                status: Status::Internal,
                message: "malformed SCAN page".into(),
            })?;
        Ok((next, keys.into_iter().map(<[u8]>::to_vec).collect()))
    }

    /// Run an anti-entropy round with every live member now; its report (JSON).
    pub fn repair(&mut self) -> Result<serde_json::Value, Error> {
        let r = self.call(Opcode::Repair, &[], &[])?;
        serde_json::from_slice(&r.value).map_err(|e| Error::Server {
            status: Status::Internal,
            message: format!("repair report is not JSON: {e}"),
        })
    }

    /// `kv scrub`: verify every sealed WAL segment of the node now; its JSON report.
    pub fn scrub(&mut self) -> Result<serde_json::Value, Error> {
        let r = self.call(Opcode::Scrub, &[], &[])?;
        serde_json::from_slice(&r.value).map_err(|e| Error::Server {
            status: Status::Internal,
            message: format!("scrub report is not JSON: {e}"),
        })
    }

    /// The node's INFO document (JSON).
    pub fn info(&mut self) -> Result<serde_json::Value, Error> {
        let r = self.call(Opcode::Info, &[], &[])?;
        serde_json::from_slice(&r.value).map_err(|e| Error::Server {
            status: Status::Internal,
            message: format!("bad INFO json: {e}"),
        })
    }
}
