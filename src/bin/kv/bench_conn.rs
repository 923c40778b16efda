//! The connections `kv bench` drives: the native client, or a minimal RESP client so the same
//! load can be put on any Redis (and on kvstore's Redis front) for side-by-side figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kvstore::client::{Client, Error};
use kvstore::wire::native::Opcode;
use kvstore::wire::resp;

/// Which protocol `kv bench` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Native,
    Resp,
}

pub enum Conn {
    Native(Client),
    Resp(RespConn),
}

impl Conn {
    pub fn connect(addr: &str, timeout: Duration, protocol: Protocol) -> Result<Conn, Error> {
        Ok(match protocol {
            Protocol::Native => Conn::Native(Client::connect(addr, timeout)?),
            Protocol::Resp => Conn::Resp(RespConn::connect(addr, timeout)?),
        })
    }

    pub fn queue_get(&mut self, key: &[u8]) {
        match self {
            Conn::Native(c) => {
                c.queue(Opcode::Get, key, &[]);
            }
            Conn::Resp(c) => c.queue(&[b"GET", key]),
        }
    }

    pub fn queue_set(&mut self, key: &[u8], value: &[u8]) {
        match self {
            Conn::Native(c) => {
                c.queue(Opcode::Put, key, value);
            }
            Conn::Resp(c) => c.queue(&[b"SET", key, value]),
        }
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        match self {
            Conn::Native(c) => c.flush(),
            Conn::Resp(c) => c.flush(),
        }
    }

    /// One answer, in order: `Ok(Some(message))` if it was an error reply.
    pub fn recv(&mut self) -> Result<Option<String>, Error> {
        match self {
            Conn::Native(c) => {
                let r = c.recv()?;
                Ok(r.status
                    .is_error()
                    .then(|| String::from_utf8_lossy(&r.value).into_owned()))
            }
            Conn::Resp(c) => c.recv(),
        }
    }
}

/// A blocking RESP2 client: pipelined commands out, one reply at a time in.
pub struct RespConn {
    addr: String,
    out: Vec<u8>,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl RespConn {
    pub fn connect(addr: &str, timeout: Duration) -> Result<RespConn, Error> {
        let connect_err = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        let writer = TcpStream::connect(addr).map_err(connect_err)?;
        writer.set_nodelay(true).map_err(connect_err)?;
        writer
            .set_read_timeout(Some(timeout))
            .map_err(connect_err)?;
        let reader = BufReader::with_capacity(
            kvstore::limits::READ_CHUNK_BYTES,
            writer.try_clone().map_err(connect_err)?,
        );
        let mut conn = RespConn {
            addr: addr.to_string(),
            out: Vec::new(),
            writer,
            reader,
            line: Vec::new(),
        };
        if let Some(p) = kvstore::client::password() {
            conn.queue(&[b"AUTH", p]);
            conn.flush()?;
            if let Some(refused) = conn.recv()? {
                return Err(Error::Server {
                    status: kvstore::wire::native::Status::Unauthorized,
                    message: refused,
                });
            }
        }
        Ok(conn)
    }

    fn io(&self, source: std::io::Error) -> Error {
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Error::Timeout {
                addr: self.addr.clone(),
            },
            std::io::ErrorKind::UnexpectedEof => Error::Closed {
                addr: self.addr.clone(),
            },
            _ => Error::Io {
                addr: self.addr.clone(),
                source,
            },
        }
    }

    pub fn queue(&mut self, args: &[&[u8]]) {
        resp::array(&mut self.out, args.len());
        for a in args {
            resp::bulk(&mut self.out, a);
        }
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        let r = self.writer.write_all(&self.out);
        self.out.clear();
        r.map_err(|e| self.io(e))
    }

    /// Read one reply (GET/SET answers: simple string, error, integer or bulk string).
    pub fn recv(&mut self) -> Result<Option<String>, Error> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match self.line.first() {
            Some(b'-') => Ok(Some(
                String::from_utf8_lossy(&self.line[1..])
                    .trim_end()
                    .to_string(),
            )),
            Some(b'+' | b':' | b'_') => Ok(None),
            Some(b'$') => {
                let text = String::from_utf8_lossy(&self.line[1..]);
                let len: i64 = text.trim_end().parse().map_err(|_| self.bad_reply())?;
                if len >= 0 {
                    let mut body = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut body).map_err(|e| self.io(e))?;
                }
                Ok(None)
            }
            _ => Err(self.bad_reply()),
        }
    }

    fn bad_reply(&self) -> Error {
        Error::Io {
            addr: self.addr.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "unexpected RESP reply {:?}",
                    String::from_utf8_lossy(&self.line)
                ),
            ),
        }
    }
}
