//! Everything that speaks Zenlayer's Cloud API 2.0: the request signature,
//! the upstream client, and how Zenlayer's answers are read.

mod answer;
mod budget;
mod client;
mod error;
pub mod signing;

pub use budget::CallerDeadline;
pub use client::{Accepted, Credential, ZenlayerClient};
pub use error::UpstreamError;
