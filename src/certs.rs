//! Certificates and keys from PEM files, and the name a certificate is checked against: what
//! the node's TLS (`server::front::tls`) and the client's (`client::set_tls`) both load.
//!
//! Owns reading and parsing the files, with errors that name the file. Never builds a TLS
//! configuration or opens a connection.

use std::io;
use std::path::{Path, PathBuf};

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

/// The name to verify a peer's certificate against: the host of `host:port`.
pub fn server_name(addr: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string()).ok()
}
