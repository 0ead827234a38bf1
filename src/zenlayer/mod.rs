//! Everything that speaks Zenlayer's Cloud API 2.0: the request signature,
//! the upstream client, how Zenlayer's answers are read, and what they say
//! about the disk's fate.

mod answer;
mod client;
mod config;
mod disk;
mod error;
mod fate;
pub mod signing;

pub use answer::Accepted;
pub use client::{Described, DescribedDisks, MAX_DISKS_PER_DESCRIBE, ZenlayerClient};
pub use config::{Credential, ZenlayerSettings};
pub use disk::DiskSnapshot;
pub use error::UpstreamError;
pub use fate::Fate;
