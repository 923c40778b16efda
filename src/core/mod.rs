//! Pure, deterministic logic: no sockets, files, clocks or global RNG in here.
//!
//! Time and randomness come in as arguments; effects go out as return values. The I/O shells
//! in `server` and `storage::wal_file` carry them out.

pub mod bytes;
pub mod cell;
pub mod clock_fence;
pub mod cluster_ring;
pub mod consensus;
pub mod crdt;
pub mod linearizable;
pub mod membership;
pub mod merkle;
pub mod quorum;
pub mod ring;
pub mod round;
pub mod version;
pub mod wal_damage;
