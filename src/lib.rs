//! zenlayer-gateway: the one audited door through which internal services may
//! release Zenlayer cloud disks.

pub mod pb;
pub mod simulator;
pub mod zenlayer;
