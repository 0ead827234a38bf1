//! The gRPC face of the gateway: the `DiskService` handler, the per-call
//! context layer in front of it, the path a release takes, and how its
//! outcome is decided once and rendered as a status, audit records, metrics
//! and a log line.

mod alerts;
mod attempt;
pub mod codes;
pub mod context;
mod disk_service;
mod explain;
mod get_release;
mod outcome;
mod proofs;
mod received;
mod release;
mod render;

pub use context::{CallContext, CallContextLayer};
pub use disk_service::DiskApi;
pub use get_release::ReleaseReader;
pub use outcome::{Audited, Outcome, Upstream};
pub use release::{MAX_REQUEST_BYTES, ReleasePath};
pub use render::{ERROR_DOMAIN, Reply};

/// How the audit trail records a release refused for its budget: rendered
/// here, from the same outcome the caller is answered with, and handed to
/// the audit writer, which makes that decision in the attempt's transaction.
pub fn budget_refusal(over: &crate::budget::OverBudget) -> crate::audit::RefusalRecord {
    explain::refused(&crate::decision::Refusal::OverBudget(over.clone()))
        .refusal_record()
        .expect("a refusal has a refusal record")
}
