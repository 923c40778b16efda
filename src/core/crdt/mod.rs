//! Convergent replicated data types for Redis's collections: the merge rules, pure.
//!
//! Owns: the one merge trait (`Crdt`, as Garage's), causal contexts (`context`: which write
//! events a state has seen) and the observed-remove map (`or_map`) that hashes, sets and sorted
//! sets are built on. Every merge here is commutative, associative and idempotent, so states
//! and deltas (a state holding just what one command changed, Almeida, Shoker and Baquero's
//! delta-state CRDTs) may arrive in any order, any number of times, by any path: a replica
//! write, read repair, a hint, a join stream, anti-entropy, WAL replay. Never does I/O, never
//! reads a clock: versions and writer ids come in from the caller.

pub mod collection;
pub mod command;
pub mod context;
pub mod field;
pub mod or_map;

/// A state that merges: after `a.merge(&b)`, `a` holds the least state that includes both.
pub trait Crdt {
    fn merge(&mut self, other: &Self);
}
