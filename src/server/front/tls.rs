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
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// The first byte of a TLS handshake record.
pub const HANDSHAKE_BYTE: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Bad { path: PathBuf, what: String },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("--tls-cert and --tls-key go together")]
    Incomplete,
}

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

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    let pem = read(path)?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|e| Error::Bad {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(Error::Bad {
            path: path.to_path_buf(),
            what: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

/// Root certificates from a PEM file (to verify the other side).
pub fn roots(ca: &Path) -> Result<rustls::RootCertStore, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| Error::Bad {
            path: ca.to_path_buf(),
            what: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key from PEM files (a client's identity for a node that
/// asks for one, or a node's own).
pub fn identity(
    cert: &Path,
    key: &Path,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    Error,
> {
    let chain = certs(cert)?;
    let pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| Error::Bad {
            path: key.to_path_buf(),
            what: e.to_string(),
        })?
        .ok_or_else(|| Error::Bad {
            path: key.to_path_buf(),
            what: "no PEM private key in it".into(),
        })?;
    Ok((chain, key_der))
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

/// The name to verify a peer's certificate against: the host of `host:port`.
pub fn server_name(addr: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string()).ok()
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
