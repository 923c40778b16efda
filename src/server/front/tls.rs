//! TLS (rustls, no OpenSSL) for client connections and peer links, on the same port as plain
//! connections: a connection whose first byte is a TLS handshake record (0x16) is a TLS one.
//!
//! Owns: loading `--tls-cert`, `--tls-key`, `--tls-ca` and `--tls-client-ca` into rustls
//! configurations (with `--tls-client-ca`, a TLS client must present a certificate that CA
//! signed; a node always presents its own certificate when it dials a peer), the
//! `Transport` trait the connection loop is generic over (plain TCP or TLS over it), and a
//! stream that replays the bytes read to detect the protocol before the TLS handshake reads
//! them again. Never decides who may do what (`auth` does): TLS here is encryption and server
//! authentication; the cluster secret still authenticates peers.
//!
//! rustls is driven by `futures-rustls` over glommio's streams (futures-io traits): no tokio,
//! and each connection stays on its core.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::certs::Error;
use crate::certs::{identity, roots};
use glommio::net::TcpStream;

/// The first byte of a TLS handshake record.
pub const HANDSHAKE_BYTE: u8 = 0x16;

/// The node's TLS setup: what it serves with, and how it dials peers.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: futures_rustls::TlsAcceptor,
    /// Dialing peers over TLS (verifying them with `--tls-ca`, else the system has none: peers
    /// then need `--tls-ca`).
    pub connector: Option<futures_rustls::TlsConnector>,
    /// `--tls-only`: plain connections are closed unanswered.
    pub only: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("peers", &self.connector.is_some())
            .field("only", &self.only)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// From `--tls-cert`, `--tls-key`, (for peer links) `--tls-ca` and (to require client
    /// certificates) `--tls-client-ca`; `None` without a cert.
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<Tls>, Error> {
        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            _ => return Err(Error::Incomplete),
        };
        let (chain, key_der) = identity(cert, key)?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let server = match client_ca {
            Some(path) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(path)?),
                    provider(),
                )
                .build()
                .map_err(|e| Error::Bad {
                    path: path.to_path_buf(),
                    what: e.to_string(),
                })?;
                server.with_client_cert_verifier(verifier)
            }
            None => server.with_no_client_auth(),
        }
        .with_single_cert(chain.clone(), key_der.clone_key())?;
        let connector = match ca {
            Some(ca) => {
                let client = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots(ca)?)
                    .with_client_auth_cert(chain, key_der)?;
                Some(futures_rustls::TlsConnector::from(Arc::new(client)))
            }
            None => None,
        };
        Ok(Some(Tls {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(server)),
            connector,
            only: false,
        }))
    }
}

/// What the connection loop reads and writes: plain TCP or TLS over it.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl Transport for TcpStream {}

impl Transport for futures_rustls::server::TlsStream<Prefixed> {}

/// A TCP stream that first yields bytes already read from it (the ones protocol detection
/// consumed), so the TLS handshake sees the whole ClientHello.
pub struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl Prefixed {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Prefixed {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.len());
            let at = self.at;
            buf[..n].copy_from_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
