//! Other nodes: peer links (pipelined, with backpressure and the cluster handshake),
//! membership by gossip, joins and leaves, the ring view every core routes by, anti-entropy.
//! Decisions are `core`'s (membership, ring, merkle); these are the shells that carry them out.

pub mod anti_entropy;
pub mod gossip;
pub mod links;
pub mod peer;
pub mod topology;
pub mod view;
