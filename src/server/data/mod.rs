//! The data path: one core's shard (map, clock, WAL, hints), the quorum coordinator, the
//! messages cores exchange, and the background work that keeps a core's data in shape
//! (compaction, hint delivery, the expiry sweep, the WAL scrubber). Reaches other nodes only through `cluster::peer`.

pub mod collection;
pub mod compactor;
pub mod consensus;
pub mod coordinator;
pub mod expiry;
pub mod flush;
pub mod handoff;
pub mod hops;
pub mod messages;
pub mod scan;
pub mod scrubber;
pub mod shard;
pub mod update;
