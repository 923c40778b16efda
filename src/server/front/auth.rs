//! Who may ask what: client passwords, the cluster secret, protected mode.
//!
//! Owns: the node's credentials (`Credentials`: a password's SHA-256 and the cluster secret,
//! read from files or `KVSTORE_*` variables, never from a flag `ps` would show), each
//! connection's `Session` (what it has proven), the peer handshake's MACs, and the rule of which
//! opcode needs what (`Need`). Never sends or reads a socket itself: `connection` asks it, and
//! `peer` runs the dialer's side of the handshake with `dialer_proof` / `verify_listener`.
//!
//! Rules:
//! - a node with a password serves client operations only on connections that sent it (AUTH),
//!   PING excepted; LEAVE and REPAIR need it too (admin operations);
//! - a minimal ACL: with a read-only password too (`--readonly-password-file`), `AUTH reader
//!   <it>` opens a connection to reads only (GET, SCAN, INFO, LOCAL_GET); writes and admin
//!   operations are refused with `NOPERM`. `default` is the full user;
//! - a node with a cluster secret serves cluster opcodes (replica reads and writes, gossip,
//!   probes, streams, anti-entropy) only on connections that completed the handshake: the
//!   dialer sends its id and a fresh nonce, the listener answers its own nonce and
//!   HMAC-SHA256(secret, "listener" | dialer nonce | listener nonce | dialer id), the dialer
//!   checks it and answers HMAC(secret, "dialer" | listener nonce | dialer nonce | dialer id).
//!   Both sides prove the secret, and the listener's fresh nonce makes a recorded handshake
//!   useless on a new connection;
//! - protected mode: with no password and a listen address other than loopback, client
//!   operations from a non-loopback address are refused (as Redis does), unless
//!   `--protected-mode no`;
//! - passwords and MACs are compared in constant time; a wrong password is answered after
//!   `AUTH_FAILURE_DELAY_MS`, and a connection is closed after `AUTH_FAILURES_MAX` of them.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::wire::native::Opcode;

/// Bytes of a handshake nonce and of a MAC.
pub const NONCE_BYTES: usize = 32;
pub const MAC_BYTES: usize = 32;

/// What an opcode needs from the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing (PING, AUTH and the handshake itself).
    Nothing,
    /// A client that authenticated (when the node has a password).
    Client,
    /// A client, reading only (the read-only user may).
    Reader,
    /// A cluster member that proved the secret (when the node has one).
    Member,
}

pub fn need_of(opcode: Opcode) -> Need {
    match opcode {
        Opcode::Ping | Opcode::Auth | Opcode::PeerHello | Opcode::PeerProve => Need::Nothing,
        Opcode::ReplicaPut
        | Opcode::ReplicaGet
        | Opcode::Gossip
        | Opcode::PingReq
        | Opcode::Stream
        | Opcode::AeTree
        | Opcode::AeEntries
        | Opcode::RangeKeys
        | Opcode::FlushBelow
        | Opcode::Prepare
        | Opcode::Accept => Need::Member,
        Opcode::Get | Opcode::Info | Opcode::LocalGet | Opcode::Scan => Need::Reader,
        Opcode::Put
        | Opcode::Update
        | Opcode::Delete
        | Opcode::Leave
        | Opcode::Repair
        | Opcode::Scrub
        | Opcode::FlushAll
        | Opcode::Consensus
        | Opcode::Collection => Need::Client,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is empty")]
    Empty { what: &'static str },
}

/// The node's credentials and policy.
#[derive(Clone, Default)]
pub struct Credentials {
    password_hash: Option<[u8; 32]>,
    /// The read-only user's password (only with a password for the full user).
    reader_hash: Option<[u8; 32]>,
    secret: Option<Vec<u8>>,
    /// Protected mode applies (no password, listening beyond loopback, not turned off).
    pub protected: bool,
    /// Serve the original design's protocol (which has no AUTH) although a password is set.
    pub original_without_auth: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password_hash.map(|_| "<set>"))
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("protected", &self.protected)
            .finish()
    }
}

/// A credential from a file (trailing newline dropped) or, if no file, a variable's value.
pub fn load(
    what: &'static str,
    file: Option<&Path>,
    env_value: Option<String>,
) -> Result<Option<Vec<u8>>, Error> {
    let raw = match file {
        Some(p) => std::fs::read(p).map_err(|source| Error::Read {
            what,
            path: p.to_path_buf(),
            source,
        })?,
        None => match env_value {
            Some(v) => v.into_bytes(),
            None => return Ok(None),
        },
    };
    let trimmed = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(Error::Empty { what });
    }
    Ok(Some(trimmed.to_vec()))
}

impl Credentials {
    pub fn new(password: Option<Vec<u8>>, secret: Option<Vec<u8>>) -> Credentials {
        Credentials {
            password_hash: password.map(|p| Sha256::digest(&p).into()),
            reader_hash: None,
            secret,
            protected: false,
            original_without_auth: false,
        }
    }

    pub fn has_password(&self) -> bool {
        self.password_hash.is_some()
    }

    pub fn secret(&self) -> Option<&[u8]> {
        self.secret.as_deref()
    }

    /// Whether `given` is the password (constant time in its content).
    pub fn password_matches(&self, given: &[u8]) -> bool {
        match &self.password_hash {
            None => true,
            Some(h) => hash_eq(given, h),
        }
    }

    /// Give the read-only user `reader` this password (ignored without a full password: a
    /// node open to everyone has nothing to restrict).
    pub fn with_reader(mut self, password: Option<Vec<u8>>) -> Credentials {
        if self.password_hash.is_some() {
            self.reader_hash = password.map(|p| Sha256::digest(&p).into());
        }
        self
    }

    /// What `user` with `given` may do: `Some(true)` everything, `Some(false)` read only,
    /// `None` wrong user or password. User `default` (or none) is the full user; `reader`
    /// the read-only one.
    pub fn access_of(&self, user: &[u8], given: &[u8]) -> Option<bool> {
        match user {
            b"" | b"default" => {
                (self.has_password() && self.password_matches(given)).then_some(true)
            }
            b"reader" => self
                .reader_hash
                .as_ref()
                .is_some_and(|h| hash_eq(given, h))
                .then_some(false),
            _ => None,
        }
    }
}

/// Whether SHA-256 of `given` is `hash` (constant time in its content).
fn hash_eq(given: &[u8], hash: &[u8; 32]) -> bool {
    let g: [u8; 32] = Sha256::digest(given).into();
    g.iter().zip(hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; MAC_BYTES] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(secret) else {
        return [0; MAC_BYTES];
    };
    for p in parts {
        m.update(&(p.len() as u32).to_le_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn mac_eq(a: &[u8], b: &[u8; MAC_BYTES]) -> bool {
    a.len() == MAC_BYTES && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The listener's proof for a dialer's hello.
pub fn listener_proof(
    secret: &[u8],
    dialer_nonce: &[u8],
    listener_nonce: &[u8],
    dialer: &str,
) -> [u8; MAC_BYTES] {
    mac(
        secret,
        &[b"listener", dialer_nonce, listener_nonce, dialer.as_bytes()],
    )
}

/// The dialer's proof, answering the listener's nonce.
pub fn dialer_proof(
    secret: &[u8],
    listener_nonce: &[u8],
    dialer_nonce: &[u8],
    dialer: &str,
) -> [u8; MAC_BYTES] {
    mac(
        secret,
        &[b"dialer", listener_nonce, dialer_nonce, dialer.as_bytes()],
    )
}

/// The dialer checks the listener's answer (`listener nonce | proof`); returns the listener's
/// nonce when the proof holds.
pub fn verify_listener<'a>(
    secret: &[u8],
    answer: &'a [u8],
    dialer_nonce: &[u8],
    dialer: &str,
) -> Option<&'a [u8]> {
    if answer.len() != NONCE_BYTES + MAC_BYTES {
        return None;
    }
    let (nonce, proof) = answer.split_at(NONCE_BYTES);
    mac_eq(proof, &listener_proof(secret, dialer_nonce, nonce, dialer)).then_some(nonce)
}

/// A fresh random nonce (the OS's generator).
pub fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    if getrandom::getrandom(&mut n).is_err() {
        // No OS randomness: fall back on time and address entropy (still unique per call).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h: [u8; 32] = Sha256::digest(t.to_le_bytes()).into();
        n.copy_from_slice(&h);
    }
    n
}

/// A handshake in progress: (dialer id, dialer nonce, our nonce).
type Hello = (String, Vec<u8>, [u8; NONCE_BYTES]);

/// What one connection has proven.
pub struct Session {
    creds: std::sync::Arc<Credentials>,
    client: Cell<bool>,
    /// Authenticated as the read-only user: client operations that write are refused.
    read_only: Cell<bool>,
    member: Cell<bool>,
    failures: Cell<u32>,
    /// The connection speaks the original design's protocol (no AUTH there).
    original: bool,
    /// Handshake in progress: (dialer id, dialer nonce, our nonce).
    pending: RefCell<Option<Hello>>,
    /// A cluster opcode ran on this connection (with no secret, that is how a peer shows).
    peer_seen: Cell<bool>,
}

/// Why an operation was refused (status `Unauthorized`).
pub const NOAUTH: &str = "NOAUTH Authentication required.";
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
pub const NOPERM: &str =
    "NOPERM this user has no permissions to run this command (the read-only user only reads)";
pub const NOT_A_MEMBER: &str =
    "cluster opcode refused: this connection has not proved the cluster secret";

impl Session {
    /// A connection's session. `loopback`: the peer's address is a loopback one; `original`:
    /// it speaks the original design's protocol (which cannot authenticate).
    pub fn new(creds: std::sync::Arc<Credentials>, loopback: bool, original: bool) -> Session {
        let client = if creds.has_password() {
            original && creds.original_without_auth
        } else {
            !creds.protected || loopback
        };
        let member = creds.secret.is_none();
        Session {
            creds,
            client: Cell::new(client),
            read_only: Cell::new(false),
            member: Cell::new(member),
            failures: Cell::new(0),
            original,
            pending: RefCell::new(None),
            peer_seen: Cell::new(false),
        }
    }

    /// Whether this connection has shown who it is: a client that authenticated (or needs
    /// no password), or a peer (that proved the cluster secret, or with none, sent a cluster
    /// frame). Until then it holds one of the few unauthenticated slots, under a deadline.
    pub fn admitted(&self) -> bool {
        self.client.get() || self.is_peer()
    }

    /// Whether this connection is another node's (counted apart from clients).
    pub fn is_peer(&self) -> bool {
        match self.creds.secret {
            Some(_) => self.member.get(),
            None => self.peer_seen.get(),
        }
    }

    /// Whether `opcode` may run on this connection, else the refusal's message.
    pub fn allows(&self, opcode: Opcode) -> Result<(), &'static str> {
        match need_of(opcode) {
            Need::Nothing => Ok(()),
            Need::Reader if self.client.get() => Ok(()),
            Need::Client if self.client.get() && self.read_only.get() => Err(NOPERM),
            Need::Client if self.client.get() => Ok(()),
            Need::Client | Need::Reader if self.original && self.creds.has_password() => {
                Err(ORIGINAL_NO_AUTH)
            }
            Need::Client | Need::Reader if self.creds.protected => Err(DENIED),
            Need::Client | Need::Reader => Err(NOAUTH),
            // A member may also read and write through the client opcodes: it is trusted.
            Need::Member if self.member.get() => {
                self.peer_seen.set(true);
                Ok(())
            }
            Need::Member => Err(NOT_A_MEMBER),
        }
    }

    pub fn has_password(&self) -> bool {
        self.creds.has_password()
    }

    pub fn client_ok(&self) -> bool {
        self.client.get()
    }

    pub fn protected_refusal(&self) -> &'static str {
        if self.creds.protected {
            DENIED
        } else {
            NOAUTH
        }
    }

    /// AUTH as `user` (empty: `default`): whether the password is right (then this
    /// connection is a client, with that user's rights).
    pub fn authenticate(&self, user: &[u8], password: &[u8]) -> bool {
        match self.creds.access_of(user, password) {
            Some(full) => {
                self.client.set(true);
                self.read_only.set(!full);
                true
            }
            None => {
                self.failures.set(self.failures.get() + 1);
                false
            }
        }
    }

    /// Whether this connection failed AUTH so often it must be closed.
    pub fn too_many_failures(&self) -> bool {
        self.failures.get() >= crate::limits::AUTH_FAILURES_MAX
    }

    /// Handshake step 1 (listener): the dialer's id and nonce in; our nonce and proof out.
    pub fn hello(&self, dialer: &str, dialer_nonce: &[u8]) -> Option<Vec<u8>> {
        let secret = self.creds.secret.as_deref()?;
        if dialer_nonce.len() != NONCE_BYTES || dialer.is_empty() {
            return None;
        }
        let ours = nonce();
        let proof = listener_proof(secret, dialer_nonce, &ours, dialer);
        *self.pending.borrow_mut() = Some((dialer.to_string(), dialer_nonce.to_vec(), ours));
        let mut answer = ours.to_vec();
        answer.extend_from_slice(&proof);
        Some(answer)
    }

    /// Handshake step 2 (listener): the dialer's proof; true when it holds (then this
    /// connection is a member). One attempt per hello.
    pub fn prove(&self, proof: &[u8]) -> bool {
        let Some(secret) = self.creds.secret.as_deref() else {
            return false;
        };
        let Some((dialer, dialer_nonce, ours)) = self.pending.borrow_mut().take() else {
            return false;
        };
        let ok = mac_eq(proof, &dialer_proof(secret, &ours, &dialer_nonce, &dialer));
        if ok {
            self.member.set(true);
        }
        ok
    }
}

/// The original design's protocol has no AUTH: with a password it is refused unless allowed.
pub const ORIGINAL_NO_AUTH: &str = "this node requires a password and the original protocol \
     cannot send one: use the native or the Redis protocol, or start the node with \
     --original-protocol-without-auth to serve this protocol unauthenticated";

/// Protected mode's refusal (Redis's words, adapted).
pub const DENIED: &str = "DENIED kvstore is running in protected mode: it listens beyond \
     loopback and has no password, so only loopback clients are served. Set a password \
     (--password-file or KVSTORE_PASSWORD), or listen on 127.0.0.1, or start it with \
     --protected-mode no if every client that can reach it is trusted.";

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn creds(password: Option<&str>, secret: Option<&str>) -> Arc<Credentials> {
        Arc::new(Credentials::new(
            password.map(|p| p.as_bytes().to_vec()),
            secret.map(|s| s.as_bytes().to_vec()),
        ))
    }

    #[test]
    fn a_password_gates_client_ops_until_auth() {
        let s = Session::new(creds(Some("pw"), None), true, false);
        assert_eq!(s.allows(Opcode::Get), Err(NOAUTH));
        assert_eq!(s.allows(Opcode::Ping), Ok(()));
        assert_eq!(
            s.allows(Opcode::ReplicaPut),
            Ok(()),
            "no secret: members as before"
        );
        assert!(!s.authenticate(b"", b"wrong"));
        assert!(
            !s.authenticate(b"", b"pw "),
            "no trimming of what the client sent"
        );
        assert!(s.authenticate(b"", b"pw"));
        assert_eq!(s.allows(Opcode::Leave), Ok(()));
        let orig = Session::new(creds(Some("pw"), None), true, true);
        assert_eq!(orig.allows(Opcode::Get), Err(ORIGINAL_NO_AUTH));
        let open = Session::new(creds(None, None), false, false);
        assert_eq!(
            open.allows(Opcode::Put),
            Ok(()),
            "no password, not protected"
        );
    }

    #[test]
    fn the_read_only_user_reads_and_nothing_else() {
        let c = Credentials::new(Some(b"pw".to_vec()), None).with_reader(Some(b"ro".to_vec()));
        assert_eq!(c.access_of(b"reader", b"ro"), Some(false));
        assert_eq!(
            c.access_of(b"reader", b"pw"),
            None,
            "each user its own password"
        );
        assert_eq!(c.access_of(b"default", b"pw"), Some(true));
        assert_eq!(c.access_of(b"", b"pw"), Some(true));
        assert_eq!(c.access_of(b"admin", b"pw"), None, "no such user");
        let s = Session::new(Arc::new(c), true, false);
        assert!(s.authenticate(b"reader", b"ro"));
        for read in [Opcode::Get, Opcode::Scan, Opcode::Info, Opcode::LocalGet] {
            assert_eq!(s.allows(read), Ok(()), "{read:?}");
        }
        for write in [
            Opcode::Put,
            Opcode::Delete,
            Opcode::Update,
            Opcode::Leave,
            Opcode::Repair,
        ] {
            assert_eq!(s.allows(write), Err(NOPERM), "{write:?}");
        }
        assert!(s.authenticate(b"default", b"pw"), "the full user after");
        assert_eq!(s.allows(Opcode::Put), Ok(()));
        let open = Credentials::new(None, None).with_reader(Some(b"ro".to_vec()));
        assert_eq!(
            open.access_of(b"reader", b"ro"),
            None,
            "no reader without a password"
        );
    }

    #[test]
    fn failures_are_counted_up_to_the_limit() {
        let s = Session::new(creds(Some("pw"), None), true, false);
        for _ in 0..crate::limits::AUTH_FAILURES_MAX {
            assert!(!s.too_many_failures());
            s.authenticate(b"", b"nope");
        }
        assert!(s.too_many_failures());
    }

    #[test]
    fn protected_mode_refuses_remote_clients_only() {
        let mut c = Credentials::new(None, None);
        c.protected = true;
        let c = Arc::new(c);
        assert_eq!(
            Session::new(c.clone(), true, false).allows(Opcode::Get),
            Ok(())
        );
        assert_eq!(
            Session::new(c, false, false).allows(Opcode::Get),
            Err(DENIED)
        );
    }

    #[test]
    fn the_handshake_proves_both_sides_and_a_replay_fails() {
        let secret = b"s3cret".as_slice();
        let listener = Session::new(creds(None, Some("s3cret")), false, false);
        assert_eq!(listener.allows(Opcode::ReplicaPut), Err(NOT_A_MEMBER));
        // dialer: hello with a nonce
        let dn = nonce();
        let answer = listener.hello("node2", &dn).expect("hello");
        let ln = verify_listener(secret, &answer, &dn, "node2").expect("listener proved");
        assert!(
            verify_listener(b"other", &answer, &dn, "node2").is_none(),
            "wrong secret"
        );
        let proof = dialer_proof(secret, ln, &dn, "node2");
        assert!(listener.prove(&proof));
        assert_eq!(listener.allows(Opcode::ReplicaPut), Ok(()));
        // a recorded hello + proof replayed on a new connection: the listener's nonce differs
        let other = Session::new(creds(None, Some("s3cret")), false, false);
        other.hello("node2", &dn).expect("hello");
        assert!(!other.prove(&proof), "replayed proof");
        assert_eq!(other.allows(Opcode::Gossip), Err(NOT_A_MEMBER));
        // a wrong secret on the dialer side
        let third = Session::new(creds(None, Some("s3cret")), false, false);
        let answer = third.hello("node9", &dn).expect("hello");
        let ln = &answer[..NONCE_BYTES];
        assert!(!third.prove(&dialer_proof(b"guess", ln, &dn, "node9")));
    }

    #[test]
    fn credentials_load_from_a_file_or_a_variable() -> Result<(), Error> {
        assert_eq!(
            load("password", None, Some("pw".into()))?,
            Some(b"pw".to_vec())
        );
        assert_eq!(load("password", None, None)?, None);
        assert!(matches!(
            load("password", None, Some(String::new())),
            Err(Error::Empty { .. })
        ));
        let f = std::env::temp_dir().join(format!("kv-pw-{}", std::process::id()));
        std::fs::write(&f, "from-file\n").map_err(|source| Error::Read {
            what: "t",
            path: f.clone(),
            source,
        })?;
        assert_eq!(
            load("password", Some(&f), Some("env".into()))?,
            Some(b"from-file".to_vec())
        );
        let _ = std::fs::remove_file(&f);
        Ok(())
    }
}
