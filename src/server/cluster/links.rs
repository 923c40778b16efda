//! One core's links to the other nodes, by address: a `Peer` per address, made on first use
//! with this node's cluster identity (for the handshake) and TLS connector.
//!
//! Owns: the address → link table and what a new link needs. Never: routing, membership or
//! retries (callers decide whom to ask; `peer::Peer` carries one link's requests). Code that
//! only talks to other nodes takes `&PeerLinks` (or one `&Peer`), not the whole core context.

use hashbrown::HashMap;
use std::cell::RefCell;
use std::rc::Rc;

use crate::server::cluster::peer::{Identity, Peer};

pub struct PeerLinks {
    /// By address, looked up per replica operation (hashbrown's default hasher, not SipHash).
    links: RefCell<HashMap<String, Rc<Peer>>>,
    /// Our cluster identity for peer handshakes (`None`: no cluster secret).
    identity: Option<Rc<Identity>>,
    tls: Option<futures_rustls::TlsConnector>,
}

impl PeerLinks {
    pub fn new(identity: Option<Rc<Identity>>, tls: Option<futures_rustls::TlsConnector>) -> Self {
        PeerLinks {
            links: RefCell::new(HashMap::new()),
            identity,
            tls,
        }
    }

    /// A second link to the peer at `addr`, for requests whose answer waits on replica
    /// traffic the other way (a conditional command sent to its key's home): on the replica
    /// link it would hold up the requests behind it, and two nodes doing so to each other
    /// would wait on one another until the timeout.
    pub fn forward_link(&self, addr: &str) -> Rc<Peer> {
        let key = format!("{addr}#forward");
        if let Some(p) = self.links.borrow().get(&key) {
            return p.clone();
        }
        let p = Rc::new(Peer::with_identity(
            addr,
            self.identity.clone(),
            self.tls.clone(),
        ));
        self.links.borrow_mut().insert(key, p.clone());
        p
    }

    /// The link to the peer at `addr` (made on first use).
    pub fn get(&self, addr: &str) -> Rc<Peer> {
        // Looked up on every replica operation: allocate the key only for a new peer.
        if let Some(p) = self.links.borrow().get(addr) {
            return p.clone();
        }
        let p = Rc::new(Peer::with_identity(
            addr,
            self.identity.clone(),
            self.tls.clone(),
        ));
        self.links.borrow_mut().insert(addr.to_string(), p.clone());
        p
    }
}
