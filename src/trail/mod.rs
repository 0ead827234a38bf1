//! The audit trail as a verifiable log, in the manner of Certificate
//! Transparency: every audit event is a leaf of one append-only Merkle tree
//! (RFC 6962 / RFC 9162 hashing) kept in the database next to the events
//! (see the events migration: the database numbers each event in the
//! transaction that adds it; and the bulk-hashing migration: the gateways
//! then compute the leaves and store the hash of every complete subtree in
//! bulk, off the calls' path, before each checkpoint); the gateway signs
//! checkpoints of the tree (C2SP tlog-checkpoint notes) with a key the
//! database does not hold, after checking that each new tree extends the
//! last one it signed; and anyone holding a checkpoint can check a call's
//! events against it (inclusion proofs), check that a later checkpoint
//! extends it (consistency proofs), or recompute the whole tree from the
//! rows (`audit verify`).

pub mod checkpoint;
mod checkpointer;
pub mod commands;
pub mod hash;
mod hashing;
pub mod leaf;
mod newest;
pub mod proof;
mod prove;
mod store;
pub mod verify;

pub use checkpointer::{Checkpointer, LogKeeper, spawn_log_keeper};
pub use prove::{CallProof, LoggedEvent, ProveError, Trail};
