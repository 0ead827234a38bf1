//! The gRPC face of the gateway: the `DiskService` handler, the per-call
//! context layer in front of it, and how failures become statuses.

mod attempt;
pub mod codes;
mod conclusion;
pub mod context;
mod disk_service;
pub mod error;
mod forward;
mod refusal;
mod upstream_status;

pub use context::{CallContext, CallContextLayer};
pub use disk_service::DiskApi;
pub use error::CallError;
pub use forward::Forwarder;
